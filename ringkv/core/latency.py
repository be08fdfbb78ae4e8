"""Latency injection for consistency experiments: delay each WARS leg on purpose.

Job: map an internode message to its WARS leg and draw that leg's delay, for the
runtime (which holds a `Send` back by the delay before it leaves) and for the
simulation (which adds it to the frame's network latency). The legs of Bailis et al.:

    ReplicaPut       W   write request, coordinator -> replica
    ReplicaPutAck    A   the replica's acknowledgement
    ReplicaGet       R   read request, coordinator -> replica
    ReplicaGetReply  S   the replica's answer

Every other message (gossip, forwards, anti-entropy) leaves undelayed. Read repairs
and hint deliveries are ReplicaPuts too and take a W leg: they are writes to a replica.
A message a node sends itself is delayed like any other, so that the coordinator's own
replica takes the same legs as the others (except the write itself, which the
coordinator applies before it fans out: the "replica" topology of `pbs.model`).

Invariants: off unless a node was started with both `inject_latency` and the
`experimental` switch (`ringkv.core.config` refuses one without the other); draws come
only from the `random.Random` passed in; every delay drawn is recorded per leg (count,
sum, and the last `keep` samples), so an experiment can feed the predictor with the
delays the nodes actually applied.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from coordinator.messages import ReplicaGet, ReplicaGetReply, ReplicaPut, ReplicaPutAck
from pbs.distributions import LEGS, Legs, parse_legs

LEG_OF: dict[type, str] = {ReplicaPut: "W", ReplicaPutAck: "A", ReplicaGet: "R",
                           ReplicaGetReply: "S"}
KEEP = 20_000  # samples remembered per leg: enough for an empirical distribution


class LatencyInjector:
    """Draws (and remembers) the injected delay of each message, in seconds."""

    def __init__(self, legs: Legs, rng: random.Random, keep: int = KEEP) -> None:
        self.legs = legs
        self.rng = rng
        self._draw = {type_: legs.of(leg).draw for type_, leg in LEG_OF.items()}
        self.samples: dict[str, deque[float]] = {leg: deque(maxlen=keep) for leg in LEGS}
        self.counts = dict.fromkeys(LEGS, 0)
        self.sums = dict.fromkeys(LEGS, 0.0)

    @classmethod
    def from_spec(cls, spec: str, rng: random.Random) -> LatencyInjector:
        return cls(parse_legs(spec), rng)

    def delay_ms(self, msg: object) -> float:
        """The injected delay of `msg` in ms (0 for a message of no WARS leg)."""
        draw = self._draw.get(type(msg))
        if draw is None:
            return 0.0
        ms = draw(self.rng)
        leg = LEG_OF[type(msg)]
        self.samples[leg].append(ms)
        self.counts[leg] += 1
        self.sums[leg] += ms
        return ms

    def delay(self, msg: object) -> float:
        """The injected delay of `msg` in seconds."""
        return self.delay_ms(msg) / 1000.0

    def snapshot(self, with_samples: bool = True) -> dict[str, Any]:
        """What was injected so far, per leg: the spec, counts, means and samples (ms)."""
        legs: dict[str, Any] = {}
        for leg in LEGS:
            count = self.counts[leg]
            entry: dict[str, Any] = {"count": count,
                                     "mean_ms": self.sums[leg] / count if count else None}
            if with_samples:
                entry["samples_ms"] = list(self.samples[leg])
            legs[leg] = entry
        return {"spec": self.legs.describe(), "legs": legs}
