"""A user's own request logs (gateway logs, engine request logs): CSV, JSONL or Parquet with
a column mapping from canonical `llm_requests` fields to the file's columns.

The mapping comes from the command line (`--map prompt_tokens=usage.prompt_tokens`,
`--unit ttft_s=ms`) or a small TOML / YAML / JSON file with a `map` and a `units` table.
A source path is a column name or a dotted path into a JSON object (an OpenAI `usage`
block, in a JSONL line, a CSV cell holding JSON or a Parquet struct).

Units. `arrival_s`: `iso` (ISO-8601, with or without an offset; naive times are UTC),
`epoch-s` / `epoch-ms` / `epoch-us` / `epoch-ns`, relative `s` / `ms`, or `auto` (the
default: ISO text or an epoch unit told by magnitude; relative numbers must be declared).
Latencies (`elapsed_s`, `ttft_s`, `tpot_s`, `queue_s`): `s`, `ms`, `us` or `ns`, declared
per field or for all (`latency`), or read from a `_s` / `_ms` / `_us` / `_ns` suffix of the
column name. Everything is read by DuckDB's own readers; rows that fail a check go to
`rejected_rows` with their line and the field (and its source path) that failed.
`failed`: a mapped `error` that is not empty, or a mapped `status` that is not a success
(2xx, ok, success, completed, ...); with neither, zero output tokens (BurstGPT's rule).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from servecast.datasets.base import Adapter, Catalog
from servecast.datasets.requests import LATENCIES, insert_requests, rebase_arrivals
from servecast.datasets.staging import (
    enum_of,
    number_rows,
    open_text,
    read_header,
    stage_csv,
    stage_lines,
)
from servecast.errors import DataFileError, ServecastError

#: canonical fields a mapping may name -> value kind
FIELDS = {
    "arrival_s": "time", "prompt_tokens": "count", "output_tokens": "count", "turn": "count",
    "elapsed_s": "latency", "ttft_s": "latency", "tpot_s": "latency", "queue_s": "latency",
    "model": "text", "session_id": "text", "log_type": "text", "status": "text",
    "error": "text", "prompt_text": "text", "response_text": "text",
}
#: short names accepted for the canonical fields
ALIASES = {"timestamp": "arrival_s", "arrival": "arrival_s", "time": "arrival_s",
           "e2e": "elapsed_s", "latency": "elapsed_s", "elapsed": "elapsed_s",
           "ttft": "ttft_s", "tpot": "tpot_s", "itl": "tpot_s", "queue": "queue_s"}
REQUIRED = ("prompt_tokens", "output_tokens")

#: seconds per unit of an epoch / relative timestamp; latency units
EPOCH = {"epoch-s": 1.0, "epoch-ms": 1e3, "epoch-us": 1e6, "epoch-ns": 1e9}
RELATIVE = {"s": 1.0, "ms": 1e3}
TIME_UNITS = ["auto", "iso", *EPOCH, *RELATIVE]
LATENCY_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
#: epoch seconds a timestamp must fall in (1973-03 .. 5138-11): outside, its unit is wrong
EPOCH_RANGE = (1e8, 1e11)
#: a latency column whose median (s) is outside this range is in another unit than declared
PLAUSIBLE_MEDIAN_S = (1e-4, 600.0)
SUCCESS = r"^(2[0-9][0-9]|ok|success|successful|succeeded|complete|completed|finished|stop|length)$"


@dataclass(frozen=True)
class Mapping:
    """Canonical field -> source path, and field -> unit (see the module docstring)."""

    fields: dict[str, str]
    units: dict[str, str] = field(default_factory=dict)
    origin: str = "--map"  # where it came from, for error messages

    @classmethod
    def parse(cls, pairs: Iterable[str] = (), file: Path | None = None,
              units: Iterable[str] = ()) -> Mapping:
        """Build a mapping from `FIELD=PATH` pairs, a mapping file and `FIELD=UNIT` pairs
        (command-line pairs override the file). Raises ServecastError naming the bad entry."""
        fields: dict[str, str] = {}
        unit_of: dict[str, str] = {}
        origin = "--map"
        if file is not None:
            data = _read_mapping_file(Path(file))
            fields |= {_field(k, file): _path(v, k, file) for k, v in data["map"].items()}
            unit_of |= {_unit_key(k, file): str(v) for k, v in data.get("units", {}).items()}
            origin = str(file)
        for pair in pairs:
            k, v = _pair(pair, "--map", "prompt_tokens=usage.prompt_tokens")
            fields[_field(k, "--map")] = v
        for pair in units:
            k, v = _pair(pair, "--unit", "ttft_s=ms")
            unit_of[_unit_key(k, "--unit")] = v
        missing = [f for f in REQUIRED if f not in fields]
        if missing:
            raise ServecastError(
                f"{origin}: the mapping has no {', '.join(missing)}; map them to your columns, "
                "e.g. --map prompt_tokens=usage.prompt_tokens --map "
                "output_tokens=usage.completion_tokens")
        mapping = cls(fields, unit_of, origin)
        mapping.time_unit()
        for f in mapping.fields:
            if FIELDS[f] == "latency":
                mapping.latency_scale(f)
        return mapping

    def time_unit(self) -> str:
        unit = self.units.get("arrival_s", "auto")
        if unit not in TIME_UNITS:
            raise ServecastError(
                f"{self.origin}: unknown timestamp unit {unit!r}; use one of "
                f"{', '.join(TIME_UNITS)}")
        return unit

    def latency_scale(self, name: str) -> float:
        """Source units per second of latency field `name` (declared, or from a suffix)."""
        path = self.fields[name]
        unit = self.units.get(name) or self.units.get("latency")
        if unit is None:
            m = re.search(r"[_.-](s|ms|us|ns)$", path.lower())
            unit = m.group(1) if m else None
        if unit is None:
            raise ServecastError(
                f"{self.origin}: declare the unit of {name} ({path!r}): --unit {name}=ms "
                f"(or s, us, ns), or --unit latency=ms for every latency field")
        if unit not in LATENCY_UNITS:
            raise ServecastError(
                f"{self.origin}: unknown latency unit {unit!r} for {name}; use one of "
                f"{', '.join(LATENCY_UNITS)}")
        return LATENCY_UNITS[unit]


def _pair(text: str, option: str, example: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not sep or not k.strip() or not v.strip():
        raise ServecastError(f"{option} {text!r}: expected FIELD=VALUE, e.g. {option} {example}")
    return k.strip(), v.strip()


def _field(name: str, where) -> str:
    name = ALIASES.get(name, name)
    if name not in FIELDS:
        raise ServecastError(
            f"{where}: unknown field {name!r}; map one of {', '.join(FIELDS)} "
            f"(or {', '.join(ALIASES)})")
    return name


def _unit_key(name: str, where) -> str:
    return name if name == "latency" else _field(name, where)


def _path(value, key: str, where) -> str:
    if not isinstance(value, str) or not value:
        raise ServecastError(f"{where}: map.{key} must be a column name or dotted path")
    return value


def _read_mapping_file(path: Path) -> dict:
    """The `map` / `units` tables of a TOML, YAML or JSON mapping file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read the mapping file ({e.strerror})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise DataFileError(f"{path}: a mapping file is .toml, .yaml or .json")
    except DataFileError:
        raise
    except Exception as e:  # each parser has its own error type
        raise DataFileError(f"{path}: not valid {suffix[1:].upper()} ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("map"), dict):
        raise DataFileError(
            f"{path}: expected a `map` table (field = source path) and optionally `units`, "
            'e.g. [map] prompt_tokens = "usage.prompt_tokens"')
    if not isinstance(data.get("units", {}), dict):
        raise DataFileError(f"{path}: `units` must be a table (field = unit)")
    return data


def _json_path(parts: list[str]) -> str:
    return "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in parts)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _keys(obj, prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted paths of the keys of a JSON object (nested objects to `depth`)."""
    out = []
    for k, v in obj.items():
        out.append(prefix + k)
        if isinstance(v, dict) and depth > 1:
            out += _keys(v, prefix + k + ".", depth - 1)
    return out


class UserLog(Adapter):
    """Adapter for a user's own logs; `Store.ingest` takes an instance made with a Mapping."""

    name = "user-log"
    table = "llm_requests"
    patterns = ("*.csv", "*.csv.gz", "*.jsonl", "*.jsonl.gz", "*.parquet")
    catalog = Catalog(
        format="your CSV / JSONL / Parquet request log with a column mapping: "
        "--map FIELD=COLUMN or dotted.path (or --mapping FILE.toml|yaml|json), "
        "--unit arrival_s=iso|epoch-ms|s ..., --unit ttft_s=ms",
        url="(your own logs)",
        license="yours",
        citation="-",
    )

    def __init__(self, mapping: Mapping | None = None):
        self.mapping = mapping

    def load(self, ctx, files: list[Path]):
        if self.mapping is None:
            raise ServecastError(
                "user-log needs a column mapping: --map prompt_tokens=COLUMN --map "
                "output_tokens=COLUMN ... or --mapping FILE (see `servecast ingest --help`)")
        counts = {}
        for f in files:
            kind = _kind(f)
            helpers = getattr(self, f"_stage_{kind}")(ctx, f)
            counts |= self._convert(ctx, f, helpers, header_lines=int(kind == "csv"))
        return counts

    # -- reading: every mapped field as text `_r_<field>` ----------------------------------
    def _stage_jsonl(self, ctx, f: Path) -> list[str]:
        v = "CASE WHEN json_valid(j) THEN j END"
        sel = ["json_valid(j) AS _valid"]
        for name, path in self.mapping.fields.items():
            jp = _lit(_json_path(path.split(".")))
            sel += [f"json_extract_string({v}, {jp}) AS _r_{name}",
                    f"json_exists({v}, {jp}) AS _x_{name}"]
        stage_lines(ctx, [f], ", ".join(sel))
        ctx.con.execute("DELETE FROM _stage WHERE _valid IS NULL")  # blank lines
        present = ctx.con.execute("SELECT " + ", ".join(
            f"bool_or(_x_{n})" for n in self.mapping.fields) + " FROM _stage").fetchall()[0]
        missing = [n for n, p in zip(self.mapping.fields, present, strict=True) if not p]
        if missing:
            raise DataFileError(self._missing(f, missing, _first_keys(f)))
        return ["_valid", *(f"_x_{n}" for n in self.mapping.fields)]

    def _stage_csv(self, ctx, f: Path) -> list[str]:
        header = read_header(f)
        cols = [(h, f"c{i}", "VARCHAR") for i, h in enumerate(header)]
        exprs, missing = [], []
        for name, path in self.mapping.fields.items():
            col = _column(path, header)
            if col is None:
                missing.append(name)
                continue
            i, rest = col
            exprs.append(f"c{i} AS _r_{name}" if not rest else
                         f"json_extract_string(c{i}, {_lit(_json_path(rest))}) AS _r_{name}")
        if missing:
            raise DataFileError(self._missing(f, missing, header))
        stage_csv(ctx, [f], cols, ", ".join(exprs))
        return []

    def _stage_parquet(self, ctx, f: Path) -> list[str]:
        con = ctx.con
        try:
            schema = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE "
                                      "SELECT * FROM read_parquet(?))", [str(f)]).fetchall())
        except duckdb.Error as e:
            raise DataFileError(f"{f}: cannot be read as Parquet ({str(e).splitlines()[0]})") \
                from None
        exprs, missing = [], []
        for name, path in self.mapping.fields.items():
            col = _column(path, list(schema))
            if col is None:
                missing.append(name)
                continue
            i, rest = col
            top = list(schema)[i]
            if rest and schema[top].startswith("STRUCT"):
                expr = ".".join(map(_q, [top, *rest]))
            elif rest:
                expr = f"json_extract_string({_q(top)}::VARCHAR, {_lit(_json_path(rest))})"
            else:
                expr = _q(top)
            exprs.append(f"CAST({expr} AS VARCHAR) AS _r_{name}")
        if missing:
            raise DataFileError(self._missing(f, missing, list(schema)))
        try:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _stage AS SELECT {', '.join(exprs)},
                            filename::{enum_of([f])} AS filename
                            FROM read_parquet(?, filename=true)""", [str(f)])
        except duckdb.Error as e:
            raise DataFileError(f"{f}: cannot be read as Parquet ({str(e).splitlines()[0]}); "
                                "check the mapping against its columns") from None
        number_rows(ctx, "_stage")
        return []

    def _missing(self, f: Path, names: list[str], found: list[str]) -> str:
        wanted = ", ".join(f"{n}={self.mapping.fields[n]!r}" for n in names)
        return (f"{f}: the mapping ({self.mapping.origin}) names fields the file does not "
                f"have: {wanted}; the file has: {', '.join(found) or '(nothing)'}. Fix the "
                "mapping (a dotted path reaches into a JSON object)")

    # -- typing, units and checks ------------------------------------------------------------
    def _convert(self, ctx, f: Path, helpers: list[str], header_lines: int):
        con, m = ctx.con, self.mapping
        checks: list[tuple[str, str]] = []
        if helpers and helpers[0] == "_valid":
            checks.append(("NOT _valid", "line is not valid JSON"))
        typed = []
        for name, path in m.fields.items():
            kind, raw = FIELDS[name], f"_r_{name}"
            where = f"{name} ({path})"
            if kind == "text":
                expr, typ = raw, "VARCHAR"
            elif kind == "time":
                expr, typ = self._time(ctx, f, checks), "DOUBLE"
            else:
                expr, typ = f"TRY_CAST({raw} AS DOUBLE)", "DOUBLE"
                checks.append((f"{raw} IS NOT NULL AND TRY_CAST({raw} AS DOUBLE) IS NULL",
                               f"{where} is not a number"))
                if kind == "latency":
                    expr = f"{expr} / {m.latency_scale(name)}"
            if name == "turn":
                checks.append(("turn <> trunc(turn)", f"{where} is not a whole number"))
            typed.append((name, typ, expr))
        for name, typ, _ in typed:
            con.execute(f"ALTER TABLE _stage ADD COLUMN {name} {typ}")
        con.execute("UPDATE _stage SET " + ", ".join(f"{n} = {e}" for n, _, e in typed))
        if "turn" in m.fields:  # checked as DOUBLE above, stored as INTEGER
            checks.append(("turn < 0 OR turn > 2147483647", "turn (" + m.fields["turn"]
                           + ") out of range"))
        self._check_latency_units(ctx, f)
        if "arrival_s" in m.fields:
            rebase_arrivals(ctx, "_stage")
        counts = insert_requests(
            ctx, "_stage", [f], checks=checks, failed=self._failed(),
            header_lines=header_lines,
            drop=[*helpers, *(f"_r_{n}" for n in m.fields)])
        if "_stage" in ctx.row_numbered:  # Parquet: every row is a stage row
            (total,) = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)",
                                   [str(f)]).fetchall()[0]
            if sum(counts[f]) != total:
                raise DataFileError(f"{f}: holds {total:,} rows but {sum(counts[f]):,} were "
                                    "accounted for; nothing was ingested")
        return counts

    def _time(self, ctx, f: Path, checks: list[tuple[str, str]]) -> str:
        """SQL for arrival_s from `_r_arrival_s` (epoch or relative seconds, rebased later);
        appends the row checks of its unit to `checks`."""
        path = self.mapping.fields["arrival_s"]
        where = f"arrival_s ({path})"
        raw, num = "_r_arrival_s", "TRY_CAST(_r_arrival_s AS DOUBLE)"
        iso = f"TRY_CAST({raw} AS TIMESTAMPTZ)"
        unit = self.mapping.time_unit()
        if unit == "auto":
            unit = self._detect_time(ctx, f, where)
        if unit == "iso":
            checks.append((f"{raw} IS NOT NULL AND {iso} IS NULL",
                           f"{where} is not an ISO-8601 date-time (mixed formats?)"))
            return f"epoch({iso})"
        checks.append((f"{raw} IS NOT NULL AND {num} IS NULL",
                       f"{where} is not a number ({unit} declared or detected)"))
        if unit in EPOCH:
            lo, hi = (x * EPOCH[unit] for x in EPOCH_RANGE)
            checks.append((f"abs({num}) < {lo} OR abs({num}) >= {hi}",
                           f"{where} is out of range for {unit} (a timestamp in another "
                           "unit? mixed units)"))
            return f"{num} / {EPOCH[unit]}"
        return f"{num} / {RELATIVE[unit]}"

    def _detect_time(self, ctx, f: Path, where: str) -> str:
        """The unit of the file's timestamps, told from their text / magnitude (the majority
        of rows decides; the others are rejected as mixed)."""
        raw = "_r_arrival_s"
        numeric, iso, median, first = ctx.con.execute(f"""
            SELECT count(TRY_CAST({raw} AS DOUBLE)),
                   count(*) FILTER (TRY_CAST({raw} AS DOUBLE) IS NULL
                                    AND TRY_CAST({raw} AS TIMESTAMPTZ) IS NOT NULL),
                   median(abs(TRY_CAST({raw} AS DOUBLE))), any_value({raw})
            FROM _stage""").fetchall()[0]
        if not numeric and not iso:
            raise DataFileError(
                f"{f}: no value of {where} is an ISO-8601 date-time or a number (first: "
                f"{first!r}); map the timestamp column or declare --unit arrival_s=iso|"
                "epoch-s|epoch-ms|epoch-us|epoch-ns|s|ms")
        if iso >= numeric:
            return "iso"
        for unit, scale in EPOCH.items():
            if EPOCH_RANGE[0] * scale <= median < EPOCH_RANGE[1] * scale:
                return unit
        raise DataFileError(
            f"{f}: {where} holds numbers around {median:g}, too small for epoch time: "
            "relative times whose unit cannot be told; declare it: --unit arrival_s=s or "
            "--unit arrival_s=ms")

    def _check_latency_units(self, ctx, f: Path) -> None:
        """Refuse a latency column whose typical value says it is in another unit."""
        lo, hi = PLAUSIBLE_MEDIAN_S
        for name in LATENCIES:
            if name not in self.mapping.fields:
                continue
            (med,) = ctx.con.execute(
                f"SELECT median({name}) FILTER ({name} > 0 AND isfinite({name})) "
                "FROM _stage").fetchall()[0]
            if med is None or lo <= med <= hi:
                continue
            path = self.mapping.fields[name]
            guess = "ms (or us)" if med > hi else "s"
            raise DataFileError(
                f"{f}: {name} ({path!r}) has a median of {med:g} s after unit conversion, "
                f"not a plausible latency: is the column in {guess}? Declare its unit: "
                f"--unit {name}=ms|s|us|ns; nothing was ingested")

    def _failed(self) -> str:
        conds = []
        if "error" in self.mapping.fields:
            conds.append("coalesce(trim(error), '') NOT IN ('', 'null', 'None')")
        if "status" in self.mapping.fields:
            conds.append(f"NOT coalesce(regexp_matches(lower(trim(status)), {_lit(SUCCESS)}), "
                         "status IS NULL)")
        return " OR ".join(conds) if conds else "output_tokens = 0"


def _kind(f: Path) -> str:
    name = f.name.removesuffix(".gz")
    for suffix, kind in ((".csv", "csv"), (".jsonl", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return kind
    raise DataFileError(f"{f}: user-log reads .csv, .jsonl (optionally .gz) and .parquet "
                        "files; rename or convert it")


def _column(path: str, names: list[str]) -> tuple[int, list[str]] | None:
    """(index of the column, JSON path inside it) for `path`: the whole path as a column
    name first, then its longest dotted prefix (case-insensitive as a fallback)."""
    parts = path.split(".")
    for exact in (True, False):
        for n in range(len(parts), 0, -1):
            head = ".".join(parts[:n])
            for i, name in enumerate(names):
                if name == head if exact else name.lower() == head.lower():
                    return i, parts[n:]
    return None


def _first_keys(f: Path) -> list[str]:
    """Dotted key paths of the first JSON object line of `f` (for error messages)."""
    with open_text(f) as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return _keys(obj)
    return []
