"""Start a server process on a free loopback port and stop it again (tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from servecast.errors import ServecastError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; raise ServecastError on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServecastError(f"server exited with status {proc.returncode} before {url} "
                                 "answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise ServecastError(f"{url} did not answer within {timeout_s:.0f} s")


@contextmanager
def background(cmd: Sequence[str], ready_url: str, timeout_s: float = 60.0,
               env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run `cmd`, wait until `ready_url` answers, yield the process; terminate it at exit.

    The process's output goes to a temp file, shown in the error if it fails to start.
    """
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    try:
        try:
            wait_http(ready_url, timeout_s, proc)
        except ServecastError as e:
            log.flush()
            tail = Path(log.name).read_text()[-3000:]
            raise ServecastError(f"{e}; command {' '.join(cmd)}; output:\n{tail}") from None
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


@contextmanager
def estimate_service(models_dir: str | Path, timeout_s: float = 90.0) -> Iterator[str]:
    """`servecast serve --models DIR` on a free loopback port; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "servecast.cli", "serve", "--models", str(models_dir),
           "--host", "127.0.0.1", "--port", str(port)]
    with background(cmd, f"{url}/healthz", timeout_s):
        yield url
