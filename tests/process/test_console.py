"""The web console (`ringkv.server.console`) in a real headless Chromium against a live
three-node cluster.

Chromium is driven through the DevTools protocol over its websocket (aiohttp's client):
the page at ``/ui`` must show three members up and a ring of arcs of three owners, turn
a killed node ``down`` within seconds, keep the admin token off every request but the
admin action it is pasted for, show the node's refusal of that action, and do all of it
with no script error and no Content-Security-Policy violation. Screenshots of the page
before and after the kill are taken every run; with ``RINGKV_UPDATE_SCREENSHOTS=1`` they
replace ``docs/img/console.png`` and ``docs/img/console-node-down.png``.

Skipped, saying why, when no Chromium is installed (Debian: ``apt-get install
chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.procs import Cluster

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]

ADMIN_TOKEN = "console-admin-token"
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "img"
VIEW_WIDTH, VIEW_HEIGHT = 1440, 1000
BROWSER_START = 30.0  # seconds for Chromium to open its DevTools port
DOWN_WITHIN = 15.0  # seconds for the page to show a killed node down


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One page of a headless Chromium, spoken to over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append(data)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the DevTools connection closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        await self.ws.send_str(json.dumps({"id": self._next, "method": method,
                                           "params": params}))
        answer = await asyncio.wait_for(fut, 30)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    async def screenshot(self, path: Path) -> None:
        """The whole page as a PNG at `path`."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send("Emulation.setDeviceMetricsOverride", width=VIEW_WIDTH,
                        height=max(VIEW_HEIGHT, int(height)), deviceScaleFactor=1,
                        mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def requests_sent(self) -> list[dict[str, Any]]:
        """Every request the page sent: url, method and headers (as the network saw them)."""
        sent: dict[str, dict[str, Any]] = {}
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Network.requestWillBeSent":
                req = params["request"]
                sent.setdefault(params["requestId"], {}).update(
                    url=req["url"], method=req["method"])
                sent[params["requestId"]].setdefault("headers", {}).update(req["headers"])
            elif event.get("method") == "Network.requestWillBeSentExtraInfo":
                sent.setdefault(params["requestId"], {}).setdefault("headers", {}).update(
                    params["headers"])
        return [r for r in sent.values() if "url" in r]

    def problems(self) -> list[str]:
        """Script errors, console errors and CSP violations seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(f"console.error: {params.get('args')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                # The admin refusals the test provokes on purpose are logged as failed
                # loads; any other failed load (a file of the page, a poll) is a problem.
                provoked = (entry.get("source") == "network"
                            and "/cluster/remove/" in entry.get("url", ""))
                if entry.get("level") == "error" and not provoked:
                    out.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return out

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[Page]:
    """A headless Chromium with one blank page, killed on the way out."""
    profile = tempfile.mkdtemp(prefix="ringkv-chromium-")
    args = [binary, "--headless", "--disable-gpu", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", f"--window-size={VIEW_WIDTH},{VIEW_HEIGHT}",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--hide-scrollbars",
            "--password-store=basic", "--use-mock-keychain"]
    # Chromium's sandbox refuses to start as root and in most unprivileged containers;
    # the browser here only ever loads the test cluster's own page.
    args += ["--no-sandbox", "about:blank"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        port = await asyncio.to_thread(_devtools_port, proc, profile)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            ws = await session.ws_connect(url, max_msg_size=0)
            page = Page(ws)
            try:
                for domain in ("Page", "Runtime", "Network", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                await page.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(proc: subprocess.Popen[bytes], profile: str) -> int:
    """The port Chromium chose, from the DevToolsActivePort file it writes."""
    marker = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + BROWSER_START
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"chromium exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.05)
    raise AssertionError(f"chromium opened no DevTools port within {BROWSER_START}s")


# What the tests read off the page.
MEMBERS = ("Array.from(document.querySelectorAll('#members tbody tr'))"
           ".map(tr => [tr.dataset.node, tr.dataset.status])")
RING_OWNERS = ("Array.from(new Set(Array.from(document.querySelectorAll('#ring path.arc'))"
               ".map(p => p.dataset.owner))).sort()")


async def _drive(base: str, binary: str, cluster: Cluster, shots: Path) -> None:
    async with chromium(binary) as page:
        await page.send("Page.navigate", url=f"{base}/ui")
        await page.wait_for(f"JSON.stringify({MEMBERS}) === "
                            "JSON.stringify([['n1','up'],['n2','up'],['n3','up']])",
                            15, "three members up in the members table")
        owners = await page.wait_for(f"{RING_OWNERS}.length === 3 && {RING_OWNERS}", 10,
                                     "ring arcs of three owners")
        assert owners == ["n1", "n2", "n3"]
        # Every arc path really draws something, in its owner's colour.
        arcs = await page.evaluate(
            "Array.from(document.querySelectorAll('#ring path.arc')).map(p =>"
            " [p.dataset.owner, p.getAttribute('stroke'), p.getTotalLength() > 100])")
        assert len({colour for _, colour, _ in arcs}) == 3, arcs
        assert all(drawn for _, _, drawn in arcs), arcs
        # Some traffic, so the request table, the latencies and the histogram have data.
        n1 = cluster["n1"]
        for i in range(40):
            assert n1.put(f"console-{i}", b"v").status_code == 204
            assert n1.get(f"console-{i}").status_code == 200
        # Two writes of one key with no context are siblings; reads of it count 2.
        n2 = cluster["n2"]
        for i in range(6):
            key = f"console-siblings-{i}"
            assert n1.put(key, b"a").status_code == 204
            assert n2.put(key, b"b").status_code == 204
            for _ in range(2):
                assert n1.get(key).status_code == 300
        await page.wait_for("Number(document.querySelector('#siblings rect[data-siblings=\"2\"]')"
                            "?.dataset.count) === 12", 10, "reads of two siblings counted")
        await page.wait_for(
            "Array.from(document.querySelectorAll('#requests tbody tr'))"
            ".some(tr => tr.dataset.op === 'put' && tr.cells[3].textContent.endsWith('ms'))",
            10, "the put row with a p50 in the requests table")
        await page.wait_for("Number(document.querySelector('#siblings rect[data-siblings=\"1\"]')"
                            "?.dataset.count) >= 40", 10, "the sibling histogram to count reads")
        await page.wait_for("document.getElementById('conn').classList.contains('live')", 5,
                            "the page to show it is live")
        await asyncio.sleep(3.0)  # a few more polls: rates over a window, the sparkline
        await page.screenshot(shots / "console.png")

        cluster["n3"].kill()
        started = time.monotonic()
        await page.wait_for(f"{MEMBERS}.find(r => r[0] === 'n3')?.[1] === 'down'", DOWN_WITHIN,
                            "n3 to turn down in the members table")
        took = time.monotonic() - started
        await page.wait_for("document.querySelectorAll('#ring path.arc.down').length === 1 &&"
                            " document.querySelectorAll('#ring path.down-mark').length === 1",
                            5, "n3's arcs drawn as down")
        statuses = dict(await page.evaluate(MEMBERS))
        assert statuses == {"n1": "up", "n2": "up", "n3": "down"}, statuses
        # Writes while n3 is down leave hints for it, and the page counts them.
        for i in range(30):
            assert n1.put(f"console-down-{i}", b"v").status_code == 204
        await page.wait_for("Array.from(document.querySelectorAll('#hints-targets li'))"
                            ".some(li => li.textContent.startsWith('for n3'))", 10,
                            "hints pending for n3")
        assert int((await page.evaluate(
            "document.getElementById('hints-pending').textContent")).replace(",", "")) > 0
        await asyncio.sleep(1.5)
        await page.screenshot(shots / "console-node-down.png")

        # Admin: the token pasted is sent with the admin action and nothing else.
        await page.wait_for("document.getElementById('admin-mode').textContent"
                            ".includes('admin token')", 5, "the admin mode to be explained")
        await page.evaluate("document.getElementById('token').value = 'wrong-token'")
        remove = ("document.querySelector('#members tr[data-node=\"n3\"] button').click()")
        await page.evaluate(remove)  # arms the button ...
        assert await page.evaluate(
            "document.querySelector('#members tr[data-node=\"n3\"] button').textContent"
        ) == "confirm remove"
        await page.evaluate(remove)  # ... and the second click sends it
        await page.wait_for("document.getElementById('admin-result').textContent"
                            ".includes('403')", 10, "the node's 403 for a wrong token")
        await page.evaluate(f"document.getElementById('token').value = '{ADMIN_TOKEN}'")
        await page.evaluate(remove)
        await page.evaluate(remove)
        # Three members and N=3: the node refuses a removal that would leave fewer than N.
        text = await page.wait_for(
            "(t => t.includes('409') && t)(document.getElementById('admin-result').textContent)",
            10, "the node's 409 for a removal below N members")
        assert "remove n3" in text

        sent = page.requests_sent()
        with_token = [r for r in sent
                      if any(k.lower() == "authorization" for k in r["headers"])]
        assert [(r["method"], r["url"]) for r in with_token] == [
            ("POST", f"{base}/cluster/remove/n3")] * 2, with_token
        tokens = sorted(v for r in with_token for k, v in r["headers"].items()
                        if k.lower() == "authorization")
        assert tokens == [f"Bearer {ADMIN_TOKEN}", "Bearer wrong-token"]
        polled = {re.sub(r"\?.*", "", r["url"]) for r in sent if r["method"] == "GET"}
        assert {f"{base}/cluster", f"{base}/metrics", f"{base}/ui/state.json",
                f"{base}/ui/ring.json"} <= polled
        assert all(u.startswith(base) for u in polled), polled  # nothing from elsewhere
        stored = await page.evaluate(
            "JSON.stringify([localStorage.length, sessionStorage.length, document.cookie])")
        assert stored == '[0,0,""]'
        assert page.problems() == []
        print(f"n3 shown down {took:.1f}s after the kill")


def test_console_shows_the_cluster_live_in_a_real_browser(make_cluster: MakeCluster,
                                                          tmp_path: Path) -> None:
    binary = chromium_path()
    if binary is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); the console's "
                    "browser test needs a real headless browser")
    cluster = make_cluster(size=3, extra_args=("--admin-token", ADMIN_TOKEN))
    base = cluster["n1"].url
    page = httpx.get(f"{base}/ui", timeout=5)
    assert page.status_code == 200, (
        "GET /ui is not served: make_app must call ringkv.server.console.register")
    asyncio.run(_drive(base, binary, cluster, tmp_path))
    for name in ("console.png", "console-node-down.png"):
        shot = (tmp_path / name).read_bytes()
        assert shot.startswith(b"\x89PNG") and len(shot) > 20_000, name  # a page, drawn
        if os.environ.get("RINGKV_UPDATE_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            (SHOTS / name).write_bytes(shot)
