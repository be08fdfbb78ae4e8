"""Where keys live, for clients: the token map (`GET /ring`) and one key's replicas
(`GET /ring/lookup`).

`GET /ring` is what a ring-aware client (``Client(..., route_by_ring=True)``) routes
by: the ring as this node sees it, so that the client can compute a key's replicas
itself and send the request to one of them -- a write that reaches a non-replica is
forwarded to one (an extra hop), a read is not, but its replies are then all remote.
The answer::

    {"node_id": "n1", "n": 3, "vnodes": 768,
     "owners": ["n1", "n2", "n3"],
     "tokens": ["1844674407370955161", ...], "owner_of": [0, 2, ...]}

``tokens`` are decimal strings (a 64-bit integer does not survive JSON in every
language), strictly increasing but for a token two nodes share; token ``i`` is owned
by ``owners[owner_of[i]]``. A key's token is the first 64 bits of MurmurHash3 x64-128
of its stored key (`ring.token.key_token`, `storage.namespace.internal_key`); its
replicas are the first `n` distinct owners from the first token ``>=`` the key's,
wrapping round.

Invariants:
- The map gives every key the preference list the node computes
  (`ring.Ring.preference_list`): vnode tokens are listed in the ring's (token, node)
  order, and of a run of neighbouring tokens of one owner only the last is kept, which
  changes no walk (a test compares the two over random rings).
- The body is built once per ring and carries an ``ETag``; a request whose
  ``If-None-Match`` names it is answered 304 with no body, so a client refreshing its
  map costs the node a comparison when nothing changed.
- The map is a hint: a client that routes by a stale one still gets a correct answer,
  since any node coordinates any key.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from aiohttp import web

from ring import Ring
from ring.token import key_token
from ringkv.server.http_common import MAX_KEY_BYTES, error, raw_query_param
from storage.namespace import COUNTER, DEFAULT_BUCKET, KV, SET, internal_key, is_bucket_name

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime

__all__ = ["LOOKUP_KINDS", "RingApi", "token_map"]

LOOKUP_KINDS = (KV, COUNTER, SET)  # the kinds /ring/lookup places


def token_map(ring: Ring) -> tuple[tuple[str, ...], list[int], list[int]]:
    """(owners, tokens, owner_of): the ring's vnodes in its own order, each run of
    neighbouring vnodes of one owner reduced to its last token."""
    owners = ring.nodes
    index = {node: i for i, node in enumerate(owners)}
    entries = sorted((t, index[node]) for node, tokens in ring.token_map().items()
                     for t in tokens)
    tokens: list[int] = []
    owner_of: list[int] = []
    for token, owner in entries:
        if owner_of and owner_of[-1] == owner:
            tokens[-1] = token  # the run's later token: no walk can tell the difference
            continue
        tokens.append(token)
        owner_of.append(owner)
    return owners, tokens, owner_of


def _if_none_match(request: web.Request, tag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None or len(header) > 4096:
        return False
    return tag in (t.strip().removeprefix("W/") for t in header.split(","))


class RingApi:
    """The handlers of ``/ring`` and ``/ring/lookup``."""

    __slots__ = ("runtime", "_cache")

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self._cache: tuple[Ring, int, bytes, str] | None = None

    async def ring_map(self, request: web.Request) -> web.Response:
        node = self.runtime.node
        ring = node.ring
        if not ring.nodes:
            return error(503, "node has not joined a cluster")
        cached = self._cache
        if cached is None or cached[0] is not ring or cached[1] != node.n:
            owners, tokens, owner_of = token_map(ring)
            doc = {"node_id": node.id, "n": node.n, "vnodes": ring.vnode_count,
                   "owners": list(owners), "tokens": [str(t) for t in tokens],
                   "owner_of": owner_of}
            body = json.dumps(doc, separators=(",", ":")).encode()
            tag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
            cached = self._cache = (ring, node.n, body, tag)
        headers = {"ETag": cached[3], "Cache-Control": "no-cache"}
        if _if_none_match(request, cached[3]):
            return web.Response(status=304, headers=headers)
        return web.Response(body=cached[2], content_type="application/json", headers=headers)

    async def ring_lookup(self, request: web.Request) -> web.Response:
        node = self.runtime.node
        key = request.query.get("key")
        # The key as bytes, percent-decoded from the raw query exactly like /kv/{key}:
        # decoding to text first would turn %FF into U+FFFD, another key.
        raw = raw_query_param(request, "key")
        if key is None or raw is None or not 1 <= len(raw) <= MAX_KEY_BYTES:
            return error(400, "query parameter key must be 1 to 1024 bytes")
        bucket = request.query.get("bucket", DEFAULT_BUCKET)
        kind = request.query.get("kind", KV)
        if not is_bucket_name(bucket) or kind not in LOOKUP_KINDS:
            return error(400, "bucket must match [A-Za-z0-9_.-]{1,64} and kind be one of"
                         f" {', '.join(LOOKUP_KINDS)}")
        if not node.ring.nodes:
            return error(503, "node has not joined a cluster")
        # The replicas of the key as stored: a plain key starting with 0x00, and every
        # key of another bucket or kind, is stored (and placed) under its long form.
        stored = internal_key(bucket, kind, raw)
        return web.json_response({"key": key, "bucket": bucket, "kind": kind,
                                  "token": str(key_token(stored)),
                                  "preference_list": node.preference_list(stored)})


def register(app: web.Application, runtime: NodeRuntime) -> None:
    """Add ``GET /ring`` and ``GET /ring/lookup`` to `app`."""
    api = RingApi(runtime)
    app.router.add_get("/ring", api.ring_map)
    app.router.add_get("/ring/lookup", api.ring_lookup)
