"""The `servecast` store commands run as a user runs them (a subprocess): ingest, traces,
info, sql, datasets [download]. User errors exit 2 with a message and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servecast.datasets import adapters
from servecast.datasets.catalog import shared_path
from servecast.errors import ServecastError
from servecast.store import Store

#: wide enough that rich tables do not truncate cells (they do at the 80-column default)
ENV = {**os.environ, "COLUMNS": "250"}


def servecast(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servecast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env or ENV)


def table_rows(stdout: str) -> list[list[str]]:
    """Cells of the body rows of the rich tables in `stdout`."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()
            if line.startswith("│")]


def user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, every fragment in the one-line message, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    text = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr + proc.stdout
    for frag in fragments:
        assert frag in text, (frag, text)


def manifest(db: Path) -> tuple:
    """Row counts of the manifest, requests and rejected rows (read in this process)."""
    with Store(db, read_only=True) as store:
        return store.con.execute(
            "SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM llm_requests), "
            "(SELECT count(*) FROM rejected_rows)").fetchall()[0]


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory, data) -> Path:
    """A store filled through `servecast ingest` with two real traces."""
    db = tmp_path_factory.mktemp("cli") / "cli.duckdb"
    conv = shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data)
    burst = shared_path("llm/burstgpt", data)
    ingest = servecast("ingest", "azure-llm", conv, "--trace", "conv", "--db", db)
    assert ingest.returncode == 0, ingest.stderr
    assert "ingested 19,366 rows into conv (0 rejected)" in ingest.stdout
    ingest = servecast("ingest", "burstgpt", burst, "--db", db)  # a folder: trace per file
    assert ingest.returncode == 0, ingest.stderr
    assert "ingested 54 rows into BurstGPT_head54" in ingest.stdout
    return db


def test_traces_lists_the_manifest(cli_db):
    out = servecast("traces", "--db", cli_db)
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r[1:6] for r in table_rows(out.stdout)}
    assert rows == {"conv": ["azure-llm", "llm_requests", "1", "19,366", "0"],
                    "BurstGPT_head54": ["burstgpt", "llm_requests", "1", "54", "0"]}


def test_info_summarizes_a_trace(cli_db):
    out = servecast("info", "conv", "--db", cli_db)
    assert out.returncode == 0, out.stderr
    assert "azure-llm" in out.stdout and "llm_requests" in out.stdout
    assert "rows 19366" in " ".join(out.stdout.split())
    [summary] = table_rows(out.stdout)  # requests, span_s, rate, prompt_p50, output_p50, ...
    # the conv trace: 19,366 requests over ~1 h, median 1020 prompt / 129 output tokens
    assert summary[0] == "19,366" and summary[3:5] == ["1020", "129"]
    assert 3400 < float(summary[1]) < 3700


def test_sql_runs_on_the_store(cli_db, data):
    zero = sum(1 for line in shared_path("llm/burstgpt/BurstGPT_head54.csv", data)
               .read_text().splitlines()[1:] if line.split(",")[3] == "0")
    out = servecast("sql", "SELECT trace, count(*) AS n, sum(failed::INT) AS failed "
                    "FROM llm_requests GROUP BY 1 ORDER BY 1", "--db", cli_db)
    assert out.returncode == 0, out.stderr
    assert table_rows(out.stdout) == [["BurstGPT_head54", "54", str(zero)],
                                      ["conv", "19,366", "0"]]


def test_piped_tables_keep_whole_cells(cli_db):
    """Without a terminal or $COLUMNS, a table wider than 80 columns is not cut ("…")."""
    names = [f"metric_{k}_with_a_long_name" for k in range(4)]
    out = servecast("sql", "SELECT " + ", ".join(f"{k} AS {n}" for k, n in enumerate(names)),
                    "--db", cli_db, env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and all(n in out.stdout for n in names), out.stdout


def test_ingest_again_says_already_ingested(cli_db, data):
    conv = shared_path("llm/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", data)
    out = servecast("ingest", "azure-llm", conv, "--db", cli_db)
    assert out.returncode == 0, out.stderr
    assert "already ingested" in out.stdout and "trace conv" in out.stdout
    assert "ingested 0" not in out.stdout


def test_strict_refusal_exits_2_and_changes_nothing(cli_db, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47,-1,3\n")
    before = manifest(cli_db)
    user_error(servecast("ingest", "azure-llm", bad, "--strict", "--db", cli_db),
               str(bad), "line 3", "negative prompt token count", "--strict")
    assert manifest(cli_db) == before


def test_help_lists_each_command_as_one_paragraph():
    """Docstrings wrapped in the source are re-wrapped to the terminal, groups included."""
    for args, summary in [((), "train every predictor (fast settings) into OUT/models"),
                          (("train",), "report the meta_valid devices (Spearman rho, MAPE)")]:
        out = servecast(*args, "--help")
        assert out.returncode == 0, out.stderr
        assert summary in out.stdout, out.stdout  # no source line break in the listing


def test_datasets_lists_every_adapter():
    out = servecast("datasets", env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert out.returncode == 0, out.stderr
    for name, a in adapters().items():
        c = a.catalog
        assert f"{name} -> {a.table}" in out.stdout
        for field, value in [("format", c.format), ("url", c.url), ("license", c.license),
                             ("cite", c.citation)]:
            assert f"  {field}:".ljust(12) + value in out.stdout, (name, field)
    assert set(adapters()) == {  # the sources of issue 2
        "burstgpt", "azure-llm", "mooncake", "sharegpt", "length-stats", "alibaba-v2017",
        "alibaba-gpu-v2023", "alibaba-gpu-v2025", "philly-runtime", "philly-nodes", "helios",
        "azure-vm-noise", "neusight", "help-nasbench201", "vidur-mlp", "olmoe-routing",
        # issue 23
        "aiconfigurator", "llm-inference-bench", "splitwise-perf",
        # issue 22: collector formats
        "kernel-profile", "host-metrics",
        # issue 26
        "ntua-interference",
        # issue 25: the user's own logs and benchmark results
        "user-log", "vllm-bench", "guidellm", "aiperf",
        # issue 23: NeuSight whole-model latencies
        "neusight-e2e",
        # issue 24: MLPerf Inference results
        "mlperf"}


def test_download_offline_is_a_clear_error(tmp_path):
    """No network (a proxy that refuses connections stands in for being offline)."""
    offline = {**ENV, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out_dir = tmp_path / "dl"
    proc = servecast("datasets", "download", "burstgpt", "--out", out_dir, "--timeout", "5",
                     env=offline)
    c = adapters()["burstgpt"].catalog
    user_error(proc, "offline", c.download, c.url, "servecast ingest burstgpt")
    assert list(out_dir.iterdir()) == []  # no partial file left behind


def test_download_without_single_file_points_to_the_url():
    c = adapters()["azure-vm-noise"].catalog
    assert c.download is None
    user_error(servecast("datasets", "download", "azure-vm-noise"), c.url)


@pytest.mark.slow  # CLI subprocesses
def test_unknown_names_exit_2(cli_db, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    user_error(servecast("ingest", "no-such-source", f, "--db", tmp_path / "u.duckdb"),
               "unknown source 'no-such-source'", "known sources:", "burstgpt")
    user_error(servecast("info", "no_such_trace", "--db", cli_db),
               "unknown trace 'no_such_trace'", "conv", "BurstGPT_head54")
    user_error(servecast("datasets", "download", "no-such-source"), "unknown source")
    user_error(servecast("no-such-command"), "No such command 'no-such-command'")
    user_error(servecast("ingest", "burstgpt"), "Missing argument")


@pytest.mark.slow  # CLI subprocesses
def test_store_and_query_errors_exit_2(cli_db, tmp_path):
    missing_db = tmp_path / "none.duckdb"
    user_error(servecast("traces", "--db", missing_db), str(missing_db), "no store here")
    assert not missing_db.exists()
    user_error(servecast("sql", "SELEC nonsense", "--db", cli_db), "SQL error")
    user_error(servecast("ingest", "burstgpt", tmp_path / "gone.csv", "--db", cli_db),
               str(tmp_path / "gone.csv"), "no such file")


@pytest.mark.slow
def test_whatif_replays_the_held_out_requests(cli_db):
    """`servecast whatif` trains a fast model on the first 70% and prints one row per policy."""
    out = servecast("whatif", "conv", "--db", cli_db, "--max-rows", "400", "--aging", "5")
    assert out.returncode == 0, out.stderr
    for policy in ("fcfs", "sjf_pred", "sjf_p90", "sjf_oracle", "sjf_pred_aging", "kv_p90",
                   "kv_worst"):
        assert policy in out.stdout
    user_error(servecast("whatif", "conv", "--db", cli_db, "--load", "0"), "load factor 0")


# -- issue 21: promises kept ----------------------------------------------------------------
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"


def burst_file(path: Path, data: Path, edit=None) -> Path:
    """The real 54-row BurstGPT head, each data line passed through `edit` (line -> lines)."""
    lines = shared_path("llm/burstgpt/BurstGPT_head54.csv", data).read_text().splitlines()
    body = [out for line in lines[1:] for out in (edit(line) if edit else [line])]
    path.write_text("\n".join([lines[0], *body]) + "\n")
    return path


@pytest.mark.slow  # CLI subprocesses
def test_int32_token_count_is_a_rejected_row_not_a_traceback(tmp_path, data):
    def huge_first(line, seen=[]):  # noqa: B006 - one mutation on the first line only
        if not seen:
            seen.append(1)
            t, m, _, out, _, log = line.split(",")
            return [f"{t},{m},3000000000,{out},{3000000000 + int(out)},{log}"]
        return [line]
    f = burst_file(tmp_path / "big.csv", data, huge_first)
    db = tmp_path / "s.duckdb"
    user_error(servecast("ingest", "burstgpt", f, "--strict", "--db", db),
               str(f), "line 2: prompt token count above 2,147,483,647", "--strict")
    out = servecast("ingest", "burstgpt", f, "--db", db)
    assert out.returncode == 0, out.stderr
    assert "ingested 53 rows into big (1 rejected" in out.stdout


@pytest.mark.slow  # CLI subprocesses
def test_non_finite_negative_and_fractional_values_are_rejected(tmp_path, data):
    def spoil(line):
        t, m, req, out, tot, log = line.split(",")
        k = int(t) % 4
        return [",".join([("nan", "-inf", "-3")[k] if k < 3 else t, m,
                          f"{req}.5" if k == 3 else req, out, tot, log])]
    f = burst_file(tmp_path / "odd.csv", data, spoil)
    db = tmp_path / "s.duckdb"
    assert servecast("ingest", "burstgpt", f, "--db", db).returncode == 2  # all rejected
    f2 = burst_file(tmp_path / "mixed.csv", data,
                    lambda line: [line, "nan," + line.split(",", 1)[1]])
    out = servecast("ingest", "burstgpt", f2, "--db", db)
    assert out.returncode == 0, out.stderr
    assert "ingested 54 rows into mixed (54 rejected" in out.stdout
    info = servecast("info", "mixed", "--db", db)
    assert info.returncode == 0 and "nan" not in info.stdout.lower().replace("nan,", "")


def test_file_with_every_row_rejected_is_refused_and_not_recorded(tmp_path, data):
    """Issue 21 case 13: a file read by the wrong adapter no longer counts as ingested."""
    def negative(line):
        t, m, req, rest = line.split(",", 3)
        return [f"{t},{m},-{int(req) + 1},{rest}"]
    f = burst_file(tmp_path / "neg.csv", data, negative)
    db = tmp_path / "s.duckdb"
    user_error(servecast("ingest", "burstgpt", f, "--db", db),
               str(f), "all 54 rows rejected", "negative prompt token count",
               "servecast datasets")
    assert manifest(db) == (0, 0, 0)


@pytest.mark.slow  # CLI subprocesses
def test_traces_remove_deletes_everything_of_a_trace(tmp_path, data):
    db = tmp_path / "s.duckdb"
    f = burst_file(tmp_path / "b.csv", data, lambda line: [line, "x," + line.split(",", 1)[1]])
    assert servecast("ingest", "burstgpt", f, "--db", db).returncode == 0
    assert manifest(db) == (1, 54, 54)
    out = servecast("traces", "remove", "b", "--db", db)
    assert out.returncode == 0 and "removed trace b (54 rows)" in out.stdout
    assert manifest(db) == (0, 0, 0)
    again = servecast("ingest", "burstgpt", f, "--trace", "renamed", "--db", db)
    assert again.returncode == 0 and "ingested 54 rows into renamed" in again.stdout
    user_error(servecast("traces", "remove", "b", "--db", db), "unknown trace 'b'", "renamed")


def test_rejected_rows_are_one_per_line_with_the_source_text(tmp_path, data):
    """Issue 21 case 2: a duplicate header was 3 rejected rows, a short row 2."""
    f = burst_file(tmp_path / "d.csv", data)
    lines = f.read_text().splitlines()
    f.write_text("\n".join([*lines[:10], BURST_HEADER, "7,ChatGPT,1", *lines[10:],
                            "9,ChatGPT,1.5,2,3.5,Conversation log"]) + "\n")
    db = tmp_path / "s.duckdb"
    assert servecast("ingest", "burstgpt", f, "--db", db).returncode == 0
    with Store(db, read_only=True) as store:
        got = store.con.execute(
            "SELECT line, content FROM rejected_rows ORDER BY line").fetchall()
        assert store.trace_info("d")["rejected"] == 3
    assert got == [(11, BURST_HEADER), (12, "7,ChatGPT,1"),
                   (len(lines) + 3, "9,ChatGPT,1.5,2,3.5,Conversation log")]


def test_sql_refuses_statements_that_write(cli_db, tmp_path):
    """Issue 21 case 9: `servecast sql "COPY ... TO"` wrote a file."""
    out = tmp_path / "out.csv"
    user_error(servecast("sql", f"COPY (SELECT 1) TO '{out}'", "--db", cli_db),
               "only reads the store", "refused the COPY statement")
    with Store(cli_db, read_only=True) as store:
        for stmt in [f"EXPORT DATABASE '{tmp_path / 'exp'}'", "INSTALL httpfs", "LOAD httpfs",
                     f"ATTACH '{tmp_path / 'other.duckdb'}' AS o", "SET threads = 1",
                     f"SELECT 1; COPY (SELECT 1) TO '{out}'", "CREATE TABLE z (a INT)",
                     f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'"]:
            with pytest.raises(ServecastError, match="only reads the store"):
                store.query(stmt)
        assert store.query("EXPLAIN SELECT 1").height == 1
        assert store.query("DESCRIBE traces").height == 8
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # CLI subprocesses
def test_foreign_duckdb_file_is_refused_untouched(tmp_path):
    import duckdb

    mine = tmp_path / "mine.duckdb"
    con = duckdb.connect(str(mine))
    con.execute("CREATE TABLE sales AS SELECT range AS id FROM range(5)")
    con.close()
    before = mine.read_bytes()
    f = tmp_path / "b.csv"
    f.write_text(BURST_HEADER + "\n1,ChatGPT,1,2,3,Conversation log\n")
    for args in [("ingest", "burstgpt", f), ("traces",), ("sql", "SELECT 1")]:
        user_error(servecast(*args, "--db", mine), str(mine), "not a servecast store",
                   "sales", "left untouched")
    assert mine.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "mine.duckdb"]


def test_truncated_store_is_a_clear_error(cli_db, tmp_path):
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(cli_db.read_bytes()[:20_000])
    for args in [("traces",), ("ingest", "burstgpt", cli_db)]:
        user_error(servecast(*args, "--db", cut), str(cut), "truncated", "--db")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.slow  # CLI subprocesses
def test_full_disk_is_a_clear_error_and_the_store_survives(tmp_path, data):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]
                      ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        db = disk / "s.duckdb"
        # Mooncake's traces (prefix hashes: the full part of llm_requests) outgrow the disk;
        # Azure's conversation trace fits in the narrow part since schema version 3
        mooncake = shared_path("llm/mooncake", data)
        user_error(servecast("ingest", "mooncake", mooncake, "--db", db),
                   str(db), "disk is full", "--db")
        assert servecast("traces", "--db", db).returncode == 0
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow  # CLI subprocesses
def test_reingesting_a_folder_prints_one_line(tmp_path, data):
    """Issue 21 case 12: 388 "already ingested" lines for the VM folder; here 3 real files."""
    src = shared_path("vm/azure_vm_noise", data)
    folder = tmp_path / "vm"
    for f in sorted(src.rglob("*.csv.gz"))[:3]:
        target = folder / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    db = tmp_path / "s.duckdb"
    assert servecast("ingest", "azure-vm-noise", folder, "--trace", "vm", "--db",
                     db).returncode == 0
    again = servecast("ingest", "azure-vm-noise", folder, "--trace", "vm", "--db", db)
    assert again.returncode == 0
    assert again.stdout.strip().splitlines() == [
        "already ingested 3 files (trace vm): nothing to do"]
    other = servecast("ingest", "azure-vm-noise", folder, "--trace", "X", "--db", db)
    assert "already ingested 3 files (trace vm); stored under that name, not 'X'" in " ".join(
        other.stdout.split())
    assert "servecast traces remove vm" in other.stdout


def test_adapter_modules_import_no_dataframe_library():
    """Every ingest imports every adapter module (the registry): none may pull in polars,
    pandas or numpy at import time (polars alone added ~0.12 s to each ingest)."""
    code = ("import sys; from servecast.datasets import adapters; adapters(); "
            "print(sorted(m for m in ('polars', 'pandas', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
