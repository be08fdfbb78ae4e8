"""The closed forms of PBS, and how far a measured curve is from a predicted one.

Job: the few results of Bailis et al. that need no simulation, so the Monte Carlo
predictor (`pbs.model`) can be checked against them, and the RMSE used to compare
measured and predicted curves.

- `p_nonintersect(n, r, w)`: a read quorum of R replicas and a write quorum of W,
  each chosen uniformly at random among N, share no replica with probability
  C(N-W, R) / C(N, R); for N=3, R=W=1 that is 2/3. It is 0 exactly when R + W > N.
- `k_staleness(n, r, w, k)`: a read returns a value more than k versions old only if
  its quorum misses all of the last k write quorums (each drawn independently):
  p_nonintersect ** k.

Both describe quorums picked without regard to time; with time (WARS) the chance of a
stale read falls as replicas receive the write, and `p_nonintersect` is the t=0 bound
for a write whose replicas are only those that acknowledged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def _check(n: int, r: int, w: int) -> None:
    if not (n >= 1 and 1 <= r <= n and 1 <= w <= n):
        raise ValueError(f"need 1 <= R, W <= N; got N={n}, R={r}, W={w}")


def p_nonintersect(n: int, r: int, w: int) -> float:
    """Probability that random read and write quorums do not intersect."""
    _check(n, r, w)
    return math.comb(n - w, r) / math.comb(n, r)


def k_staleness(n: int, r: int, w: int, k: int) -> float:
    """Probability that a read is more than k versions stale (quorums at random)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return p_nonintersect(n, r, w) ** k


def rmse(measured: Mapping[str, float], predicted: Mapping[str, float]) -> float:
    """Root mean square difference over the points both curves have (probabilities)."""
    common = [t for t in measured if t in predicted]
    if not common:
        raise ValueError("the curves share no point")
    return math.sqrt(sum((measured[t] - predicted[t]) ** 2 for t in common) / len(common))
