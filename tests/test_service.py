"""HTTP estimate service: a real `servecast serve` process on loopback with tiny models trained
on the shared data, covering success, batch, 404 and 422 answers per endpoint, a bounded
keep-alive load (correctness only; speed is benchmarks/service.py), and a schemathesis run
against the OpenAPI schema that must find no 5xx."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import math
import time
from typing import Any

import httpx
import pytest
import schemathesis
from _tools.loadtest import post_load
from _tools.localserver import estimate_service
from hypothesis import HealthCheck, settings

from servecast.service.limits import MAX_BODY_BYTES, ServeLimits

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
    # strict types: no bool or numeric string for a number, no float for an integer
    ("output_length", lambda b: {**b, "prompt_tokens": True}, "prompt_tokens"),
    ("output_length", lambda b: {**b, "prompt_tokens": "512"}, "prompt_tokens"),
    ("output_length", lambda b: {**b, "prompt_tokens": 512.5}, "prompt_tokens"),
    ("kernel_latency", lambda b: {**b, "shape": [True, 1, 1, 1]}, "shape[0]"),
    # bounds: issue 21's overflowing and absurd shapes, a spec past any GPU, list lengths
    ("kernel_latency", lambda b: {**b, "shape": [1e300] * 4}, "shape[0]"),
    ("kernel_latency", lambda b: {**b, "shape": [1e20] * 4}, "shape[0]"),
    ("kernel_latency", lambda b: {**b, "shape": [8] * 12}, "shape"),
    ("kernel_latency", lambda b: {**b, "device_spec": {**b["device_spec"], "Num_Sm": 1e308}},
     "device_spec.Num_Sm"),
    ("kernel_latency", lambda b: {**b, "device_spec": {**b["device_spec"], "Note": [1] * 9}},
     "device_spec.Note"),
    ("moe_congestion", lambda b: {**b, "loads": [1.0] * 5000}, "loads"),
    ("interference", lambda b: {"metrics": {"cpu": [0.5] * 10_001}}, "metrics"),
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
    items = r.json()["items"]  # estimated without a session: no pending estimate to score
    assert [(i["recorded"], i["calibrated"], i["observed"]) for i in items] == [
        (True, False, 0)] * 3
    after = client.post(PATHS["output_length"], json=body).json()["p50"]
    assert after > before
    r = client.post("/v1/output-length/observe", json={**done[0], "output_tokens": -1})
    assert r.status_code == 422 and "output_tokens" in r.json()["message"]
    # a completion reported under the request_id of its estimate calibrates online: three
    # answers 50x longer than estimated raise the learned level (scale)
    for i in range(3):
        rid = f"r{i}"
        est = client.post(PATHS["output_length"], json={**body, "request_id": rid}).json()
        r = client.post("/v1/output-length/observe", json={
            "prompt_tokens": 4321, "output_tokens": int(50 * est["p50"]) + 50,
            "request_id": rid})
        assert r.status_code == 200 and r.json()["calibrated"] is True, r.text
    assert r.json()["observed"] == 3 and r.json()["scale"] > 1.0
    again = client.post("/v1/output-length/observe", json={
        "prompt_tokens": 4321, "output_tokens": 5, "request_id": "r0"}).json()
    assert again["calibrated"] is False and again["observed"] == 3  # scored once
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

    from servecast.service.app import create_app

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


# -- issue 21: no 5xx, no dropped connection, plausible answers only -------------------------
class KeepAlive:
    """One persistent HTTP/1.1 connection: `post` fails the test if the server answers 5xx or
    drops the connection without saying `connection: close` (reconnecting only where it sat
    idle near the server's keep-alive timeout, which closes it legitimately)."""

    def __init__(self, url: str):
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.conn.connect()
        self.sock, self.sent, self.last = self.conn.sock, 0, time.monotonic()
        self.idle_s = ServeLimits.keep_alive_s - 1

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if body is not None else {}
        if time.monotonic() - self.last > self.idle_s:
            self.conn.close()
            self.conn.connect()
            self.sock = self.conn.sock
        try:
            self.conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # a body over the limit is answered 413 and closed while it is still being sent
            assert body is not None and len(body) > MAX_BODY_BYTES, (path, body[:300])
            self.conn.close()
            self.conn.connect()
            self.sock, self.last = self.conn.sock, time.monotonic()
            return 413, b""
        r = self.conn.getresponse()
        data, self.sent = r.read(), self.sent + 1
        assert r.status < 500, f"{method} {path} {body[:300] if body else ''!r} -> {r.status}"
        if r.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn.connect()
        else:  # the same socket answers the next request
            assert self.conn.sock is self.sock, f"connection dropped after {path} {body!r}"
        self.sock, self.last = self.conn.sock, time.monotonic()
        return r.status, data

    def post(self, path: str, body: Any) -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        status, data = self.request("POST", path, raw)
        return status, json.loads(data) if data else {}

    def close(self) -> None:
        self.conn.close()


#: numeric-boundary values put in place of every number of a valid body (JSON text)
BOUNDARY = ["0", "-1", "1", "0.5", "1e-300", "-1e-300", "5e-324", "2147483648",
            "2147483649", "9007199254740993", "1000000000000000000000000000000", "1e300",
            "-1e300", "1.7976931348623157e308", "1e999", "-1e999", "NaN", "Infinity", "true",
            "false", "null", '"512"', "[]", "{}"]


def _numeric_paths(body: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(body, dict):
        return [p for k, v in body.items() for p in _numeric_paths(v, (*prefix, k))]
    if isinstance(body, list):
        return [p for i, v in enumerate(body) for p in _numeric_paths(v, (*prefix, i))]
    return [prefix] if isinstance(body, (int, float)) and not isinstance(body, bool) else []


def _with_raw(body: Any, path: tuple, raw: str) -> bytes:
    """`body` as JSON text with the value at `path` replaced by the raw JSON token `raw`."""
    marker = "\u0000boundary\u0000"
    copy = json.loads(json.dumps(body))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), raw).encode()


@pytest.mark.slow  # ~1,000 requests over one connection
def test_numeric_boundaries_never_5xx_and_keep_the_connection(url, trained):
    """Every number of every endpoint's valid body, set to each boundary value: no 5xx, the
    keep-alive connection keeps answering, a 200 carries a finite plausible estimate."""
    conn = KeepAlive(url)
    try:
        for kind, body in trained[1].items():
            paths = _numeric_paths(body)[:12]  # the first dozen numbers of long windows
            for path in paths:
                for raw in BOUNDARY:
                    status, out = conn.post(PATHS[kind], _with_raw(body, path, raw))
                    assert status in (200, 422), (kind, path, raw, status, out)
                    if status == 200:
                        assert math.isfinite(out[VALUE[kind]]), (kind, path, raw, out)
                    else:
                        assert out["message"], (kind, path, raw)
        assert conn.request("GET", "/healthz")[0] == 200
    finally:
        conn.close()
    assert conn.sent > 500


@pytest.mark.slow  # 4 operations x 2 modes x 25 generated bodies
def test_schemathesis_boundaries_keep_the_connection(url):
    """schemathesis bodies from the OpenAPI schema (valid ones, whose numbers hypothesis
    draws at the schema's bounds first, and invalid ones) over one keep-alive connection:
    never a 5xx, never a dropped connection."""
    from hypothesis import given
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    conn = KeepAlive(url)
    try:
        for op in operations:  # a GET without parameters has no invalid form
            for mode in GenerationMode if op.method.upper() != "GET" else [GenerationMode(
                    "positive")]:
                @given(case=op.as_strategy(generation_mode=mode))
                @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                def check(case):
                    if case.method.upper() == "GET":
                        conn.request("GET", case.formatted_path)
                    else:
                        conn.post(case.formatted_path, case.body)

                check()
    finally:
        conn.close()
    assert conn.sent >= len(operations) * 2 * 10


def test_absurd_estimate_is_refused_naming_the_field(client, trained):
    """In-range dims whose latency would be 6e27 ms: 422 naming shape, not a 200."""
    body = _sample(trained, "kernel_latency")
    r = client.post(PATHS["kernel_latency"], json={**body, "shape": [2**31] * 4})
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith("shape: the estimate latency_ms = ")
    r = client.post(PATHS["kernel_latency"], json={"items": [body, {**body,
                                                                    "shape": [2**31] * 4}]})
    assert r.status_code == 422 and r.json()["message"].startswith("items[1].shape:")


def test_arithmetic_error_is_refused_naming_the_field(trained):
    """Past the schema (model_construct skips it), the predictor's own OverflowError on
    [1e300]*4 becomes InvalidInputError naming the field, not an exception to the server."""
    from servecast.errors import InvalidInputError
    from servecast.estimator import Estimator
    from servecast.service.app import ENDPOINTS
    from servecast.service.models import Batch, DeviceSpec, KernelLatencyRequest

    body = _sample(trained, "kernel_latency")
    ep = next(e for e in ENDPOINTS if e.kind == "kernel_latency")
    est = Estimator.load(trained[0])
    bad = KernelLatencyRequest.model_construct(
        op="bmm", shape=[1e300] * 4, device_spec=DeviceSpec.model_construct(**body["device_spec"]))
    with pytest.raises(InvalidInputError, match=r"^shape: no estimate can be computed.*Overflow"):
        ep.compute(est, bad)
    good = KernelLatencyRequest.model_validate(body)
    with pytest.raises(InvalidInputError, match=r"^items\[1\]\.shape: no estimate"):
        ep.compute(est, Batch[KernelLatencyRequest].model_construct(items=[good, bad]))


def test_ignored_prompt_text_is_reported(trained, caplog):
    """A prompt_text sent to a model without text: answered, with `ignored`, a header and a
    log line (not silently dropped)."""
    from fastapi.testclient import TestClient

    from servecast.service.app import IGNORED_HEADER, create_app

    body = _sample(trained, "output_length")
    with TestClient(create_app(trained[0])) as c, caplog.at_level("WARNING"):
        plain = c.post(PATHS["output_length"], json=body)
        assert "ignored" not in plain.json() and IGNORED_HEADER not in plain.headers
        r = c.post(PATHS["output_length"], json={**body, "prompt_text": "Summarize this."})
        assert r.status_code == 200
        assert r.json()["ignored"] == ["prompt_text"]
        assert r.json()["p50"] == plain.json()["p50"]
        assert r.headers[IGNORED_HEADER] == "prompt_text"
        r = c.post(PATHS["output_length"], json={"items": [body, {**body, "prompt_text": "x"}]})
        assert [i.get("ignored") for i in r.json()["items"]] == [None, ["prompt_text"]]
    assert any("ignored prompt_text" in m for m in caplog.messages), caplog.messages


def test_docs_assets_are_served_locally(client):
    """/docs and /redoc load their JS/CSS from this service, none from a CDN."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/static/docs/") for a in assets), (page, assets)
        for a in assets:
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 1000, a
    assert "SwaggerUIBundle" in client.get("/static/docs/swagger-ui-bundle.js").text


def test_slow_clients_are_cut_off_and_service_keeps_answering(trained):
    """50 clients that send half a request: all answered 408 and closed after --read-timeout;
    an idle connection is closed too; a normal request still answers."""
    import socket
    import sys

    from _tools.localserver import background, free_port

    port = free_port()
    cmd = [sys.executable, "-m", "servecast.cli", "serve", "--models", str(trained[0]),
           "--port", str(port), "--read-timeout", "1", "--keep-alive", "1"]
    with background(cmd, f"http://127.0.0.1:{port}/healthz", 90):
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(51)]
        for s in socks[:50]:
            s.sendall(b"POST /v1/output-length HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\n")
        for s in socks:  # the 51st sent nothing at all
            got = s.recv(200)
            assert got == b"" or got.startswith(b"HTTP/1.1 408"), got
            assert s.recv(200) == b""  # closed by the server
            s.close()
        r = httpx.post(f"http://127.0.0.1:{port}{PATHS['output_length']}",
                       json={"prompt_tokens": 100})
        assert r.status_code in (200, 404)


def test_oversized_body_and_head_are_refused(url):
    """A declared body over MAX_BODY_BYTES: 413 before any of it is read; a head over
    ServeLimits.max_header_bytes, in one piece or still arriving: 431; then closed."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    big = b"x-pad: " + b"a" * ServeLimits.max_header_bytes + b"\r\n"
    heads = {b"413": f"POST {PATHS['moe_congestion']} HTTP/1.1\r\nhost: x\r\ncontent-type: "
                     f"application/json\r\ncontent-length: {MAX_BODY_BYTES + 1}\r\n\r\n"
                     .encode(),
             b"431": b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n",
             b"431 ": b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + big + big}  # unfinished
    for status, request in heads.items():
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(request)
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 " + status.strip()), (status, head)
            with contextlib.suppress(ConnectionResetError):  # unread bytes: a reset
                while s.recv(4096):
                    pass  # then closed by the server
    assert KeepAlive(url).request("GET", "/healthz")[0] == 200


def test_serve_refuses_a_pickle_that_would_run_code(trained, tmp_path, capsys):
    """The interference net.pt replaced by a crafted pickle: `servecast serve` exits 2 naming
    the file; the payload never runs."""
    import shutil

    from test_estimator import plant_pickle

    from servecast.cli import main

    if "interference" not in trained[1]:
        pytest.skip("no interference model")
    models = tmp_path / "models"
    shutil.copytree(trained[0], models)
    marker = tmp_path / "pwned"
    plant_pickle(models / "interference" / "net.pt", marker)
    assert main(["serve", "--models", str(models), "--port", "9"]) == 2
    err = capsys.readouterr().err
    assert f"{models / 'interference' / 'net.pt'}: not a plain tensor state dict" in err
    assert not marker.exists()


def test_estimate_kernel_latency_takes_the_models_root(trained, tmp_path, capsys):
    """`estimate kernel-latency --models DIR` takes the models root like every estimate
    command (the old --model still works); neither given: exit 2 naming --models."""
    from servecast.cli import main

    body = _sample(trained, "kernel_latency")
    spec = tmp_path / "gpu.json"
    spec.write_text(json.dumps({"Device": "test-gpu", **body["device_spec"]}))
    args = ["estimate", "kernel-latency", "--device-spec", str(spec), "--op", "bmm",
            "--shape", ",".join(str(int(d)) for d in body["shape"])]
    assert main([*args, "--models", str(trained[0])]) == 0
    root = capsys.readouterr().out
    assert main([*args, "--model", str(trained[0] / "kernel_latency")]) == 0
    # rich wraps the line at the console's width ($COLUMNS: pytest-xdist's workers set 80)
    assert capsys.readouterr().out == root and " ms (roofline" in " ".join(root.split())
    assert main(args) == 2
    assert "pass --models DIR" in capsys.readouterr().err
