"""Buckets over HTTP (contract section 7): properties, key listing and multi-get.

- ``PUT /buckets/{bucket}/props`` validates the body (`parse_props_update`), writes the
  bucket's whole new properties to the one replicated properties key
  (`storage.namespace.PROPS_KEY`, `storage.crdt.PropsPut`: last writer wins per
  bucket) and, once W replicas hold them, applies them on this node at once; the other
  nodes read them within seconds (the runtime re-reads the key). The new properties
  are this node's current ones with the changes applied: two nodes changing different
  properties of one bucket at the same moment may lose one of the changes (last
  writer wins), never mix them into a table no one wrote.
- ``GET /buckets/{bucket}/keys`` pages through the live keys of a bucket in ring order
  (`ListRequest`). The cursor is the position the page ended at, (token, stored key),
  as URL-safe base64 of a format byte, the 8-byte big-endian token and the stored key;
  it is validated as hostile input: a cursor that does not decode, or names a key of
  another bucket, is a 400.
- ``POST /buckets/{bucket}/mget`` reads 1..`MAX_MGET_KEYS` keys concurrently, each an
  ordinary read with the request's `r` and `timeout`, and answers each in the order
  asked, with the status a GET would have had.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web

from coordinator.conditional import etag
from coordinator.requests import (
    ClientResponse,
    ListOk,
    ListRequest,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from ring.token import MAX_TOKEN
from ringkv.core.buckets import encode_props, parse_props_update
from ringkv.server.http_common import (
    MAX_JSON_BODY,
    MAX_KEY_BYTES,
    MAX_TIMEOUT_MS,
    BadRequest,
    Handlers,
    bucket_of,
    json_object,
    positive_int,
    quorum,
    read_json,
)
from storage.crdt import PropsPut
from storage.namespace import KV, MAX_STORED_KEY, PROPS_KEY, belongs, internal_key
from storage.versions import EMPTY_CONTEXT, encode_context

__all__ = ["BucketsApi", "decode_cursor", "encode_cursor"]

DEFAULT_LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 1000
MAX_MGET_KEYS: Final = 100
# A multi-get body: the most keys, each of the most bytes percent-encoded, and room.
MAX_MGET_BODY: Final = MAX_MGET_KEYS * (3 * MAX_KEY_BYTES + 4) + 4096
CURSOR_FORMAT: Final = 1
_TOKEN_BYTES: Final = 8
_MAX_CURSOR_CHARS: Final = 4 * (1 + _TOKEN_BYTES + MAX_STORED_KEY) // 3 + 4


def encode_cursor(position: tuple[int, bytes]) -> str:
    token, stored = position
    raw = bytes([CURSOR_FORMAT]) + token.to_bytes(_TOKEN_BYTES, "big") + stored
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, bucket: str) -> tuple[int, bytes]:
    """The position a cursor of `bucket` names; ValueError when it is not one."""
    if not text or len(text) > _MAX_CURSOR_CHARS or not text.isascii():
        raise ValueError("cursor is not one this node handed out")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("cursor is not URL-safe base64") from None
    if len(raw) < 1 + _TOKEN_BYTES or raw[0] != CURSOR_FORMAT:
        raise ValueError("cursor is not one this node handed out")
    token = int.from_bytes(raw[1:1 + _TOKEN_BYTES], "big")
    stored = raw[1 + _TOKEN_BYTES:]
    if len(stored) > MAX_STORED_KEY or (stored and not belongs(stored, bucket, KV)):
        raise ValueError(f"cursor is not a position in bucket {bucket!r}")
    return token, stored


def _mget_keys(doc: object) -> list[str]:
    body = json_object(doc, ("keys",))
    keys = body.get("keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_MGET_KEYS:
        raise BadRequest(400, f"keys must be a list of 1 to {MAX_MGET_KEYS} keys")
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise BadRequest(400, f"keys[{i}] is not a string")
        size = len(unquote_to_bytes(key))
        if not 1 <= size <= MAX_KEY_BYTES:
            raise BadRequest(400, f"keys[{i}] is {size} bytes percent-decoded; keys are 1"
                                  f" to {MAX_KEY_BYTES} bytes")
    return keys


def _mget_result(key: str, resp: ClientResponse) -> dict[str, object]:
    if isinstance(resp, ReadOk):
        return {"key": key, "status": 200 if len(resp.siblings) == 1 else 300,
                "values": [base64.b64encode(s.value or b"").decode("ascii")
                           for s in resp.siblings],
                "content_types": [s.content_type for s in resp.siblings],
                "context": encode_context(resp.context), "etag": etag(resp)}
    if isinstance(resp, NotFound):
        return {"key": key, "status": 404, "values": [], "content_types": [],
                "context": None if resp.context is None else encode_context(resp.context),
                "etag": etag(resp)}
    reason = resp.error if isinstance(resp, QuorumFailed) else "no answer"
    return {"key": key, "status": 503, "values": [], "content_types": [],
            "context": None, "etag": None, "error": reason}


class BucketsApi(Handlers):
    """Bucket properties, key listing and multi-get; each under its fixed op label."""

    # --- properties -------------------------------------------------------------------

    async def props_get(self, request: web.Request) -> web.Response:
        return await self.timed("props_get", request, self._props_get)

    async def _props_get(self, request: web.Request) -> web.Response:
        bucket = bucket_of(request)
        return web.json_response(self.node.buckets.effective(bucket))

    async def props_put(self, request: web.Request) -> web.Response:
        return await self.timed("props_put", request, self._props_put)

    async def _props_put(self, request: web.Request) -> web.Response:
        bucket = bucket_of(request)
        w = quorum(request, "w", self.node.n)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        doc = await read_json(request, MAX_JSON_BODY, self.runtime.config.http_body_timeout)
        try:
            changes = parse_props_update(doc, self.node.n)
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None
        updated = self.node.buckets.with_changes(bucket, changes)
        resp = await self.runtime.request(
            WriteRequest(PROPS_KEY, None, "", EMPTY_CONTEXT, w, None, timeout,
                         op=PropsPut(bucket, encode_props(updated))))
        refused = self.refusal(resp)
        if refused is not None:
            return refused
        assert isinstance(resp, WriteOk), resp
        self.node.set_bucket_props(bucket, updated)
        return web.Response(status=204)

    # --- key listing ------------------------------------------------------------------

    async def keys(self, request: web.Request) -> web.Response:
        return await self.timed("keys", request, self._keys)

    async def _keys(self, request: web.Request) -> web.Response:
        bucket = bucket_of(request)
        limit = positive_int(request, "limit", MAX_LIST_LIMIT) or DEFAULT_LIST_LIMIT
        r = self.read_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        cursor = request.query.get("cursor")
        try:
            after = None if cursor is None else decode_cursor(cursor, bucket)
        except ValueError as exc:
            raise BadRequest(400, f"bad cursor: {exc}") from None
        resp = await self.runtime.request(ListRequest(bucket, KV, after, limit, r, timeout))
        refused = self.refusal(resp)
        if refused is not None:
            return refused
        assert isinstance(resp, ListOk), resp
        position = resp.cursor
        # A position past the last token is the end of the ring: nothing follows.
        done = position is None or position[0] > MAX_TOKEN
        return web.json_response({
            "keys": [quote(key, safe="") for key in resp.keys],
            "cursor": None if done or position is None else encode_cursor(position),
        })

    # --- multi-get --------------------------------------------------------------------

    async def mget(self, request: web.Request) -> web.Response:
        return await self.timed("mget", request, self._mget)

    async def _mget(self, request: web.Request) -> web.Response:
        bucket = bucket_of(request)
        r = self.read_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        doc = await read_json(request, MAX_MGET_BODY, self.runtime.config.http_body_timeout)
        asked = _mget_keys(doc)
        stored = {key: internal_key(bucket, KV, unquote_to_bytes(key)) for key in asked}
        unique = sorted(set(stored.values()))  # a key asked twice is read once
        answers = await asyncio.gather(
            *(self.runtime.request(ReadRequest(key, r, timeout)) for key in unique))
        by_key = dict(zip(unique, answers, strict=True))
        return web.json_response(
            {"results": [_mget_result(key, by_key[stored[key]]) for key in asked]})
