"""`servecast emulate`: OpenAI's API on the simulator in real time (FastAPI TestClient and
uvicorn on loopback), its errors, and a pinned AIPerf run against it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient

from servecast.emulator.app import create_app
from servecast.emulator.driver import Driver, Fleet
from servecast.emulator.protocol import TOKEN_TEXT
from servecast.simulator import Compiled, Deployment
from servecast.tokens import count_tokens

MODEL = "llama-3.1-8b"
PROMPT = "Summarize the history of the printing press in three sentences."


@pytest.fixture(scope="module")
def compiled():
    return Compiled(Deployment(model=MODEL, gpu="l40s"))


@pytest.fixture
def client(compiled, tmp_path):
    driver = Driver(Fleet(compiled), log=tmp_path / "emu.jsonl")
    with TestClient(create_app(driver, MODEL, default_output_tokens=5)) as c:
        yield c


def events(resp) -> list:
    """The JSON bodies of a server-sent event stream ([DONE] as the string)."""
    out = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_and_whole_completions(client):
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [MODEL]
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 4,
                                              "temperature": 0.7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == TOKEN_TEXT * 4
    assert body["choices"][0]["finish_reason"] == "length"
    n = count_tokens([PROMPT])[0]
    assert body["usage"] == {"prompt_tokens": n, "completion_tokens": 4, "total_tokens": n + 4}
    # token ids count as given; no max_tokens: the emulator's default (5 here)
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": [1, 2, 3]}).json()
    assert r["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    chat = client.post("/v1/chat/completions", json={
        "model": MODEL, "max_completion_tokens": 3, "max_tokens": 9,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": PROMPT}]}]}).json()
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": TOKEN_TEXT * 3}
    assert chat["usage"]["prompt_tokens"] == sum(count_tokens(["Be brief.", PROMPT]))
    assert chat["usage"]["completion_tokens"] == 3  # max_completion_tokens wins


def test_streams_in_openai_chunk_format(client):
    r = client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = events(r)
    assert ev[-1] == "[DONE]"
    chunks, usage = ev[:-2], ev[-2]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in ev[:-1]}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:]] == [TOKEN_TEXT] * 3
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:]] == [None, None, "length"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    plain = events(client.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT,
                                                         "max_tokens": 2, "stream": True}))
    assert [c["choices"][0]["text"] for c in plain[:-1]] == [TOKEN_TEXT] * 2
    assert all("usage" not in c for c in plain[:-1])  # no include_usage: no usage chunk


@pytest.mark.parametrize(("path", "body", "status", "param", "says"), [
    ("/v1/completions", "{not json", 400, None, "not valid JSON"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens",
     "greater than or equal to 1"),
    ("/v1/completions", {"model": MODEL}, 400, "prompt", "Field required"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "n": 2}, 400, "n", "less than"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt", "no tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt", "one prompt"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages", "at least 1"),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
     404, "model", "does not exist"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 10_000_000}, 400,
     "prompt", "lower max_tokens"),
])
def test_bad_bodies_get_openai_errors(client, path, body, status, param, says):
    kw = {"content": body, "headers": {"content-type": "application/json"}} \
        if isinstance(body, str) else {"json": body}
    r = client.post(path, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and says in err["message"]


def test_output_length_model_sets_the_default_length(compiled, fitted_kind):
    """Without max_tokens the request generates the output-length model's p50; SJF by
    predicted p50 orders it by that prediction."""
    from servecast.estimator import Estimator

    est = Estimator.load(fitted_kind("output_length")[3])
    driver = Driver(Fleet(compiled, "sjf_pred", predicts=True))
    q = est.output_length(count_tokens([PROMPT])[0])
    want = max(1, round(q.p50))
    with TestClient(create_app(driver, MODEL, default_output_tokens=want + 7,
                               lengths=est)) as c:
        with c.stream("POST", "/v1/completions",
                      json={"model": MODEL, "prompt": PROMPT, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first token: the request is in the engine
        [seq] = driver.fleet.engine(0).seqs.values()
        assert seq.req.output_tokens == want
        assert (seq.req.p50, seq.req.p90, seq.key) == (q.p50, q.p90, q.p50)


def test_kv_tokens_are_the_engines_one_number(compiled, client):
    """One count of what a request may hold, the engine's: whole KV blocks of the step-time
    memory model less the watermark's; /v1/models says it (max_model_len), the engine and
    the API admit exactly that many tokens and refuse one more with the same number."""
    from servecast.errors import InvalidInputError
    from servecast.simulator.core import Engine, Request

    fleet = client.app.state.driver.fleet
    bs = compiled.deployment.block_size
    engine = Engine(compiled)
    assert fleet.replica_kv_tokens == compiled.memory["kv_capacity_tokens"] // bs * bs
    assert fleet.kv_tokens == engine.request_kv_tokens == (engine.total - engine.keep) * bs
    assert 0 < fleet.kv_tokens < fleet.replica_kv_tokens
    assert [m["max_model_len"] for m in client.get("/v1/models").json()["data"]] == [
        fleet.kv_tokens]
    engine.add(Request(0, 0.0, 1000, fleet.kv_tokens - 1000))  # exactly fits
    with pytest.raises(InvalidInputError, match=f"more than the {fleet.kv_tokens:,} one"):
        engine.add(Request(1, 0.0, 1000, fleet.kv_tokens - 999))
    n = count_tokens([PROMPT])[0]
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT,
                                              "max_tokens": fleet.kv_tokens - n + 1})
    assert r.status_code == 400 and f"the {fleet.kv_tokens:,} KV tokens" in r.text
    assert fleet.describe() == (f"{fleet.replica_kv_tokens:,} KV tokens per replica, at "
                                f"most {fleet.kv_tokens:,} per request")


@pytest.mark.slow  # starts the CLI's server
def test_cli_banner_states_the_kv_tokens_the_server_enforces(compiled):
    """`servecast emulate` prints the KV tokens a request may hold, and its server refuses a
    request of one token more with that number (not the step-time model's raw count)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _tools.localserver import free_port, wait_http

    port = free_port()
    cli = str(Path(sys.executable).parent / "servecast")
    proc = subprocess.Popen([cli, "emulate", "--model", MODEL, "--gpu", "l40s", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 60, proc)
        limit = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v1/models", timeout=10).read())["data"][0]["max_model_len"]
        body = json.dumps({"model": MODEL, "prompt": [1] * 100, "max_tokens": limit - 99})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body.encode(),
                                     {"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        said = refused.value.read().decode()
    finally:
        proc.terminate()
        banner = " ".join(proc.communicate(timeout=10)[0].split())  # rich wraps long lines
    assert f"at most {limit:,} per request" in banner, banner
    assert f"the {limit:,} KV tokens one replica holds" in said
    assert f"{compiled.memory['kv_capacity_tokens']:,}" not in banner


def test_no_token_leaves_before_its_simulated_time_on_uvloop(compiled):
    """uvicorn runs the driver on uvloop, whose millisecond timers wake a sleep up to half a
    millisecond early; the driver still hands out no token before its simulated end."""
    import asyncio

    import uvloop

    async def run() -> list[float]:
        driver = Driver(Fleet(compiled, router="least_tokens"))
        await driver.start()
        lead: list[float] = []  # simulated time - wall time at hand-out, s

        async def consume(stream):
            while (t := await stream.tokens.get()) is not None:
                lead.append(t - driver.now())

        streams = [driver.submit(300 + 200 * i, 30) for i in range(6)]
        await asyncio.gather(*(consume(s) for s in streams))
        await driver.stop()
        return lead

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        lead = runner.run(run())
    assert len(lead) == 6 * 30 and max(lead) <= 0


def _stream(url: str, body: dict, out: dict, key: int) -> None:
    """POST a streamed completion; out[key] = (seconds to the first token, to the end)."""
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t0 = time.monotonic()
    first = None
    with urllib.request.urlopen(req, timeout=60) as r:
        for line in r:
            if line.startswith(b"data: {") and first is None:
                first = time.monotonic() - t0
    out[key] = (first, time.monotonic() - t0)


@pytest.mark.slow
def test_real_time_on_loopback_equals_the_offline_simulation(tmp_path):
    """The CLI's server on loopback: 12 overlapping streamed requests; the simulated times
    it logs equal an offline simulation of the logged arrivals, and no client sees a token
    or the end before its simulated time."""
    import sys
    from pathlib import Path

    from _tools.emulator_check import Check, offline_diff
    from _tools.localserver import background, free_port

    port, log = free_port(), tmp_path / "emu.jsonl"
    cli = str(Path(sys.executable).parent / "servecast")
    url = f"http://127.0.0.1:{port}/v1/completions"
    seen: dict = {}
    with background([cli, "emulate", "--model", MODEL, "--gpu", "l40s", "--replicas", "2",
                     "--router", "least_tokens", "--port", str(port), "--log", str(log)],
                    f"http://127.0.0.1:{port}/v1/models"):
        threads = []
        for i in range(12):
            body = {"model": MODEL, "prompt": "word " * (200 + 300 * i), "max_tokens": 8 + i,
                    "stream": True}
            threads.append(threading.Thread(target=_stream, args=(url, body, seen, i)))
            threads[-1].start()
            time.sleep(0.03)
        for t in threads:
            t.join(60)
    sim = sorted((json.loads(line) for line in log.read_text().splitlines()),
                 key=lambda s: s["arrival_s"])
    assert len(sim) == len(seen) == 12
    assert {s["replica"] for s in sim} == {0, 1}
    # offline behind the emulator's router: least_tokens and round_robin agree only while
    # the arrivals stay 30 ms apart (a loaded machine bunches them)
    assert offline_diff(sim, Check(replicas=2, router="least_tokens")) < 1e-6
    by_tokens = {s["output_tokens"]: s for s in sim}
    for i, (first, end) in seen.items():
        s = by_tokens[8 + i]
        assert first >= s["ttft_ms"] / 1e3 and end >= s["e2el_ms"] / 1e3


@pytest.mark.parametrize(("args", "says"), [
    (["--model", "llama-3.1-70b", "--gpu", "l40s"], "does not fit"),
    (["--model", "llama-3.1-70b", "--gpu", "l40s", "--tp", "3"], "tensor parallelism 3"),
    (["--model", MODEL, "--gpu", "nope"], "unknown GPU"),
    (["--model", "nope", "--gpu", "l40s"], "unknown model"),
    (["--model", MODEL, "--gpu", "l40s", "--router", "random"], "unknown router"),
    (["--model", MODEL, "--gpu", "l40s", "--lengths-model", "/nonexistent/models"],
     "no such models dir"),
    (["--model", MODEL, "--gpu", "l40s", "--policy", "lifo"], "unknown policy"),
    (["--model", MODEL, "--gpu", "l40s", "--policy", "sjf_pred"], "--lengths-model DIR"),
    (["--model", MODEL, "--gpu", "l40s", "--engine", "tensorrt"], "known engines: vllm"),
    (["--model", MODEL, "--gpu", "l40s", "--efficiency", "0"], "must be > 0"),
    (["--model", MODEL, "--gpu", "l40s", "--kv-cache-dtype", "int4"], "use one of"),
])
def test_cli_refuses_a_bad_deployment(capsys, args, says):
    from servecast.cli import main

    assert main(["emulate", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_cli_refuses_a_port_in_use(capsys):
    import socket

    from servecast.cli import main

    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        assert main(["emulate", "--model", MODEL, "--gpu", "l40s", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


@pytest.mark.slow
def test_aiperf_measures_what_the_simulator_timed(tools_python, tmp_path):
    """AIPerf 0.13.0, 20 streamed completions (4096 prompt, 64 output tokens) at a constant
    4 requests/s: its own mean TTFT and TPOT within 10% of the simulated ones."""
    from _tools.emulator_check import Check, run_check

    r = run_check(tools_python, tmp_path, Check(requests=20))
    assert abs(r["ttft_rel_err"]) < 0.10 and abs(r["tpot_rel_err"]) < 0.10
    assert r["offline_max_diff_ms"] < 1e-6
    assert (r["client_ttft_ms"] - r["sim_ttft_ms"]).min() > -1.0  # never before the simulator
    assert np.ptp(r["sim_tpot_ms"]) > 0  # a batch that changes: not one constant time
