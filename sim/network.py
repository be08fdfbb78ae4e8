"""The simulated network: per-link latency, drops, duplicates, reordering, partitions.

Job: for one frame sent from `src` to `dst` at world time `now`, decide when it arrives,
if ever, and how many times. Every random choice comes from the world's one
`random.Random`, so a seed fixes every latency and every drop. The nemesis
(`sim.nemesis`) turns the knobs: `drop_rate`, `dup_rate`, `reorder`, blocked links
(partitions, symmetric or one-way) and slowed links.

Invariants:
- Randomness only from the rng passed in; links are created in sorted order.
- With `reorder` off a link is FIFO, as over the runtime's one TCP connection per peer:
  a frame never arrives before one sent earlier on the same link. With it on, each
  frame draws its own latency, so frames overtake each other.
- A frame crossing a blocked link is dropped at send, and again at delivery if a
  partition started while it was in flight (`blocked`).
- Latencies are positive: no frame arrives at the instant it was sent.
- Per-message-type latency (`inject`, off unless set): a hook such as
  `ringkv.core.latency.LatencyInjector.delay` adds its delay (seconds) to a frame's link
  latency, by message type (the WARS legs of a consistency experiment). It applies to
  a frame a node sends itself too (`local_delay`), as the runtime's injection does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_KINDS = ("exp", "uniform", "lognormal", "pareto")


@dataclass(frozen=True, slots=True)
class Latency:
    """One link's latency distribution: a fixed floor plus a random part (seconds).

    Each draw is one `rng.random()` through an inverse CDF (cheap, and one draw per
    frame whatever the kind); the lognormal is approximated by the exponential of a
    logistic variable. Heavy tails are capped at 50 times the scale.
    """

    kind: str
    floor: float
    scale: float

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        kind = self.kind
        if kind == "exp":
            extra = -math.log(1.0 - u)
        elif kind == "uniform":
            extra = 2.0 * u
        elif kind == "lognormal":
            u = min(max(u, 1e-12), 1.0 - 1e-12)
            extra = math.exp(0.45 * math.log(u / (1.0 - u))) / 1.35
        else:  # pareto, shape 2.5
            extra = 1.5 * ((1.0 - u) ** -0.4 - 1.0)
        return self.floor + self.scale * min(extra, 50.0)


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """How links are drawn: `latency` is a kind of `LATENCY_KINDS` or "mixed" (per link)."""

    latency: str = "mixed"
    floor: tuple[float, float] = (0.0001, 0.001)  # seconds, drawn per link
    scale: tuple[float, float] = (0.0002, 0.003)


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    blocked: int = 0
    duplicated: int = 0


@dataclass
class Network:
    rng: random.Random
    nodes: list[str]
    profile: NetworkProfile = field(default_factory=NetworkProfile)
    drop_rate: float = 0.0
    dup_rate: float = 0.0
    reorder: bool = False
    # Extra delay (seconds) by message, drawn by the hook: latency injection.
    inject: Callable[[object], float] | None = None

    def __post_init__(self) -> None:
        self.links: dict[tuple[str, str], Latency] = {}
        for src in sorted(self.nodes):
            for dst in sorted(self.nodes):
                if src != dst:
                    self.links[(src, dst)] = self._draw_link()
        self._blocked: dict[tuple[str, str], int] = {}  # link -> episodes blocking it
        self._slow: dict[tuple[str, str], float] = {}  # link -> latency factor
        self._last: dict[tuple[str, str], float] = {}  # FIFO: last arrival per link
        self.stats = NetStats()

    def _draw_link(self) -> Latency:
        p = self.profile
        kind = self.rng.choice(LATENCY_KINDS) if p.latency == "mixed" else p.latency
        return Latency(kind, self.rng.uniform(*p.floor), self.rng.uniform(*p.scale))

    def add_node(self, name: str) -> None:
        """Links to and from a peer that joins the network late (a hostile member).

        Drawn in sorted order like the others, and only when called: a run without
        such a peer draws nothing more from the rng.
        """
        for other in sorted(self.nodes):
            self.links[(name, other)] = self._draw_link()
            self.links[(other, name)] = self._draw_link()
        self.nodes.append(name)

    # --- knobs for the nemesis ----------------------------------------------------------

    def block(self, links: list[tuple[str, str]]) -> None:
        for link in links:
            self._blocked[link] = self._blocked.get(link, 0) + 1

    def unblock(self, links: list[tuple[str, str]]) -> None:
        for link in links:
            left = self._blocked.get(link, 0) - 1
            if left > 0:
                self._blocked[link] = left
            else:
                self._blocked.pop(link, None)

    def slow(self, links: list[tuple[str, str]], factor: float) -> None:
        for link in links:
            self._slow[link] = max(factor, self._slow.get(link, 1.0))

    def unslow(self, links: list[tuple[str, str]]) -> None:
        for link in links:
            self._slow.pop(link, None)

    def heal(self) -> None:
        self._blocked.clear()
        self._slow.clear()
        self.drop_rate = self.dup_rate = 0.0
        self.reorder = False

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._blocked

    def partitioned(self) -> bool:
        return bool(self._blocked)

    # --- the decision ---------------------------------------------------------------------

    def local_delay(self, msg: object) -> float:
        """The injected delay of a message a node sends itself (0 without a hook)."""
        return 0.0 if self.inject is None else self.inject(msg)

    def arrivals(self, src: str, dst: str, now: float, msg: object = None) -> list[float]:
        """Arrival times of one frame (empty: lost; two: duplicated)."""
        stats = self.stats
        stats.sent += 1
        link = (src, dst)
        if link in self._blocked:
            stats.blocked += 1
            return []
        rng = self.rng
        if self.drop_rate and rng.random() < self.drop_rate:
            stats.dropped += 1
            return []
        latency = self.links[link]
        at = now + latency.draw(rng) * self._slow.get(link, 1.0)
        if self.inject is not None:
            at += self.inject(msg)
        if not self.reorder:
            last = self._last.get(link, 0.0)
            if at <= last:
                at = last + 1e-6
            self._last[link] = at
        if self.dup_rate and rng.random() < self.dup_rate:
            stats.duplicated += 1
            again = now + latency.draw(rng) * self._slow.get(link, 1.0)
            if not self.reorder:
                again = max(again, at + 1e-6)
                self._last[link] = again
            return [at, again]
        return [at]
