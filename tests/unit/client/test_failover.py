"""Failover between nodes: the pure policy (`ringkv.client.failover`) table-tested, then
both clients driving it against scripted nodes (`httpx.MockTransport`, routed by host)
and against real sockets (fake nodes and a port where nothing listens)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ringkv.client import (
    AsyncClient,
    Client,
    QuorumError,
    RetryPolicy,
    TransportError,
)
from ringkv.client.failover import Failover, Failure, Resend, Walk, jittered_backoff
from tests.unit.client.fake_node import dead_url, fake_nodes

A, B, C = "http://a.test:1", "http://b.test:1", "http://c.test:1"

# ------------------------------------------------------------------------ the policy


def walk_of(resend: Resend, seed: int = 1) -> Walk:
    return Failover((A, B, C), random.Random(seed)).start(resend)


@pytest.mark.parametrize(
    ("resend", "failure", "sent_again"),
    [
        (Resend.ANY_FAILURE, Failure.UNDELIVERED, True),
        (Resend.ANY_FAILURE, Failure.LOST, True),
        (Resend.ANY_FAILURE, Failure.UNAVAILABLE, True),
        (Resend.UNDELIVERED, Failure.UNDELIVERED, True),
        (Resend.UNDELIVERED, Failure.LOST, False),  # a write may have landed
        (Resend.UNDELIVERED, Failure.UNAVAILABLE, False),  # a 503 write may exist
        (Resend.PINNED, Failure.UNDELIVERED, False),
        (Resend.PINNED, Failure.UNAVAILABLE, False),
    ],
)
def test_what_is_sent_again(resend: Resend, failure: Failure, sent_again: bool) -> None:
    failover = Failover((A, B, C), random.Random(1))
    walk = failover.start(resend)
    pause = walk.failed(failure)
    assert (pause is not None) == sent_again
    assert walk.url == (B if sent_again else A)


@pytest.mark.parametrize(("nodes", "given", "attempts"),
                         [(1, None, 1), (2, None, 4), (3, None, 6), (3, 2, 2), (1, 4, 4)])
def test_attempts_are_bounded(nodes: int, given: int | None, attempts: int) -> None:
    urls = (A, B, C)[:nodes]
    walk = Failover(urls, random.Random(0), RetryPolicy(max_attempts=given)).start(
        Resend.ANY_FAILURE)
    visited = [walk.url]
    while walk.failed(Failure.LOST) is not None:
        visited.append(walk.url)
    assert len(visited) == attempts == walk.attempts
    # In turn, wrapping round.
    assert visited == [urls[i % nodes] for i in range(attempts)]
    assert walk.nodes_tried == min(nodes, attempts)


@pytest.mark.parametrize(("retry", "ceiling"),
                         [(0, 0.05), (1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0),
                          (40, 2.0), (10_000, 2.0)])
def test_backoff_is_exponential_with_jitter_under_the_cap(retry: int, ceiling: float) -> None:
    rng = random.Random(7)
    pauses = [jittered_backoff(retry, rng, 0.05, 2.0) for _ in range(200)]
    assert all(ceiling / 2 <= p <= ceiling for p in pauses)
    assert len(set(pauses)) > 1  # jittered


def test_pauses_follow_the_seeded_rng_and_grow() -> None:
    def pauses(seed: int) -> list[float]:
        walk = walk_of(Resend.ANY_FAILURE, seed=seed)
        out = []
        while (p := walk.failed(Failure.UNAVAILABLE)) is not None:
            out.append(p)
        return out

    first = pauses(42)
    assert first == pauses(42) and first != pauses(43)
    assert len(first) == 5
    assert all(0.5 * 0.05 * 2**i <= p <= 0.05 * 2**i for i, p in enumerate(first))


def test_the_node_that_answered_is_tried_first_next_time() -> None:
    failover = Failover((A, B, C), random.Random(0))
    walk = failover.start(Resend.ANY_FAILURE)
    walk.failed(Failure.UNDELIVERED)
    walk.failed(Failure.UNDELIVERED)
    assert walk.url == C
    walk.succeeded()
    assert failover.preferred == C
    nxt = failover.start(Resend.ANY_FAILURE)
    assert nxt.url == C
    nxt.failed(Failure.LOST)
    assert nxt.url == A  # wraps round
    # A request pinned to a node goes to the first one, whichever answered last.
    assert failover.start(Resend.PINNED).url == A


def test_bad_policies_and_node_lists_are_refused() -> None:
    bad_attempts: tuple[Any, ...] = (0, -1, True, 1.5)
    for bad in bad_attempts:
        with pytest.raises(ValueError):
            RetryPolicy(max_attempts=bad)
    with pytest.raises(ValueError):
        RetryPolicy(backoff_base=float("nan"))
    with pytest.raises(ValueError):
        Failover((), random.Random(0))
    with pytest.raises(ValueError):
        Failover((A, A), random.Random(0))
    with pytest.raises(ValueError):
        Client(A, urls=[B])
    with pytest.raises(TypeError):
        Client(urls=A)  # one str is not a list of URLs
    # Duplicates (after normalising) collapse: "next node" is never the same node.
    with Client(urls=["a.test:1", "http://a.test:1/", B]) as kv:
        assert kv.urls == (A, B)


# ------------------------------------------------------ the clients, scripted nodes

Behaviour = Callable[[httpx.Request], httpx.Response]


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": "read quorum not reached", "acks": 1,
                                     "required": 2})


def ok(request: httpx.Request) -> httpx.Response:
    if request.method == "GET":
        return httpx.Response(200, content=b"v", headers={"X-Context": "c"})
    return httpx.Response(204, headers={"X-Context": "c2"})


class Nodes:
    """Scripted nodes by host; records (host, method, path, headers) of each request."""

    def __init__(self, **behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.seen: list[tuple[str, str, str, httpx.Headers]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        host = request.url.host.split(".")[0]
        self.seen.append((host, request.method, request.url.path, request.headers))
        return self.behaviour[host](request)

    @property
    def hosts(self) -> list[str]:
        return [h for h, *_ in self.seen]


def pause_log() -> list[float]:
    return []


def client(nodes: Nodes, pauses: list[float], **kwargs: object) -> Client:
    return Client(urls=[A, B, C], transport=httpx.MockTransport(nodes),
                  rng=random.Random(3), sleep=pauses.append, **kwargs)  # type: ignore[arg-type]


def test_a_read_fails_over_and_the_answering_node_is_preferred() -> None:
    nodes, pauses = Nodes(a=refuse, b=time_out, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        assert kv.get("k").value == b"v"
        assert kv.node == C
        assert kv.get("k").value == b"v"
    assert nodes.hosts == ["a", "b", "c", "c"]
    assert len(pauses) == 2 and 0.025 <= pauses[0] <= 0.05 and 0.05 <= pauses[1] <= 0.1


def test_a_503_read_is_sent_to_the_next_node() -> None:
    nodes, pauses = Nodes(a=unavailable, b=ok, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        assert kv.get("k").found
    assert nodes.hosts == ["a", "b"]


def test_a_blind_write_is_never_sent_twice_after_it_may_have_landed() -> None:
    for behaviour in (time_out, unavailable):
        nodes, pauses = Nodes(a=behaviour, b=ok, c=ok), pause_log()
        with client(nodes, pauses) as kv, pytest.raises((TransportError, QuorumError)):
            kv.put("k", b"v")
        assert nodes.hosts == ["a"] and pauses == []
    # With a context or an ETag neither: a second coordinator would add a sibling, or
    # answer 412 to the first attempt's own success.
    nodes, pauses = Nodes(a=time_out, b=ok, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        with pytest.raises(TransportError):
            kv.put("k", b"v", context="c1", if_match='"e"')
        with pytest.raises(TransportError):
            kv.delete("k", context="c1")
    assert nodes.hosts == ["a", "a"]


def test_a_write_that_never_left_goes_to_the_next_node() -> None:
    nodes, pauses = Nodes(a=refuse, b=ok, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        assert kv.put("k", b"v") == "c2"
        kv.delete("k", context="c2")
    assert nodes.hosts == ["a", "b", "b"]


def test_an_increment_is_resent_with_the_same_idempotency_key() -> None:
    nodes, pauses = Nodes(a=time_out, b=unavailable, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        kv.incr("hits", 2)
        kv.incr("hits", 2)
    keys = [headers["Idempotency-Key"] for *_, headers in nodes.seen]
    assert nodes.hosts == ["a", "b", "c", "c"]
    assert keys[0] == keys[1] == keys[2] != keys[3]  # one key per call, kept on resends
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)


def test_set_updates_reads_listing_and_mget_are_resent() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/keys"):
            return httpx.Response(200, json={"keys": ["x"], "cursor": None})
        if path.endswith("/mget"):
            return httpx.Response(200, json={"results": [
                {"key": "x", "status": 404, "values": [], "context": None}]})
        if path.startswith("/counters"):
            return httpx.Response(200, json={"value": 3})
        return httpx.Response(204)

    nodes, pauses = Nodes(a=unavailable, b=answer, c=answer), pause_log()
    with client(nodes, pauses) as kv:
        kv.sadd("s", "x")
        assert kv.node == B  # b answered: from now on it is tried first
        nodes.behaviour["b"] = unavailable
        assert list(kv.keys()) == ["x"]
        assert kv.mget(["x"])[0].status == 404
        assert kv.counter("k") == 3
    assert nodes.hosts == ["a", "b", "b", "c", "c", "c"]


def test_node_specific_requests_stay_on_the_first_node() -> None:
    nodes, pauses = Nodes(a=unavailable, b=ok, c=ok), pause_log()
    with client(nodes, pauses) as kv:
        kv.get("k")  # b answers and becomes preferred
        with pytest.raises(QuorumError):
            kv.health()
        nodes.behaviour["a"] = refuse
        with pytest.raises(TransportError, match="a.test"):
            kv.leave()
        with pytest.raises(TransportError):
            kv.metrics()
    assert nodes.hosts == ["a", "b", "a", "a", "a"]


def test_giving_up_names_the_attempts_and_raises_the_last_error() -> None:
    nodes, pauses = Nodes(a=refuse, b=refuse, c=refuse), pause_log()
    with client(nodes, pauses) as kv, pytest.raises(TransportError) as info:
        kv.get("k")
    assert len(nodes.seen) == 6 and len(pauses) == 5
    assert "cannot reach http://c.test:1" in str(info.value)
    assert "after 6 attempts on 3 nodes" in str(info.value)
    nodes, pauses = Nodes(a=unavailable, b=unavailable, c=unavailable), pause_log()
    with (client(nodes, pauses, retry=RetryPolicy(max_attempts=2)) as kv,
          pytest.raises(QuorumError) as quorum):
        kv.get("k")
    assert (quorum.value.acks, quorum.value.required) == (1, 2)
    assert nodes.hosts == ["a", "b"]


def test_a_client_of_one_node_makes_one_attempt_unless_told_otherwise() -> None:
    nodes = Nodes(a=refuse)
    pauses: list[float] = []
    with (Client(A, transport=httpx.MockTransport(nodes), sleep=pauses.append) as kv,
          pytest.raises(TransportError) as info):
        kv.get("k")
    assert str(info.value) == "cannot reach http://a.test:1: connection refused"
    assert nodes.hosts == ["a"] and pauses == []
    nodes.behaviour["a"] = unavailable
    with (Client(A, transport=httpx.MockTransport(nodes), sleep=pauses.append,
                 retry=RetryPolicy(max_attempts=3, backoff_base=0.01)) as kv,
          pytest.raises(QuorumError)):
        kv.get("k")
    assert nodes.hosts == ["a"] * 4 and len(pauses) == 2
    nodes.behaviour["a"] = refuse
    with (Client(A, transport=httpx.MockTransport(nodes), sleep=pauses.append,
                 retry=RetryPolicy(max_attempts=3)) as kv,
          pytest.raises(TransportError, match=r"after 3 attempts on 1 node\)")):
        kv.get("k")


def test_the_async_client_follows_the_same_policy() -> None:
    nodes = Nodes(a=refuse, b=time_out, c=ok)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async def scenario() -> tuple[bytes | None, str]:
        async with AsyncClient(urls=[A, B, C], transport=httpx.MockTransport(nodes),
                               rng=random.Random(3), sleep=sleep) as kv:
            got = await kv.get("k")
            with pytest.raises(TransportError):
                nodes.behaviour["c"] = time_out
                await kv.put("k", b"v")  # c timed out: not sent again
            return got.value, kv.node

    value, node = asyncio.run(scenario())
    assert value == b"v" and node == C
    assert nodes.hosts == ["a", "b", "c", "c"]
    assert len(pauses) == 2
    sync_pauses: list[float] = []
    with client(Nodes(a=refuse, b=time_out, c=ok), sync_pauses) as kv:
        kv.get("k")
    assert sync_pauses == pauses  # the same rng, the same policy, the same pauses


# ------------------------------------------------------------------- real sockets


def test_failover_over_real_sockets_reuses_one_connection_per_node() -> None:
    with fake_nodes(2) as (live, other):
        urls = [dead_url(), live.url, other.url]
        with Client(urls=urls, timeout=5, sleep=lambda s: None) as kv:
            kv.put("k", b"v")  # refused by the dead node: certainly not sent, so resent
            for _ in range(5):
                assert kv.get("k").value == b"v"
            assert kv.node == live.url
        assert other.requests == []
        assert len(live.requests) == 6
        assert len({r.peer for r in live.requests}) == 1  # one pooled connection

        async def scenario() -> None:
            async with AsyncClient(urls=urls, timeout=5, sleep=_no_sleep) as kv:
                await kv.incr("n")
                assert await kv.counter("n") == 1
                assert kv.node == live.url

        live.requests.clear()
        asyncio.run(scenario())
        assert len(live.requests) == 2 and len({r.peer for r in live.requests}) == 1


async def _no_sleep(seconds: float) -> None:
    return None


def test_a_503_node_hands_over_to_the_next_over_real_sockets() -> None:
    with fake_nodes(2) as (busy, live):
        busy.unavailable = True
        with Client(urls=[busy.url, live.url], timeout=5, sleep=lambda s: None) as kv:
            kv.sadd("s", "a")  # a set update may be applied twice: resent
            assert kv.smembers("s").elements == ["a"]
            assert kv.node == live.url
            live.unavailable, busy.unavailable = True, False
            with pytest.raises(QuorumError):
                kv.put("k", b"v")  # a 503 write may exist: never resent elsewhere
        assert [r.method for r in busy.requests] == ["POST"]
        assert [r.method for r in live.requests] == ["POST", "GET", "PUT"]
