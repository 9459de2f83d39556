"""Every file of every shared dataset ingests with its adapter, and nothing is lost:
accepted + rejected rows in the `traces` manifest equal the data rows of the source file,
counted here independently with the csv/gzip/json modules. Spot checks of canonical content
against values computed from the raw files."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from servecast.datasets.catalog import AWAITING_ADAPTERS, SHARED, shared_path

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

PROMPT_ROLES = {"human", "user"}
REPLY_ROLES = {"gpt", "chatgpt", "assistant", "bing", "bard"}


# -- independent readers of the raw files -------------------------------------------------
def raw_bytes(path: Path) -> bytes:
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as fh:
        return fh.read()


@cache
def lines_of(path: Path) -> tuple[bytes, ...]:
    """Non-blank lines of a (possibly gzipped) text file."""
    return tuple(line for line in raw_bytes(path).split(b"\n") if line.strip())


def csv_records(path: Path) -> list[list[str]]:
    """Non-blank CSV records of a file, header first."""
    text = raw_bytes(path).decode("utf-8", errors="replace")
    return [r for r in csv.reader(io.StringIO(text, newline="")) if r]


def simple_csv(path: Path) -> list[list[str]]:
    """Records of a CSV file without quoting (asserted), split on commas; header first."""
    lines = lines_of(path)
    assert not any(b'"' in line for line in lines)
    return [line.decode().rstrip("\r").split(",") for line in lines]


@cache
def csv_data_rows(path: Path) -> int:
    """Data records of a CSV file (header excluded, blank lines ignored)."""
    lines = lines_of(path)
    if all(line.count(b'"') % 2 == 0 for line in lines):  # no quoted line breaks
        return len(lines) - 1
    return len(csv_records(path)) - 1


@cache
def sharegpt(path: Path) -> list[dict]:
    return json.loads(raw_bytes(path))


def jsonl_rows(path: Path) -> int:
    return sum(1 for line in raw_bytes(path).split(b"\n") if line.strip())


def sharegpt_pairs(path: Path) -> int:
    """Adjacent (human|user -> gpt|chatgpt|assistant|bing|bard) message pairs."""
    n = 0
    for conv in sharegpt(path):
        msgs = conv.get("conversations") or []
        n += sum(1 for a, b in zip(msgs, msgs[1:], strict=False)
                 if a["from"].lower() in PROMPT_ROLES and b["from"].lower() in REPLY_ROLES)
    return n


def device_rows(files: list[Path]) -> dict[Path, int]:
    """NeuSight device configs: 1 row per device the first time it appears (path order)."""
    seen, out = set(), {}
    for f in sorted(files):
        device = json.loads(f.read_text())["Device"]
        out[f] = int(device not in seen)
        seen.add(device)
    return out


def data_files(root: Path) -> list[Path]:
    """Every data file under `root` (a file or a folder), READMEs excluded."""
    if root.is_file():
        return [root]
    return sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith("README"))


def aiconfigurator_rows(files: list[Path]) -> dict[Path, int]:
    """aiconfigurator: Parquet row counts from the file metadata (pyarrow); 1 device row per
    systems/*.yaml; provenance files (collection meta, LICENSE) 0."""
    import pyarrow.parquet as pq

    out = {}
    for f in files:
        if f.suffix == ".parquet":
            out[f] = pq.ParquetFile(f).metadata.num_rows
        else:
            out[f] = int(f.parent.name == "systems" and f.suffix == ".yaml")
    return out


def expected_rows(source: str, files: list[Path]) -> dict[Path, int]:
    """Data rows of each source file, by file kind."""
    out = {}
    jsons = [f for f in files if f.suffix == ".json"]
    if source == "neusight":
        out |= device_rows(jsons)
    if source == "aiconfigurator":
        return aiconfigurator_rows(files)
    if source == "neusight-e2e":  # label JSONs 1 row, model configs 0, CSVs one per record
        return {f: (int(f.parent.parent.name == "label") if f.suffix == ".json"
                    else csv_data_rows(f)) for f in files}
    for f in files:
        if f in out:
            continue
        if f.name == "LICENSE":  # provenance, listed with 0 rows
            out[f] = 0
            continue
        name = f.name.removesuffix(".gz")
        if source == "sharegpt":
            out[f] = sharegpt_pairs(f)
        elif name.endswith(".jsonl"):
            out[f] = jsonl_rows(f)
        elif name.endswith(".json"):  # HELP split.json: one row per list item
            out[f] = sum(len(v) for v in json.loads(f.read_text()).values())
        else:
            out[f] = csv_data_rows(f)
    return out


# -- manifest completeness ------------------------------------------------------------------
def test_catalog_covers_every_shared_file(data):
    """The catalog names every data file of the shared folder (nothing left un-ingested)
    except the folders listed as awaiting their adapters; each of those holds files no
    adapter reads yet (when one lands, its folder leaves AWAITING_ADAPTERS)."""
    covered = {f for _, rel, _ in SHARED for f in data_files(shared_path(rel, data))}
    awaiting = {rel: set(data_files(shared_path(rel, data))) for rel in AWAITING_ADAPTERS}
    for rel, files in awaiting.items():
        assert files and not files & covered, rel
    everything = set(data_files(data))
    assert everything - covered - set().union(*awaiting.values()) == set()



def manifest(store, trace: str) -> dict[str, tuple[int, int]]:
    rows = store.con.execute(
        "SELECT file, rows, rejected FROM traces WHERE trace = ?", [trace]).fetchall()
    return {f: (a, r) for f, a, r in rows}


@pytest.mark.parametrize(("source", "rel", "trace"), SHARED, ids=[t for _, _, t in SHARED])
def test_every_row_accounted_for(shared_store, data, source, rel, trace):
    """accepted + rejected in the manifest == data rows in the file, for every file."""
    files = data_files(shared_path(rel, data))
    got = manifest(shared_store, trace)
    assert set(got) == {str(f) for f in files}, "manifest lists exactly the trace's files"
    expected = expected_rows(source, files)
    mismatches = {str(f): (got[str(f)], n) for f, n in expected.items() if sum(got[str(f)]) != n}
    assert mismatches == {}
    assert sum(n for n in expected.values()) > 0
    # the manifest's rejected counts are the rows in rejected_rows
    (rejected,) = shared_store.con.execute(
        "SELECT count(*) FROM rejected_rows WHERE trace = ?", [trace]).fetchall()[0]
    assert rejected == sum(r for _, r in got.values())


SINGLE_TABLE = [t for s, _, t in SHARED if s in (
    "azure-llm", "burstgpt", "mooncake", "sharegpt", "length-stats", "alibaba-v2017",
    "alibaba-gpu-v2025", "philly-runtime", "azure-vm-noise", "olmoe-routing")]


@pytest.mark.parametrize("trace", SINGLE_TABLE)
def test_canonical_table_holds_the_accepted_rows(shared_store, trace):
    table = shared_store.table_of(trace)
    (n,) = shared_store.con.execute(
        f"SELECT count(*) FROM {table} WHERE trace = ?", [trace]).fetchall()[0]
    assert n == shared_store.trace_info(trace)["rows"]


# -- content spot checks ------------------------------------------------------------------
def test_azure_conv_lengths_and_arrivals(shared_store, data):
    recs = simple_csv(shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data))
    assert recs[0] == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    ctx = np.array([int(r[1]) for r in recs[1:]])
    gen = np.array([int(r[2]) for r in recs[1:]])
    stamps = [datetime.fromisoformat(r[0][:26]) for r in recs[1:]]  # 7 -> 6 fraction digits
    span = (max(stamps) - min(stamps)).total_seconds()
    p50, o50, n, sum_p, sum_o, t_min, t_max = shared_store.con.execute(
        """SELECT median(prompt_tokens), median(output_tokens), count(*), sum(prompt_tokens),
                  sum(output_tokens), min(arrival_s), max(arrival_s)
           FROM llm_requests WHERE trace = 'azure_conv'""").fetchall()[0]
    assert (p50, o50) == (np.median(ctx), np.median(gen))
    assert (n, sum_p, sum_o) == (len(ctx), ctx.sum(), gen.sum())
    assert t_min == 0.0 and t_max == pytest.approx(span, abs=1e-5)


def test_burstgpt_failures_are_zero_response_rows(shared_store, data):
    recs = simple_csv(shared_path("llm/burstgpt/BurstGPT_head54.csv", data))
    zero = sum(1 for r in recs[1:] if int(r[3]) == 0)
    models = Counter(r[1] for r in recs[1:])
    (failed,) = shared_store.con.execute(
        "SELECT sum(failed::INT) FROM llm_requests WHERE trace = 'burstgpt_head54'").fetchall()[0]
    by_model = shared_store.con.execute(
        "SELECT model, count(*) FROM llm_requests WHERE trace = 'burstgpt_head54' GROUP BY 1"
    ).fetchall()
    assert failed == zero
    assert dict(by_model) == dict(models)


def test_mooncake_prefix_hashes(shared_store, data):
    lines = [json.loads(x) for x in
             raw_bytes(shared_path("llm/mooncake/conversation_trace.jsonl", data)).splitlines()
             if x.strip()]
    blocks = sum(len(r["hash_ids"]) for r in lines)
    span = (max(r["timestamp"] for r in lines) - min(r["timestamp"] for r in lines)) / 1000
    got_blocks, got_span, first = shared_store.con.execute(
        """SELECT sum(len(prefix_hashes)), max(arrival_s) - min(arrival_s),
                  arg_min(prefix_hashes, request_id)
           FROM llm_requests WHERE trace = 'mooncake_conversation'""").fetchall()[0]
    assert got_blocks == blocks
    assert got_span == pytest.approx(span)
    assert first == lines[0]["hash_ids"]


def test_sharegpt_pairs_keep_text_and_turns(shared_store, data):
    convs = sharegpt(shared_path("llm/sharegpt/ShareGPT_V3_part1.json.gz", data))
    conv = next(c for c in convs if len(c["conversations"]) >= 4
                and [m["from"] for m in c["conversations"][:4]] == ["human", "gpt"] * 2)
    rows = shared_store.con.execute(
        """SELECT turn, prompt_text, response_text, prompt_tokens, output_tokens
           FROM llm_requests WHERE trace = 'sharegpt' AND session_id = ? ORDER BY turn""",
        [conv["id"]]).fetchall()
    msgs = conv["conversations"]
    assert [r[0] for r in rows[:2]] == [1, 2]
    assert (rows[0][1], rows[0][2]) == (msgs[0]["value"], msgs[1]["value"])
    assert (rows[1][1], rows[1][2]) == (msgs[2]["value"], msgs[3]["value"])
    assert all(p > 0 for _, text, _, p, _ in rows if text.strip())
    [(sessions,)] = shared_store.con.execute(
        "SELECT count(DISTINCT session_id) FROM llm_requests WHERE trace = 'sharegpt'").fetchall()
    with_pair = sum(1 for c in convs if any(
        a["from"].lower() in PROMPT_ROLES and b["from"].lower() in REPLY_ROLES
        for a, b in zip(c["conversations"], c["conversations"][1:], strict=False)))
    assert sessions == with_pair


def test_vm_rows_by_sku(shared_store, data):
    want: Counter = Counter()
    for f in data_files(shared_path("vm/azure_vm_noise", data)):
        sku = next(p.split("=", 1)[1] for p in f.parts if p.startswith("vm_sku="))
        want[sku] += csv_data_rows(f)
    got = dict(shared_store.con.execute(
        "SELECT vm_sku, count(*) FROM vm_measurements WHERE trace = 'azure_vm_noise' "
        "GROUP BY 1").fetchall())
    assert got == dict(want)
    assert set(got) == {"B8ms", "D8s_v5"}


def test_kernel_latency_ops_and_devices(shared_store, data):
    neusight = data_files(shared_path("gpu/neusight", data))
    ops = {line.split(b",", 1)[0].decode() for f in neusight if f.name.endswith(".csv.gz")
           for line in lines_of(f)[1:]}
    vidur = {h.split(".")[1] for f in data_files(shared_path("gpu/vidur_profiling", data))
             for h in simple_csv(f)[0] if h.startswith("time_stats.")}
    # NeuSight's whole-model runs: one row per traced node, op = its target (else its name)
    traced = {r["target"] or r["Name"]
              for f in data_files(shared_path("gpu/neusight_e2e", data))
              if f.parent.parent.name == "label" and f.suffix == ".csv"
              for r in csv.DictReader(io.StringIO(f.read_text()))}
    got = {src: set(ops_) for src, ops_ in shared_store.con.execute(
        "SELECT source, list(DISTINCT op) FROM kernel_latencies GROUP BY 1").fetchall()}
    assert got == {"neusight": ops, "vidur": vidur, "help": {"nasbench201"},
                   "aiconfigurator": {"gemm", "attn_prefill", "attn_decode", "allreduce"},
                   "neusight-e2e": traced}
    devices = {json.loads(f.read_text())["Device"] for f in neusight if f.suffix == ".json"}
    systems = {f.stem for f in (data / "gpu/aiconfigurator/systems").glob("*.yaml")}
    stored = {d for (d,) in shared_store.con.execute("SELECT device FROM devices").fetchall()}
    assert stored == devices | systems


def test_cluster_series_are_long_form(shared_store, data):
    want = 0
    for f in data_files(shared_path("cluster/helios_earth", data)):
        want += csv_data_rows(f) * (len(simple_csv(f)[0]) - 1)
    (n,) = shared_store.con.execute(
        "SELECT count(*) FROM cluster_series WHERE trace = 'helios_earth'").fetchall()[0]
    assert n == want


def test_alibaba_v2017_rejects_the_one_task_ending_before_creation(shared_store, data):
    path = shared_path("cluster/alibaba_v2017/batch_task.csv", data)
    recs = simple_csv(path)
    bad = [i + 1 for i, r in enumerate(recs) if i and r[1].strip() and float(r[1]) != 0
           and float(r[1]) < float(r[0])]  # 1-based line numbers (the header is line 1)
    assert bad == [54988]
    rejected = shared_store.con.execute(
        "SELECT trace, file, line, reason FROM rejected_rows "
        "WHERE trace <> 'ntua_interference'").fetchall()
    assert len(rejected) == 1  # the only bad row outside NTUA's unmatched tail samples
    ntua = shared_store.con.execute(
        "SELECT DISTINCT split_part(reason, ' in ', 1) FROM rejected_rows "
        "WHERE trace = 'ntua_interference'").fetchall()
    assert ntua == [("no matching sample",)]
    trace, file, line, reason = rejected[0]
    assert (trace, file, line) == ("alibaba_v2017", str(path), 54988)
    assert "negative duration" in reason
    info = shared_store.trace_info("alibaba_v2017")
    assert (info["rows"], info["rejected"]) == (len(recs) - 2, 1)


def test_ingest_shared_reads_only_the_named_traces_once(tmp_store, data):
    """`ingest_shared` (the one shared-store builder of tests, benchmarks and the demo)
    ingests only the traces asked for, reports each, and skips them the second time."""
    from servecast.datasets.catalog import ingest_shared

    wanted = ("lengths_arxiv", "burstgpt_head54")
    seen: list[tuple[str, int, list]] = []
    for _ in range(2):
        ingest_shared(tmp_store, wanted, data,
                      lambda source, trace, r, s: seen.append((trace, r.rows, r.skipped)))
    assert sorted(tmp_store.traces()["trace"].to_list()) == sorted(wanted)
    first, again = seen[:2], seen[2:]
    assert [t for t, _, _ in first] == [t for _, _, t in SHARED if t in wanted]
    assert all(rows > 0 for _, rows, _ in first)
    assert all(rows == 0 and skipped for _, rows, skipped in again)
