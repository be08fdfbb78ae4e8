"""A fake ringkv node for the client's tests: an aiohttp server speaking the HTTP shapes
of contract sections 2 and 5-7 over a socket, with one in-memory copy of everything
and none of the distribution.

It keeps just enough meaning to test the client end to end: versions and ETags for
`/kv/` (If-Match / If-None-Match answered with 412 and the current ETag), counters that
apply an `Idempotency-Key` once, sets whose contexts name the elements a read observed
(a remove of an element its context did not observe is a 400), bucket properties,
key listing with an opaque cursor, and multi-get. Every request is recorded with the
connection it came on, so tests can see which node answered and whether connections
were reused, and, over TLS (`start(ssl_context)`), with the client certificate the
connection presented. `FakeNode.unavailable` makes the node answer 503 to everything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web

DEFAULT_PROPS = {"n": 3, "r": 2, "w": 2, "ttl": None, "conflict": "siblings",
                 "max_siblings": 100}
MAX_SET_ELEMENTS = 5  # small, so a test can pass it


@dataclass
class Seen:
    method: str
    path: str  # raw, percent-encoded
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: Any
    peercert: dict[str, Any] | None = None  # the client certificate, over mutual TLS


@dataclass
class State:
    kv: dict[tuple[str, bytes], tuple[bytes, str, int]] = field(default_factory=dict)
    version: int = 0
    counters: dict[tuple[str, bytes], int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    sets: dict[tuple[str, bytes], set[str]] = field(default_factory=dict)
    props: dict[str, dict[str, Any]] = field(default_factory=dict)


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _set_context(elements: set[str]) -> str:
    raw = json.dumps(sorted(elements)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _observed(context: str) -> set[str]:
    raw = base64.urlsafe_b64decode(context + "=" * (-len(context) % 4))
    return set(json.loads(raw))


class FakeNode:
    """One fake node on 127.0.0.1, serving from its own thread's event loop."""

    def __init__(self, state: State | None = None) -> None:
        self.state = state or State()  # nodes built on one State share the data
        self.requests: list[Seen] = []
        self.unavailable = False
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- life ---------------------------------------------------------------------

    def start(self, ssl_context: ssl.SSLContext | None = None) -> FakeNode:
        """Serve on a free port of 127.0.0.1: HTTP, or HTTPS with `ssl_context`."""
        app = web.Application(middlewares=[self._record])
        for prefix in ("", "/buckets/{bucket}"):
            app.router.add_route("*", prefix + r"/kv/{key:[\s\S]+}", self.kv)
            app.router.add_route("*", prefix + r"/counters/{key:[\s\S]+}", self.counters)
            app.router.add_route("*", prefix + r"/sets/{key:[\s\S]+}", self.sets)
        app.router.add_route("*", r"/buckets/{bucket}/props", self.props)
        app.router.add_get(r"/buckets/{bucket}/keys", self.keys)
        app.router.add_post(r"/buckets/{bucket}/mget", self.mget)
        app.router.add_get("/health", self.health)
        app.router.add_post("/cluster/leave", self.admin)
        app.router.add_post(r"/cluster/remove/{node_id}", self.admin)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        self._loop.run_until_complete(site.start())
        scheme = "http" if ssl_context is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self._runner.addresses[0][1]}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._runner is not None:
            self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        transport = request.transport
        self.requests.append(Seen(request.method, request.rel_url.raw_path,
                                  dict(request.query), dict(request.headers), body,
                                  transport.get_extra_info("peername") if transport else None,
                                  transport.get_extra_info("peercert") if transport else None))
        if self.unavailable:
            return _error(503, "node is unavailable", acks=0, required=2)
        result: web.StreamResponse = await handler(request)
        return result

    # --- helpers ------------------------------------------------------------------

    @staticmethod
    def _where(request: web.Request, kind: str) -> tuple[str, bytes]:
        bucket = request.match_info.get("bucket", "default")
        raw = request.rel_url.raw_path.split(f"/{kind}/", 1)[1]
        return bucket, unquote_to_bytes(raw)

    def _etag(self, item: tuple[bytes, str, int] | None) -> str | None:
        return None if item is None else f'"v{item[2]}"'

    # --- /kv/ ---------------------------------------------------------------------

    async def kv(self, request: web.Request) -> web.Response:
        where = self._where(request, "kv")
        item = self.state.kv.get(where)
        etag = self._etag(item)
        if request.method == "GET":
            if item is None:
                return _error(404, "not found")
            return web.Response(body=item[0], headers={
                "Content-Type": item[1], "X-Context": f"c{item[2]}", "ETag": etag or ""})
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match != etag:
            return web.json_response({"error": "ETag does not match", "etag": etag},
                                     status=412, headers={"ETag": etag} if etag else {})
        if request.headers.get("If-None-Match") == "*" and item is not None:
            return _error(412, "key has a live value", etag=etag)
        if request.method == "DELETE":
            self.state.kv.pop(where, None)
            return web.Response(status=204)
        self.state.version += 1
        ctype = request.headers.get("Content-Type", "application/octet-stream")
        self.state.kv[where] = (await request.read(), ctype, self.state.version)
        return web.Response(status=204, headers={"X-Context": f"c{self.state.version}"})

    # --- counters and sets ----------------------------------------------------------

    async def counters(self, request: web.Request) -> web.Response:
        where = self._where(request, "counters")
        if request.method == "GET":
            if where not in self.state.counters:
                return _error(404, "not found")
            return web.json_response({"value": self.state.counters[where]})
        doc = json.loads(await request.read())
        amount = doc.get("increment")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
            return _error(400, "increment must be a non-zero integer")
        token = request.headers.get("Idempotency-Key")
        if token is None or token not in self.state.applied:
            self.state.counters[where] = self.state.counters.get(where, 0) + amount
        if token is not None:
            self.state.applied.add(token)
        return web.Response(status=204)

    async def sets(self, request: web.Request) -> web.Response:
        where = self._where(request, "sets")
        if request.method == "GET":
            if where not in self.state.sets:
                return _error(404, "not found")
            elements = self.state.sets[where]
            return web.json_response({"value": sorted(elements),
                                      "context": _set_context(elements)})
        doc = json.loads(await request.read())
        adds, removes = doc.get("add", []), doc.get("remove", [])
        seen = _observed(doc["context"]) if doc.get("context") else set()
        for element in removes:
            if element not in seen:
                return _error(400, f"remove {element!r}: nothing observed")
        current = self.state.sets.get(where, set())
        new = (current - set(removes)) | set(adds)
        if len(new) > MAX_SET_ELEMENTS:
            return _error(413, f"set elements would be {len(new)}; the limit is"
                          f" {MAX_SET_ELEMENTS}", size=len(new), limit=MAX_SET_ELEMENTS)
        self.state.sets[where] = new
        return web.Response(status=204)

    # --- buckets ----------------------------------------------------------------------

    async def props(self, request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        own = self.state.props.setdefault(bucket, {})
        if request.method == "GET":
            return web.json_response({**DEFAULT_PROPS, **own})
        doc = json.loads(await request.read())
        for name, value in doc.items():
            if name not in DEFAULT_PROPS or name == "n":
                return _error(400, f"unknown bucket property {name!r}")
            if value is None:
                own.pop(name, None)
            else:
                own[name] = value
        return web.Response(status=204)

    async def keys(self, request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        limit = int(request.query.get("limit", "100"))
        start = int(request.query["cursor"][1:]) if "cursor" in request.query else 0
        names = sorted(k for b, k in self.state.kv if b == bucket)
        page = names[start:start + limit]
        more = start + limit < len(names)
        return web.json_response({"keys": [quote(k, safe="") for k in page],
                                  "cursor": f"p{start + limit}" if more else None})

    async def mget(self, request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        results = []
        for encoded in json.loads(await request.read())["keys"]:
            item = self.state.kv.get((bucket, unquote_to_bytes(encoded)))
            if item is None:
                results.append({"key": encoded, "status": 404, "values": [],
                                "content_types": [], "context": None, "etag": None})
            else:
                results.append({"key": encoded, "status": 200,
                                "values": [base64.b64encode(item[0]).decode()],
                                "content_types": [item[1]], "context": f"c{item[2]}",
                                "etag": self._etag(item)})
        return web.json_response({"results": results})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": self.url})

    async def admin(self, request: web.Request) -> web.Response:
        """Leave and remove: accepted, and nothing else (the recording is the point)."""
        return web.json_response({"status": "accepted", "path": request.path}, status=202)


def dead_url() -> str:
    """The URL of a port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def fake_nodes(count: int = 1, shared: bool = True) -> Iterator[list[FakeNode]]:
    """`count` fake nodes, started (sharing one copy of the data when `shared`)."""
    state = State()
    nodes = [FakeNode(state if shared else None).start() for _ in range(count)]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()
