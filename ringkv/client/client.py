"""`Client`: the synchronous client of a ringkv cluster, through one node or several.

Job: run the plans of ``ringkv.client.plans`` (every operation, written once, as the
requests it needs) over HTTP with httpx, blocking. Its asyncio twin,
``ringkv.client.async_client.AsyncClient``, runs the very same plans and differs
solely in how a request travels and how it pauses: each public method here is one
line naming its plan, and `_run` follows the failover policy through
``ringkv.client.runner``, which both clients share.

Failover: given several nodes (``Client(urls=[...])``), a request goes to the node that
answered last and, when that node fails, to the next in turn, after a jittered,
exponential pause, as often as the policy allows -- but only when sending the request
again is safe (`Resend`): reads, counter increments (each carries an idempotency key)
and set updates after any connection error, timeout or 503; writes of ``/kv/`` only
when they certainly never reached a node. A client of one node (``Client(url)``)
makes one attempt per request unless `retry` says otherwise.

Routing by the ring: ``Client(urls=[...], route_by_ring=True)`` keeps the cluster's
token map (``GET /ring``, refreshed every 30 s) and sends each keyed request (values,
counters, sets) first to a replica of its key among `urls`, so that no node has to
forward it (``ringkv.client.routing``). Failover from there is as above; a request
whose key has no replica among `urls` goes where failover sends it.

Security: ``https://`` nodes are verified against `ca`, the cluster CA's certificate
(``ringkv certs init``; without it, the system's roots), and `cert` and `key`, a client
certificate of that CA (``ringkv certs issue NAME --client``), are presented to nodes
that ask for one (``--http-tls mutual``). `token`, a client token of the nodes' tokens
file (``--tokens-file``), is sent as ``Authorization: Bearer`` on every request.
`admin_token` is sent instead on the admin requests (leave, remove, bucket-property
writes), and never on the others; given only `token`, the admin requests carry it
(an admin-role token of the file is the admin credential too). Tokens appear in no
error message and no ``repr``.

Invariants: a transport failure (refused, reset, timed out) is a `TransportError`
naming the node; nothing else of httpx leaks out. A client holds one connection pool
per node, reused by every request, closed by `close` or by leaving its ``with`` block.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    DEFAULT_URL,
    PathArg,
    bearer_token,
    node_urls,
    normalize_base_url,
    tls_context,
)
from ringkv.client.update_plan import update_plan

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "Client", "normalize_base_url"]

T = TypeVar("T")


class Client:
    """Synchronous client of a ringkv cluster (any node coordinates any key).

    >>> with Client("http://127.0.0.1:8001") as kv:          # doctest: +SKIP
    ...     ctx = kv.put("greeting", b"hello")
    ...     kv.get("greeting").value
    b'hello'

    ``Client(urls=[...])`` fails over between several nodes; `retry` bounds the
    attempts and their pauses, `rng` and `sleep` drive the jitter and the pauses
    (inject them for tests); `route_by_ring` sends keyed requests to a replica of the
    key first, `clock` timing its map's refreshes. Over TLS, with client tokens::

        Client("https://127.0.0.1:8001", ca="tls/ca.crt", token=os.environ["TOKEN"])
        Client(urls=[...], ca="ca.crt", cert="me.crt", key="me.key")  # --http-tls mutual

    A bad `ca`, `cert` or `key` file, or a malformed token, is a ValueError at once.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        urls: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        admin_token: str | None = None,
        token: str | None = None,
        ca: PathArg | None = None,
        cert: PathArg | None = None,
        key: PathArg | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
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
            url: httpx.Client(base_url=url, timeout=timeout, transport=transport,
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

    def _run(self, plan: Plan[T]) -> T:
        """Run `plan`: each attempt it leads to made here, each pause slept; its result."""
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
                    self._sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = self._http[step.url].request(**step.args)
                except httpx.HTTPError as exc:
                    outcome = exc
        finally:
            steps.close()

    # ------------------------------------------------------------------- key-value

    def get(
        self,
        key: Key,
        r: Quorum | None = None,
        timeout: float | None = None,
        *,
        bucket: str | None = None,
    ) -> GetResult:
        """Read a key; `found` is False when there is no live value. The result's
        `etag` makes a later write conditional (`put(..., if_match=...)`)."""
        return self._run(plans.get(key, r, timeout, bucket=bucket))

    def put(
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
        """Write a value; supersedes what `context` covers. Returns the new context.

        `if_match` (an ETag of a read) writes only if the key is still as read;
        `if_none_match` only if it has no live value; otherwise
        `PreconditionFailedError` and nothing changes. Best effort, not
        compare-and-swap: two racing conditional writes may both succeed as siblings.
        """
        return self._run(plans.put(key, value, context, w, ttl, content_type, timeout,
                                   bucket=bucket, if_match=if_match,
                                   if_none_match=if_none_match))

    def delete(
        self,
        key: Key,
        context: str | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
        *,
        bucket: str | None = None,
        if_match: str | None = None,
    ) -> None:
        """Delete what `context` covers (a tombstone); deleting a missing key is fine.
        With `if_match`, only if the key is still as the read of that ETag saw it."""
        self._run(plans.delete(key, context, w, timeout, bucket=bucket, if_match=if_match))

    def update(
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
        """Read-modify-write: merge siblings, apply `fn`, write back with the read's context.

        `fn` gets None when the key is absent. `merge` is required when siblings are
        found. A 503 on the read or the write is retried up to `retries` times with
        backoff, re-reading each time, so `fn` must tolerate being applied again to a
        value that may already hold its previous (unacknowledged) write -- true of
        set unions, not of counters (use `incr`). Returns the value written.
        """
        return self._run(update_plan(key, fn, merge, retries, r, w, content_type, bucket))

    # -------------------------------------------------------------- counters, sets

    def incr(
        self,
        key: Key,
        amount: int = 1,
        idempotency_key: str | None = None,
        *,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add `amount` (negative: subtract) to a counter.

        The increment carries `idempotency_key` (a fresh random one when None), so this
        client's own resends after a timeout or a 503 are applied at most once. To retry
        an increment whose outcome is unknown from elsewhere (another process, after a
        restart), pass a key of your own and send it again with the same key.
        """
        self._run(plans.incr(key, amount, idempotency_key, w=w, timeout=timeout, bucket=bucket))

    def counter(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> int | None:
        """A counter's value; None when it was never incremented (as `get` gives an
        empty result, not an error, for a missing key)."""
        return self._run(plans.counter(key, r=r, timeout=timeout, bucket=bucket))

    def smembers(
        self,
        key: Key,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> SetResult:
        """A set's elements (sorted) and its context; ``found`` False if never written."""
        return self._run(plans.smembers(key, r=r, timeout=timeout, bucket=bucket))

    def set_update(
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
        """Add and remove elements at once; removing needs `context` (from `smembers`),
        and removes only the adds it observed: an add it did not see survives."""
        self._run(plans.set_update(key, add, remove, context, w=w, timeout=timeout,
                                   bucket=bucket))

    def sadd(
        self,
        key: Key,
        *elements: str,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> None:
        """Add elements to a set."""
        self._run(plans.sadd(key, elements, w=w, timeout=timeout, bucket=bucket))

    def srem(
        self,
        key: Key,
        *elements: str,
        context: str | None = None,
        r: Quorum | None = None,
        w: Quorum | None = None,
        timeout: float | None = None,
        bucket: str | None = None,
    ) -> list[str]:
        """Remove elements from a set; returns the elements whose removal was sent.

        With `context`, every element given is removed as far as that context observed
        it. Without, the set is read first (with `r`) and the remove covers exactly
        what that read observed: elements it did not find are not sent (there is
        nothing of them to remove), and an add concurrent with the read survives.
        """
        return self._run(plans.srem(key, elements, context=context, r=r, w=w, timeout=timeout,
                                    bucket=bucket))

    # ------------------------------------------------------ buckets, listing, mget

    def keys_page(
        self,
        bucket: str | None = DEFAULT_BUCKET,
        limit: int = 100,
        cursor: str | None = None,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> tuple[list[Key], str | None]:
        """One page of a bucket's live keys and the cursor of the next (None: done)."""
        return self._run(plans.keys_page(bucket, limit, cursor, r=r, timeout=timeout))

    def keys(
        self,
        bucket: str | None = DEFAULT_BUCKET,
        limit: int = 100,
        *,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> Iterator[Key]:
        """Every live key of a bucket, once each, following the cursor page by page
        (`limit` keys a request). Keys are ``str`` when UTF-8, else ``bytes``."""
        listing = plans.Listing(bucket, limit, r, timeout)
        while (page := listing.next_page()) is not None:
            yield from self._run(page)

    def mget(
        self,
        keys: Sequence[Key],
        bucket: str | None = None,
        r: Quorum | None = None,
        timeout: float | None = None,
    ) -> list[MGetResult]:
        """Read 1 to 100 keys of one bucket in one request; one result per key, in order."""
        return self._run(plans.mget(keys, bucket, r, timeout))

    def bucket_props(self, bucket: str | None = DEFAULT_BUCKET) -> dict[str, Any]:
        """Every property of a bucket (the defaults for one never configured)."""
        return self._run(plans.bucket_props(bucket))

    def set_bucket_props(self, bucket: str | None, **props: object) -> None:
        """Set some of `r`, `w`, `ttl`, `conflict` (siblings / lww), `max_siblings`."""
        self._run(plans.set_bucket_props(bucket, props, self._admin_token))

    # ------------------------------------------------------------------ the cluster

    def cluster(self) -> dict[str, Any]:
        """A node's view of the cluster (`GET /cluster`)."""
        return self._run(plans.cluster())

    def health(self) -> dict[str, Any]:
        """`GET /health` of the first node; raises unless it serves reads and writes."""
        return self._run(plans.health())

    def lookup(self, key: Key) -> list[str]:
        """The key's preference list (`GET /ring/lookup`)."""
        return self._run(plans.lookup(key))

    def leave(self) -> dict[str, Any]:
        """Ask the first node to hand off its data and leave the cluster."""
        return self._run(plans.leave(self._admin_token))

    def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a member that is dead for good; its ranges are re-replicated."""
        return self._run(plans.remove(node_id, self._admin_token))

    def metrics(self) -> str:
        """Prometheus text exposition of the first node's metrics."""
        return self._run(plans.metrics())

    def close(self) -> None:
        for http in self._http.values():
            http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
