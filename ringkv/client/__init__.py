"""Python client for the ringkv HTTP API: `Client` (sync) and `AsyncClient` (asyncio).

Job: let an application read, write and delete keys on any node without handling
causal contexts by hand, and give it the read-modify-write loop Dynamo applications
need (`update`, the shopping-cart pattern: read, merge siblings, apply, write back with
the read's context, retry when a quorum is not reached).

Both clients share every line of protocol logic: requests are built and responses
parsed by pure functions (`build_*` / `parse_*` in ``ringkv.client.protocol``, no I/O),
and `update` is a generator of I/O steps (`_update_plan` below) that each client only
executes. The two classes differ solely in how a request travels (httpx sync vs async).
This module re-exports the public names of ``ringkv.client.protocol`` (the errors,
`GetResult`, `build_*` / `parse_*`, ...): import them from here.

Conventions:
- keys are ``str`` (UTF-8) or ``bytes``, percent-encoded into ``/kv/{key}`` with
  every reserved byte quoted, so any byte string works;
- ``r`` / ``w`` are an int (1..N) or ``"one"``, ``"quorum"``, ``"all"``;
- ``timeout`` is in seconds (float). It is sent to the coordinator as ``?timeout=ms``
  and the HTTP request itself is given one extra second to carry the answer back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from ringkv.client.protocol import CONTEXT_HEADER as CONTEXT_HEADER
from ringkv.client.protocol import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE
from ringkv.client.protocol import QUORUM_NAMES as QUORUM_NAMES
from ringkv.client.protocol import TIMEOUT_MARGIN as TIMEOUT_MARGIN
from ringkv.client.protocol import (
    BadRequestError,
    ConflictError,
    GetResult,
    HttpRequest,
    HttpResponse,
    Quorum,
    QuorumError,
    RingkvError,
    ServerError,
    TransportError,
    build_delete,
    build_get,
    build_lookup,
    build_put,
    error_for,
    parse_delete,
    parse_get,
    parse_json,
    parse_put,
    remove_path,
)
from ringkv.client.protocol import key_bytes as key_bytes
from ringkv.client.protocol import key_path as key_path
from ringkv.client.protocol import parse_multipart as parse_multipart
from ringkv.client.protocol import quorum_param as quorum_param

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ConflictError",
    "GetResult",
    "QuorumError",
    "RingkvError",
    "ServerError",
    "TransportError",
]

DEFAULT_URL = "http://127.0.0.1:8001"
DEFAULT_TIMEOUT = 10.0  # seconds, for a whole HTTP exchange when no timeout is given


# ----------------------------------------------------- update(): one plan, two drivers


@dataclass(frozen=True)
class _Read:
    key: str | bytes
    r: Quorum | None


@dataclass(frozen=True)
class _Write:
    key: str | bytes
    value: bytes
    context: str | None
    w: Quorum | None
    content_type: str | None


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step = _Read | _Write | _Sleep


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: ~50 ms, 100 ms, 200 ms, ... capped at 2 s."""
    base = min(2.0, 0.05 * 2.0**attempt)
    jitter: float = (rng or random).random()
    return base * (0.5 + jitter)


def merged_value(
    got: GetResult, merge: Callable[[list[bytes]], bytes] | None, key: str | bytes
) -> bytes | None:
    """The single current value of a read: None, the value, or the merge of siblings."""
    if not got.values:
        return None
    if len(got.values) == 1:
        return got.values[0]
    if merge is None:
        raise ConflictError(
            f"key {key!r} has {len(got.values)} siblings; pass merge= to update() to reconcile them"
        )
    return merge(list(got.values))


def _update_plan(
    key: str | bytes,
    fn: Callable[[bytes | None], bytes],
    merge: Callable[[list[bytes]], bytes] | None,
    retries: int,
    r: Quorum | None,
    w: Quorum | None,
    content_type: str | None,
) -> Generator[_Step, object, bytes]:
    """Read-merge-apply-write, retried on QuorumError; yields the I/O it needs done."""
    attempt = 0
    while True:
        try:
            got = yield _Read(key, r)
            assert isinstance(got, GetResult)
            new = fn(merged_value(got, merge, key))
            if not isinstance(new, bytes | bytearray):
                raise TypeError(f"update fn must return bytes, not {type(new).__name__}")
            yield _Write(key, bytes(new), got.context, w, content_type)
            return bytes(new)
        except QuorumError:
            if attempt >= retries:
                raise
        yield _Sleep(backoff_delay(attempt))
        attempt += 1


class _Stepper:
    """Advances an update plan: feed it the outcome of each step, get the next one."""

    def __init__(self, plan: Generator[_Step, object, bytes]) -> None:
        self._plan = plan
        self.result: bytes | None = None

    def next(self, reply: object = None, error: RingkvError | None = None) -> _Step | None:
        """The next step to execute, or None when done (then `result` is set)."""
        try:
            if error is not None:
                return self._plan.throw(error)
            return self._plan.send(reply)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def close(self) -> None:
        self._plan.close()


# ------------------------------------------------------------------------------ clients


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"node URL must be http:// or https://, got {base_url!r}")
    return url


def _transport_error(base_url: str, exc: httpx.HTTPError) -> TransportError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TransportError(f"timed out waiting for {base_url} ({detail})")
    return TransportError(f"cannot reach {base_url}: {detail}")


def _to_response(resp: httpx.Response) -> HttpResponse:
    return HttpResponse(resp.status_code, resp.headers, resp.content)


class Client:
    """Synchronous client for one ringkv node (any node coordinates any key).

    >>> with Client("http://127.0.0.1:8001") as kv:          # doctest: +SKIP
    ...     ctx = kv.put("greeting", b"hello")
    ...     kv.get("greeting").value
    b'hello'
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def _send(self, req: HttpRequest) -> HttpResponse:
        try:
            resp = self._http.request(
                req.method,
                req.path,
                params=list(req.params) or None,
                headers=list(req.headers),
                content=req.body,
                timeout=req.timeout if req.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(self.base_url, exc) from None
        return _to_response(resp)

    def get(
        self, key: str | bytes, r: Quorum | None = None, timeout: float | None = None
    ) -> GetResult:
        """Read a key; `found` is False when there is no live value."""
        return parse_get(self._send(build_get(key, r, timeout)))

    def put(
        self,
        key: str | bytes,
        value: bytes,
        context: str | None = None,
        w: Quorum | None = None,
        ttl: int | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Write a value; supersedes what `context` covers. Returns the new context."""
        req = build_put(key, value, context, w, ttl, content_type, timeout)
        return parse_put(self._send(req))

    def delete(
        self,
        key: str | bytes,
        context: str | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
    ) -> None:
        """Delete what `context` covers (a tombstone); deleting a missing key is fine."""
        parse_delete(self._send(build_delete(key, context, w, timeout)))

    def update(
        self,
        key: str | bytes,
        fn: Callable[[bytes | None], bytes],
        merge: Callable[[list[bytes]], bytes] | None = None,
        retries: int = 5,
        w: Quorum | None = None,
        *,
        r: Quorum | None = None,
        content_type: str | None = None,
    ) -> bytes:
        """Read-modify-write: merge siblings, apply `fn`, write back with the read's context.

        `fn` gets None when the key is absent. `merge` is required when siblings are
        found. A 503 on the read or the write is retried up to `retries` times with
        backoff, re-reading each time, so `fn` must tolerate being applied again to a
        value that may already hold its previous (unacknowledged) write -- true of
        set unions, not of counters. Returns the value written.
        """
        stepper = _Stepper(_update_plan(key, fn, merge, retries, r, w, content_type))
        try:
            step = stepper.next()
            while step is not None:
                reply: object = None
                error: RingkvError | None = None
                try:
                    if isinstance(step, _Read):
                        reply = self.get(step.key, step.r)
                    elif isinstance(step, _Write):
                        reply = self.put(
                            step.key,
                            step.value,
                            step.context,
                            step.w,
                            content_type=step.content_type,
                        )
                    else:
                        time.sleep(step.seconds)
                except RingkvError as exc:
                    error = exc
                step = stepper.next(reply, error)
        finally:
            stepper.close()
        assert stepper.result is not None
        return stepper.result

    def cluster(self) -> dict[str, Any]:
        """The node's view of the cluster (`GET /cluster`)."""
        return dict(parse_json(self._send(HttpRequest("GET", "/cluster"))))

    def health(self) -> dict[str, Any]:
        """`GET /health`; raises unless the node serves reads and writes."""
        return dict(parse_json(self._send(HttpRequest("GET", "/health"))))

    def lookup(self, key: str | bytes) -> list[str]:
        """The key's preference list (`GET /ring/lookup`)."""
        return list(parse_json(self._send(build_lookup(key)))["preference_list"])

    def leave(self) -> dict[str, Any]:
        """Ask this node to hand off its data and leave the cluster."""
        doc = parse_json(self._send(HttpRequest("POST", "/cluster/leave")))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        doc = parse_json(self._send(HttpRequest("POST", remove_path(node_id))))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    def metrics(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        resp = self._send(HttpRequest("GET", "/metrics"))
        if resp.status != 200:
            raise error_for(resp)
        return resp.body.decode("utf-8", "replace")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: same methods, awaitable."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def _send(self, req: HttpRequest) -> HttpResponse:
        try:
            resp = await self._http.request(
                req.method,
                req.path,
                params=list(req.params) or None,
                headers=list(req.headers),
                content=req.body,
                timeout=req.timeout if req.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(self.base_url, exc) from None
        return _to_response(resp)

    async def get(
        self, key: str | bytes, r: Quorum | None = None, timeout: float | None = None
    ) -> GetResult:
        """Read a key; `found` is False when there is no live value."""
        return parse_get(await self._send(build_get(key, r, timeout)))

    async def put(
        self,
        key: str | bytes,
        value: bytes,
        context: str | None = None,
        w: Quorum | None = None,
        ttl: int | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Write a value; supersedes what `context` covers. Returns the new context."""
        req = build_put(key, value, context, w, ttl, content_type, timeout)
        return parse_put(await self._send(req))

    async def delete(
        self,
        key: str | bytes,
        context: str | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
    ) -> None:
        """Delete what `context` covers (a tombstone); deleting a missing key is fine."""
        parse_delete(await self._send(build_delete(key, context, w, timeout)))

    async def update(
        self,
        key: str | bytes,
        fn: Callable[[bytes | None], bytes],
        merge: Callable[[list[bytes]], bytes] | None = None,
        retries: int = 5,
        w: Quorum | None = None,
        *,
        r: Quorum | None = None,
        content_type: str | None = None,
    ) -> bytes:
        """Read-modify-write with sibling merge and 503 retries; see `Client.update`."""
        stepper = _Stepper(_update_plan(key, fn, merge, retries, r, w, content_type))
        try:
            step = stepper.next()
            while step is not None:
                reply: object = None
                error: RingkvError | None = None
                try:
                    if isinstance(step, _Read):
                        reply = await self.get(step.key, step.r)
                    elif isinstance(step, _Write):
                        reply = await self.put(
                            step.key,
                            step.value,
                            step.context,
                            step.w,
                            content_type=step.content_type,
                        )
                    else:
                        await asyncio.sleep(step.seconds)
                except RingkvError as exc:
                    error = exc
                step = stepper.next(reply, error)
        finally:
            stepper.close()
        assert stepper.result is not None
        return stepper.result

    async def cluster(self) -> dict[str, Any]:
        """The node's view of the cluster (`GET /cluster`)."""
        return dict(parse_json(await self._send(HttpRequest("GET", "/cluster"))))

    async def health(self) -> dict[str, Any]:
        """`GET /health`; raises unless the node serves reads and writes."""
        return dict(parse_json(await self._send(HttpRequest("GET", "/health"))))

    async def lookup(self, key: str | bytes) -> list[str]:
        """The key's preference list (`GET /ring/lookup`)."""
        return list(parse_json(await self._send(build_lookup(key)))["preference_list"])

    async def leave(self) -> dict[str, Any]:
        """Ask this node to hand off its data and leave the cluster."""
        doc = parse_json(await self._send(HttpRequest("POST", "/cluster/leave")))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    async def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        doc = parse_json(await self._send(HttpRequest("POST", remove_path(node_id))))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    async def metrics(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        resp = await self._send(HttpRequest("GET", "/metrics"))
        if resp.status != 200:
            raise error_for(resp)
        return resp.body.decode("utf-8", "replace")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
