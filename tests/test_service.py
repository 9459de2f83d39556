"""HTTP estimate service: a real `servecast serve` process on loopback with tiny models trained
on the shared data, covering success, batch, 404 and 422 answers per endpoint, a bounded
keep-alive load (correctness only; speed is benchmarks/service.py), and a schemathesis run
against the OpenAPI schema that must find no 5xx."""

from __future__ import annotations

import importlib.util
import math

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from servecast.loadtest import post_load
from servecast.localserver import estimate_service

pytestmark = pytest.mark.slow  # real-data fixtures and model training (> 5 s)

# -- tiny models, one per kind (trained with each predictor's public API) -------------------


def _landed(kind: str) -> bool:
    return importlib.util.find_spec(f"servecast.predictors.{kind}.runtime") is not None


def _train_kernel_latency(store, out):
    from servecast.predictors.kernel_latency.data import device_specs, neusight_frame
    from servecast.predictors.kernel_latency.predictor import KernelLatencyPredictor

    specs = device_specs(store)
    frame = neusight_frame(store)
    KernelLatencyPredictor(specs, epochs=1, max_rows=3000).fit(frame).save(out)
    spec = specs[frame["device"][0]]
    return {"op": "bmm", "shape": [8, 256, 256, 256], "device_spec": spec}


def _train_output_length(store, out):
    from servecast.predictors.output_length import create
    from servecast.predictors.output_length.train import load_requests

    rows = load_requests(store, "azure_conv").head(4000)
    create("metadata", n_estimators=40).fit(rows).save(out)
    return {"prompt_tokens": 512}


def _train_interference(store, out):
    from servecast.predictors.interference.predictor import InterferencePredictor
    from servecast.predictors.interference.tasks import temporal_task

    task = temporal_task(store, max_windows_per_vm=10)
    InterferencePredictor(epochs=1, d_model=16, heads=2, layers=1, gbm_trees=20,
                          max_steps=6).fit(task.metrics, task.labels).save(out)
    first = task.metrics.filter(task.metrics["window_id"] == task.labels["window_id"][0])
    return {"metrics": [{"t": t, "metric": m, "value": v}
                        for t, m, v in first.select("t", "metric", "value").iter_rows()]}


def _train_moe_congestion(store, out):
    # routing loads with qualities do not exist in public data: a planted equilibrium
    from servecast.predictors.moe_congestion.game import CongestionGame
    from servecast.predictors.moe_congestion.synthetic import planted_batches

    pb = planted_batches(beta=2.0, gamma=5.0, n_batches=12, n_types=1, n_experts=8)
    CongestionGame(n_bootstrap=0).fit_arrays(pb.loads, pb.quality[:, 0, :]).save(out)
    return {"loads": pb.loads[0].tolist(), "quality": pb.quality[0, 0].tolist()}


TRAINERS = {
    "output_length": _train_output_length,
    "kernel_latency": _train_kernel_latency,
    "interference": _train_interference,
    "moe_congestion": _train_moe_congestion,
}


@pytest.fixture(scope="module")
def trained(shared_store, tmp_path_factory):
    """models dir with every kind whose predictor has landed -> (dir, {kind: sample body})."""
    root = tmp_path_factory.mktemp("models")
    samples = {}
    for kind, train in TRAINERS.items():
        if _landed(kind):
            samples[kind] = train(shared_store, root / kind)
    if not samples:
        pytest.skip("no predictor runtime has landed yet")
    return root, samples


@pytest.fixture(scope="module")
def url(trained):
    with estimate_service(trained[0]) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _sample(trained, kind):
    if kind not in trained[1]:
        pytest.skip(f"the {kind} predictor (servecast.predictors.{kind}.runtime) has not landed")
    return trained[1][kind]


PATHS = {"output_length": "/v1/output-length", "kernel_latency": "/v1/kernel-latency",
         "interference": "/v1/interference", "moe_congestion": "/v1/moe-congestion"}
VALUE = {"output_length": "p50", "kernel_latency": "latency_ms", "interference": "perf",
         "moe_congestion": "gamma_eff"}
#: (kind, broken body maker, field the 422 message must name)
BAD_BODIES = [
    ("output_length", lambda b: {**b, "prompt_tokens": -5}, "prompt_tokens"),
    ("output_length", lambda b: {k: v for k, v in b.items() if k != "prompt_tokens"},
     "prompt_tokens"),
    ("kernel_latency", lambda b: {**b, "shape": "8x256"}, "shape"),
    ("kernel_latency", lambda b: {**b, "device_spec": {"Mem_Bw": 900}}, "device_spec.Dev_Mem"),
    ("kernel_latency", lambda b: {**b, "device_spec": {**b["device_spec"], "TensorFLOPs": -1}},
     "device_spec.TensorFLOPs"),
    ("kernel_latency", lambda b: {**b, "colour": "red"}, "colour"),
    ("interference", lambda b: {"metrics": []}, "metrics"),
    ("moe_congestion", lambda b: {**b, "loads": "many"}, "loads"),
]


def test_healthz_lists_loaded_kinds(client, trained):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["kinds"] == sorted(trained[1])


def test_openapi_schema_has_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    assert set(PATHS.values()) | {"/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/output-length"]["post"]["requestBody"]
    assert "oneOf" in body["content"]["application/json"]["schema"]


@pytest.mark.parametrize("kind", list(PATHS))
def test_single_and_batch_agree(client, trained, kind):
    body = _sample(trained, kind)
    one = client.post(PATHS[kind], json=body)
    assert one.status_code == 200, one.text
    value = one.json()[VALUE[kind]]
    assert math.isfinite(value)
    batch = client.post(PATHS[kind], json={"items": [body, body, body]})
    assert batch.status_code == 200, batch.text
    items = batch.json()["items"]
    assert len(items) == 3
    for item in items:
        assert item[VALUE[kind]] == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("kind,breaker,field", BAD_BODIES,
                         ids=[f"{k}-{f}" for k, _, f in BAD_BODIES])
def test_invalid_body_is_422_naming_the_field(client, trained, kind, breaker, field):
    body = breaker(_sample(trained, kind))
    r = client.post(PATHS[kind], json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    # the same broken item inside a batch is located by its index
    r = client.post(PATHS[kind], json={"items": [_sample(trained, kind), body]})
    assert r.status_code == 422
    assert r.json()["message"].startswith("items[1]")


def test_output_length_unknown_model_is_422(client, trained):
    body = _sample(trained, "output_length")
    r = client.post(PATHS["output_length"], json={**body, "model": "no-such-model"})
    assert r.status_code == 422
    assert "no-such-model" in r.json()["message"]


def test_observed_completions_feed_later_estimates(client, trained):
    """POST /v1/output-length/observe records finished requests: the prompt-length history
    then moves the estimate of the same prompt length; a bad body is 422 naming the field;
    the MoE route answers through the Estimator with types and layer too."""
    _sample(trained, "output_length")
    body = {"prompt_tokens": 4321}
    before = client.post(PATHS["output_length"], json=body).json()["p50"]
    done = [{"session_id": "s1", "prompt_tokens": 4321, "output_tokens": 20_000,
             "arrival_s": 10.0 + i} for i in range(3)]
    r = client.post("/v1/output-length/observe", json={"items": done})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [{"recorded": True}] * 3}
    after = client.post(PATHS["output_length"], json=body).json()["p50"]
    assert after > before
    r = client.post("/v1/output-length/observe", json={**done[0], "output_tokens": -1})
    assert r.status_code == 422 and "output_tokens" in r.json()["message"]
    moe = _sample(trained, "moe_congestion")
    r = client.post(PATHS["moe_congestion"], json={**moe, "layer": 0})
    assert r.status_code == 200
    assert r.json()["gamma_eff"] == client.post(PATHS["moe_congestion"], json=moe).json()[
        "gamma_eff"]  # one fitted layer: its beta is the median


def test_interference_accepts_metric_mapping(client, trained):
    body = _sample(trained, "interference")
    series: dict[str, list[float]] = {}
    for s in sorted(body["metrics"], key=lambda s: s["t"]):
        series.setdefault(s["metric"], []).append(s["value"])
    r = client.post(PATHS["interference"], json={"metrics": series})
    assert r.status_code == 200, r.text
    assert 0 < r.json()["perf"] <= 1.5


def test_domain_errors_are_422(client, trained):
    body = _sample(trained, "kernel_latency")
    r = client.post(PATHS["kernel_latency"], json={**body, "op": "fft"})
    assert r.status_code == 422
    assert "unknown op 'fft'" in r.json()["message"]
    r = client.post(PATHS["kernel_latency"], json={**body, "shape": [8, 256]})
    assert r.status_code == 422
    assert "shape" in r.json()["message"]


#: bodies valid for each endpoint's schema (whatever the model would answer)
SCHEMA_VALID = {
    "output_length": {"prompt_tokens": 100},
    "kernel_latency": {"op": "bmm", "shape": [1, 64, 64, 64], "device_spec": {
        "Dev_Mem": 16, "Mem_Bw": 900, "Num_Sm": 80, "Core_Per_SM": 64, "Freq": 1530,
        "SingleFLOPs": 15700, "L2Cache": 6}},
    "interference": {"metrics": [{"t": 0, "metric": "cpu", "value": 0.5}]},
    "moe_congestion": {"loads": [10, 20, 30], "quality": [0.1, 0.2, 0.3]},
}


def test_malformed_json_and_empty_batch_are_422(client):
    r = client.post(PATHS["kernel_latency"], content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post(PATHS["kernel_latency"], json={"items": []})
    assert r.status_code == 422 and "items" in r.json()["message"]


def test_absent_kind_answers_404(trained, tmp_path):
    """A service holding only one kind answers the other endpoints with 404, not 5xx."""
    from fastapi.testclient import TestClient

    from servecast.service import create_app

    kind = sorted(trained[1])[0]
    only = tmp_path / "models"
    only.mkdir()
    (only / kind).symlink_to(trained[0] / kind, target_is_directory=True)
    with TestClient(create_app(only)) as c:
        assert c.get("/healthz").json()["kinds"] == [kind]
        for other in (k for k in PATHS if k != kind):
            r = c.post(PATHS[other], json=SCHEMA_VALID[other])
            assert r.status_code == 404, r.text
            assert f"no {other} model" in r.json()["message"]
        assert c.post(PATHS[kind], json=trained[1][kind]).status_code == 200


def test_bounded_keepalive_load_answers_correctly(url, client, trained):
    kind = "output_length" if "output_length" in trained[1] else sorted(trained[1])[0]
    body = trained[1][kind]
    expected = client.post(PATHS[kind], json=body).json()
    result = post_load(url + PATHS[kind], body, requests=300, connections=3, warmup=5)
    assert result.errors == 0, result.statuses
    assert result.statuses == {200: 300}
    assert result.last_body == expected
    assert result.latencies_ms.size == 300 and (result.latencies_ms > 0).all()


# -- schemathesis: generated bodies, valid and invalid, never a 5xx --------------------------
def test_schemathesis_finds_no_server_error(url):
    from hypothesis import given
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert operations
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error])

        check()
