"""The phi-accrual detector's maths, table by table."""

from __future__ import annotations

import math

import pytest

from gossip.phi import PhiAccrualDetector, PhiSettings, phi_of, tail_z


# -log10 of the standard normal upper tail, from published tables of Q(y).
@pytest.mark.parametrize(("y", "phi"), [
    (-3.0, 0.000587),      # Q = 0.99865
    (0.0, 0.301030),       # Q = 0.5
    (1.0, 0.799546),       # Q = 0.158655
    (2.0, 1.643016),       # Q = 0.0227501
    (3.0, 2.869699),       # Q = 0.00134990
    (5.0, 6.542646),       # Q = 2.86652e-7
    (10.0, 23.118053),     # Q = 7.61985e-24
])
def test_phi_of_matches_the_normal_tail(y: float, phi: float) -> None:
    assert phi_of(y) == pytest.approx(phi, abs=2e-6)


def test_phi_of_is_finite_and_continuous_past_erfc_underflow() -> None:
    # The switch to the asymptotic expansion must not jump.
    assert phi_of(29.999) == pytest.approx(phi_of(30.001), rel=1e-3)
    assert math.isfinite(phi_of(1e6))
    ys = [y / 10 for y in range(-50, 600)]
    assert all(phi_of(a) < phi_of(b) for a, b in zip(ys, ys[1:], strict=False))


@pytest.mark.parametrize(("threshold", "z"), [
    (1.0, 1.281552),   # the 90% quantile
    (3.0, 3.090232),   # 99.9%
    (8.0, 5.612001),
    (12.0, 7.034484),
])
def test_tail_z_inverts_phi(threshold: float, z: float) -> None:
    assert tail_z(threshold) == pytest.approx(z, abs=1e-5)
    assert phi_of(tail_z(threshold)) == pytest.approx(threshold, abs=1e-9)


def test_tail_z_refuses_non_positive_thresholds() -> None:
    with pytest.raises(ValueError):
        tail_z(0.0)


SETTINGS = PhiSettings(threshold=8.0, window=100, min_std=0.25, acceptable_pause=1.0,
                       first_interval=0.5)


def fed(gaps: list[float], settings: PhiSettings = SETTINGS) -> tuple[PhiAccrualDetector, float]:
    """A detector that heard "x" at 0 and then after each gap; the time of the last."""
    det = PhiAccrualDetector(settings)
    t = 0.0
    det.heard("x", t)
    for gap in gaps:
        t += gap
        det.heard("x", t)
    return det, t


# (gaps heard, seconds since the last, expected phi): mean/std from the gaps, std floored
# at 0.25, the mean shifted by the 1.0 s acceptable pause.
@pytest.mark.parametrize(("gaps", "elapsed", "phi"), [
    ([0.5] * 10, 0.0, phi_of((0.0 - 1.5) / 0.25)),
    ([0.5] * 10, 1.5, 0.301030),                      # at mean + pause: even odds
    ([0.5] * 10, 1.75, 0.799546),                     # one (floored) sigma later
    ([0.5] * 10, 2.25, 2.869699),                     # three sigmas
    ([0.5] * 10, 1.5 + 5.612001 * 0.25, 8.0),         # the conviction point
    ([0.0, 1.0] * 5, 1.5, 0.301030),                  # mean 0.5, std 0.5 (not floored)
    ([0.0, 1.0] * 5, 2.0, 0.799546),
    ([0.0, 1.0] * 5, 3.0, 2.869699),
    ([1.0] * 4, 2.75, 2.869699),                      # mean 1.0, std floored
])
def test_phi_table(gaps: list[float], elapsed: float, phi: float) -> None:
    det, last = fed(gaps)
    assert det.phi("x", last + elapsed) == pytest.approx(phi, abs=1e-4)


def test_verdict_is_a_deadline_at_the_threshold() -> None:
    det, last = fed([0.5] * 10)
    down_at = last + 0.5 + 1.0 + tail_z(8.0) * 0.25
    assert det.suspect_at("x") == pytest.approx(down_at)
    assert det.is_up("x", down_at - 1e-6)
    assert not det.is_up("x", down_at + 1e-6)
    assert det.phi("x", down_at + 1e-6) >= 8.0 > det.phi("x", down_at - 1e-6)


def test_a_watched_member_is_presumed_up_with_the_prior() -> None:
    det = PhiAccrualDetector(SETTINGS)
    det.watch("x", 10.0)
    assert det.stats("x") == (0.5, 0.25)
    assert det.is_up("x", 10.0 + 0.5 + 1.0 + 5.6 * 0.25)
    assert not det.is_up("x", 10.0 + 0.5 + 1.0 + 5.62 * 0.25)
    det.watch("x", 11.0)  # watching again changes nothing
    assert det.suspect_at("x") == pytest.approx(10.0 + 1.5 + tail_z(8.0) * 0.25)


def test_the_first_gap_after_watch_is_not_a_sample() -> None:
    det = PhiAccrualDetector(SETTINGS)
    det.watch("x", 0.0)
    assert not det.heard("x", 0.1)
    assert det.stats("x") == (0.5, 0.25)  # still the prior
    det.heard("x", 0.9)
    assert det.stats("x") == pytest.approx((0.8, 0.25))


def test_heard_reports_recovery_and_the_outage_is_not_a_sample() -> None:
    det, last = fed([0.5] * 10)
    assert det.heard("x", last + 60.0) is True  # down before: a recovery
    assert det.stats("x") == pytest.approx((0.5, 0.25))  # the 60 s gap was not kept
    assert det.heard("x", last + 60.5) is False


def test_unknown_members_are_down() -> None:
    det = PhiAccrualDetector(SETTINGS)
    assert not det.is_up("x", 0.0)
    assert det.phi("x", 0.0) == math.inf
    assert det.silence("x", 0.0) is None
    assert det.suspect_at("x") is None
    assert det.heard("x", 0.0) is True


def test_a_new_generation_resets_history_and_is_up_at_once() -> None:
    det = PhiAccrualDetector(SETTINGS)
    det.heard("x", 0.0, generation=1)
    for t in (2.0, 4.0, 6.0):
        det.heard("x", t, generation=1)
    assert det.stats("x") == pytest.approx((2.0, 0.25))
    assert not det.is_up("x", 30.0)
    assert det.heard("x", 30.0, generation=2) is True
    assert det.is_up("x", 30.0)
    assert det.stats("x") == (0.5, 0.25)  # the old life's gaps are gone
    det.watch("x", 31.0, generation=3)  # watch with a new generation restarts too
    assert det.silence("x", 31.0) == 0.0


def test_the_window_keeps_the_last_samples_only() -> None:
    det, last = fed([5.0, 5.0, 0.5, 0.5, 0.5], PhiSettings(window=3, acceptable_pause=100.0))
    assert det.stats("x") == pytest.approx((0.5, 0.25))


def test_running_sums_stay_exact_over_many_samples() -> None:
    gaps = [0.3 + (i % 7) * 0.2 for i in range(2000)]
    det, _ = fed(gaps, PhiSettings(window=50, acceptable_pause=100.0))
    tail = gaps[-50:]
    mean = sum(tail) / 50
    std = math.sqrt(sum((g - mean) ** 2 for g in tail) / 50)
    got = det.stats("x")
    assert got is not None
    assert got[0] == pytest.approx(mean, rel=1e-9)
    assert got[1] == pytest.approx(std, rel=1e-6)


def test_forget() -> None:
    det, last = fed([0.5])
    det.forget("x")
    assert not det.is_up("x", last)
    det.forget("x")  # idempotent


@pytest.mark.parametrize("bad", [
    PhiSettings(threshold=0.0), PhiSettings(window=0), PhiSettings(min_std=0.0),
    PhiSettings(acceptable_pause=-1.0), PhiSettings(first_interval=0.0),
])
def test_invalid_settings(bad: PhiSettings) -> None:
    with pytest.raises(ValueError):
        PhiAccrualDetector(bad)


def test_the_scaled_profile_at_half_a_second_is_the_default() -> None:
    assert PhiSettings.for_interval(0.5) == PhiSettings()
    fast = PhiSettings.for_interval(0.05)
    assert (fast.min_std, fast.acceptable_pause, fast.first_interval) == \
        pytest.approx((0.025, 0.1, 0.05))
