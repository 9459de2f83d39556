"""The service's API docs in a real browser with no network: `servecast serve` on loopback,
Debian's headless Chromium with every host name unresolvable except loopback, /docs and
/redoc must render the operations (their JS/CSS come from the service, not a CDN); a
screenshot of each is saved under the test's tmp folder (path printed)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.request

import pytest
from _tools.localserver import estimate_service, free_port, wait_http
from test_browser import CHROMIUM, DevTools

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="chromium missing: `make browser` (apt-get install chromium)")]

#: page -> (JS counting its rendered operations, text it must show)
PAGES = {"/docs": ("document.querySelectorAll('.opblock').length", "/v1/moe-congestion"),
         "/redoc": ("document.querySelectorAll('[data-section-id^=\"operation\"]').length",
                    "MoE congestion coefficient")}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(service URL, DevTools websocket URL of an offline headless Chromium, tmp folder)."""
    from servecast.predictors.moe_congestion.game import CongestionGame
    from servecast.predictors.moe_congestion.synthetic import planted_batches

    folder = tmp_path_factory.mktemp("docs")
    pb = planted_batches(beta=2.0, gamma=5.0, n_batches=12, n_types=1, n_experts=8)
    CongestionGame(n_bootstrap=0).fit_arrays(pb.loads, pb.quality[:, 0, :]).save(
        folder / "models" / "moe_congestion")
    cdp = free_port()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         f"--user-data-dir={folder / 'profile'}", f"--remote-debugging-port={cdp}",
         "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{cdp}/json/version", 120, browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{cdp}/json/list") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        with estimate_service(folder / "models") as url:
            yield url, page["webSocketDebuggerUrl"], folder
    finally:
        browser.terminate()
        browser.wait(timeout=30)


async def render(ws_url: str, url: str, count_js: str, expect: str, shot,
                 deadline_s: float = 60) -> tuple[int, str]:
    """Load `url`; wait until `count_js` > 0 and `expect` shows; screenshot; (count, text)."""
    async with DevTools(ws_url) as dt:
        await dt.call("Emulation.setDeviceMetricsOverride", width=1400, height=1800,
                      deviceScaleFactor=1, mobile=False)
        await dt.call("Page.navigate", url=url)
        js = f"JSON.stringify([{count_js}, document.body ? document.body.innerText : ''])"
        end, count, text = time.monotonic() + deadline_s, 0, ""
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            res = await dt.call("Runtime.evaluate", expression=js, returnByValue=True)
            count, text = json.loads(res["result"]["value"])
            if count > 0 and expect in text:
                break
        shot.write_bytes(base64.b64decode((await dt.call("Page.captureScreenshot",
                                                         format="png"))["data"]))
        return count, text


@pytest.mark.parametrize("page", list(PAGES))
def test_api_docs_render_offline(served, page):
    url, ws_url, folder = served
    count_js, expect = PAGES[page]
    shot = folder / f"{page.strip('/')}.png"
    count, text = asyncio.run(render(ws_url, url + page, count_js, expect, shot))
    # 4 estimate POSTs + GET /healthz
    assert count >= 5, f"{page}: {count} operations rendered; text: {text[:500]!r}"
    assert expect in text and "/v1/kernel-latency" in text
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
