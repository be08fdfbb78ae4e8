"""The two clients of one ringkv node: `Client` (sync) and `AsyncClient` (asyncio).

Job: carry the requests of ``ringkv.client.protocol`` over HTTP with httpx and hand
back what its parsers make of the answers. The two classes differ solely in how a
request travels (httpx sync vs async): every request is built and every answer parsed
by the same pure functions, and `update` executes the same plan
(``ringkv.client.update_plan``) in both.

`admin_token` (optional) is sent as ``Authorization: Bearer`` on the admin endpoints
(leave, remove) only, never on key-value requests.

Invariants: a transport failure (refused, reset, timed out) is a `TransportError`
naming the node; nothing else of httpx leaks out. A client holds one connection pool,
closed by `close` / `aclose` or by leaving its ``with`` block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import httpx

from ringkv.client.protocol import (
    GetResult,
    HttpRequest,
    HttpResponse,
    Quorum,
    RingkvError,
    TransportError,
    build_admin,
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
from ringkv.client.update_plan import Read, Stepper, Write, update_plan

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "AsyncClient", "Client", "normalize_base_url"]

DEFAULT_URL = "http://127.0.0.1:8001"
DEFAULT_TIMEOUT = 10.0  # seconds, for a whole HTTP exchange when no timeout is given


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
        admin_token: str | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._admin_token = admin_token
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
        stepper = Stepper(update_plan(key, fn, merge, retries, r, w, content_type))
        try:
            step = stepper.next()
            while step is not None:
                reply: object = None
                error: RingkvError | None = None
                try:
                    if isinstance(step, Read):
                        reply = self.get(step.key, step.r)
                    elif isinstance(step, Write):
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
        req = build_admin("POST", "/cluster/leave", self._admin_token)
        doc = parse_json(self._send(req))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        req = build_admin("POST", remove_path(node_id), self._admin_token)
        doc = parse_json(self._send(req))
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
        admin_token: str | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._admin_token = admin_token
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
        stepper = Stepper(update_plan(key, fn, merge, retries, r, w, content_type))
        try:
            step = stepper.next()
            while step is not None:
                reply: object = None
                error: RingkvError | None = None
                try:
                    if isinstance(step, Read):
                        reply = await self.get(step.key, step.r)
                    elif isinstance(step, Write):
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
        req = build_admin("POST", "/cluster/leave", self._admin_token)
        doc = parse_json(await self._send(req))
        return dict(doc) if isinstance(doc, dict) else {"result": doc}

    async def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        req = build_admin("POST", remove_path(node_id), self._admin_token)
        doc = parse_json(await self._send(req))
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
