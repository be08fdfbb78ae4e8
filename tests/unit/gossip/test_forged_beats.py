"""Heartbeats are not signed: forged ones must not mute a member (gossip.gossiper).

A relayed beat may advance a member's counter only by what its rounds could have done
since the last advance heard here; a member that hears a beat of itself ahead of its own
counter catches up within the same bound; a counter that stalls while another line of
beats keeps advancing below or beyond it gives way to that line.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from gossip.gossiper import PLAUSIBLE_SLACK, Gossiper
from gossip.membership import COUNTER_LIMIT, UP, Member, Membership
from gossip.messages import Beat, GossipSyn
from gossip.phi import PhiAccrualDetector, PhiSettings
from gossip.signing import Signer
from sim.gossip_scale import GossipWorld

INTERVAL = 0.5


def _signer(node_id: str) -> Signer:
    return Signer(node_id, hashlib.sha256(node_id.encode()).digest())


def _member(node_id: str, generation: int = 7) -> Member:
    return _signer(node_id).sign(Member(node_id, f"{node_id}:1", f"{node_id}:2", (1,), UP,
                                        1, generation))


def _gossiper(self_id: str = "a") -> Gossiper:
    records = Membership([_member("a"), _member("b")])
    return Gossiper(self_id, records, PhiAccrualDetector(PhiSettings.for_interval(INTERVAL)),
                    random.Random(1), 0.0, _signer(self_id), interval=INTERVAL)


def _beat(g: Gossiper, node_id: str, counter: int, now: float, src: str = "c") -> None:
    g.receive(src, GossipSyn((Beat(node_id, 7, counter, 1),)), now)


def _forge(world: GossipWorld, observer: str, member: str, counter: int) -> None:
    node = world.nodes[observer]
    rec = node.membership.get(member)
    assert rec is not None
    # From a member that is not in the world (a hostile peer): its ACK goes nowhere.
    node.gossiper.receive("x1", GossipSyn((Beat(member, rec.generation, counter,
                                                rec.version),)), world.now)


# --- in a world -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_forged_far_ahead_beat_does_not_mute_a_member(seed: int) -> None:
    world = GossipWorld(8, seed, vnodes=4)
    world.run_until(10.0)
    _forge(world, "n001", "n004", COUNTER_LIMIT - 1)
    world.run_until(world.now + 15.0)
    assert all(world.up_views("n004").values()), world.up_views("n004")
    assert world.nodes["n001"].gossiper.dropped_beats >= 1
    # The forged counter spread nowhere: every node holds n004's real one.
    real = world.nodes["n004"].gossiper.heartbeat("n004")
    assert real is not None
    for name, node in world.nodes.items():
        held = node.gossiper.heartbeat("n004")
        assert held is not None and held[1] <= real[1] + PLAUSIBLE_SLACK, name


@pytest.mark.parametrize("seed", [1, 2])
def test_forged_beats_to_every_node_every_round_do_not_mute_a_member(seed: int) -> None:
    world = GossipWorld(6, seed, vnodes=4)
    world.run_until(10.0)
    rng = random.Random(seed)
    end = world.now + 20.0
    while world.now < end:
        for observer in sorted(world.nodes):
            if observer != "n002":
                _forge(world, observer, "n002", rng.choice(
                    (COUNTER_LIMIT - 1, rng.randrange(COUNTER_LIMIT), 1 << 40)))
        world.run_until(world.now + INTERVAL)
        assert all(world.up_views("n002").values()), world.now


def test_a_killed_member_is_still_judged_down_after_forged_beats_stop() -> None:
    world = GossipWorld(6, 4, vnodes=4)
    world.run_until(10.0)
    _forge(world, "n001", "n003", COUNTER_LIMIT - 1)
    world.run_until(world.now + 5.0)
    world.kill("n003")
    world.run_until(world.now + 12.0)
    assert not any(world.up_views("n003").values())


# --- one gossiper ------------------------------------------------------------------------


def test_a_beat_too_far_ahead_is_dropped_and_counted() -> None:
    g = _gossiper()
    _beat(g, "b", 10, 1.0)
    _beat(g, "b", 10 + 4 + PLAUSIBLE_SLACK + 1, 2.0)  # 1 s allows 2 rounds x 2 + slack
    assert g.heartbeat("b") == (7, 10) and g.dropped_beats == 1
    _beat(g, "b", 10 + 4 + PLAUSIBLE_SLACK, 2.0)
    assert g.heartbeat("b") == (7, 10 + 4 + PLAUSIBLE_SLACK) and g.dropped_beats == 1


def test_a_forged_first_beat_gives_way_to_the_real_line_before_the_member_looks_down() -> None:
    g = _gossiper()
    _beat(g, "b", COUNTER_LIMIT - 1, 0.1)  # the first beat heard of b: no baseline yet
    t = 0.1
    for counter in range(1, 40):  # b's real beats, one a round
        t += INTERVAL
        _beat(g, "b", counter, t)
        assert g.is_up("b", t), t
    held = g.heartbeat("b")
    assert held is not None and held[1] == 39


def test_stale_beats_below_a_dead_members_counter_do_not_bring_it_back() -> None:
    g = _gossiper()
    t = 0.0
    for counter in range(1, 21):
        t += INTERVAL
        _beat(g, "b", counter, t)
    # b died at counter 20; lagging peers repeat what they last heard of it.
    for i in range(40):
        t += INTERVAL / 2
        _beat(g, "b", 20 - 1 - (i % 3), t)
    assert not g.is_up("b", t)


def test_a_beat_of_ourselves_ahead_of_our_counter_moves_ours_past_it_within_bounds() -> None:
    g = _gossiper()
    now = 0.0
    for _ in range(10):
        g.tick(now)
        now += INTERVAL
    assert g.heartbeat("a") == (7, 10)
    _beat(g, "a", 14, now)  # a forged beat a little ahead: our next beats lead again
    mine = g.heartbeat("a")
    assert mine is not None and mine[1] == 15
    _beat(g, "a", COUNTER_LIMIT - 1, now)  # far ahead: we jump a bounded step only
    mine = g.heartbeat("a")
    assert mine is not None and mine[1] <= 15 + PLAUSIBLE_SLACK
    # Whatever it hears, our counter never grows faster than observers accept.
    for _ in range(100):
        now += INTERVAL
        g.tick(now)
        _beat(g, "a", COUNTER_LIMIT - 1, now)
    mine = g.heartbeat("a")
    assert mine is not None and mine[1] <= 2 * now / INTERVAL + PLAUSIBLE_SLACK
