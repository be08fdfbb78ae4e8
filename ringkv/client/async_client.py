"""`AsyncClient`: the asyncio twin of ``ringkv.client.client.Client``.

Job: the same methods as `Client`, awaitable, over ``httpx.AsyncClient``; `keys` is an
async iterator. Both clients run the same plans (``ringkv.client.plans``: every
operation written once) through the same failover loop (``ringkv.client.runner``):
only the sending, the sleeping (``asyncio.sleep`` unless one is injected) and the
awaiting differ. See `Client` for what each method does and when a request is sent
again.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ringkv.client import plans
from ringkv.client.buckets import Key, MGetResult
from ringkv.client.datatypes import SetResult
from ringkv.client.failover import Failover, RetryPolicy
from ringkv.client.plans import Plan, Sleep
from ringkv.client.protocol import DEFAULT_BUCKET, GetResult, Quorum
from ringkv.client.routing import Router
from ringkv.client.runner import Outcome, over_nodes
from ringkv.client.transport import (
    DEFAULT_TIMEOUT,
    PathArg,
    bearer_token,
    node_urls,
    tls_context,
)
from ringkv.client.update_plan import update_plan

__all__ = ["AsyncClient"]

T = TypeVar("T")


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
        route_by_ring: bool = False,
        clock: Callable[[], float] = time.monotonic,
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
        # A client of one node has nowhere else to send: it needs no map.
        self._router = Router(nodes, clock) if route_by_ring and len(nodes) > 1 else None
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

    @property
    def router(self) -> Router | None:
        """The token map a client routing by the ring keeps (``route_by_ring``), else None."""
        return self._router

    async def _run(self, plan: Plan[T]) -> T:
        """Run `plan`: each attempt it leads to awaited here, each pause slept; its result."""
        steps = over_nodes(plan, self._failover, self._token, self._router)
        try:
            outcome: Outcome = None
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                if isinstance(step, Sleep):
                    await self._sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = await self._http[step.url].request(**step.args)
                except httpx.HTTPError as exc:
                    outcome = exc
        finally:
            steps.close()

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
        return await self._run(plans.get(key, r, timeout, bucket=bucket))

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
        return await self._run(plans.put(key, value, context, w, ttl, content_type, timeout,
                                         bucket=bucket, if_match=if_match,
                                         if_none_match=if_none_match))

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
        await self._run(plans.delete(key, context, w, timeout, bucket=bucket,
                                     if_match=if_match))

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
        return await self._run(update_plan(key, fn, merge, retries, r, w, content_type,
                                           bucket))

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
        await self._run(plans.incr(key, amount, idempotency_key, w=w, timeout=timeout,
                                   bucket=bucket))

    async def counter(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> int | None:
        """A counter's value; None when it was never incremented."""
        return await self._run(plans.counter(key, r=r, timeout=timeout, bucket=bucket))

    async def smembers(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> SetResult:
        """A set's elements (sorted) and its context; ``found`` False if never written."""
        return await self._run(plans.smembers(key, r=r, timeout=timeout, bucket=bucket))

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
        await self._run(plans.set_update(key, add, remove, context, w=w, timeout=timeout,
                                         bucket=bucket))

    async def sadd(
        self,
        key: Key,
        *elements: str,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add elements to a set."""
        await self._run(plans.sadd(key, elements, w=w, timeout=timeout, bucket=bucket))

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
        return await self._run(plans.srem(key, elements, context=context, r=r, w=w,
                                          timeout=timeout, bucket=bucket))

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
        return await self._run(plans.keys_page(bucket, limit, cursor, r=r, timeout=timeout))

    async def keys(
        self,
        bucket: str | None = DEFAULT_BUCKET,
        limit: int = 100,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Key]:
        """Every live key of a bucket, once each, following the cursor page by page."""
        listing = plans.Listing(bucket, limit, r, timeout)
        while (page := listing.next_page()) is not None:
            for key in await self._run(page):
                yield key

    async def mget(
        self,
        keys: Sequence[Key],
        bucket: str | None = None,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> list[MGetResult]:
        """Read 1 to 100 keys of one bucket in one request; one result per key, in order."""
        return await self._run(plans.mget(keys, bucket, r, timeout))

    async def bucket_props(self, bucket: str | None = DEFAULT_BUCKET) -> dict[str, Any]:
        """Every property of a bucket (the defaults for one never configured)."""
        return await self._run(plans.bucket_props(bucket))

    async def set_bucket_props(self, bucket: str | None, **props: object) -> None:
        """Set some of `r`, `w`, `ttl`, `conflict` (siblings / lww), `max_siblings`."""
        await self._run(plans.set_bucket_props(bucket, props, self._admin_token))

    # ------------------------------------------------------------------ the cluster

    async def cluster(self) -> dict[str, Any]:
        """A node's view of the cluster (`GET /cluster`)."""
        return await self._run(plans.cluster())

    async def health(self) -> dict[str, Any]:
        """`GET /health` of the first node; raises unless it serves reads and writes."""
        return await self._run(plans.health())

    async def lookup(self, key: Key) -> list[str]:
        """The key's preference list (`GET /ring/lookup`)."""
        return await self._run(plans.lookup(key))

    async def leave(self) -> dict[str, Any]:
        """Ask the first node to hand off its data and leave the cluster."""
        return await self._run(plans.leave(self._admin_token))

    async def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        return await self._run(plans.remove(node_id, self._admin_token))

    async def metrics(self) -> str:
        """Prometheus text exposition of the first node's metrics."""
        return await self._run(plans.metrics())

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
