"""aiconfigurator adapter (vLLM operator tables -> kernel_latencies, system YAMLs -> devices)
and the built-in GPU catalog with spec resolution (`servecast gpus`). Real files from the
shared folder; bad-input cases are small Parquet / YAML files written into tmp_path."""

from __future__ import annotations

import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servecast import gpus
from servecast.errors import DataFileError, InvalidInputError, SchemaMismatchError, UnknownNameError
from servecast.store import Store

#: GPUs the issue requires in the catalog
REQUIRED = ["a10g", "l4", "l40s", "a100-40gb-pcie", "a100-80gb-pcie", "a100-40gb-sxm",
            "a100-80gb-sxm", "h100-pcie", "h100-sxm", "h100-nvl", "h200-sxm", "gh200", "b200",
            "gb200", "mi300x", "mi325x"]


@pytest.fixture(scope="module")
def aic(data):
    return data / "gpu/aiconfigurator"


@pytest.fixture(scope="module")
def store(tmp_path_factory, aic):
    s = Store(tmp_path_factory.mktemp("aic") / "aic.duckdb")
    s.ingest("aiconfigurator", [aic], trace="aic")
    yield s
    s.close()


def test_every_parquet_row_lands_with_op_dtype_and_engine(store, aic):
    for f in sorted(aic.rglob("*.parquet")):
        table = pq.read_table(f)
        kind = f.name.removesuffix(".parquet")
        op = {"gemm_perf": "gemm", "context_attention_perf": "attn_prefill",
              "generation_attention_perf": "attn_decode",
              "custom_allreduce_perf": "allreduce"}[kind]
        dtype_col = {"gemm": "gemm_dtype", "allreduce": "allreduce_dtype"}.get(op, "attn_dtype")
        want = {}
        for d, v in zip(table[dtype_col].to_pylist(), table["version"].to_pylist(), strict=True):
            want[(d, v)] = want.get((d, v), 0) + 1
        got = dict(((d, v), n) for d, v, n in store.con.execute(
            """SELECT dtype, engine_version, count(*) FROM kernel_latencies
               WHERE trace = 'aic' AND op = ? AND device = ? AND extra->>'collection' = ?
               GROUP BY 1, 2""", [op, f.parts[-3], f.parts[-2]]).fetchall())
        assert got == want, f
    engines = store.con.execute("SELECT DISTINCT engine FROM kernel_latencies").fetchall()
    assert engines == [("vllm",)]


def test_shapes_map_onto_the_canonical_columns(store, aic):
    raw = pq.read_table(aic / "vllm/h100_sxm/0.24.0/generation_attention_perf.parquet").slice(0, 1)
    r = raw.to_pylist()[0]
    row = store.con.execute(
        """SELECT latency_ms FROM kernel_latencies WHERE op = 'attn_decode' AND device = 'h100_sxm'
           AND B = ? AND M = ? AND N = ? AND H = ? AND kv_heads = ? AND head_dim = ?
           AND dtype = ? AND kv_dtype = ? AND extra->>'kernel_source' = ?
           AND coalesce((extra->>'window_size')::BIGINT, -1) = ?""",
        [r["batch_size"], r["isl"], r["step"], r["num_heads"], r["num_key_value_heads"],
         r["head_dim"], r["attn_dtype"], r["kv_cache_dtype"], r["kernel_source"],
         r.get("window_size", -1)]).fetchall()
    assert r["latency"] in [x for (x,) in row]
    gemm = pq.read_table(aic / "vllm/a100_sxm/0.14.0/gemm_perf.parquet").to_pylist()[5]
    (n,) = store.con.execute(
        "SELECT count(*) FROM kernel_latencies WHERE op = 'gemm' AND device = 'a100_sxm' AND M = ? "
        "AND N = ? AND K = ? AND dtype = ? AND latency_ms = ?",
        [gemm["m"], gemm["n"], gemm["k"], gemm["gemm_dtype"], gemm["latency"]]).fetchone()
    assert n >= 1


def test_system_yamls_become_devices(store, aic):
    rows = {d: (bw, mem, spec) for d, bw, mem, spec in store.con.execute(
        "SELECT device, Mem_Bw, Dev_Mem, spec FROM devices WHERE source = 'aiconfigurator'"
    ).fetchall()}
    assert set(rows) == {f.stem for f in (aic / "systems").glob("*.yaml")}
    bw, mem, spec = rows["h200_sxm"]
    spec = json.loads(spec)
    assert (bw, mem) == (4800.0, 141.0)
    assert spec["TensorFLOPs"] == 989000.0 and spec["FP8FLOPs"] == 1978000.0
    assert spec["Interconnect_Bw"] == 900.0  # 450 GB/s per direction in the YAML
    assert "FP8FLOPs" not in json.loads(rows["a100_sxm"][2])  # Ampere: no fp8 in the YAML


def test_reingest_is_a_noop(store, aic):
    before = store.con.execute("SELECT count(*) FROM kernel_latencies").fetchone()
    res = store.ingest("aiconfigurator", [aic], trace="aic")
    assert res.rows == 0 and len(res.skipped) == len(res.files)
    assert store.con.execute("SELECT count(*) FROM kernel_latencies").fetchone() == before


def _gemm_file(folder, latencies, drop=None):
    n = len(latencies)
    cols = {"framework": ["VLLM"] * n, "version": ["0.1"] * n, "device": ["X"] * n,
            "op_name": ["gemm"] * n, "kernel_source": ["k"] * n, "gemm_dtype": ["bfloat16"] * n,
            "m": [16] * n, "n": [128] * n, "k": [256] * n, "latency": latencies}
    if drop:
        cols.pop(drop)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), folder / "gemm_perf.parquet")
    return folder / "gemm_perf.parquet"


def test_bad_rows_are_rejected_with_their_row_number(tmp_path):
    f = _gemm_file(tmp_path / "vllm/gpu_x/0.1", [0.5, -1.0, 0.7, None])
    with Store(tmp_path / "s.duckdb") as s:
        res = s.ingest("aiconfigurator", [f])
        assert (res.rows, res.rejected) == (2, 2)
        bad = s.con.execute("SELECT line, reason FROM rejected_rows ORDER BY line").fetchall()
        assert bad == [(2, "missing or non-positive latency"),
                       (4, "missing or non-positive latency")]


def test_missing_column_and_corrupt_file_leave_the_store_untouched(tmp_path):
    good = _gemm_file(tmp_path / "vllm/a/0.1", [0.5])
    bad = _gemm_file(tmp_path / "vllm/b/0.1", [0.5], drop="k")
    with Store(tmp_path / "s.duckdb") as s:
        with pytest.raises(SchemaMismatchError, match=r"b/0\.1/gemm_perf\.parquet.*\n.*k"):
            s.ingest("aiconfigurator", [good, bad])
        broken = tmp_path / "vllm/c/0.1/gemm_perf.parquet"
        broken.parent.mkdir(parents=True)
        broken.write_bytes(good.read_bytes()[:40])
        with pytest.raises(DataFileError, match="cannot be read as Parquet"):
            s.ingest("aiconfigurator", [good, broken])
        other = tmp_path / "vllm/c/0.1/moe_perf.parquet"
        shutil.copy(good, other)
        with pytest.raises(DataFileError, match="unknown aiconfigurator table 'moe_perf'"):
            s.ingest("aiconfigurator", [other])
        assert s.con.execute("SELECT (SELECT count(*) FROM kernel_latencies), "
                             "(SELECT count(*) FROM traces)").fetchone() == (0, 0)


def test_an_older_store_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    for col in ("dtype", "engine", "engine_version", "kv_dtype", "kv_heads", "head_dim"):
        con.execute(f"ALTER TABLE kernel_latencies DROP COLUMN {col}")
    con.close()
    with Store(path) as s:
        res = s.ingest("aiconfigurator", [_gemm_file(tmp_path / "vllm/g/0.1", [0.25])])
        assert res.rows == 1
        assert s.con.execute("SELECT dtype, engine FROM kernel_latencies").fetchone() == \
            ("bfloat16", "vllm")


# -- the GPU catalog -----------------------------------------------------------------------
def test_catalog_has_the_serving_gpus_with_a_source_per_value():
    cat = gpus.catalog()
    assert set(REQUIRED) <= set(cat)
    for name, entry in cat.items():
        for key, (value, src) in entry["values"].items():
            assert key in gpus.SPEC_KEYS and value > 0, (name, key)
            assert src in gpus.sources(), (name, key, src)
        spec = gpus.catalog_spec(name)
        gpus.require(spec, gpus.NEUSIGHT_KEYS + ["TensorFLOPs"], "every catalog GPU")


@pytest.mark.parametrize(("alias", "key"), [
    ("H100", "h100-sxm"), ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("a100_sxm", "a100-80gb-sxm"),
    ("NVIDIA A100-PCIE-40GB", "a100-40gb-pcie"), ("NVIDIA L4", "l4"), ("b200_sxm", "b200")])
def test_names_of_other_sources_resolve_to_the_catalog(alias, key):
    assert gpus.resolve_spec(alias)["Device"] == key


def test_spec_files_resolve_to_one_schema(data, aic):
    neusight = gpus.resolve_spec(data / "gpu/neusight/test/device_configs/NVIDIA_L4.json")
    assert neusight["Mem_Bw"] == 300 and "TensorFLOPs" not in neusight
    known = gpus.resolve_spec(aic / "systems/h100_sxm.yaml")
    assert known["Num_Sm"] == 132  # not in the YAML: from the catalog's datasheet values
    assert known["FP8FLOPs"] == 1978000.0 and known["Mem_Bw"] == 3350.0
    unknown = gpus.resolve_spec(aic / "systems/rtx_pro_6000_server.yaml")
    assert "Num_Sm" not in unknown and unknown["TensorFLOPs"] == pytest.approx(467800.53)
    with pytest.raises(InvalidInputError, match="missing Num_Sm.*wave quantization"):
        gpus.require(unknown, ["Num_Sm"], "wave quantization")


def test_bad_spec_input(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown GPU 'h300'.*h100-sxm.*mi325x"):
        gpus.resolve_spec("h300")
    bad = tmp_path / "x.yaml"
    bad.write_text("gpu: {mem_bw: fast}\n")
    with pytest.raises(InvalidInputError, match="Mem_Bw='fast' is not a number"):
        gpus.resolve_spec(bad)
    bad.write_text("model: llama\n")
    with pytest.raises(DataFileError, match="not an aiconfigurator system YAML"):
        gpus.resolve_spec(bad)
    with pytest.raises(InvalidInputError, match="unknown dtype 'int4'"):
        gpus.dtype_flops_key("int4")
    a100 = gpus.catalog_spec("a100")
    with pytest.raises(InvalidInputError, match="missing FP8FLOPs, needed for fp8 GEMMs"):
        gpus.require(a100, [gpus.dtype_flops_key("fp8")], "fp8 GEMMs")


def test_gpus_cli(capsys):
    from servecast.cli import main  # in-process: the command, not the interpreter start

    assert main(["gpus", "--json"]) == 0
    assert set(REQUIRED) <= set(json.loads(capsys.readouterr().out))
    assert main(["gpus", "mi300x", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["spec"]["Mem_Bw"] == 5300 and "amd.com" in doc["sources"]["Mem_Bw"]
    assert main(["gpus", "h300"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "unknown GPU 'h300'" in err and "h200-sxm" in err
