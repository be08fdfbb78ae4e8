"""The client HTTP API of contract section 2, on aiohttp.

This layer only translates: it validates and parses a request into a
`coordinator.requests` value, hands it to the node through the runtime, and maps the
answer to a status code. Bad input is refused here with a 4xx before the node sees it,
so nothing changes on a bad request. A body that does not arrive whole within
`http_body_timeout` is a 408; connections, request heads and aiohttp's own refusals
are bounded below this layer (`ringkv.server.http_edge`).

Keys are taken from the raw (still percent-encoded) path and decoded to bytes, so any
byte string of 1..1024 bytes is a key.

The runtime is handed in (`make_app(runtime)`, composed by `ringkv.server.serve`) and
imported here for type checking only: the runtime never depends on the API it serves.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from coordinator.requests import (
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    RecordTooLarge,
    Rejected,
    StorageFull,
    TooManySiblings,
    WriteOk,
    WriteRequest,
)
from ring.token import key_token
from ringkv.server.admin_auth import AdminGuard
from ringkv.server.metrics import Metrics
from ringkv.server.openapi import serve_openapi
from storage.versions import ContextError, Sibling, decode_context, encode_context

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime

MAX_KEY_BYTES = 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_TIMEOUT_MS = 600_000


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _key(request: web.Request) -> bytes:
    raw = request.rel_url.raw_path
    prefix = "/kv/"
    key = unquote_to_bytes(raw[len(prefix):]) if raw.startswith(prefix) else b""
    if not key:
        raise BadRequest(400, "key must be 1 to 1024 bytes")
    if len(key) > MAX_KEY_BYTES:
        raise BadRequest(414, f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}")
    return key


def _is_digits(text: str) -> bool:
    """Plain ASCII digits only: `int()` would also take "+2", " 2", "1_000" and "²"."""
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def _quorum(request: web.Request, name: str, n: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    named = {"one": 1, "quorum": n // 2 + 1, "all": n}
    if text in named:
        return named[text]
    if not _is_digits(text):
        raise BadRequest(400, f"{name} must be 1..{n}, one, quorum or all; got {text!r}")
    value = int(text)
    if not 1 <= value <= n:
        raise BadRequest(400, f"{name}={value} is out of range 1..{n}")
    return value


def _positive_int(request: web.Request, name: str, limit: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not _is_digits(text):
        raise BadRequest(400, f"{name} must be a whole number; got {text!r}")
    value = int(text)
    if not 0 < value <= limit:
        raise BadRequest(400, f"{name} must be between 1 and {limit}; got {value}")
    return value


def _context(request: web.Request):  # type: ignore[no-untyped-def]
    text = request.headers.get("X-Context", "").strip()
    try:
        return decode_context(text)
    except ContextError as exc:
        raise BadRequest(400, f"bad X-Context: {exc}") from None


def _multipart(siblings: tuple[Sibling, ...]) -> tuple[bytes, str]:
    values = [s.value or b"" for s in siblings]
    while True:
        boundary = base64.b32encode(os.urandom(15)).decode().lower()
        if not any(boundary.encode() in v for v in values):
            break
    parts = []
    for sibling, value in zip(siblings, values, strict=True):
        parts.append(
            f"--{boundary}\r\nContent-Type: {sibling.content_type}\r\n\r\n".encode()
            + value + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/mixed; boundary={boundary}"


class Api:
    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.node = runtime.node
        self.metrics = Metrics(runtime)

    # --- helpers ----------------------------------------------------------------------

    def _receipt(self, resp: ReadOk | NotFound) -> dict[str, str]:
        self.metrics.observe_receipt(len(resp.replied), len(resp.stale))
        return {"X-Ringkv-Replied": ",".join(resp.replied),
                "X-Ringkv-Stale": ",".join(resp.stale)}

    def _respond(self, op: str, resp: ClientResponse, request: web.Request) -> web.Response:
        if isinstance(resp, QuorumFailed):
            return _error(503, resp.error, acks=resp.acks, required=resp.required)
        if isinstance(resp, Rejected):
            return _error(400, resp.message)
        if isinstance(resp, TooManySiblings):
            # Contract section 4: nothing was stored; a write with the read's context
            # (covering the siblings) always works.
            return _error(409, f"key would hold {resp.siblings} versions; limit"
                          f" {resp.limit}: write with the context of a read",
                          siblings=resp.siblings, limit=resp.limit)
        if isinstance(resp, RecordTooLarge):
            # Every record must fit the internode frames it travels in (storage.limits).
            return _error(413, f"key would take {resp.size} bytes encoded; limit"
                          f" {resp.limit}: write with the context of a read",
                          size=resp.size, limit=resp.limit)
        if isinstance(resp, StorageFull):
            return _error(507, resp.error)
        if isinstance(resp, WriteOk):
            return web.Response(status=204, headers={"X-Context": encode_context(resp.context)})
        if isinstance(resp, NotFound):
            headers = self._receipt(resp)
            if resp.context is not None:
                headers["X-Context"] = encode_context(resp.context)
            return web.json_response({"error": "not found"}, status=404, headers=headers)
        assert isinstance(resp, ReadOk)
        self.metrics.siblings.observe(len(resp.siblings))
        headers = self._receipt(resp)
        headers["X-Context"] = encode_context(resp.context)
        if len(resp.siblings) == 1:
            s = resp.siblings[0]
            headers["Content-Type"] = s.content_type
            return web.Response(status=200, body=s.value, headers=headers)
        if "application/json" in request.headers.get("Accept", ""):
            doc = {
                "siblings": [
                    {"value": base64.b64encode(s.value or b"").decode(),
                     "content_type": s.content_type}
                    for s in resp.siblings
                ],
                "context": headers["X-Context"],
            }
            return web.json_response(doc, status=300, headers=headers)
        body, ctype = _multipart(resp.siblings)
        headers["Content-Type"] = ctype
        return web.Response(status=300, body=body, headers=headers)

    async def _timed(self, op: str, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.Response:
        started = time.perf_counter()
        try:
            response: web.Response = await handler(request)
        except BadRequest as exc:
            response = _error(exc.status, exc.message)
        self.metrics.observe(op, response.status, time.perf_counter() - started)
        return response

    # --- key-value --------------------------------------------------------------------

    async def put(self, request: web.Request) -> web.Response:
        return await self._timed("put", request, self._put)

    async def _put(self, request: web.Request) -> web.Response:
        key = _key(request)
        limit = self.runtime.config.max_value_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, f"value is {request.content_length} bytes; limit {limit}")
        w = _quorum(request, "w", self.node.n)
        ttl = _positive_int(request, "ttl", 10 * 365 * 86400)
        timeout = _positive_int(request, "timeout", MAX_TIMEOUT_MS)
        context = _context(request)
        value = await _read_body(request, limit, self.runtime.config.http_body_timeout)
        ctype = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        if len(ctype) > 256:
            raise BadRequest(400, "Content-Type longer than 256 characters")
        resp = await self.runtime.request(
            WriteRequest(key, value, ctype, context, w, ttl, timeout))
        return self._respond("put", resp, request)

    async def get(self, request: web.Request) -> web.Response:
        return await self._timed("get", request, self._get)

    async def _get(self, request: web.Request) -> web.Response:
        key = _key(request)
        r = _quorum(request, "r", self.node.n)
        timeout = _positive_int(request, "timeout", MAX_TIMEOUT_MS)
        resp = await self.runtime.request(ReadRequest(key, r, timeout))
        return self._respond("get", resp, request)

    async def delete(self, request: web.Request) -> web.Response:
        return await self._timed("delete", request, self._delete)

    async def _delete(self, request: web.Request) -> web.Response:
        key = _key(request)
        w = _quorum(request, "w", self.node.n)
        timeout = _positive_int(request, "timeout", MAX_TIMEOUT_MS)
        context = _context(request)
        resp = await self.runtime.request(
            WriteRequest(key, None, DEFAULT_CONTENT_TYPE, context, w, None, timeout))
        return self._respond("delete", resp, request)

    # --- cluster ----------------------------------------------------------------------

    _NOT_LIVE = {
        "joining": "joining: not yet holding its ranges",
        "leaving": "leaving: handing its ranges to their new owners",
        "left": "left the cluster",
    }

    def _liveness(self) -> str:
        """This node's own state: ``up`` only once it is up and holds its ranges."""
        if not self.node.joined or self.node.transfers.held is None:
            return "joining"  # not yet admitted by a seed, or still fetching its ranges
        return self._own_status()

    async def health(self, request: web.Request) -> web.Response:
        # Liveness: a joiner still fetching its ranges (it already coordinates), and a
        # node leaving or gone, answer 503 with their state as the reason.
        status = self._liveness()
        if status != "up":
            return web.json_response({"status": status, "node_id": self.node.id,
                                      "reason": self._NOT_LIVE.get(status, status)}, status=503)
        return web.json_response({"status": "ok", "node_id": self.node.id,
                                  "membership": status})

    async def ready(self, request: web.Request) -> web.Response:
        # Readiness: live, and enough members up (this node included) for the default R
        # and W, so that a client sent here now gets answers rather than 503s.
        status = self._liveness()
        now = time.time()
        up = sum(1 for m in self.node.members.members()
                 if (status == "up" if m.node_id == self.node.id
                     else self.node.view_status(m, now) == "up"))
        required = max(self.node.r, self.node.w)
        doc = {"node_id": self.node.id, "membership": status, "up": up, "required": required}
        if status != "up":
            return web.json_response({"status": "not ready", **doc,
                                      "reason": self._NOT_LIVE.get(status, status)}, status=503)
        if up < required:
            return web.json_response({"status": "not ready", **doc,
                                      "reason": f"sees {up} members up; the default quorums"
                                      f" (R={self.node.r}, W={self.node.w}) need {required}"},
                                     status=503)
        return web.json_response({"status": "ready", **doc})

    async def cluster(self, request: web.Request) -> web.Response:
        now = time.time()
        node = self.node
        ownership = node.ring.ownership() if node.ring.nodes else {}
        replicas = node.ring.replica_ownership(node.n) if node.ring.nodes else {}
        members = [
            {"node_id": m.node_id, "http": m.http, "rpc": m.rpc,
             "status": node.view_status(m, now),
             "ownership": round(ownership.get(m.node_id, 0.0), 6),
             "replica_share": round(replicas.get(m.node_id, 0.0), 6),
             "tokens": len(m.tokens)}
            for m in node.members.members()
        ]
        return web.json_response({"node_id": node.id, "n": node.n,
                                  "r": node.r, "w": node.w,
                                  "hints_pending": node.store.hints_pending(),
                                  "transfers": node.transfers.view(),
                                  "members": members})

    async def ring_lookup(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        # The key as bytes, percent-decoded from the raw query exactly like /kv/{key}:
        # decoding to text first would turn %FF into U+FFFD, another key.
        raw = _raw_query_param(request, "key")
        if key is None or raw is None or not 1 <= len(raw) <= MAX_KEY_BYTES:
            return _error(400, "query parameter key must be 1 to 1024 bytes")
        if not self.node.ring.nodes:
            return _error(503, "node has not joined a cluster")
        return web.json_response({"key": key, "token": str(key_token(raw)),
                                  "preference_list": self.node.preference_list(raw)})

    async def leave(self, request: web.Request) -> web.Response:
        error = self.runtime.leave()
        if error is not None:
            return _error(409, error)
        return web.json_response({"node_id": self.node.id, "status": self._own_status()},
                                 status=202)

    async def remove(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        if node_id not in self.node.members:
            return _error(404, f"no member named {node_id!r}")
        error = self.runtime.remove(node_id)
        if error is not None:
            return _error(409, error)
        return web.json_response({"node_id": node_id, "status": "left"}, status=202)

    def _own_status(self) -> str:
        me = self.node.members.get(self.node.id)
        return me.status if me is not None else "joining"

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def injected_latency(self, request: web.Request) -> web.Response:
        """The WARS leg delays this node injected (experiments, `ringkv.core.latency`)."""
        injector = self.runtime.injector
        if injector is None:
            return _error(404, "latency injection is off on this node")
        samples = request.query.get("samples", "1") != "0"
        return web.json_response({"node_id": self.node.id, **injector.snapshot(samples)})

    async def local_record(self, request: web.Request) -> web.Response:
        """This node's own copy of a key, for operators and tests (no quorum)."""
        raw = request.rel_url.raw_path[len("/debug/local"):]
        key = unquote_to_bytes(raw[len("/kv/"):]) if raw.startswith("/kv/") else b""
        if not 1 <= len(key) <= MAX_KEY_BYTES:
            return _error(400, "key must be 1 to 1024 bytes")
        state = self.node.store.read_merged(key_token(key), key)
        if state is None:
            return _error(404, "no local record")
        now_ms = int(time.time() * 1000)
        return web.json_response({
            "context": encode_context(state.context) if state.context else "",
            "siblings": [
                {"value": None if s.value is None else base64.b64encode(s.value).decode(),
                 "content_type": s.content_type, "live": s.is_live(now_ms),
                 "actor": list(s.actor), "counter": s.counter,
                 "timestamp_ms": s.timestamp_ms, "expires_at_ms": s.expires_at_ms}
                for s in state.siblings
            ],
        })


def _raw_query_param(request: web.Request, name: str) -> bytes | None:
    """The first value of a query parameter as bytes ('+' is a space, as in forms)."""
    for item in request.rel_url.raw_query_string.split("&"):
        k, _, v = item.partition("=")
        if unquote_to_bytes(k.replace("+", " ")) == name.encode():
            return unquote_to_bytes(v.replace("+", " "))
    return None


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, within `limit` bytes and `timeout` seconds (413 or 408 past them):
    a body that never completes must not hold its connection and its buffer forever."""
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise BadRequest(413, f"value is larger than the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(408, f"request body not received within {timeout:g} s") from None
    return b"".join(chunks)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (unknown path, method not allowed) as the API's JSON errors."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        extra: dict[str, object] = {}
        allowed = exc.headers.get("Allow")
        if allowed:
            extra["allowed"] = allowed.split(",")
        response = _error(exc.status, f"{exc.reason}: {request.method} {request.path}",
                          **extra)
        if allowed:
            response.headers["Allow"] = allowed
        return response


def make_app(runtime: NodeRuntime) -> web.Application:
    api = Api(runtime)
    # The body limit is enforced by _read_body; aiohttp's own limit only guards
    # request.read(), which we do not use.
    app = web.Application(client_max_size=runtime.config.max_value_bytes + 1,
                          middlewares=[_json_errors])
    app.router.add_put("/kv/{key:[\\s\\S]+}", api.put)
    app.router.add_get("/kv/{key:[\\s\\S]+}", api.get)
    app.router.add_delete("/kv/{key:[\\s\\S]+}", api.delete)
    app.router.add_put("/kv/", _empty_key)
    app.router.add_get("/health", api.health)
    app.router.add_get("/ready", api.ready)
    app.router.add_get("/cluster", api.cluster)
    app.router.add_get("/ring/lookup", api.ring_lookup)
    # Admin endpoints (contract section 4): the admin token, or loopback clients only.
    admin = AdminGuard(runtime.config.admin_token).protect
    app.router.add_post("/cluster/leave", admin(api.leave))
    app.router.add_post("/cluster/remove/{node_id}", admin(api.remove))
    app.router.add_get("/metrics", api.metrics_endpoint)
    app.router.add_get("/openapi.json", serve_openapi)
    app.router.add_get("/debug/local/kv/{key:[\\s\\S]+}", admin(api.local_record))
    app.router.add_get("/debug/latency", admin(api.injected_latency))
    return app


async def _empty_key(request: web.Request) -> web.Response:
    # A coroutine handler: aiohttp deprecates plain functions as handlers.
    return _error(400, "key must be 1 to 1024 bytes")

