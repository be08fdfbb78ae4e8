"""The WARS Monte Carlo predictor of Bailis et al. (PBS, VLDB 2012, section 5).

Job: given N, R, W and a latency distribution for each leg -- W (write request from
the coordinator to a replica), A (the replica's acknowledgement), R (read request),
S (read response) -- estimate

- t-visibility: the probability that a read starting t ms after a write commits (the
  moment the W-th acknowledgement reaches the coordinator) returns that write;
- k-staleness: the probability that a read right after k back-to-back writes (each
  starting when the previous one committed) returns one of those k versions.

One trial draws the four legs for every replica. The write commits at c, the W-th
smallest W_i + A_i. The read goes to all N replicas and is answered by the R whose
R_i + S_i are smallest; replica i has the write when the read reaches it if
W_i <= c + t + R_i. So one trial yields one threshold, min over the R answering
replicas of W_i - c - R_i, and the read is consistent for every t at or above it: one
set of draws serves every t.

Topologies (`TOPOLOGIES`):
- "wars": the paper's model; the coordinator is not a replica, every leg is a message.
- "replica": ringkv's write path; the coordinator is one of the N replicas and applies
  the write locally before it fans out, so that replica's W leg is 0 (its own
  acknowledgement still takes an A leg: injected latency applies to messages a node
  sends itself).

Invariants: pure; every draw from the `random.Random` passed in, so a seed fixes the
prediction. With R + W > N every prediction is exactly 1 (the answering replicas meet
the acknowledging ones, which held the write before it committed).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

from pbs.distributions import Legs

TOPOLOGIES = ("wars", "replica")


def _check(n: int, r: int, w: int, topology: str, trials: int) -> None:
    if not (n >= 1 and 1 <= r <= n and 1 <= w <= n):
        raise ValueError(f"need 1 <= R, W <= N; got N={n}, R={r}, W={w}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
    if trials < 1:
        raise ValueError("trials must be at least 1")


def _thresholds(n: int, r: int, w: int, legs: Legs, k: int, topology: str, trials: int,
                rng: random.Random) -> list[float]:
    """Per trial: the smallest t (ms after the last commit) at which the read sees one
    of the last k writes."""
    draw_w, draw_a = legs.w.sampler(rng), legs.a.sampler(rng)
    draw_r, draw_s = legs.r.sampler(rng), legs.s.sampler(rng)
    local = topology == "replica"
    wi = w - 1
    out: list[float] = []
    for _ in range(trials):
        start = 0.0
        first_arrival = [float("inf")] * n  # when each replica first holds any of the k
        for _ in range(k):
            acks: list[float] = []
            for i in range(n):
                leg_w = 0.0 if (local and i == 0) else draw_w()
                arrival = start + leg_w
                if arrival < first_arrival[i]:
                    first_arrival[i] = arrival
                acks.append(leg_w + draw_a())
            acks.sort()
            start += acks[wi]  # committed: the next write (or the read clock) starts
        # Draw R and S for every replica; the R fastest round trips answer (ties, as
        # with constant legs, broken at random rather than in favour of replica 0).
        replies = []
        for i in range(n):
            leg_r = draw_r()
            replies.append((leg_r + draw_s(), rng.random(), leg_r, i))
        replies.sort()
        out.append(min(first_arrival[i] - start - leg_r for _, _, leg_r, i in replies[:r]))
    return out


def visibility_thresholds(n: int, r: int, w: int, legs: Legs, *, trials: int,
                          rng: random.Random, topology: str = "wars") -> list[float]:
    """The sorted per-trial thresholds: P(consistent at t) is the fraction <= t (see
    `visibility_at`), for any t, including a different t for every read."""
    _check(n, r, w, topology, trials)
    return sorted(_thresholds(n, r, w, legs, 1, topology, trials, rng))


def visibility_at(thresholds: list[float], t: float) -> float:
    """P(consistent read at t) from `visibility_thresholds`."""
    return bisect_right(thresholds, t) / len(thresholds)


def predict_t_visibility(n: int, r: int, w: int, legs: Legs, ts: Sequence[float], *,
                         trials: int, rng: random.Random,
                         topology: str = "wars") -> dict[float, float]:
    """P(a read starting t ms after commit returns the write), for each t in `ts`."""
    thresholds = visibility_thresholds(n, r, w, legs, trials=trials, rng=rng,
                                       topology=topology)
    return {t: visibility_at(thresholds, t) for t in ts}


def predict_k_staleness(n: int, r: int, w: int, legs: Legs, ks: Sequence[int], *,
                        trials: int, rng: random.Random, t: float = 0.0,
                        topology: str = "wars") -> dict[int, float]:
    """P(a read t ms after k back-to-back writes returns one of them), for each k."""
    _check(n, r, w, topology, trials)
    out: dict[int, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        thresholds = _thresholds(n, r, w, legs, k, topology, trials, rng)
        out[k] = sum(1 for x in thresholds if x <= t) / trials
    return out


def random_quorum_staleness(n: int, r: int, w: int, k: int, *, trials: int,
                            rng: random.Random) -> float:
    """Monte Carlo of the timeless model behind the closed forms: each of k writes goes
    to W replicas drawn at random, the read to R at random; the fraction of reads that
    miss all k write quorums (compare `pbs.closed_form.k_staleness`)."""
    _check(n, r, w, "wars", trials)
    replicas = list(range(n))
    stale = 0
    for _ in range(trials):
        read = set(rng.sample(replicas, r))
        if all(read.isdisjoint(rng.sample(replicas, w)) for _ in range(k)):
            stale += 1
    return stale / trials
