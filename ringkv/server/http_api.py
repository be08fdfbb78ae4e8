"""The client HTTP API (contract sections 2, 4-7) on aiohttp: values, the cluster.

This layer only translates: it validates and parses a request into a
`coordinator.requests` value, hands it to the node through the runtime, and maps the
answer to a status code. Bad input is refused here with a 4xx before the node sees it,
so nothing changes on a bad request. A body that does not arrive whole within
`http_body_timeout` is a 408; connections, request heads and aiohttp's own refusals
are bounded below this layer (`ringkv.server.http_edge`).

This module holds the value handlers (``/kv/{key}`` and ``/buckets/{bucket}/kv/{key}``)
and the cluster endpoints, and composes the app (`make_app`); counters and sets are in
`http_types`, bucket properties, key listing and multi-get in `http_buckets`, the
token map and key placement (``/ring``, ``/ring/lookup``) in `http_ring`, and what
they all share (key and parameter parsing, bounded bodies, error answers) in
`http_common`.

Keys are taken from the raw (still percent-encoded) path and decoded to bytes, so any
byte string of 1..1024 bytes is a key.

Conditional writes (contract section 6): every answer to a read of a value carries an
`ETag` (`coordinator.conditional.etag`); a PUT or DELETE with `If-Match` or
`If-None-Match` first reads the key (its `r`, else its bucket's) at this coordinator and
goes ahead only if the read satisfies them (`coordinator.conditional.check`), else 412
and nothing is written. Without an X-Context it writes with the context of that read,
superseding exactly the versions the tag named. Best effort, not linearizable.

The runtime is handed in (`make_app(runtime)`, composed by `ringkv.server.serve`) and
imported here for type checking only: the runtime never depends on the API it serves.
"""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from coordinator.conditional import Condition, PreconditionFailed, check, etag, parse_condition
from coordinator.requests import (
    ClientResponse,
    NotFound,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from ring.token import key_token
from ringkv.server import console
from ringkv.server.access import Access
from ringkv.server.admin_auth import AdminGuard
from ringkv.server.backup import register as register_backup
from ringkv.server.http_buckets import BucketsApi
from ringkv.server.http_common import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    MAX_TIMEOUT_MS,
    MAX_TTL,
    BadRequest,
    Handlers,
    bucket_and_key,
    context_header,
    error,
    positive_int,
    read_body,
)
from ringkv.server.http_ring import register as register_ring
from ringkv.server.http_types import TypesApi
from ringkv.server.metrics import Metrics
from ringkv.server.openapi import serve_openapi
from storage.namespace import DEFAULT_BUCKET, KV, internal_key
from storage.versions import Context, Sibling, encode_context

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime

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


def _condition(request: web.Request) -> Condition:
    try:
        return parse_condition(request.headers.get("If-Match"),
                               request.headers.get("If-None-Match"))
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from None


class Api(Handlers):
    """Values (`/kv/`, also in buckets) and the cluster endpoints."""

    # --- answers ----------------------------------------------------------------------

    def _respond(self, resp: ClientResponse, request: web.Request) -> web.Response:
        refused = self.refusal(resp)
        if refused is not None:
            return refused
        if isinstance(resp, WriteOk):
            return web.Response(status=204, headers={"X-Context": encode_context(resp.context)})
        if isinstance(resp, NotFound):
            headers = self.receipt(resp)
            if resp.context is not None:
                encoded = headers["X-Context"] = encode_context(resp.context)
                headers["ETag"] = etag(resp, encoded) or ""  # never None: a context is known
            return web.json_response({"error": "not found"}, status=404, headers=headers)
        assert isinstance(resp, ReadOk), resp
        self.metrics.siblings.observe(len(resp.siblings))
        headers = self.receipt(resp)
        encoded = headers["X-Context"] = encode_context(resp.context)
        headers["ETag"] = etag(resp, encoded)
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

    async def _precondition(self, request: web.Request, condition: Condition, key: bytes,
                            context: Context, r: int | None, timeout: int | None
                            ) -> Context | web.Response:
        """The context a conditional write goes ahead with, or the answer refusing it.

        The check reads the key with quorum `r` at this coordinator
        (`coordinator.conditional`: best effort, not linearizable).
        """
        if not condition.present:
            return context
        read = await self.runtime.request(ReadRequest(key, r, timeout))
        if not isinstance(read, (ReadOk, NotFound)):
            return self._respond(read, request)
        decided = check(condition, read, context)
        if isinstance(decided, PreconditionFailed):
            response = error(412, decided.reason, etag=decided.etag)
            if decided.etag is not None:
                response.headers["ETag"] = decided.etag
            return response
        return decided

    # --- key-value --------------------------------------------------------------------

    async def put(self, request: web.Request) -> web.Response:
        return await self.timed("put", request, self._put)

    async def _put(self, request: web.Request) -> web.Response:
        bucket, user_key = bucket_and_key(request, "kv")
        key = internal_key(bucket, KV, user_key)
        limit = self.runtime.config.max_value_bytes
        w = self.write_quorum(request, bucket)
        ttl = positive_int(request, "ttl", MAX_TTL)
        if ttl is None:
            ttl = self.bucket_props(bucket).ttl
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        context = context_header(request)
        # Preconditions (and the r of their read) are refused before the body is read.
        condition = _condition(request)
        r = self.read_quorum(request, bucket)
        value = await read_body(request, limit, self.runtime.config.http_body_timeout)
        ctype = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        if len(ctype) > 256:
            raise BadRequest(400, "Content-Type longer than 256 characters")
        decided = await self._precondition(request, condition, key, context, r, timeout)
        if isinstance(decided, web.Response):
            return decided
        resp = await self.runtime.request(
            WriteRequest(key, value, ctype, decided, w, ttl, timeout))
        return self._respond(resp, request)

    async def get(self, request: web.Request) -> web.Response:
        return await self.timed("get", request, self._get)

    async def _get(self, request: web.Request) -> web.Response:
        bucket, user_key = bucket_and_key(request, "kv")
        r = self.read_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        resp = await self.runtime.request(
            ReadRequest(internal_key(bucket, KV, user_key), r, timeout))
        return self._respond(resp, request)

    async def delete(self, request: web.Request) -> web.Response:
        return await self.timed("delete", request, self._delete)

    async def _delete(self, request: web.Request) -> web.Response:
        bucket, user_key = bucket_and_key(request, "kv")
        key = internal_key(bucket, KV, user_key)
        w = self.write_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        context = context_header(request)
        condition = _condition(request)
        r = self.read_quorum(request, bucket)
        decided = await self._precondition(request, condition, key, context, r, timeout)
        if isinstance(decided, web.Response):
            return decided
        resp = await self.runtime.request(
            WriteRequest(key, None, DEFAULT_CONTENT_TYPE, decided, w, None, timeout))
        return self._respond(resp, request)

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

    async def leave(self, request: web.Request) -> web.Response:
        refused = self.runtime.leave()
        if refused is not None:
            return error(409, refused)
        return web.json_response({"node_id": self.node.id, "status": self._own_status()},
                                 status=202)

    async def remove(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        if node_id not in self.node.members:
            return error(404, f"no member named {node_id!r}")
        refused = self.runtime.remove(node_id)
        if refused is not None:
            return error(409, refused)
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
            return error(404, "latency injection is off on this node")
        samples = request.query.get("samples", "1") != "0"
        return web.json_response({"node_id": self.node.id, **injector.snapshot(samples)})

    async def local_record(self, request: web.Request) -> web.Response:
        """This node's own copy of a key, for operators and tests (no quorum)."""
        raw = request.rel_url.raw_path[len("/debug/local"):]
        key = unquote_to_bytes(raw[len("/kv/"):]) if raw.startswith("/kv/") else b""
        if not 1 <= len(key) <= MAX_KEY_BYTES:
            return error(400, "key must be 1 to 1024 bytes")
        stored = internal_key(DEFAULT_BUCKET, KV, key)
        state = self.node.store.read_merged(key_token(stored), stored)
        if state is None:
            return error(404, "no local record")
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


def _edge(access: Access) -> Any:
    """The one middleware of the app: client tokens checked (`ringkv.server.access`)
    before any handler runs, and aiohttp's own errors (unknown path, method not
    allowed) answered as the API's JSON errors. One layer, not two: each middleware
    is a wrapper built and called on every request."""

    @web.middleware
    async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
        refused = access.refusal(request)
        if refused is not None:
            return refused
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json_error(request, exc)

    return edge


def _json_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    extra: dict[str, object] = {}
    allowed = exc.headers.get("Allow")
    if allowed:
        extra["allowed"] = allowed.split(",")
    response = error(exc.status, f"{exc.reason}: {request.method} {request.path}", **extra)
    if allowed:
        response.headers["Allow"] = allowed
    return response


def make_app(runtime: NodeRuntime) -> web.Application:
    metrics = Metrics(runtime)
    api = Api(runtime, metrics)
    types = TypesApi(runtime, metrics)
    buckets = BucketsApi(runtime, metrics)
    # Body limits are enforced as bodies are read (`http_common.read_body`); aiohttp's
    # own limit only guards request.read(), which we do not use.
    # Client tokens (`ringkv.server.access`), when configured, are checked before any
    # handler runs; refusals are JSON like every other error.
    app = web.Application(client_max_size=runtime.config.max_value_bytes + 1,
                          middlewares=[_edge(runtime.access)])
    key = "{key:[\\s\\S]+}"  # any key, "/" and all: parsed again from the raw path
    for prefix in ("", "/buckets/{bucket}"):
        app.router.add_put(f"{prefix}/kv/{key}", api.put)
        app.router.add_get(f"{prefix}/kv/{key}", api.get)
        app.router.add_delete(f"{prefix}/kv/{key}", api.delete)
        app.router.add_post(f"{prefix}/counters/{key}", types.incr)
        app.router.add_get(f"{prefix}/counters/{key}", types.counter)
        app.router.add_post(f"{prefix}/sets/{key}", types.sets_update)
        app.router.add_get(f"{prefix}/sets/{key}", types.sets_get)
    app.router.add_put("/kv/", _empty_key)
    app.router.add_put("/buckets/{bucket}/props", buckets.props_put)
    app.router.add_get("/buckets/{bucket}/props", buckets.props_get)
    app.router.add_get("/buckets/{bucket}/keys", buckets.keys)
    app.router.add_post("/buckets/{bucket}/mget", buckets.mget)
    app.router.add_get("/health", api.health)
    app.router.add_get("/ready", api.ready)
    app.router.add_get("/cluster", api.cluster)
    register_ring(app, runtime)
    # Admin endpoints (contract section 4): the admin token, or loopback clients only;
    # with client tokens configured, a token whose role is admin.
    guard = AdminGuard(runtime.config.admin_token, runtime.access)
    admin = guard.protect
    app.router.add_post("/cluster/leave", admin(api.leave))
    app.router.add_post("/cluster/remove/{node_id}", admin(api.remove))
    app.router.add_get("/metrics", api.metrics_endpoint)
    app.router.add_get("/openapi.json", serve_openapi)
    app.router.add_get("/debug/local/kv/{key:[\\s\\S]+}", admin(api.local_record))
    app.router.add_get("/debug/latency", admin(api.injected_latency))
    register_backup(app, runtime, admin)
    console.register(app, runtime, guard)
    return app


async def _empty_key(request: web.Request) -> web.Response:
    # A coroutine handler: aiohttp deprecates plain functions as handlers.
    return error(400, "key must be 1 to 1024 bytes")

