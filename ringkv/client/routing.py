"""Routing by the ring: a keyed request goes first to a replica of its key.

Job
---
Any node coordinates any key, but not at the same cost: a write that reaches a node
holding no replica of its key is forwarded to one (a second hop, and a second node's
CPU), and a read coordinated elsewhere gets every reply over the network. A client
asked to (``Client(urls=[...], route_by_ring=True)``) keeps the cluster's token map
and sends each keyed request (get, put, delete, counters, sets) first to a replica of
the key among its own URLs -- its primary when the client knows it, else the next.
Failover is unchanged: when that node fails the request walks on as always.

A `Router` holds the map (``GET /ring`` of any node, `placement.RingMap`) and which
node id each of the client's URLs serves (``GET /health`` of each URL, whose answer
names its node). Its `refresh` is a small plan of those requests, run by
``ringkv.client.runner`` before a keyed request when the map is due: first use, then
every `ttl` seconds (a conditional GET, so an unchanged ring costs a 304). The node
ids are asked again whenever the map changed, since membership did.

Invariants
----------
* Pure: no I/O; time comes from the injected `clock`.
* Routing is a hint, never a requirement: with no map, a bad map, a key none of whose
  replicas the client can reach, or a failed refresh, a request goes where failover
  would have sent it. A refresh that fails is tried again `retry_after` seconds later,
  not on every request.
* One refresh at a time: requests that arrive while one is running (an async client's
  concurrent calls) route by the map already held.
* A URL whose attempt just failed is not routed to for `suspect_for` seconds, so a
  dead replica costs one failed attempt, not one per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence

from ringkv.client.failover import Resend
from ringkv.client.placement import RingMap
from ringkv.client.protocol import HttpRequest, HttpResponse

__all__ = ["MAX_MAP_BYTES", "Router"]

MAX_MAP_BYTES = 64 << 20  # a larger answer to GET /ring is not read as a map


class Router:
    """The token map of one client, and the replica to send each key to first."""

    __slots__ = ("_clock", "_etag", "_ids", "_map", "_next", "_refreshing", "_retry",
                 "_suspect_for", "_suspects", "_ttl", "_url_of", "_urls")

    def __init__(self, urls: Sequence[str], clock: Callable[[], float], *,
                 ttl: float = 30.0, retry_after: float = 5.0,
                 suspect_for: float = 5.0) -> None:
        self._urls = tuple(urls)
        self._clock = clock
        self._ttl = ttl
        self._retry = retry_after
        self._suspect_for = suspect_for
        self._map: RingMap | None = None
        self._etag: str | None = None
        self._ids: dict[str, str] = {}  # url -> the node id it serves
        self._url_of: dict[str, str] = {}  # node id -> url
        self._suspects: dict[str, float] = {}  # url -> not routed to until then
        self._next = float("-inf")  # when the next refresh is due
        self._refreshing = False

    @property
    def ring(self) -> RingMap | None:
        """The token map held, None before the first refresh that got one."""
        return self._map

    @property
    def node_ids(self) -> dict[str, str]:
        """The node id each URL was found to serve (URLs that never answered absent)."""
        return dict(self._ids)

    def due(self) -> bool:
        """Whether a keyed request should refresh the map before it is sent."""
        return not self._refreshing and self._clock() >= self._next

    def url_for(self, route: bytes | None) -> str | None:
        """The URL to send a request for stored key `route` to first, or None to let
        failover choose (no map yet, or no replica of the key among the URLs)."""
        ring = self._map
        if route is None or ring is None:
            return None
        now: float | None = None
        for node in ring.replicas(route):
            url = self._url_of.get(node)
            if url is None:
                continue
            until = self._suspects.get(url)
            if until is not None:
                now = self._clock() if now is None else now
                if now < until:
                    continue
                del self._suspects[url]
            return url
        return None

    def failed(self, url: str) -> None:
        """An attempt at `url` failed: route elsewhere for a while."""
        self._suspects[url] = self._clock() + self._suspect_for

    def refresh(self) -> Generator[HttpRequest, HttpResponse | None, None]:
        """The requests of one refresh; each is sent the answer, or None for none."""
        self._refreshing = True
        self._next = self._clock() + self._retry  # unless it all works out
        try:
            headers = [("Accept", "application/json")]
            if self._etag is not None:
                headers.append(("If-None-Match", self._etag))
            answer = yield HttpRequest("GET", "/ring", headers=tuple(headers),
                                       resend=Resend.ANY_FAILURE)
            if answer is None:
                return
            if answer.status == 304 and self._map is not None:
                changed = False
            else:
                fresh = _ring_map(answer)
                if fresh is None:
                    return
                changed = fresh != self._map
                self._map = fresh
                self._etag = answer.headers.get("ETag")
            for url in self._urls:
                if url in self._ids and not changed:
                    continue
                health = yield HttpRequest("GET", "/health", resend=Resend.PINNED, node=url)
                node_id = _node_id(health)
                if node_id is not None:
                    self._ids[url] = node_id
                elif changed:
                    self._ids.pop(url, None)
            self._url_of = {node_id: url for url, node_id in self._ids.items()}
            self._next = self._clock() + self._ttl
        finally:
            self._refreshing = False


def _ring_map(answer: HttpResponse) -> RingMap | None:
    if answer.status != 200 or len(answer.body) > MAX_MAP_BYTES:
        return None
    try:
        return RingMap.from_json(json.loads(answer.body))
    except (ValueError, RecursionError):  # a JSON or UTF-8 error is a ValueError
        return None


def _node_id(answer: HttpResponse | None) -> str | None:
    """The node an answer to ``GET /health`` names (a 503 names it too)."""
    if answer is None or answer.status not in (200, 503) or len(answer.body) > 65536:
        return None
    try:
        doc = json.loads(answer.body)
    except (ValueError, RecursionError):
        return None
    node_id = doc.get("node_id") if isinstance(doc, dict) else None
    return node_id if isinstance(node_id, str) and 0 < len(node_id) <= 256 else None
