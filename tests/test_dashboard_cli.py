"""`servecast dashboard` as a real process: SIGTERM / SIGINT stop it together with its
Streamlit server (the port is free again and a CLI ingest to the same store succeeds)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _tools.localserver import free_port, wait_http

SERVECAST = Path(sys.executable).parent / "servecast"
AZURE_CODE = "llm/azure_llm_2023/AzureLLMInferenceTrace_code.csv"


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone for our purposes


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_streamlit_and_frees_port_and_store(tmp_path, data, sig):
    db = tmp_path / "store.duckdb"
    first = subprocess.run([str(SERVECAST), "ingest", "burstgpt", str(data / "llm/burstgpt"),
                            "--db", str(db)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    port = free_port()
    kids: list[int] = []
    proc = subprocess.Popen([str(SERVECAST), "dashboard", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 180, proc)
        kids = children(proc.pid)
        assert kids, "streamlit should run as a child of servecast dashboard"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        orphans = [k for k in kids if alive(k)]
        for k in orphans:  # never leave a server behind, even when the test fails
            os.kill(k, signal.SIGKILL)
    assert not orphans, "the Streamlit child outlived the dashboard"
    assert port_free(port)
    second = subprocess.run([str(SERVECAST), "ingest", "azure-llm", str(data / AZURE_CODE),
                             "--db", str(db), "--trace", "code"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "8,819" in second.stdout or "8819" in second.stdout


def test_missing_store_is_a_clear_error(tmp_path):
    r = subprocess.run([str(SERVECAST), "dashboard", "--db", str(tmp_path / "none.duckdb")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "none.duckdb: no store here" in r.stderr and "Traceback" not in r.stderr
