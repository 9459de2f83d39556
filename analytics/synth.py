"""Calibrated workload generator: fit a trace, sample a new one at any rate and duration.

Model (JSON-serializable, `WorkloadModel`):
- arrivals: per window (default 10 min) the request rate (req/s), the inter-arrival CV and a
  family (gamma or Weibull, moment-matched to mean 1/rate and that CV, the better of the two
  by KS on the window's gaps). Windows repeat cyclically past the source's span. ServeGen-
  style per-window parameters (start_s, rate, cv[, dist]) can replace the fitted ones.
- lengths: the prompt quantile function (1001 points) and, per prompt-rank bin (20 equal
  -count bins), the output quantile function (101 points): sampling u -> prompt, and the
  output from the bin of u, keeps the joint prompt/output dependence (an empirical copula
  at bin resolution).
- segments: model x log_type shares (assigned independently of lengths).
- prefix reuse (Mooncake-style sources): quantiles of the share of a request's leading
  blocks already seen; sampled requests copy that many leading blocks of a recent request.
- sessions (sources with session ids and arrival times): quantiles of turns per session
  and of the time between a session's turns (s). The sampled arrivals are dealt to
  sessions: an arrival continues the session whose next turn is due longest ago, else opens
  a new one with a sampled number of turns; the arrival process itself is unchanged.

Written with `exports.write_requests` (Mooncake JSONL, vLLM custom dataset, BurstGPT CSV).

Rate scale X divides every gap by X: the mean rate becomes X times the source's, the CV and
the window shape stay.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from scipy import optimize, special, stats

from servecast.analytics.exports import BLOCK_TOKENS
from servecast.analytics.source import source
from servecast.errors import DataFileError, InvalidInputError

MIN_WINDOW_GAPS = 10  # fewer gaps than this: the window borrows the trace-wide CV


@dataclass
class Window:
    """Arrival parameters of one window: start_s, duration_s (s), rate (req/s), cv, dist."""

    start_s: float
    duration_s: float
    rate: float
    cv: float = 1.0
    dist: str = "gamma"


@dataclass
class WorkloadModel:
    """A fitted workload (see module docstring); `save`/`load` as JSON."""

    source: str
    window_s: float
    windows: list[Window]
    prompt_quantiles: list[float]
    output_quantiles: list[list[float]]  # one list per prompt-rank bin
    segments: list[dict] = field(default_factory=list)  # {model, log_type, share}
    reuse_quantiles: list[float] | None = None  # leading reused block share, 101 points
    session_turns: list[float] | None = None  # turns per session, 101 quantiles
    think_s: list[float] | None = None  # s between a session's consecutive turns, 101 q.

    @property
    def span_s(self) -> float:
        return sum(w.duration_s for w in self.windows)

    @property
    def mean_rate(self) -> float:
        """Requests per second over the model's span."""
        return sum(w.rate * w.duration_s for w in self.windows) / max(self.span_s, 1e-12)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> WorkloadModel:
        try:
            d = json.loads(Path(path).read_text())
            d["windows"] = [Window(**w) for w in d["windows"]]
            return cls(**d)
        except FileNotFoundError:
            raise DataFileError(f"{path}: no such workload model file") from None
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise DataFileError(
                f"{path}: not a servecast workload model ({e}); write one with "
                "`servecast synth --from TRACE --save-model FILE`") from None


# -- inter-arrival families, moment-matched to (mean, cv) ------------------------------------
def _weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k with coefficient of variation `cv`."""
    def f(logk: float) -> float:
        k = math.exp(logk)
        g1, g2 = special.gammaln(1 + 1 / k), special.gammaln(1 + 2 / k)
        return math.log(max(math.exp(g2 - 2 * g1) - 1, 1e-300)) - 2 * math.log(cv)
    lo, hi = math.log(0.05), math.log(200.0)
    if f(lo) < 0:
        return 0.05
    if f(hi) > 0:
        return 200.0
    return math.exp(optimize.brentq(f, lo, hi, xtol=1e-10))


def gap_distribution(mean: float, cv: float, dist: str):
    """Frozen scipy distribution of gaps with this `mean` (s) and `cv`."""
    cv = max(cv, 1e-3)
    if dist == "exponential":
        return stats.expon(scale=mean)
    if dist == "gamma":
        k = 1.0 / cv**2
        return stats.gamma(k, scale=mean / k)
    if dist == "weibull":
        k = _weibull_shape_for_cv(cv)
        return stats.weibull_min(k, scale=mean / math.exp(special.gammaln(1 + 1 / k)))
    raise InvalidInputError(f"unknown arrival family {dist!r}; use gamma, weibull or exponential")


# -- fitting ---------------------------------------------------------------------------------
def fit_windows(src, trace: str | None = None, window_s: float = 600.0) -> list[Window]:
    """Per-window arrival parameters of a trace (see module docstring): rate, gap CV and
    the family (gamma or Weibull moment-matched to them) that fits the window's gaps best
    by KS; windows with fewer than MIN_WINDOW_GAPS gaps borrow the trace-wide CV."""
    s = source(src, trace, "llm_requests")
    gaps = s.sql(f"""
        SELECT floor((arrival_s - (SELECT min(arrival_s) FROM t)) / {window_s})::BIGINT AS k,
               arrival_s - lag(arrival_s) OVER (ORDER BY arrival_s, request_id) AS gap
        FROM t WHERE arrival_s IS NOT NULL""")
    if gaps.height < 2:
        raise InvalidInputError(f"{s.name}: needs at least two arrival times to fit arrivals")
    g_all = gaps["gap"].drop_nulls().to_numpy()
    cv_all = float(g_all.std() / g_all.mean()) if g_all.mean() > 0 else 1.0
    span = float(s.scalar("SELECT max(arrival_s) - min(arrival_s) FROM t")) + float(g_all.mean())
    n_windows = int(span // window_s) + (1 if span % window_s > 0 else 0)
    by_k = {k: sub["gap"].drop_nulls().to_numpy()
            for (k,), sub in gaps.group_by("k", maintain_order=True)}
    counts = dict(gaps.group_by("k").len().iter_rows())
    out = []
    for k in range(n_windows):
        start = k * window_s
        dur = min(window_s, span - start)
        n = counts.get(k, 0)
        g = by_k.get(k, np.empty(0))
        cv, dist = cv_all, "gamma"
        if g.size >= MIN_WINDOW_GAPS and g.mean() > 0:
            cv = float(g.std() / g.mean())
            ks = {d: stats.kstest(g, gap_distribution(g.mean(), cv, d).cdf).statistic
                  for d in ("gamma", "weibull")}
            dist = min(ks, key=ks.get)
        out.append(Window(start, dur, n / dur if dur > 0 else 0.0, cv, dist))
    return out


def _fit_lengths(s, bins: int) -> tuple[list[float], list[list[float]]]:
    probs = ", ".join(f"{i / 1000:.3f}" for i in range(1001))
    oprobs = ", ".join(f"{i / 100:.2f}" for i in range(101))
    pq = s.scalar(f"SELECT quantile_cont(prompt_tokens, [{probs}]) FROM t")
    oq = s.sql(f"""
        SELECT b, quantile_cont(output_tokens, [{oprobs}]) AS q FROM (
            SELECT ntile({bins}) OVER (ORDER BY prompt_tokens) AS b, output_tokens FROM t)
        GROUP BY b ORDER BY b""")
    return [float(v) for v in pq], [[float(v) for v in row] for row in oq["q"].to_list()]


def _fit_reuse(s) -> list[float] | None:
    if not s.has_values("prefix_hashes"):
        return None
    from servecast.analytics.prefix_cache import block_accesses

    blocks, req = block_accesses(s)
    _, first = np.unique(blocks, return_index=True)
    seen = np.ones(blocks.size, dtype=bool)
    seen[first] = False
    # leading run of seen blocks per request, as a share of the request's blocks
    df = pl.DataFrame({"r": req, "seen": seen}).with_columns(
        pl.col("seen").not_().cum_sum().over("r").alias("misses"))
    lead = df.group_by("r").agg((pl.col("misses") == 0).sum().alias("lead"), pl.len().alias("n"))
    share = (lead["lead"] / lead["n"]).to_numpy()
    return [float(v) for v in np.quantile(share, np.linspace(0, 1, 101))]


def _fit_sessions(s) -> tuple[list[float] | None, list[float] | None]:
    """(turns-per-session quantiles, inter-turn gap quantiles in s), or Nones without
    sessions or arrival times."""
    if not (s.has_values("session_id") and s.has_values("arrival_s")):
        return None, None
    q = np.linspace(0, 1, 101)
    per = s.sql("SELECT count(*) AS turns FROM t WHERE session_id IS NOT NULL "
                "GROUP BY session_id")["turns"].to_numpy()
    gaps = s.sql("""
        SELECT arrival_s - lag(arrival_s) OVER (PARTITION BY session_id
                                                ORDER BY arrival_s, request_id) AS gap
        FROM t WHERE session_id IS NOT NULL AND arrival_s IS NOT NULL""")["gap"]
    gaps = gaps.drop_nulls().to_numpy()
    think = [float(v) for v in np.quantile(gaps, q)] if gaps.size else None
    return [float(v) for v in np.quantile(per, q)], think


def fit_workload(src, trace: str | None = None, window_s: float = 600.0,
                 length_bins: int = 20) -> WorkloadModel:
    """Fit a `WorkloadModel` to an LLM request trace (windows of `window_s` seconds)."""
    s = source(src, trace, "llm_requests")
    segs = s.sql("""SELECT model, log_type, count(*) / sum(count(*)) OVER () AS share
                    FROM t GROUP BY ALL ORDER BY share DESC""")
    prompt_q, output_q = _fit_lengths(s, length_bins)
    turns, think = _fit_sessions(s)
    return WorkloadModel(
        source=s.name, window_s=window_s, windows=fit_windows(s, window_s=window_s),
        prompt_quantiles=prompt_q, output_quantiles=output_q, segments=segs.to_dicts(),
        reuse_quantiles=_fit_reuse(s), session_turns=turns, think_s=think)


def read_windows(path: str | Path) -> list[Window]:
    """ServeGen-style per-window arrival parameters from CSV (header start_s,rate,cv[,dist]
    [,duration_s]) or JSON (a list of such objects). Rates in req/s, start in s."""
    path = Path(path)
    try:
        rows = (json.loads(path.read_text()) if path.suffix == ".json"
                else pl.read_csv(path).to_dicts())
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such window-parameter file") from None
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise DataFileError(f"{path}: cannot read window parameters ({e})") from None
    rows = sorted(rows, key=lambda r: float(r.get("start_s", 0)))
    out = []
    for i, r in enumerate(rows):
        for col in ("start_s", "rate"):
            if r.get(col) is None:
                raise DataFileError(f"{path}: row {i + 1}: missing {col}; expected columns "
                                    "start_s,rate,cv[,dist][,duration_s]")
        start, rate = float(r["start_s"]), float(r["rate"])
        nxt = float(rows[i + 1]["start_s"]) if i + 1 < len(rows) else None
        dur = float(r.get("duration_s") or ((nxt - start) if nxt is not None else 600.0))
        if rate < 0 or dur <= 0:
            raise DataFileError(f"{path}: row {i + 1}: rate must be >= 0 and windows must "
                                "have positive duration (increasing start_s)")
        out.append(Window(start, dur, rate, float(r.get("cv") or 1.0), r.get("dist") or "gamma"))
    return out


# -- sampling --------------------------------------------------------------------------------
def sample_arrivals(windows: list[Window], duration_s: float, rate_scale: float = 1.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Arrival times (s) over [0, duration_s): a renewal process whose gap family, mean
    1/(rate * rate_scale) and CV follow the window in force (windows repeat cyclically)."""
    if rate_scale <= 0 or duration_s <= 0:
        raise InvalidInputError("rate scale and duration must be positive")
    rng = rng or np.random.default_rng(0)
    if not windows:
        raise InvalidInputError("no arrival windows to sample from")
    origin = windows[0].start_s
    cycle = windows[-1].start_s + windows[-1].duration_s - origin
    out, last, t0 = [], None, 0.0
    while t0 < duration_s:
        for w in windows:
            start = t0 + (w.start_s - origin)
            end = min(start + w.duration_s, duration_s)
            if start >= duration_s:
                break
            rate = w.rate * rate_scale
            if rate <= 0:
                last = None  # nothing in flight across an empty window
                continue
            dist = gap_distribution(1.0 / rate, w.cv, w.dist)
            t = last if last is not None else start
            chunk = []
            while t < end:
                n = int((end - t) * rate * 1.3) + 64
                ts = t + np.cumsum(dist.rvs(size=n, random_state=rng))
                chunk.append(ts[ts < end])
                t = ts[-1]
            pts = np.concatenate(chunk) if chunk else np.empty(0)
            pts = pts[pts >= start]
            out.append(pts)
            last = pts[-1] if pts.size else last
        t0 += cycle
    arr = np.concatenate(out) if out else np.empty(0)
    return arr[arr < duration_s]


def sample_lengths(model: WorkloadModel, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) token counts of `n` requests from the length model."""
    pq = np.asarray(model.prompt_quantiles)
    oq = np.asarray(model.output_quantiles)
    u = rng.random(n)
    prompt = np.interp(u, np.linspace(0, 1, pq.size), pq)
    b = np.minimum((u * oq.shape[0]).astype(int), oq.shape[0] - 1)
    v = rng.random(n) * (oq.shape[1] - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, oq.shape[1] - 1)
    out = oq[b, lo] + (oq[b, hi] - oq[b, lo]) * (v - lo)
    return np.rint(prompt).astype(np.int64), np.rint(out).astype(np.int64)


def _sample_prefixes(model: WorkloadModel, prompt: np.ndarray,
                     rng: np.random.Generator, recent: int = 256) -> list[list[int]]:
    """Prefix block ids per request: a reused leading share copied from a recent request."""
    nblocks = np.maximum(1, -(-prompt // BLOCK_TOKENS))
    rq = np.asarray(model.reuse_quantiles) if model.reuse_quantiles else None
    share = (np.interp(rng.random(prompt.size), np.linspace(0, 1, rq.size), rq)
             if rq is not None else np.zeros(prompt.size))
    out: list[list[int]] = []
    next_id = 0
    for i, nb in enumerate(nblocks.tolist()):
        k = int(round(share[i] * nb))
        prefix: list[int] = []
        if k and out:
            src = out[int(rng.integers(max(0, len(out) - recent), len(out)))]
            prefix = src[:k]
        fresh = list(range(next_id, next_id + nb - len(prefix)))
        next_id += len(fresh)
        out.append(prefix + fresh)
    return out


def _deal_sessions(model: WorkloadModel, t: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Session id and turn (1-based) of each arrival (see module docstring)."""
    q = np.linspace(0, 1, len(model.session_turns))
    turns_q = np.asarray(model.session_turns)
    think_q = np.asarray(model.think_s) if model.think_s else np.zeros(q.size)
    u_turns, u_think = rng.random(t.size), rng.random(t.size)
    due: list[tuple[float, int, int, int]] = []  # (next turn due, session, turn, turns left)
    sids, turns, opened = [], [], 0
    for i, ti in enumerate(t.tolist()):
        if due and due[0][0] <= ti:
            _, sid, turn, left = heapq.heappop(due)
        else:
            sid, turn, opened = opened, 0, opened + 1
            left = max(1, int(round(np.interp(u_turns[i], q, turns_q))))
        turn, left = turn + 1, left - 1
        if left:
            heapq.heappush(due, (ti + float(np.interp(u_think[i], q, think_q)), sid, turn,
                                 left))
        sids.append(f"s{sid}")
        turns.append(turn)
    return sids, turns


def synthesize(model: WorkloadModel, duration_s: float, rate_scale: float = 1.0,
               seed: int = 0, with_prefixes: bool = False) -> pl.DataFrame:
    """A synthetic trace: arrival_s (s), prompt_tokens, output_tokens, model, log_type
    (NULL where the source has none), session_id and turn (NULL unless the source has
    sessions) and prefix_hashes with `with_prefixes`, ordered by arrival."""
    rng = np.random.default_rng(seed)
    t = sample_arrivals(model.windows, duration_s, rate_scale, rng)
    prompt, output = sample_lengths(model, t.size, rng)
    df = pl.DataFrame({"arrival_s": t, "prompt_tokens": prompt, "output_tokens": output})
    segs = [s for s in model.segments if s.get("share")]
    if segs and any(s.get("model") or s.get("log_type") for s in segs):
        p = np.array([s["share"] for s in segs], dtype=float)
        idx = rng.choice(len(segs), size=t.size, p=p / p.sum())
        df = df.with_columns(
            pl.Series("model", [segs[i]["model"] for i in idx], dtype=pl.Utf8),
            pl.Series("log_type", [segs[i]["log_type"] for i in idx], dtype=pl.Utf8))
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias("model"),
                             pl.lit(None, dtype=pl.Utf8).alias("log_type"))
    if with_prefixes:
        df = df.with_columns(pl.Series("prefix_hashes", _sample_prefixes(model, prompt, rng),
                                       dtype=pl.List(pl.Int64)))
    sids, turns = _deal_sessions(model, t, rng) if model.session_turns else ([None] * t.size,
                                                                            [None] * t.size)
    return df.with_columns(pl.Series("session_id", sids, dtype=pl.Utf8),
                           pl.Series("turn", turns, dtype=pl.Int32))
