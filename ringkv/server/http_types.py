"""Counters and sets over HTTP (contract section 5): `/counters/{key}`, `/sets/{key}`.

Also under ``/buckets/{bucket}/``. Each request becomes a `WriteRequest` with a
data-type operation (`storage.crdt.CounterAdd`, `SetEdit`) or a `ReadRequest`, on the
stored key of its (bucket, kind, key) (`storage.namespace`), so a counter ``x`` and a
value ``x`` are two keys. The node merges them as CRDTs, so they never answer 300.

Invariants:

- A body is validated whole before anything is sent to the node: an increment is a
  JSON integer (not a boolean), non-zero, of magnitude below `MAX_INCREMENT`; set
  elements are strings of 1..`MAX_ELEMENT_BYTES` UTF-8 bytes; a request names at most
  `MAX_EDIT_ELEMENTS` elements (413 past that: a bound of the request's size, as for
  values); an `Idempotency-Key` is 1..`MAX_IDEMPOTENCY_KEY` printable ASCII characters.
- A remove names the adds its context observed (`observed`); an element the context
  did not observe, or a remove with no context, is a 400 ("nothing observed"): a remove
  without those adds would remove nothing, and the client should know.
- Anything refused changes nothing: the node never sees a refused request.
- A set is 404 only when never written: one whose every element was removed has no
  live version but a known context, and reads as the empty set with its context.
- Reads and writes take the request's `r` and `w`, else their bucket's; counters and
  sets do not expire, so a bucket's `ttl` does not apply to them.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from coordinator.requests import NotFound, ReadOk, ReadRequest, WriteOk, WriteRequest
from ringkv.server.http_common import (
    MAX_JSON_BODY,
    MAX_TIMEOUT_MS,
    BadRequest,
    Handlers,
    bucket_and_key,
    json_object,
    positive_int,
    read_json,
)
from storage.crdt import (
    MAX_EDIT_ELEMENTS,
    MAX_ELEMENT_BYTES,
    MAX_IDEMPOTENCY_KEY,
    MAX_INCREMENT,
    MAX_SET_CONTEXT_CHARS,
    CounterAdd,
    Operation,
    SetEdit,
    counter_value,
    decode_set_context,
    observed,
    set_context,
    set_elements,
)
from storage.namespace import COUNTER, SET, internal_key
from storage.versions import EMPTY_CONTEXT, ContextError

__all__ = ["MAX_SET_BODY", "TypesApi", "parse_increment", "parse_set_edit"]

# Bytes of a set update body: the most elements of the most bytes each, each written
# in JSON's longest form (a \uXXXX escape per byte at worst), and the largest context
# a set read hands out.
MAX_SET_BODY: Final = (MAX_EDIT_ELEMENTS * (6 * MAX_ELEMENT_BYTES + 4)
                       + MAX_SET_CONTEXT_CHARS + 4096)


def parse_increment(doc: object) -> int:
    """The amount of a counter update `{"increment": n}`; BadRequest when not one."""
    body = json_object(doc, ("increment",))
    if "increment" not in body:
        raise BadRequest(400, 'body must be {"increment": n}')
    amount = body["increment"]
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise BadRequest(400, f"increment must be a non-zero integer; got {str(amount)[:40]}")
    if abs(amount) >= MAX_INCREMENT:
        raise BadRequest(400, "increment must be of magnitude below 2^53")
    return amount


def idempotency_key(request: web.Request) -> str | None:
    text = request.headers.get("Idempotency-Key")
    if text is None:
        return None
    if not 1 <= len(text) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in text):
        raise BadRequest(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY}"
                              " printable ASCII characters")
    return text


def _elements(body: dict[str, object], name: str) -> list[bytes]:
    items = body.get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadRequest(400, f"{name} must be a list of strings")
    out: dict[bytes, None] = {}  # in order, each once
    for item in items:
        if not isinstance(item, str):
            raise BadRequest(400, f"{name}: elements are strings; got {type(item).__name__}")
        try:
            raw = item.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is not UTF-8
            raise BadRequest(400, f"{name}: an element is not valid UTF-8") from None
        if not 1 <= len(raw) <= MAX_ELEMENT_BYTES:
            raise BadRequest(400, f"{name}: elements are 1 to {MAX_ELEMENT_BYTES} bytes of"
                                  f" UTF-8; got one of {len(raw)}")
        out[raw] = None
    return list(out)


def parse_set_edit(doc: object) -> SetEdit:
    """The edit a `POST /sets/{key}` body asks for; BadRequest when it is not one.

    The adds and removes are checked whole first: their count is bounded before any
    element is looked at.
    """
    body = json_object(doc, ("add", "remove", "context"))
    counted = sum(len(v) for v in (body.get("add"), body.get("remove"))
                  if isinstance(v, list))
    if counted > MAX_EDIT_ELEMENTS:
        raise BadRequest(413, f"too many elements in one request: {counted}; the limit"
                              f" is {MAX_EDIT_ELEMENTS}")
    adds, removes = _elements(body, "add"), _elements(body, "remove")
    if not adds and not removes:
        raise BadRequest(400, "a set update adds or removes at least one element")
    text = body.get("context")
    if text is not None and not isinstance(text, str):
        raise BadRequest(400, "context must be a string")
    try:
        seen = decode_set_context(text) if text else {}
    except ContextError as exc:
        raise BadRequest(400, f"bad context: {exc}") from None
    removed = []
    for element in removes:
        dots = observed(seen, element)
        if not dots:
            shown = element.decode("utf-8")[:80]
            raise BadRequest(400, f"remove {shown!r}: nothing observed (send the context"
                                  " of a read that returned it)")
        removed.append((element, dots))
    try:
        return SetEdit(tuple(adds), tuple(removed))
    except ValueError as exc:  # checked above; the constructor has the last word
        raise BadRequest(400, str(exc)) from None


class TypesApi(Handlers):
    """The counter and set handlers; each counted under its own fixed op label."""

    async def _update(self, key: bytes, w: int | None,
                      timeout: int | None, op: Operation) -> web.Response:
        resp = await self.runtime.request(
            WriteRequest(key, None, "", EMPTY_CONTEXT, w, None, timeout, op=op))
        refused = self.refusal(resp)
        if refused is not None:
            return refused
        assert isinstance(resp, WriteOk), resp
        return web.Response(status=204)

    async def _read(self, request: web.Request, kind_segment: str, kind: str,
                    ) -> ReadOk | NotFound | web.Response:
        bucket, user_key = bucket_and_key(request, kind_segment)
        r = self.read_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        resp = await self.runtime.request(
            ReadRequest(internal_key(bucket, kind, user_key), r, timeout))
        refused = self.refusal(resp)
        if refused is not None:
            return refused
        assert isinstance(resp, (ReadOk, NotFound)), resp
        return resp

    def _not_found(self, resp: NotFound) -> web.Response:
        return web.json_response({"error": "not found"}, status=404,
                                 headers=self.receipt(resp))

    # --- counters ---------------------------------------------------------------------

    async def incr(self, request: web.Request) -> web.Response:
        return await self.timed("incr", request, self._incr)

    async def _incr(self, request: web.Request) -> web.Response:
        bucket, user_key = bucket_and_key(request, "counters")
        w = self.write_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        token = idempotency_key(request)
        doc = await read_json(request, MAX_JSON_BODY, self.runtime.config.http_body_timeout)
        try:
            op = CounterAdd(parse_increment(doc), token)
        except ValueError as exc:  # checked above; the constructor has the last word
            raise BadRequest(400, str(exc)) from None
        return await self._update(internal_key(bucket, COUNTER, user_key), w, timeout, op)

    async def counter(self, request: web.Request) -> web.Response:
        return await self.timed("counter", request, self._counter)

    async def _counter(self, request: web.Request) -> web.Response:
        resp = await self._read(request, "counters", COUNTER)
        if isinstance(resp, web.Response):
            return resp
        if isinstance(resp, NotFound):
            return self._not_found(resp)
        return web.json_response({"value": counter_value(resp.siblings)},
                                 headers=self.receipt(resp))

    # --- sets -------------------------------------------------------------------------

    async def sets_update(self, request: web.Request) -> web.Response:
        return await self.timed("sets_update", request, self._sets_update)

    async def _sets_update(self, request: web.Request) -> web.Response:
        bucket, user_key = bucket_and_key(request, "sets")
        w = self.write_quorum(request, bucket)
        timeout = positive_int(request, "timeout", MAX_TIMEOUT_MS)
        doc = await read_json(request, MAX_SET_BODY, self.runtime.config.http_body_timeout)
        edit = parse_set_edit(doc)
        return await self._update(internal_key(bucket, SET, user_key), w, timeout, edit)

    async def sets_get(self, request: web.Request) -> web.Response:
        return await self.timed("sets_get", request, self._sets_get)

    async def _sets_get(self, request: web.Request) -> web.Response:
        resp = await self._read(request, "sets", SET)
        if isinstance(resp, web.Response):
            return resp
        if isinstance(resp, NotFound) and resp.context is None:
            return self._not_found(resp)
        # A set whose every element was removed holds no live version but was written
        # (its context is known): it is the empty set, not a 404.
        siblings = resp.siblings if isinstance(resp, ReadOk) else ()
        # UTF-8 keeps code point order in byte order: sorting bytes sorts the strings.
        elements = sorted(set_elements(siblings))
        return web.json_response(
            {"value": [e.decode("utf-8", "replace") for e in elements],
             "context": set_context(siblings)},
            headers=self.receipt(resp))
