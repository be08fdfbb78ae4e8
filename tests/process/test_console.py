"""The web console (`ringkv.server.console`) in a real headless Chromium against a live
three-node cluster.

Chromium is driven through the DevTools protocol over its websocket (aiohttp's client):
the page at ``/ui`` must show three members up and a ring of arcs of three owners, turn
a killed node ``down`` within seconds, keep the admin token off every request but the
admin action it is pasted for, show the node's refusal of that action, and do all of it
with no script error and no Content-Security-Policy violation. Screenshots of the page
before and after the kill are taken every run; with ``RINGKV_UPDATE_SCREENSHOTS=1`` they
replace ``docs/img/console.png`` and ``docs/img/console-node-down.png``.

Against a node with client tokens (``--tokens-file``), which answers every poll 401
without one, the page must say so plainly and ask for a read token; once one is typed
into its field the members render, every poll carries that token and the admin action
does not (it carries the admin token, or nothing). A poll refused 403 (injected through
the DevTools protocol: no read token is refused what the console reads) is explained as
the token's role or buckets.

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
# A node with client tokens: its tokens file holds a read and an admin token.
READ_TOKEN = "console-read-token-" + "r" * 16
FILE_ADMIN_TOKEN = "console-file-admin-token-" + "a" * 16
POLLED = ("/cluster", "/metrics", "/ui/state.json", "/ui/ring.json")
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

    def requests_sent(self, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        """Every request the page sent (of the events from `start` to `end`): url, method
        and headers (as the network saw them)."""
        sent: dict[str, dict[str, Any]] = {}
        for event in self.events[start:end]:
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

    def problems(self, start: int = 0, end: int | None = None,
                 provoked: tuple[str, ...] = ("/cluster/remove/",)) -> list[str]:
        """Script errors, console errors and CSP violations seen (in the events from
        `start` to `end`); a failed load of a URL holding one of `provoked` is not one."""
        out = []
        for event in self.events[start:end]:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(f"console.error: {params.get('args')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                # The refusals a test provokes on purpose are logged as failed loads;
                # any other failed load (a file of the page, a poll) is a problem.
                expected = (entry.get("source") == "network"
                            and any(p in entry.get("url", "") for p in provoked))
                if entry.get("level") == "error" and not expected:
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


# --- a node with client tokens ----------------------------------------------------------


def _type_into(field: str, value: str) -> str:
    """JavaScript that types `value` into the input `field` as a user would (an input
    event follows the change)."""
    return (f"(f => {{ f.value = {json.dumps(value)};"
            " f.dispatchEvent(new Event('input', {bubbles: true})); return true; })"
            f"(document.getElementById({json.dumps(field)}))")


def _authorization(request: dict[str, Any]) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == "authorization"),
                None)


def _path(url: str, base: str) -> str:
    return re.sub(r"\?.*", "", url).removeprefix(base)


async def _refuse_polls_of(page: Page, path: str, stop: asyncio.Event) -> int:
    """Answer every request paused by the Fetch domain 403, as a node refusing a token's
    role or buckets would, until `stop`; how many were answered."""
    body = json.dumps({"error": f"this token may not touch {path}"}).encode()
    seen, answered = len(page.events), 0
    while not stop.is_set():
        for event in page.events[seen:]:
            if event.get("method") == "Fetch.requestPaused":
                await page.send("Fetch.fulfillRequest",
                                requestId=event["params"]["requestId"], responseCode=403,
                                responseHeaders=[{"name": "Content-Type",
                                                  "value": "application/json"}],
                                body=base64.b64encode(body).decode())
                answered += 1
        seen = len(page.events)
        await asyncio.sleep(0.05)
    return answered


# Empty while the page is still loading (the navigation returns before it has).
ACCESS_NOTE = "(document.getElementById('access-note')?.textContent ?? '')"
ADMIN_RESULT = "(document.getElementById('admin-result')?.textContent ?? '')"


async def _drive_with_tokens(base: str, binary: str) -> None:
    async with chromium(binary) as page:
        await page.send("Page.navigate", url=f"{base}/ui")
        # No token yet: every poll is refused, and the page says why instead of "no answer".
        note = await page.wait_for(
            f"(t => t.includes('wants a client token') && t)({ACCESS_NOTE})", 15,
            "the page to say the node wants a client token")
        assert "Read token" in note, note
        assert await page.evaluate("document.getElementById('access').hidden") is False
        assert "read token" in await page.evaluate(
            "document.getElementById('conn-text').textContent")
        assert await page.evaluate(MEMBERS) == []
        asked = len(page.events)

        await page.evaluate(_type_into("read-token", READ_TOKEN))
        await page.wait_for(f"JSON.stringify({MEMBERS}) === JSON.stringify([['n1','up']])",
                            15, "the member in the members table, read with the token")
        assert await page.wait_for(f"{RING_OWNERS}.length === 1 && {RING_OWNERS}", 10,
                                   "ring arcs of the one owner") == ["n1"]
        await page.wait_for("document.getElementById('conn').classList.contains('live')", 5,
                            "the page to show it is live")
        assert "accepts the read token" in await page.evaluate(ACCESS_NOTE)
        admin_mode = await page.wait_for(
            "(t => t.includes('admin role') && t)"
            "(document.getElementById('admin-mode').textContent)", 5,
            "the admin mode to name the admin role")
        assert "client tokens" in admin_mode
        rendered = len(page.events)

        # A poll refused 403 is the token's role or buckets, with the node's reason.
        stop = asyncio.Event()
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*/ui/state.json*",
                                                   "requestStage": "Request"}])
        refusing = asyncio.create_task(_refuse_polls_of(page, "the cluster", stop))
        try:
            forbidden = await page.wait_for(f"(t => t.includes('403') && t)({ACCESS_NOTE})",
                                            10, "the page to explain a 403")
        finally:
            stop.set()
            answered = await refusing
            await page.send("Fetch.disable")
        assert answered >= 1
        assert "role or buckets" in forbidden, forbidden
        assert "this token may not touch the cluster" in forbidden, forbidden
        await page.wait_for(f"{ACCESS_NOTE}.includes('accepts the read token')", 10,
                            "the page to read with the token again")
        recovered = len(page.events)

        # The admin action carries the admin token field's value, never the read token:
        # with that field empty it carries nothing, and the node wants a token.
        leave = "document.getElementById('leave').click()"
        await page.evaluate(leave)  # arms the button ...
        await page.evaluate(leave)  # ... and the second click sends it
        await page.wait_for(f"{ADMIN_RESULT}.includes('401')", 10,
                            "the node's 401 for a leave with no admin token")
        await page.evaluate(_type_into("token", FILE_ADMIN_TOKEN))
        await page.evaluate(leave)
        await page.evaluate(leave)
        # One member and N=1: the node refuses a leave that would leave fewer than N.
        text = await page.wait_for(f"(t => t.includes('409') && t)({ADMIN_RESULT})", 10,
                                   "the node's 409 for a leave below N members")
        assert text.startswith("leave: 409"), text
        await asyncio.sleep(2 * 1.5)  # more polls after the admin actions
        forgetting = len(page.events)

        # A token no header can carry is said to be one; a forgotten one is sent no more.
        await page.evaluate(_type_into("read-token", "read-token-\u20ac-not-latin-1"))
        await page.wait_for(f"{ACCESS_NOTE}.includes('cannot carry')", 10,
                            "the page to say the token cannot be sent")
        await page.evaluate("document.getElementById('read-token-forget').click()")
        assert await page.evaluate("document.getElementById('read-token').value") == ""
        await page.wait_for(f"{ACCESS_NOTE}.includes('wants a client token')", 10,
                            "the page to ask for a token again")
        forgot = len(page.events)
        await page.wait_for(f"{ACCESS_NOTE}.includes('wants a client token') &&"
                            " document.getElementById('conn').classList.contains('lost')",
                            5, "the page to stay refused")
        await asyncio.sleep(1.5)

        sent = page.requests_sent()
        polls = [r for r in sent if r["method"] == "GET" and _path(r["url"], base) in POLLED]
        assert {_path(r["url"], base) for r in polls} == set(POLLED)
        # Before the token was typed the polls carried none; from the first rendering
        # on, every one carried the read token, and only polls ever carried it.
        assert all(_authorization(r) is None for r in page.requests_sent(0, asked))
        later = [r for r in page.requests_sent(rendered, forgetting)
                 if r["method"] == "GET" and _path(r["url"], base) in POLLED]
        assert len(later) >= 3 * len(POLLED), later
        assert {_authorization(r) for r in later} == {f"Bearer {READ_TOKEN}"}, later
        assert [(r["method"], _path(r["url"], base)) for r in sent
                if _authorization(r) == f"Bearer {READ_TOKEN}"
                and _path(r["url"], base) not in POLLED] == []
        after = [r for r in page.requests_sent(forgetting) if r["method"] == "GET"]
        assert {_authorization(r) for r in after} <= {f"Bearer {READ_TOKEN}", None}, after
        forgotten = [r for r in page.requests_sent(forgot) if r["method"] == "GET"]
        assert forgotten and all(_authorization(r) is None for r in forgotten), forgotten
        admin = [r for r in sent if r["method"] == "POST"]
        assert [(_path(r["url"], base), _authorization(r)) for r in admin] == [
            ("/cluster/leave", None), ("/cluster/leave", f"Bearer {FILE_ADMIN_TOKEN}")]

        stored = await page.evaluate(
            "JSON.stringify([localStorage.length, sessionStorage.length, document.cookie,"
            " location.href])")
        assert stored == json.dumps([0, 0, "", f"{base}/ui"], separators=(",", ":"))
        # The 401s before the token and the 403s injected are failed loads on purpose;
        # nothing else failed, threw or broke the CSP.
        assert page.problems(0, asked, provoked=POLLED) == []
        assert page.problems(asked, rendered, provoked=POLLED) == []
        assert page.problems(rendered, recovered, provoked=("/ui/state.json",)) == []
        assert page.problems(recovered, forgetting, provoked=("/cluster/leave",)) == []
        assert page.problems(forgetting, provoked=POLLED) == []


def test_console_asks_a_node_with_client_tokens_for_a_read_token(make_cluster: MakeCluster,
                                                                  tmp_path: Path) -> None:
    binary = chromium_path()
    if binary is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); the console's "
                    "browser test needs a real headless browser")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{READ_TOKEN} read\n{FILE_ADMIN_TOKEN} admin\n")
    cluster = make_cluster(size=1, start=False, extra_args=(
        "--n", "1", "--r", "1", "--w", "1", "--tokens-file", str(tokens)))
    # The harness's own requests (health, cluster view) carry an admin token of the
    # file; the browser carries only what its fields hold.
    cluster.nodes[0].bearer = FILE_ADMIN_TOKEN
    cluster.start()
    base = cluster["n1"].url
    # The page is open; what it shows is not.
    assert httpx.get(f"{base}/ui", timeout=5).status_code == 200
    assert httpx.get(f"{base}/cluster", timeout=5).status_code == 401
    asyncio.run(_drive_with_tokens(base, binary))
