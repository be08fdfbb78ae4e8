"""Which node a request goes to, whether it may be sent again, and after what pause.

Job
---
A client given several node URLs (`Client(urls=[...])`) sends each request to one of
them and, when that node fails, to the next. This module is that decision, written once
for `Client` and `AsyncClient`: a `Failover` holds the nodes and the one to prefer;
for each request it hands out a `Walk`, which names the node to try (`url`) and, told
how an attempt failed, says how long to pause before trying the next node, or that the
request must not be sent again. The clients only send, sleep, and report back.

What may be sent again (`Resend`, chosen by the request builder, which knows the
operation):

* ``ANY_FAILURE`` -- idempotent requests: reads (get, multi-get, key listing, counter
  and set reads, bucket properties), counter increments carrying an ``Idempotency-Key``
  (the node applies a key at most once: that is what the key is for), set updates (an
  add applied twice leaves the element present once; a remove deletes exactly the adds
  its context observed, however often it is applied) and bucket-property writes (the
  same properties set twice). Sent again after a connection error, a timeout or a 503.
* ``UNDELIVERED`` -- requests that are not idempotent: plain ``PUT`` and ``DELETE`` of
  ``/kv/`` (a blind write sent twice stores two versions, so a second sibling; a write
  with a context sent twice through two coordinators can too; a conditional write sent
  again after the first took effect gets a 412 for its own success), counter increments
  without an idempotency key, and cluster removals. Sent again only when it certainly
  never reached a node (the connection was refused or never made), never after a
  timeout, a reset or a 503: the write may exist on some replicas (contract 2).
* ``PINNED`` -- node-specific requests (leave, health, metrics): sent to one node only
  (the first URL unless the request names another), once. Leaving through "whichever
  node answers" would make the wrong node leave.

Invariants
----------
* Pure: no I/O, no clock; the jitter comes from the `random.Random` passed in, so a
  seeded rng gives the same pauses.
* A request is attempted at most `max_attempts` times (default: twice per node, once
  for a client of a single node, which has nowhere to fail over to); the nodes are
  tried in turn from the preferred one (or the one the walk was started at: a replica
  of the key, for a client routing by the ring), wrapping round.
* The pause before retry ``k`` (0-based) is exponential with "equal jitter":
  ``min(cap, base * 2**k) * U(0.5, 1.0)``, never more than `cap`.
* The node that answered (any answer other than a 503) becomes the preferred one, and
  the next request starts there.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Failover", "Failure", "Resend", "RetryPolicy", "Walk", "jittered_backoff",
           "status_failure"]


class Resend(enum.Enum):
    """How freely a request may be sent again (see the module docstring)."""

    ANY_FAILURE = "any-failure"
    UNDELIVERED = "undelivered"
    PINNED = "pinned"


class Failure(enum.Enum):
    """How an attempt failed."""

    UNDELIVERED = "undelivered"  # no connection was made: the node never saw the request
    LOST = "lost"  # sent, maybe received and applied, but no answer came back
    UNAVAILABLE = "unavailable"  # the node answered 503 (quorum not reached, not ready)


def status_failure(status: int) -> Failure | None:
    """The failure an HTTP answer stands for (a 503), or None for an answer to keep."""
    return Failure.UNAVAILABLE if status == 503 else None


def jittered_backoff(retry: int, rng: random.Random, base: float, cap: float) -> float:
    """Seconds to pause before retry `retry` (0-based): exponential, equal jitter."""
    ceiling = min(cap, base * 2.0 ** min(retry, 62))
    return ceiling * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a client tries. `max_attempts` None: twice per node (1 for one node).

    The defaults pause ~50 ms, 100 ms, 200 ms, ... (jittered, at most 2 s) between
    attempts, so a 3-node client gives up after 6 attempts and at most ~1.6 s of pauses.
    """

    max_attempts: int | None = None
    backoff_base: float = 0.05  # seconds
    backoff_cap: float = 2.0  # seconds

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be a positive integer, got {self.max_attempts!r}")
        if not self.backoff_base >= 0 or not self.backoff_cap >= 0:
            raise ValueError("backoff_base and backoff_cap must be non-negative")

    def attempts_for(self, nodes: int) -> int:
        if self.max_attempts is not None:
            return self.max_attempts
        return 1 if nodes == 1 else 2 * nodes


class Failover:
    """The nodes of one client and the one to try first."""

    __slots__ = ("_preferred", "_rng", "policy", "urls")

    def __init__(
        self, urls: Sequence[str], rng: random.Random, policy: RetryPolicy | None = None
    ) -> None:
        if not urls:
            raise ValueError("at least one node URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError("node URLs must be distinct")
        self.urls: tuple[str, ...] = tuple(urls)
        self.policy = policy or RetryPolicy()
        self._rng = rng
        self._preferred = 0

    @property
    def preferred(self) -> str:
        """The node the next request starts at: the last one that answered."""
        return self.urls[self._preferred]

    def start(self, resend: Resend, first: str | None = None) -> Walk:
        """The walk over the nodes for one request, from `first` (one of `urls`) when
        given, else from the preferred node (a pinned request: from the first URL)."""
        return Walk(self, resend, None if first is None else self.urls.index(first))

    def _answered(self, index: int) -> None:
        self._preferred = index


class Walk:
    """One request's way over the nodes: try `url`; report how it went."""

    __slots__ = ("_failover", "_index", "_limit", "_resend", "attempts", "nodes_tried", "url")

    def __init__(self, failover: Failover, resend: Resend, first: int | None = None) -> None:
        self._failover = failover
        self._resend = resend
        if resend is Resend.PINNED:
            self._index, self._limit = first or 0, 1
        else:
            self._index = failover._preferred if first is None else first
            self._limit = failover.policy.attempts_for(len(failover.urls))
        self.url = failover.urls[self._index]
        self.attempts = 1  # attempts made so far, the current one included
        self.nodes_tried = 1  # distinct nodes tried so far

    def succeeded(self) -> None:
        """`url` answered: prefer it from now on."""
        self._failover._answered(self._index)

    def failed(self, failure: Failure) -> float | None:
        """The attempt at `url` failed: the pause before the next attempt (then `url`
        names the next node), or None when the request must not be sent again."""
        if not self._may_resend(failure) or self.attempts >= self._limit:
            return None
        policy = self._failover.policy
        pause = jittered_backoff(
            self.attempts - 1, self._failover._rng, policy.backoff_base, policy.backoff_cap
        )
        urls = self._failover.urls
        self._index = (self._index + 1) % len(urls)
        self.url = urls[self._index]
        self.attempts += 1
        self.nodes_tried = min(len(urls), self.nodes_tried + 1)
        return pause

    def _may_resend(self, failure: Failure) -> bool:
        if self._resend is Resend.ANY_FAILURE:
            return True
        if self._resend is Resend.UNDELIVERED:
            return failure is Failure.UNDELIVERED
        return False
