"""The WARS predictor (pbs.model) and the closed forms of PBS (pbs.closed_form)."""

from __future__ import annotations

import math
import random

import pytest

from pbs.closed_form import k_staleness, p_nonintersect, rmse
from pbs.distributions import parse_legs
from pbs.model import predict_k_staleness, predict_t_visibility, random_quorum_staleness

PAPER = parse_legs("W=exp:10,A=exp:1,R=exp:1,S=exp:1")
PAPER_FAST = parse_legs("W=exp:0.25,A=exp:1,R=exp:1,S=exp:1")


@pytest.mark.parametrize(("n", "r", "w", "expected"), [
    (3, 1, 1, 2 / 3),
    (3, 2, 1, 1 / 3),
    (3, 1, 2, 1 / 3),
    (3, 2, 2, 0.0),
    (3, 3, 1, 0.0),
    (5, 2, 2, 3 / 10),
    (5, 1, 1, 4 / 5),
])
def test_quorum_non_intersection_closed_form(n: int, r: int, w: int, expected: float) -> None:
    assert p_nonintersect(n, r, w) == pytest.approx(expected)
    assert (p_nonintersect(n, r, w) == 0.0) == (r + w > n)


def test_k_staleness_is_the_kth_power() -> None:
    for k in (1, 2, 3, 5):
        assert k_staleness(3, 1, 1, k) == pytest.approx((2 / 3) ** k)
    assert k_staleness(3, 2, 2, 4) == 0.0
    with pytest.raises(ValueError, match="k must be at least 1"):
        k_staleness(3, 1, 1, 0)
    with pytest.raises(ValueError, match="1 <= R, W <= N"):
        p_nonintersect(3, 4, 1)


@pytest.mark.parametrize(("n", "r", "w", "k"), [(3, 1, 1, 1), (3, 1, 1, 2), (3, 2, 1, 1),
                                                 (5, 2, 2, 2), (3, 2, 2, 3)])
def test_monte_carlo_of_random_quorums_matches_the_closed_form(n: int, r: int, w: int,
                                                                k: int) -> None:
    got = random_quorum_staleness(n, r, w, k, trials=8000, rng=random.Random(7))
    assert got == pytest.approx(k_staleness(n, r, w, k), abs=0.02)


def test_wars_reproduces_the_papers_figures() -> None:
    # Bailis et al.: N=3, R=W=1, W exp mean 10 ms, A=R=S exp mean 1 ms: about 41%
    # consistent at t=0 and 99.9% after about 65 ms; with W mean 0.25 ms, 94% at t=0.
    slow = predict_t_visibility(3, 1, 1, PAPER, [0, 65], trials=15_000, rng=random.Random(1))
    assert slow[0] == pytest.approx(0.41, abs=0.02)
    assert slow[65] >= 0.998
    fast = predict_t_visibility(3, 1, 1, PAPER_FAST, [0], trials=10_000,
                                rng=random.Random(2))
    assert fast[0] == pytest.approx(0.94, abs=0.01)


@pytest.mark.parametrize("topology", ["wars", "replica"])
@pytest.mark.parametrize(("r", "w"), [(2, 2), (3, 1), (1, 3), (2, 3)])
def test_strict_quorums_predict_no_staleness(topology: str, r: int, w: int) -> None:
    got = predict_t_visibility(3, r, w, PAPER, [0, 1, 10], trials=3000,
                               rng=random.Random(3), topology=topology)
    assert set(got.values()) == {1.0}
    k = predict_k_staleness(3, r, w, PAPER, [1, 2], trials=1000, rng=random.Random(3),
                            topology=topology)
    assert set(k.values()) == {1.0}


def test_t_visibility_grows_with_t_and_reaches_one() -> None:
    ts = [0, 1, 2, 5, 10, 20, 50, 200]
    got = predict_t_visibility(3, 1, 1, PAPER, ts, trials=5000, rng=random.Random(4))
    values = [got[t] for t in ts]
    assert values == sorted(values)
    assert values[-1] == 1.0


def test_larger_quorums_are_more_consistent() -> None:
    def at0(r: int, w: int) -> float:
        return predict_t_visibility(3, r, w, PAPER, [0], trials=4000,
                                    rng=random.Random(5))[0]

    assert at0(1, 1) < at0(2, 1) < 1.0
    assert at0(1, 1) < at0(1, 2) < 1.0


def test_k_staleness_grows_with_k() -> None:
    got = predict_k_staleness(3, 1, 1, PAPER, [1, 2, 3], trials=4000, rng=random.Random(6))
    assert got[1] < got[2] < got[3] < 1.0
    # k=1 is t-visibility at t=0
    assert got[1] == pytest.approx(0.41, abs=0.03)


def test_constant_legs_are_exact() -> None:
    # Every leg constant: the write reaches all replicas at 10, commits at 10 + 1, and
    # a read at t reaches replicas at 11 + t + 1 >= 10: always consistent.
    legs = parse_legs("W=const:10,A=const:1,R=const:1,S=const:1")
    assert predict_t_visibility(3, 1, 1, legs, [0], trials=50, rng=random.Random(1)) == {0: 1.0}
    # A slow write leg to every replica but the coordinator's own copy ("replica"
    # topology): W=1 commits on the local ack at 0.5 ms; a read at t reaches the
    # replicas at 0.5 + t + 0.1; the remote copies land at 5. Before that, a read is
    # consistent only when the coordinator's own copy answers first (1 in 3: ties).
    legs = parse_legs("W=const:5,A=const:0.5,R=const:0.1,S=const:0.1")
    got = predict_t_visibility(3, 1, 1, legs, [0, 4.0, 4.5], trials=3000,
                               rng=random.Random(1), topology="replica")
    assert got[4.5] == 1.0
    assert got[0] == got[4.0] == pytest.approx(1 / 3, abs=0.03)


def test_prediction_is_a_function_of_the_seed() -> None:
    a = predict_t_visibility(3, 1, 1, PAPER, [0, 5], trials=2000, rng=random.Random(9))
    b = predict_t_visibility(3, 1, 1, PAPER, [0, 5], trials=2000, rng=random.Random(9))
    assert a == b


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="1 <= R, W <= N"):
        predict_t_visibility(3, 0, 1, PAPER, [0], trials=10, rng=random.Random(1))
    with pytest.raises(ValueError, match="topology"):
        predict_t_visibility(3, 1, 1, PAPER, [0], trials=10, rng=random.Random(1),
                             topology="mesh")


def test_rmse() -> None:
    assert rmse({"0": 0.5, "10": 0.9}, {"0": 0.5, "10": 0.9}) == 0.0
    assert rmse({"0": 0.4, "10": 0.9}, {"0": 0.5, "10": 0.9}) == pytest.approx(
        math.sqrt(0.01 / 2))
    with pytest.raises(ValueError):
        rmse({"0": 1.0}, {"1": 1.0})
