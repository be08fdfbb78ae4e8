"""What every handler of the client HTTP API shares: parsing, bounds, error mapping.

The handlers live in three modules (`http_api`: values and the cluster endpoints;
`http_types`: counters and sets; `http_buckets`: bucket properties, key listing and
multi-get); this one holds what they share, so that they import it and never each
other.

Invariants:

- Every input is validated here or by the handler before the node sees a request, and
  refused with a `BadRequest` (a JSON 4xx), so a bad request changes nothing.
- Keys are taken from the raw (still percent-encoded) path and decoded to bytes, so any
  byte string of 1..`MAX_KEY_BYTES` bytes is a key, also one holding ``/`` or ``%``;
  bucket names likewise come from the raw path and must match
  `storage.namespace.BUCKET_PATTERN`. ``/kv/k`` is key ``k`` of bucket ``default``,
  the same key as ``/buckets/default/kv/k``.
- Bodies are read within a size limit and a time limit (413 and 408 past them); a JSON
  body is parsed only once it is whole and within its limit.
- A request's own `r`, `w` (and, for values, `ttl`) win over its bucket's properties,
  which win over the cluster's defaults (the core applies those when given None).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from coordinator.requests import (
    ClientResponse,
    LimitExceeded,
    NotFound,
    QuorumFailed,
    ReadOk,
    RecordTooLarge,
    Rejected,
    StorageFull,
    TooManySiblings,
)
from ringkv.core.buckets import BucketProps
from storage.namespace import BUCKET_PATTERN, DEFAULT_BUCKET, MAX_USER_KEY
from storage.versions import Context, ContextError, decode_context

if TYPE_CHECKING:
    from ringkv.server.metrics import Metrics
    from ringkv.server.runtime import NodeRuntime

MAX_KEY_BYTES: Final = MAX_USER_KEY
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
MAX_TIMEOUT_MS: Final = 600_000
MAX_TTL: Final = 10 * 365 * 86400
# Bytes of a JSON request body with no list of keys or elements in it (a counter
# increment, bucket properties): far more than any valid one needs.
MAX_JSON_BODY: Final = 64 * 1024
BUCKETS_PREFIX: Final = "/buckets/"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def is_digits(text: str) -> bool:
    """Plain ASCII digits only: `int()` would also take "+2", " 2", "1_000" and "²"."""
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def quorum(request: web.Request, name: str, n: int) -> int | None:
    """Query parameter `name` as a quorum (1..n, one, quorum, all); None when absent."""
    text = request.query.get(name)
    if text is None:
        return None
    named = {"one": 1, "quorum": n // 2 + 1, "all": n}
    if text in named:
        return named[text]
    if not is_digits(text):
        raise BadRequest(400, f"{name} must be 1..{n}, one, quorum or all; got {text!r}")
    value = int(text)
    if not 1 <= value <= n:
        raise BadRequest(400, f"{name}={value} is out of range 1..{n}")
    return value


def positive_int(request: web.Request, name: str, limit: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not is_digits(text):
        raise BadRequest(400, f"{name} must be a whole number; got {text!r}")
    value = int(text)
    if not 0 < value <= limit:
        raise BadRequest(400, f"{name} must be between 1 and {limit}; got {value}")
    return value


def context_header(request: web.Request) -> Context:
    text = request.headers.get("X-Context", "").strip()
    try:
        return decode_context(text)
    except ContextError as exc:
        raise BadRequest(400, f"bad X-Context: {exc}") from None


def raw_query_param(request: web.Request, name: str) -> bytes | None:
    """The first value of a query parameter as bytes ('+' is a space, as in forms)."""
    for item in request.rel_url.raw_query_string.split("&"):
        k, _, v = item.partition("=")
        if unquote_to_bytes(k.replace("+", " ")) == name.encode():
            return unquote_to_bytes(v.replace("+", " "))
    return None


def _bucket_name(raw: str) -> str:
    name = unquote(raw)
    if BUCKET_PATTERN.fullmatch(name) is None:
        raise BadRequest(400, "bucket names are 1 to 64 characters of A-Z a-z 0-9 _ . -;"
                              f" got {name[:80]!r}")
    return name


def bucket_of(request: web.Request) -> str:
    """The bucket of a ``/buckets/{bucket}/...`` path, from the raw path."""
    raw = request.rel_url.raw_path
    if not raw.startswith(BUCKETS_PREFIX):
        return _bucket_name("")
    return _bucket_name(raw[len(BUCKETS_PREFIX):].partition("/")[0])


def bucket_and_key(request: web.Request, kind_segment: str) -> tuple[str, bytes]:
    """(bucket, user key) of ``/{kind}/{key}`` or ``/buckets/{bucket}/{kind}/{key}``.

    400 for a bad bucket name or an empty key, 414 for a key over `MAX_KEY_BYTES`.
    """
    raw = request.rel_url.raw_path
    bucket, rest = DEFAULT_BUCKET, raw[1:]
    if raw.startswith(BUCKETS_PREFIX):
        segment, _, rest = raw[len(BUCKETS_PREFIX):].partition("/")
        bucket = _bucket_name(segment)
    prefix = kind_segment + "/"
    key = unquote_to_bytes(rest[len(prefix):]) if rest.startswith(prefix) else b""
    if not key:
        raise BadRequest(400, f"key must be 1 to {MAX_KEY_BYTES} bytes")
    if len(key) > MAX_KEY_BYTES:
        raise BadRequest(414, f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}")
    return bucket, key


async def read_body(request: web.Request, limit: int, timeout: float,
                    what: str = "value") -> bytes:
    """The whole body, within `limit` bytes and `timeout` seconds (413 or 408 past them):
    a body that never completes must not hold its connection and its buffer forever."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(413, f"{what} is {request.content_length} bytes; limit {limit}")
    content = request.content
    if content.is_eof():
        # The whole body is here already (the usual case: it came with the head), so
        # there is nothing to wait for and no deadline to set.
        body = content.read_nowait()
        if len(body) > limit:
            raise BadRequest(413, f"{what} is larger than the limit of {limit} bytes")
        return body
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise BadRequest(413, f"{what} is larger than the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(408, f"request body not received within {timeout:g} s") from None
    return b"".join(chunks)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, limit: int, timeout: float) -> object:
    """The body parsed as strict JSON (no NaN or Infinity), within `limit` bytes."""
    body = await read_body(request, limit, timeout, what="body")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        raise BadRequest(400, "body is not valid JSON") from None


def json_object(doc: object, allowed: tuple[str, ...]) -> dict[str, object]:
    """`doc` as a JSON object holding no member but `allowed` (a typo is a 400, not a
    silently ignored part of the request)."""
    if not isinstance(doc, dict):
        raise BadRequest(400, "body must be a JSON object with any of " + ", ".join(allowed))
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise BadRequest(400, f"unknown member {unknown[0][:80]!r}; allowed: "
                              + ", ".join(allowed))
    return doc


class Handlers:
    """The runtime, the metrics and the answers every handler group shares."""

    def __init__(self, runtime: NodeRuntime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.node = runtime.node
        self.metrics = metrics

    async def timed(self, op: str, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.Response:
        """Run `handler`, answer a `BadRequest` with its JSON 4xx, and count the request
        under `op` (one of a fixed set of labels) and its status."""
        started = time.perf_counter()
        try:
            response: web.Response = await handler(request)
        except BadRequest as exc:
            response = error(exc.status, exc.message)
        self.metrics.observe(op, response.status, time.perf_counter() - started)
        return response

    def receipt(self, resp: ReadOk | NotFound) -> dict[str, str]:
        self.metrics.observe_receipt(len(resp.replied), len(resp.stale))
        return {"X-Ringkv-Replied": ",".join(resp.replied),
                "X-Ringkv-Stale": ",".join(resp.stale)}

    def bucket_props(self, bucket: str) -> BucketProps:
        return self.node.buckets.props(bucket)

    def read_quorum(self, request: web.Request, bucket: str) -> int | None:
        """`r` of the query, else the bucket's, else None (the cluster's default)."""
        r = quorum(request, "r", self.node.n)
        return r if r is not None else self.bucket_props(bucket).r

    def write_quorum(self, request: web.Request, bucket: str) -> int | None:
        w = quorum(request, "w", self.node.n)
        return w if w is not None else self.bucket_props(bucket).w

    @staticmethod
    def refusal(resp: ClientResponse) -> web.Response | None:
        """The answer to a response that is neither a success nor a read, else None."""
        if isinstance(resp, QuorumFailed):
            return error(503, resp.error, acks=resp.acks, required=resp.required)
        if isinstance(resp, Rejected):
            return error(400, resp.message)
        if isinstance(resp, TooManySiblings):
            # Contract section 4: nothing was stored; a write with the read's context
            # (covering the siblings) always works.
            return error(409, f"key would hold {resp.siblings} versions; limit"
                         f" {resp.limit}: write with the context of a read",
                         siblings=resp.siblings, limit=resp.limit)
        if isinstance(resp, RecordTooLarge):
            # Every record must fit the internode frames it travels in (storage.limits).
            return error(413, f"key would take {resp.size} bytes encoded; limit"
                         f" {resp.limit}: write with the context of a read",
                         size=resp.size, limit=resp.limit)
        if isinstance(resp, LimitExceeded):
            return error(413, f"{resp.what} would be {resp.size}; the limit is {resp.limit}",
                         what=resp.what, size=resp.size, limit=resp.limit)
        if isinstance(resp, StorageFull):
            return error(507, resp.error)
        return None
