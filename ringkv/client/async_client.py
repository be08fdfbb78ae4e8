"""`AsyncClient`: the asyncio twin of ``ringkv.client.client.Client``.

Job: the same methods as `Client`, awaitable, over ``httpx.AsyncClient``; `keys` is an
async iterator. Requests are built and answers parsed by the same pure functions, and
`_send` follows the same failover policy (``ringkv.client.failover``): only the
sending, the sleeping (``asyncio.sleep`` unless one is injected) and the awaiting
differ. See `Client` for what each method does and when a request is sent again.

TLS and tokens as for `Client`: `ca`, `cert` and `key` make the context of
``https://`` nodes, `token` goes on every request, `admin_token` (else `token`) on the
admin requests.

Invariants: those of `Client` -- a transport failure is a `TransportError` naming the
node, one connection pool per node, closed by `aclose` or by leaving the
``async with`` block.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ringkv.client.buckets import (
    Key,
    MGetResult,
    build_bucket_props,
    build_keys_page,
    build_mget,
    build_set_bucket_props,
    parse_bucket_props,
    parse_keys_page,
    parse_mget,
    parse_set_bucket_props,
)
from ringkv.client.datatypes import (
    SetResult,
    build_counter,
    build_incr,
    build_set_update,
    build_smembers,
    observed,
    parse_counter,
    parse_incr,
    parse_set_update,
    parse_smembers,
)
from ringkv.client.failover import Failover, Resend, RetryPolicy, status_failure
from ringkv.client.protocol import (
    DEFAULT_BUCKET,
    GetResult,
    HttpRequest,
    HttpResponse,
    Quorum,
    RingkvError,
    build_admin,
    build_cluster,
    build_delete,
    build_get,
    build_health,
    build_lookup,
    build_metrics,
    build_put,
    parse_admin,
    parse_delete,
    parse_get,
    parse_lookup,
    parse_metrics,
    parse_object,
    parse_put,
    remove_path,
)
from ringkv.client.transport import (
    DEFAULT_TIMEOUT,
    PathArg,
    bearer_token,
    failure_of,
    gave_up,
    new_idempotency_key,
    node_urls,
    request_args,
    tls_context,
    to_response,
)
from ringkv.client.update_plan import Read, Stepper, Write, update_plan

__all__ = ["AsyncClient"]


class AsyncClient:
    """The asyncio twin of `Client`: same methods, awaitable; `keys` is an async iterator.

    >>> async with AsyncClient(urls=["http://127.0.0.1:8001",     # doctest: +SKIP
    ...                              "http://127.0.0.1:8002"]) as kv:
    ...     await kv.incr("visits")
    ...     await kv.counter("visits")
    1
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        urls: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        admin_token: str | None = None,
        token: str | None = None,
        ca: PathArg | None = None,
        cert: PathArg | None = None,
        key: PathArg | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        nodes = node_urls(base_url, urls)
        self.base_url = nodes[0]
        self._token = bearer_token(token)
        # The admin credential: the admin token, else the client token (a tokens file's
        # admin token is both).
        self._admin_token = bearer_token(admin_token, "admin_token") or self._token
        verify = tls_context(ca, cert, key)
        self._failover = Failover(nodes, rng or random.Random(), retry)
        self._sleep = sleep
        self._http = {
            url: httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport,
                          verify=True if verify is None else verify)
            for url in nodes
        }

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node this client may send to, in the order it tries them."""
        return self._failover.urls

    @property
    def node(self) -> str:
        """The node the next request goes to first: the last one that answered."""
        return self._failover.preferred

    async def _send(self, req: HttpRequest) -> HttpResponse:
        walk = self._failover.start(req.resend)
        while True:
            try:
                args = request_args(req, self._token)
                answer = to_response(await self._http[walk.url].request(**args))
            except httpx.HTTPError as exc:
                pause = walk.failed(failure_of(exc))
                if pause is None:
                    raise gave_up(walk, exc) from None
            else:
                failure = status_failure(answer.status)
                if failure is None:
                    walk.succeeded()
                    return answer
                pause = walk.failed(failure)
                if pause is None:
                    return answer  # its parser raises what the answer stands for
            await self._sleep(pause)

    # ------------------------------------------------------------------- key-value

    async def get(
        self,
        key: Key,
        r: Quorum | None = None,
        timeout: float | None = None,
        *,
        bucket: str | None = None,
    ) -> GetResult:
        """Read a key; `found` is False when there is no live value."""
        return parse_get(await self._send(build_get(key, r, timeout, bucket=bucket)))

    async def put(
        self,
        key: Key,
        value: bytes,
        context: str | None = None,
        w: Quorum | None = None,
        ttl: int | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
        *,
        bucket: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Write a value; supersedes what `context` covers. Returns the new context."""
        req = build_put(key, value, context, w, ttl, content_type, timeout, bucket=bucket,
                        if_match=if_match, if_none_match=if_none_match)
        return parse_put(await self._send(req))

    async def delete(
        self,
        key: Key,
        context: str | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
        *,
        bucket: str | None = None,
        if_match: str | None = None,
    ) -> None:
        """Delete what `context` covers (a tombstone); deleting a missing key is fine."""
        req = build_delete(key, context, w, timeout, bucket=bucket, if_match=if_match)
        parse_delete(await self._send(req))

    async def update(
        self,
        key: Key,
        fn: Callable[[bytes | None], bytes],
        merge: Callable[[list[bytes]], bytes] | None = None,
        retries: int = 5,
        w: Quorum | None = None,
        *,
        r: Quorum | None = None,
        content_type: str | None = None,
        bucket: str | None = None,
    ) -> bytes:
        """Read-modify-write with sibling merge and 503 retries; see `Client.update`."""
        stepper = Stepper(update_plan(key, fn, merge, retries, r, w, content_type, bucket))
        try:
            step = stepper.next()
            while step is not None:
                reply: object = None
                error: RingkvError | None = None
                try:
                    if isinstance(step, Read):
                        reply = await self.get(step.key, step.r, bucket=step.bucket)
                    elif isinstance(step, Write):
                        reply = await self.put(step.key, step.value, step.context, step.w,
                                               content_type=step.content_type,
                                               bucket=step.bucket)
                    else:
                        await self._sleep(step.seconds)
                except RingkvError as exc:
                    error = exc
                step = stepper.next(reply, error)
        finally:
            stepper.close()
        assert stepper.result is not None
        return stepper.result

    # -------------------------------------------------------------- counters, sets

    async def incr(
        self,
        key: Key,
        amount: int = 1,
        idempotency_key: str | None = None,
        *,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add `amount` to a counter, at most once per idempotency key (a fresh random
        one when None); see `Client.incr`."""
        key_ = idempotency_key if idempotency_key is not None else new_idempotency_key()
        req = build_incr(key, amount, key_, w, timeout, bucket=bucket)
        parse_incr(await self._send(req))

    async def counter(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> int | None:
        """A counter's value; None when it was never incremented."""
        return parse_counter(await self._send(build_counter(key, r, timeout, bucket=bucket)))

    async def smembers(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> SetResult:
        """A set's elements (sorted) and its context; ``found`` False if never written."""
        return parse_smembers(await self._send(build_smembers(key, r, timeout, bucket=bucket)))

    async def set_update(
        self,
        key: Key,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        context: str | None = None,
        *,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add and remove elements at once; see `Client.set_update`."""
        req = build_set_update(key, add, remove, context, w, timeout, bucket=bucket)
        parse_set_update(await self._send(req))

    async def sadd(
        self,
        key: Key,
        *elements: str,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add elements to a set."""
        await self.set_update(key, elements, w=w, timeout=timeout, bucket=bucket)

    async def srem(
        self,
        key: Key,
        *elements: str,
        context: str | None = None,
        r: Quorum | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> list[str]:
        """Remove elements from a set; without `context`, first read it and remove
        exactly what the read observed. See `Client.srem`."""
        if context is None:
            seen = await self.smembers(key, r=r, timeout=timeout, bucket=bucket)
            removing, context = observed(elements, seen), seen.context
            if not removing:
                return []
        else:
            removing = list(elements)
        await self.set_update(key, (), removing, context, w=w, timeout=timeout, bucket=bucket)
        return removing

    # ------------------------------------------------------ buckets, listing, mget

    async def keys_page(
        self,
        bucket: str | None = DEFAULT_BUCKET,
        limit: int = 100,
        cursor: str | None = None,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> tuple[list[Key], str | None]:
        """One page of a bucket's live keys and the cursor of the next (None: done)."""
        answer = await self._send(build_keys_page(bucket, limit, cursor, r, timeout))
        return parse_keys_page(answer, cursor)

    async def keys(
        self,
        bucket: str | None = DEFAULT_BUCKET,
        limit: int = 100,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Key]:
        """Every live key of a bucket, once each, following the cursor page by page."""
        cursor: str | None = None
        while True:
            page, cursor = await self.keys_page(bucket, limit, cursor, r=r, timeout=timeout)
            for key in page:
                yield key
            if cursor is None:
                return

    async def mget(
        self,
        keys: Sequence[Key],
        bucket: str | None = None,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> list[MGetResult]:
        """Read 1 to 100 keys of one bucket in one request; one result per key, in order."""
        keys = list(keys)
        return parse_mget(await self._send(build_mget(keys, r, timeout, bucket=bucket)), keys)

    async def bucket_props(self, bucket: str | None = DEFAULT_BUCKET) -> dict[str, Any]:
        """Every property of a bucket (the defaults for one never configured)."""
        return parse_bucket_props(await self._send(build_bucket_props(bucket)))

    async def set_bucket_props(self, bucket: str | None, **props: object) -> None:
        """Set some of `r`, `w`, `ttl`, `conflict` (siblings / lww), `max_siblings`."""
        parse_set_bucket_props(await self._send(build_set_bucket_props(bucket, props)))

    # ------------------------------------------------------------------ the cluster

    async def cluster(self) -> dict[str, Any]:
        """A node's view of the cluster (`GET /cluster`)."""
        return parse_object(await self._send(build_cluster()))

    async def health(self) -> dict[str, Any]:
        """`GET /health` of the first node; raises unless it serves reads and writes."""
        return parse_object(await self._send(build_health()))

    async def lookup(self, key: Key) -> list[str]:
        """The key's preference list (`GET /ring/lookup`)."""
        return parse_lookup(await self._send(build_lookup(key)))

    async def leave(self) -> dict[str, Any]:
        """Ask the first node to hand off its data and leave the cluster."""
        req = build_admin("POST", "/cluster/leave", self._admin_token, Resend.PINNED)
        return parse_admin(await self._send(req))

    async def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        req = build_admin("POST", remove_path(node_id), self._admin_token)
        return parse_admin(await self._send(req))

    async def metrics(self) -> str:
        """Prometheus text exposition of the first node's metrics."""
        return parse_metrics(await self._send(build_metrics()))

    async def aclose(self) -> None:
        for http in self._http.values():
            await http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
