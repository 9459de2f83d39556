"""The dashboard in a real browser: `streamlit run` on loopback, Debian's headless Chromium
(driven over the DevTools protocol) loads every page, waits until it has rendered its
interactive Vega-Lite charts (a Vega canvas or SVG in each), finds no error element and no
static image, and saves a screenshot per page under the test's tmp folder (path printed)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _tools.localserver import background, free_port, wait_http

APP = Path(__file__).resolve().parent.parent / "app"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: URL path -> (text the rendered page shows, Vega charts it must draw)
PAGES = {"": ("Ingest a file", 0), "Traces": ("Arrivals", 1), "Cluster": ("Jobs", 2),
         "VM_noise": ("Variability by SKU", 2), "Output_length": ("Train & evaluate", 0),
         "GPU_kernels": ("Estimate on an unseen device", 2),
         "MoE": ("gamma_eff from the routing counts", 2)}
STATE_JS = """JSON.stringify({
  app: !!document.querySelector('[data-testid="stApp"]'),
  text: document.body ? document.body.innerText : '',
  errors: document.querySelectorAll('[data-testid="stException"],'
                                    + '[data-testid="stAlertContentError"]').length,
  images: document.querySelectorAll('[data-testid="stImage"] img').length,
  charts: [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
    .filter(c => c.querySelector('canvas, svg.marks')).length,
  running: !!document.querySelector('[data-testid="stStatusWidget"]')
})"""

CLICK_JS = """[...document.querySelectorAll('button')].find(b => b.innerText.trim() === %s)
.click()"""

pytestmark = [pytest.mark.skipif(
    CHROMIUM is None, reason="chromium missing: `make browser` (apt-get install chromium)"),
    pytest.mark.slow]  # real-data store and a headless browser (> 5 s)


class DevTools:
    """A minimal Chrome DevTools-protocol client on one page target (tornado websocket)."""

    def __init__(self, ws_url: str):
        self.ws_url, self.ws, self.next_id = ws_url, None, 0

    async def __aenter__(self) -> DevTools:
        from tornado.websocket import websocket_connect

        self.ws = await websocket_connect(self.ws_url, max_message_size=256 << 20)
        return self

    async def __aexit__(self, *exc) -> None:
        self.ws.close()

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.write_message(json.dumps({"id": self.next_id, "method": method,
                                                "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    async def state(self) -> dict:
        res = await self.call("Runtime.evaluate", expression=STATE_JS, returnByValue=True)
        return json.loads(res["result"]["value"])


async def visit(ws_url: str, url: str, expect: str, figures: int, shot: Path,
                deadline_s: float = 300, click: str | None = None) -> dict:
    """Load `url`, wait until `expect` shows, `figures` Vega charts are drawn (a canvas or
    SVG in each) and the app is idle
    (same state twice in a row), save a screenshot; returns the final page state. With
    `click`, first press the button labelled `click` once `expect` shows, and again (at most
    3 presses) if the app is still idle without the figures `repress_s` later: on a loaded
    machine a press that lands while Streamlit is still wiring the page is dropped."""
    async with DevTools(ws_url) as dt:
        await dt.call("Emulation.setDeviceMetricsOverride", width=1400, height=2200,
                      deviceScaleFactor=1, mobile=False)
        await dt.call("Page.navigate", url=url)
        end, last, state = time.monotonic() + deadline_s, None, {}
        presses, pressed_at, repress_s = 0, 0.0, 30.0
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            state = await dt.state()
            shown = state["app"] and expect in state["text"] and not state["running"]
            if state["running"]:
                pressed_at = time.monotonic()  # a press took: wait for the run to finish
            if click and shown and (presses == 0 or (
                    presses < 3 and state["charts"] < figures
                    and time.monotonic() - pressed_at > repress_s)):
                await dt.call("Runtime.evaluate", expression=CLICK_JS % json.dumps(click))
                presses, pressed_at, last = presses + 1, time.monotonic(), None
                continue
            ready = shown and (not click or presses > 0) and state["charts"] >= figures
            key = (state["charts"], len(state["text"]), state["errors"])
            if (ready and key == last) or state["errors"]:
                break
            last = key if ready else None
        else:
            raise AssertionError(f"{url}: not rendered in {deadline_s} s (wanted {expect!r}, "
                                 f"{figures} figure(s)); text: {state.get('text', '')[-500:]}")
        shot.write_bytes(base64.b64decode((await dt.call("Page.captureScreenshot",
                                                         format="png"))["data"]))
        return state


@pytest.fixture(scope="module")
def dashboard(shared_store, tmp_path_factory):
    """(dashboard URL, DevTools websocket URL of a headless Chromium page, tmp folder)."""
    shared_store.con.execute("CHECKPOINT")
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "shared.duckdb"
    shutil.copyfile(shared_store.path, db)
    port, cdp = free_port(), free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP / "Home.py"),
           "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    url = f"http://127.0.0.1:{port}"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={folder / 'profile'}",
         f"--remote-debugging-port={cdp}", "--remote-debugging-address=127.0.0.1",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{cdp}/json/version", 120, browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{cdp}/json/list") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        with background(cmd, f"{url}/_stcore/health", timeout_s=180,
                        env={"SERVECAST_DB": str(db), "SERVECAST_OUT": str(folder / "out")}):
            yield url, page["webSocketDebuggerUrl"], folder
    finally:
        browser.terminate()
        browser.wait(timeout=30)


@pytest.mark.parametrize("page", list(PAGES), ids=[p or "Home" for p in PAGES])
def test_page_renders_without_error(dashboard, page):
    url, ws_url, folder = dashboard
    expect, figures = PAGES[page]
    shot = folder / f"{page or 'Home'}.png"
    state = asyncio.run(visit(ws_url, f"{url}/{page}", expect, figures, shot))
    assert state["errors"] == 0, f"{page or 'Home'}: error element on the page: {state['text']}"
    assert "Traceback" not in state["text"]
    assert state["images"] == 0, "a static image where an interactive chart belongs"
    assert state["charts"] >= figures
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_output_length_trains_in_the_browser(dashboard):
    """Train & evaluate on the Output length page: calibration, error and what-if charts."""
    url, ws_url, folder = dashboard
    shot = folder / "Output_length_trained.png"
    state = asyncio.run(visit(ws_url, f"{url}/Output_length", "Train & evaluate", 3, shot,
                              click="Train & evaluate"))
    assert state["errors"] == 0, state["text"]
    assert "What-if" in state["text"] and "SJF gain captured" in state["text"]
    assert state["charts"] >= 3 and state["images"] == 0
    print(f"screenshot: {shot}")
