"""Collect CloudFormer-like interference data on your own host (psutil; Linux adds /proc/vmstat).

- `sample_host(interval, duration)`: host metrics in long format [t, metric, value]: CPU
  (total/user/system/iowait/steal %, load), memory (used %, available MiB, swap %), vmstat
  (page faults, major faults, swap-in/out per s), CPU stats (context switches, interrupts per
  s), disk (read/write MiB/s and ops/s), network (sent/received MiB/s, packets/s) and, for
  the watched processes, per-process CPU %, RSS MiB, threads and context switches per s.
- `run_experiment(target, corunners, ...)`: runs `target` alone and beside `corunners`
  (`repeats` times each, alternating), samples metrics during every run (one window per run,
  t = seconds since the run started) and labels each window with
  perf = median solo wall time / run wall time (clipped to (0, 1]).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from servecast.errors import InvalidInputError

MIB = 1024 * 1024


def _vmstat() -> dict[str, float]:
    keys = ("pgfault", "pgmajfault", "pswpin", "pswpout")
    try:
        with open("/proc/vmstat") as fh:
            pairs = (line.split() for line in fh)
            return {k: float(v) for k, v in pairs if k in keys}
    except OSError:
        return {}


class _Counters:
    """Cumulative counters turned into per-second rates between two snapshots."""

    def __init__(self, pids: list[int]):
        import psutil

        self.psutil = psutil
        self.procs = {}
        for pid in pids:
            try:
                self.procs[pid] = psutil.Process(pid)
                self.procs[pid].cpu_percent(None)
            except psutil.Error:
                pass
        psutil.cpu_times_percent(None)
        self.prev = self._snap()
        self.prev_t = time.monotonic()

    def _snap(self) -> dict[str, float]:
        ps = self.psutil
        s = {f"vmstat_{k}": v for k, v in _vmstat().items()}
        cs = ps.cpu_stats()
        s.update(ctx_switches=cs.ctx_switches, interrupts=cs.interrupts)
        d = ps.disk_io_counters()
        if d is not None:
            s.update(disk_read_mib=d.read_bytes / MIB, disk_write_mib=d.write_bytes / MIB,
                     disk_read_ops=d.read_count, disk_write_ops=d.write_count)
        n = ps.net_io_counters()
        if n is not None:
            s.update(net_sent_mib=n.bytes_sent / MIB, net_recv_mib=n.bytes_recv / MIB,
                     net_packets=n.packets_sent + n.packets_recv)
        for pid, p in self.procs.items():
            try:
                c = p.num_ctx_switches()
                s[f"proc{pid}_ctx_vol"], s[f"proc{pid}_ctx_invol"] = c.voluntary, c.involuntary
            except ps.Error:
                pass
        return s

    def sample(self) -> dict[str, float]:
        """Gauges plus rates (per second) since the previous call."""
        ps = self.psutil
        now, snap = time.monotonic(), self._snap()
        dt = max(now - self.prev_t, 1e-6)
        out = {f"{k}_per_s": (snap[k] - self.prev[k]) / dt for k in snap if k in self.prev}
        self.prev, self.prev_t = snap, now
        ct = ps.cpu_times_percent(None)
        out.update(cpu_user_pct=ct.user, cpu_system_pct=ct.system,
                   cpu_idle_pct=ct.idle, cpu_iowait_pct=getattr(ct, "iowait", 0.0),
                   cpu_steal_pct=getattr(ct, "steal", 0.0),
                   cpu_busy_pct=100.0 - ct.idle, load_1m=os.getloadavg()[0])
        vm, sw = ps.virtual_memory(), ps.swap_memory()
        out.update(mem_used_pct=vm.percent, mem_available_mib=vm.available / MIB,
                   swap_used_pct=sw.percent)
        for pid, p in self.procs.items():
            try:
                with p.oneshot():
                    out[f"proc_cpu_pct/{pid}"] = p.cpu_percent(None)
                    out[f"proc_rss_mib/{pid}"] = p.memory_info().rss / MIB
                    out[f"proc_threads/{pid}"] = p.num_threads()
            except ps.Error:
                pass
        # per-process rates under a pid-free name so windows of different runs line up
        for key in list(out):
            if key.startswith("proc") and "_ctx_" in key:
                out[key.replace(key.split("_")[0], "proc", 1)] = out.pop(key)
        return {k.split("/")[0]: v for k, v in out.items()}


def sample_host(interval: float = 1.0, duration: float = 10.0, pids: list[int] | None = None,
                stop: threading.Event | None = None) -> pl.DataFrame:
    """Sample host (and `pids`') metrics every `interval` s for `duration` s (or until `stop`
    is set): long frame [t (s since start), metric, value]."""
    if interval <= 0 or duration <= 0:
        raise InvalidInputError(f"interval ({interval}) and duration ({duration}) must be > 0 s")
    _check_psutil()
    counters = _Counters(pids or [])
    t0 = time.monotonic()
    rows: list[tuple[float, str, float]] = []
    tick = t0 + interval
    while True:
        wait = tick - time.monotonic()
        if stop is not None:
            if stop.wait(max(wait, 0)):
                break
        elif wait > 0:
            time.sleep(wait)
        t = time.monotonic() - t0
        rows += [(round(t, 3), k, float(v)) for k, v in counters.sample().items()]
        tick += interval
        if t >= duration - 1e-9:
            break
    return pl.DataFrame(rows, schema={"t": pl.Float64, "metric": pl.Utf8, "value": pl.Float64},
                        orient="row")


def _check_psutil() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise InvalidInputError("the collector needs psutil: pip install psutil") from None


def _argv(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    if not argv:
        raise InvalidInputError("empty command; give the program to run, e.g. \"python app.py\"")
    return argv


def _spawn(cmd: str, cpus: list[int] | None) -> subprocess.Popen:
    try:
        p = subprocess.Popen(_argv(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as e:
        raise InvalidInputError(f"cannot run {cmd!r}: {e}") from None
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(p.pid, cpus)
        except OSError:
            pass
    return p


@dataclass
class Experiment:
    """Collected windows: `metrics` [window_id, t, metric, value], `labels` [window_id, perf],
    `runs` [window_id, condition, wall_s, perf]."""

    metrics: pl.DataFrame
    labels: pl.DataFrame
    runs: pl.DataFrame

    def slowdown(self) -> float:
        """Median co-run wall time / median solo wall time (1 = no interference)."""
        med = dict(self.runs.group_by("condition").agg(pl.col("wall_s").median()).iter_rows())
        return med["corun"] / med["solo"]

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write `<out>` (metrics) and `<stem>.labels<suffix>` (labels + condition, wall_s);
        .parquet or .csv by the suffix of `out`."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        lab = out.with_name(f"{out.stem}.labels{out.suffix}")
        for df, p in ((self.metrics, out), (self.runs, lab)):
            df.write_parquet(p) if out.suffix == ".parquet" else df.write_csv(p)
        return out, lab


def _run_once(target: str, corunners: list[str], interval: float, cpus, timeout: float):
    others = [_spawn(c, cpus) for c in corunners]
    try:
        if others:
            time.sleep(0.2)  # let co-runners ramp up
        t0 = time.monotonic()
        proc = _spawn(target, cpus)
        stop = threading.Event()
        box: dict = {}
        sampler = threading.Thread(target=lambda: box.setdefault(
            "df", sample_host(interval, timeout, [proc.pid], stop)))
        sampler.start()
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise InvalidInputError(f"target {target!r} ran longer than {timeout} s; raise "
                                    "--timeout or shorten the target") from None
        finally:
            stop.set()
            sampler.join()
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise InvalidInputError(
                f"target {target!r} exited with status {proc.returncode}: "
                f"{err.decode(errors='replace').strip()[-300:]}")
        for o in others:
            if o.poll() is not None:
                raise InvalidInputError(f"co-runner {o.args!r} exited early (status "
                                        f"{o.returncode}); it must run until stopped")
        return wall, box.get("df")
    finally:
        for o in others:
            if o.poll() is None:
                o.kill()
            o.wait()


def run_experiment(target: str, corunners: list[str], repeats: int = 3, interval: float = 1.0,
                   cpus: list[int] | None = None, timeout: float = 600.0) -> Experiment:
    """Run `target` alone and with all `corunners` (commands; co-runners are killed when the
    target ends), `repeats` times each, alternating; optionally pinned to `cpus`."""
    if repeats < 1:
        raise InvalidInputError(f"repeats must be >= 1, got {repeats}")
    if not corunners:
        raise InvalidInputError("give at least one --corunner command")
    _check_psutil()
    frames, runs = [], []
    for i in range(2 * repeats):
        cond = "solo" if i % 2 == 0 else "corun"
        wall, df = _run_once(target, corunners if cond == "corun" else [], interval, cpus,
                             timeout)
        runs.append((i, cond, wall))
        if df is not None and df.height:
            frames.append(df.with_columns(pl.lit(i, dtype=pl.Int64).alias("window_id")))
    run = pl.DataFrame(runs, schema={"window_id": pl.Int64, "condition": pl.Utf8,
                                     "wall_s": pl.Float64}, orient="row")
    solo = run.filter(pl.col("condition") == "solo")["wall_s"].median()
    run = run.with_columns((solo / pl.col("wall_s")).clip(1e-3, 1.0).alias("perf"))
    metrics = (pl.concat(frames).select("window_id", "t", "metric", "value") if frames else
               pl.DataFrame(schema={"window_id": pl.Int64, "t": pl.Float64,
                                    "metric": pl.Utf8, "value": pl.Float64}))
    missing = set(run["window_id"].to_list()) - set(metrics["window_id"].unique().to_list())
    if missing:
        raise InvalidInputError(
            f"runs {sorted(missing)} finished before the first sample; lower --interval "
            "below the target's run time")
    return Experiment(metrics, run.select("window_id", "perf"), run)
