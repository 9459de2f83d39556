"""NTUA co-location interference study (Interference_Thesis_NTUA, 2025): an nginx service
(1-4 replicas, 100-4000 requests/s open loop) alone (`Baseline*`) and beside iBench CPU,
stress-ng L3 and iBench memory-bandwidth co-runners (1-4 pods).

Layout, one folder per experiment series (the folder name is the series):
`nginx_metrics.csv` (one row per run: Test_ID, Replicas, Interference_Name, Interference_ID,
Given_RPS, Throughput, Avg/P50/P75/P90/P95/P99/Max_Latency in seconds, Errors) and per run
`pcm_system_<Test_ID>.csv` (Intel PCM system counters, one sample every five seconds) and
`pcm_core_<Test_ID>.csv` (the same per core). Rows go to `interference_runs` (P75_Latency
is 0 everywhere upstream and is dropped) and `interference_samples` (long: sample index,
metric `sys:<counter>` or `core<N>:<counter>`, value).

Handling of incomplete runs (every record is accepted or rejected with its reason):
- the system and core files of a run are aligned by sample index and must carry the same
  Date/Time at every index they share, else DataFileError (misaligned samples); samples past
  the shorter file's end are rejected ("no matching sample in ...");
- a run whose system or core file is missing keeps its `interference_runs` row with
  `samples = 0`; the lone counter file's rows are rejected ("... missing");
- a series folder without any counter file (`LookUp_Table_V02`) loads its runs with
  `samples = 0`; a counter file whose Test_ID is not in its folder's `nginx_metrics.csv`
  raises DataFileError.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.staging import read_header, records
from servecast.errors import DataFileError, SchemaMismatchError

RUNS_FILE = "nginx_metrics.csv"
RUN_COLUMNS = ["Test_ID", "Replicas", "Interference_Name", "Interference_ID", "Given_RPS",
               "Throughput", "Avg_Latency", "P50_Latency", "P75_Latency", "P90_Latency",
               "P95_Latency", "P99_Latency", "Max_Latency", "Errors"]
#: interference id -> family: 0-2 baselines, 1x CPU, 2x L3, 3x memory bandwidth (x = pods)
FAMILIES = {0: "baseline", 1: "cpu", 2: "l3", 3: "membw"}
_CORE = re.compile(r"^Core(\d+) \(Socket \d+\) - (.+)$")
_TIME = ["System - Date", "System - Time"]


def family(interference_id: int) -> tuple[str, int]:
    """(family, co-runner pods) of an Interference_ID: 0-2 -> ('baseline', 0), 11-14 ->
    ('cpu', 1-4), 21-24 -> ('l3', ..), 31-34 -> ('membw', ..); any other id -> ('mix', 0)."""
    if 0 <= interference_id <= 2:
        return "baseline", 0
    fam = FAMILIES.get(interference_id // 10)
    if fam and fam != "baseline" and 1 <= interference_id % 10 <= 9:
        return fam, interference_id % 10
    return "mix", 0


def metric_name(column: str) -> str:
    """'System - IPC' -> 'sys:IPC'; 'System Core C-States - C1res%' -> 'sys:Core C-States
    C1res%'; 'Core3 (Socket 0) - L3MISS' -> 'core3:L3MISS'; 'SKT0 Core C-State - C0res%' ->
    'SKT0 Core C-State:C0res%'."""
    m = _CORE.match(column)
    if m:
        return f"core{m.group(1)}:{m.group(2)}"
    head, _, tail = column.partition(" - ")
    if head.startswith("System"):  # 'System Pack C-States - C6res%' -> 'sys:Pack C-States C6res%'
        rest = head.removeprefix("System").strip()
        return f"sys:{rest} {tail}" if rest else f"sys:{tail}"
    return f"{head}:{tail}"


class NTUAInterference(Adapter):
    name = "ntua-interference"
    table = "interference_runs"
    patterns = ("*.csv",)
    per_file_traces = False
    catalog = Catalog(
        format="one folder per series: nginx_metrics.csv (Test_ID,Replicas,Interference_Name,"
        "Interference_ID,Given_RPS,Throughput,Avg_Latency..Max_Latency,Errors) and per run "
        "pcm_system_<Test_ID>.csv, pcm_core_<Test_ID>.csv (Intel PCM, 5-s samples)",
        url="https://github.com/georgakopoulosgeo/Interference_Thesis_NTUA/tree/main/"
        "Profiling/Raw_Data",
        license="none upstream (internal evaluation only)",
        citation="Georgakopoulos, Interference-aware scheduling, NTUA diploma thesis, 2025",
    )

    def group(self, files: list[Path], trace: str | None) -> dict[str, list[Path]]:
        """One trace per series folder (`ntua_<folder>`), or all in `trace` if given."""
        if trace:
            return {trace: files}
        groups: dict[str, list[Path]] = {}
        for f in files:
            groups.setdefault(f"ntua_{f.parent.name}", []).append(f)
        return groups

    def load(self, ctx, files: list[Path]):
        counts: dict[Path, tuple[int, int]] = {}
        rejected: list[tuple] = []
        by_dir: dict[Path, list[Path]] = {}
        for f in files:
            by_dir.setdefault(f.parent, []).append(f)
        runs, samples = [], []
        for folder, group in sorted(by_dir.items()):
            series = folder.name
            metrics_file = folder / RUNS_FILE
            if metrics_file not in group:
                raise DataFileError(
                    f"{folder}: no {RUNS_FILE} among the files given; ingest the whole series "
                    f"folder (each run is a row of {RUNS_FILE})")
            rows, n, rej = _runs(ctx, metrics_file, series)
            counts[metrics_file] = (n, len(rej))
            rejected += rej
            pcm = {f.name: f for f in group if f != metrics_file}
            ids = {r["test_id"] for r in rows}
            for name, f in pcm.items():
                kind, _, test_id = name.removesuffix(".csv").partition("_")[2].partition("_")
                if kind not in ("system", "core") or not name.startswith("pcm_"):
                    raise DataFileError(
                        f"{f}: not a file of this layout; expected {RUNS_FILE}, "
                        "pcm_system_<Test_ID>.csv or pcm_core_<Test_ID>.csv")
                if test_id not in ids:
                    raise DataFileError(
                        f"{f}: Test_ID {test_id!r} is not a run of {metrics_file}; add its row "
                        "or remove the file")
            for r in rows:
                sysf = pcm.get(f"pcm_system_{r['test_id']}.csv")
                coref = pcm.get(f"pcm_core_{r['test_id']}.csv")
                r["samples"] = 0
                if sysf is None and coref is None:
                    continue
                long, r["samples"], rej = _counters(ctx, sysf, coref)
                samples += [(series, r["test_id"], *x) for x in long]
                for f, (kept, n_rej) in rej.items():
                    counts[f] = (kept, len(n_rej))
                    rejected += n_rej
            runs += rows
        if rejected:
            ctx.con.executemany("INSERT INTO rejected_rows VALUES (?, ?, ?, ?, ?)", rejected)
        import polars as pl  # here, not at the top: every ingest imports every adapter module

        if runs:
            df = pl.DataFrame(runs).with_columns(trace=pl.lit(ctx.trace))  # noqa: F841
            ctx.con.execute(
                """INSERT INTO interference_runs BY NAME SELECT * FROM df""")
        if samples:
            sdf = pl.DataFrame(samples, orient="row", schema=[  # noqa: F841
                ("series", pl.Utf8), ("test_id", pl.Utf8), ("sample", pl.Int32),
                ("metric", pl.Utf8), ("value", pl.Float64)]).with_columns(
                trace=pl.lit(ctx.trace))
            ctx.con.execute("INSERT INTO interference_samples BY NAME SELECT * FROM sdf")
        return counts


def _num(text: str, what: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"non-finite {what}")
    return v


def _runs(ctx, path: Path, series: str) -> tuple[list[dict], int, list[tuple]]:
    """Valid rows of nginx_metrics.csv as dicts, their count, and rejected_rows tuples."""
    header = read_header(path)
    if [h.lower() for h in header] != [c.lower() for c in RUN_COLUMNS]:
        raise SchemaMismatchError(str(path), RUN_COLUMNS, header,
                                  "the nginx_metrics.csv of the NTUA interference study")
    out, rejected, seen = [], [], set()
    for line, text in records(ctx.readable(path)):
        if line == 1 or not text.strip():
            continue
        cells = next(csv.reader([text.rstrip("\r\n")]))
        try:
            if len(cells) != len(RUN_COLUMNS):
                raise ValueError(f"{len(cells)} fields, expected {len(RUN_COLUMNS)}")
            v = dict(zip(RUN_COLUMNS, cells, strict=True))
            if not v["Test_ID"] or v["Test_ID"] in seen:
                raise ValueError("missing or repeated Test_ID")
            iid = int(v["Interference_ID"])
            fam, pods = family(iid)
            lat = _num(v["Avg_Latency"], "Avg_Latency")
            if lat <= 0:
                raise ValueError("Avg_Latency must be > 0 s")
            rps = _num(v["Given_RPS"], "Given_RPS")
            if rps <= 0:
                raise ValueError("Given_RPS must be > 0")
            opt = {k: (_num(v[c], c) if v[c].strip() else None) for k, c in [
                ("throughput", "Throughput"), ("p50_latency_s", "P50_Latency"),
                ("p90_latency_s", "P90_Latency"), ("p95_latency_s", "P95_Latency"),
                ("p99_latency_s", "P99_Latency"), ("max_latency_s", "Max_Latency")]}
            errors = int(float(v["Errors"])) if v["Errors"].strip() else None
        except ValueError as e:
            rejected.append((ctx.trace, str(path), line, f"bad value: {e}", text.rstrip("\r\n")))
            continue
        seen.add(v["Test_ID"])
        out.append(dict(series=series, test_id=v["Test_ID"], replicas=v["Replicas"].strip(),
                        interference=v["Interference_Name"], interference_id=iid, family=fam,
                        pods=pods, rps=rps, avg_latency_s=lat, errors=errors, **opt))
    return out, len(out), rejected


def _read_pcm(ctx, path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    header = read_header(path)
    if header[:2] != _TIME or len(header) < 3:
        raise SchemaMismatchError(str(path), [*_TIME, "..."], header,
                                  "an Intel PCM CSV (first columns System - Date, System - Time)")
    rows = [(ln, next(csv.reader([t.rstrip("\r\n")])))
            for ln, t in records(ctx.readable(path)) if ln > 1 and t.strip()]
    return header, rows


def _counters(ctx, sysf: Path | None, coref: Path | None):
    """Long (sample, metric, value) rows of one run, the samples kept and the rejected rows
    of each file. A missing or sample-less file leaves the other file's samples alone."""
    read = {f: _read_pcm(ctx, f) for f in (sysf, coref) if f is not None}
    filled = [f for f in read if read[f][1]]
    n = min((len(read[f][1]) for f in filled), default=0)
    if len(filled) == 2:
        (_, rs), (_, rc) = read[sysf], read[coref]
        for i in range(n):
            (ls, a), (lc, b) = rs[i], rc[i]
            if a[:2] != b[:2]:
                raise DataFileError(
                    f"{sysf}: line {ls} ({' '.join(a[:2])}) and {coref}: line {lc} "
                    f"({' '.join(b[:2])}): misaligned samples (sample {i} has different "
                    "times); the two files of a run must hold the same 5-s samples in order")
    rejects = {f: [(ctx.trace, str(f), ln, f"no matching sample in {other.name}",
                    ",".join(c)) for ln, c in read[f][1][n:]]
               for f, other in ((sysf, coref), (coref, sysf)) if f in read and other in filled}
    rejects.update({f: [] for f in read if f not in rejects})
    rejects = {f: (n if f in filled else 0, rej) for f, rej in rejects.items()}
    out, seen = [], set()
    for path in filled:
        header, rows = read[path]
        names = [metric_name(h) for h in header]
        for i, (ln, cells) in enumerate(rows[:n]):
            if len(cells) != len(header):
                raise DataFileError(
                    f"{path}: line {ln}: {len(cells)} fields, the header has {len(header)}; "
                    "the file is truncated or damaged, download it again")
            for name, c in zip(names[2:], cells[2:], strict=True):
                if (i, name) in seen:  # C-state summaries appear in both files
                    continue
                seen.add((i, name))
                try:
                    v = float(c) if c.strip() else None
                except ValueError:
                    raise DataFileError(
                        f"{path}: line {ln}: {name} = {c!r} is not a number") from None
                out.append((i, name, v if v is None or math.isfinite(v) else None))
    return out, n, rejects  # rejects: file -> (rows kept, rejected_rows tuples)
