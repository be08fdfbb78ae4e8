"""The gossiper, alone and in a seeded in-memory world (sim.gossip_scale.GossipWorld)."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import replace

import pytest

from gossip.gossiper import Gossiper
from gossip.membership import JOINING, LEAVING, LEFT, UP, Member, Membership
from gossip.messages import Beat, GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector
from gossip.signing import Signer
from sim.gossip_scale import GossipWorld, movement_table

# --- in a world -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_new_record_reaches_all_20_nodes_in_log_rounds(seed: int) -> None:
    world = GossipWorld(20, seed, vnodes=16)
    world.run_until(3.0)
    rec = world.change_status("n007", LEAVING)
    start = world.now
    while world.holders("n007", rec.version) < 20:
        world.run_until(world.now + 0.01)
        assert world.now - start < 30
    rounds = (world.now - start) / world.interval
    assert rounds <= 2 * math.ceil(math.log2(20))  # push-pull: ~log3(n) + ln ln n


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_node_is_down_everywhere_within_10s(seed: int) -> None:
    world = GossipWorld(10, seed, vnodes=16)
    world.run_until(15.0)
    world.kill("n004")
    killed = world.now
    world.run_until(killed + 2.0)
    assert all(world.up_views("n004").values())  # no hair trigger
    world.run_until(killed + 10.0)
    assert not any(world.up_views("n004").values())


@pytest.mark.parametrize("seed", range(20))
def test_a_one_second_pause_is_never_judged_down(seed: int) -> None:
    world = GossipWorld(8, seed, vnodes=4)
    rng = random.Random(seed)
    world.run_until(rng.uniform(4.0, 15.0))  # some pauses come before many samples
    victim = f"n{rng.randrange(8):03d}"
    world.pause(victim, 1.0)
    start = world.now
    while world.now < start + 8.0:
        world.run_until(world.now + 0.05)
        assert all(world.up_views(victim).values()), world.now - start
    assert not [r for r in world.recoveries if r[2] == victim]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restarted_node_is_up_everywhere_within_10s(seed: int) -> None:
    world = GossipWorld(10, seed, vnodes=16)
    world.run_until(15.0)
    world.kill("n003")
    world.run_until(world.now + 10.0)
    assert not any(world.up_views("n003").values())
    world.restart("n003")
    back = world.now
    world.run_until(back + 10.0)
    assert all(world.up_views("n003").values())
    assert all(world.up_views(other)["n003"] for other in world.nodes if other != "n003")
    assert {obs for t, obs, m in world.recoveries if m == "n003" and t >= back} == \
        set(world.nodes) - {"n003"}


@pytest.mark.parametrize(("n", "seed"), [(10, 1), (10, 2), (3, 4), (3, 5), (3, 13)])
def test_a_dead_link_between_two_healthy_nodes_raises_no_suspicion(n: int, seed: int) -> None:
    # With 3 nodes all news between the two goes through the third.
    world = GossipWorld(n, seed, vnodes=16)
    world.net.block([("n000", "n001"), ("n001", "n000")])
    world.run_until(5.0)
    while world.now < 65.0:
        world.run_until(world.now + 0.1)
        assert world.nodes["n000"].gossiper.is_up("n001", world.now)
        assert world.nodes["n001"].gossiper.is_up("n000", world.now)
    assert not [r for r in world.recoveries if {r[1], r[2]} == {"n000", "n001"}]


def test_refutation_clears_a_false_record_of_a_live_node() -> None:
    world = GossipWorld(8, 4, vnodes=16)
    world.run_until(5.0)
    true = world.nodes["n002"].membership.get("n002")
    assert true is not None
    # Written by another member, n005, and signed by it: n002 is up, so no one takes it
    # (n005 itself included), and n002, handed it straight, refutes it.
    false = world.signers["n005"].sign(replace(true, status=LEAVING,
                                               version=true.version + 5))
    assert world.nodes["n005"].gossiper.learn([false], world.now).changed == []
    world.nodes["n002"].gossiper.learn([false], world.now)
    world.run_until(world.now + 10.0)
    mine = world.nodes["n002"].membership.get("n002")
    assert mine == world.signers["n002"].sign(replace(true, version=false.version + 1))
    for node in world.nodes.values():
        assert node.membership.get("n002") == mine


def test_left_members_are_not_gossiped_to_and_not_watched() -> None:
    world = GossipWorld(8, 5, vnodes=16)
    world.run_until(5.0)
    rec = world.change_status("n003", LEFT)
    world.run_until(world.now + 10.0)
    assert world.holders("n003", rec.version) == 8
    world.kill("n003")  # a node that left shuts down: nobody must keep calling it
    for node in world.nodes.values():
        node.sent_to.clear()
    world.run_until(world.now + 30.0)
    assert all("n003" not in node.sent_to for node in world.nodes.values())
    for k, node in world.nodes.items():
        if k != "n003":
            assert node.detector.phi("n003", world.now) == math.inf


def test_the_world_replays_exactly() -> None:
    def run() -> tuple[int, list[tuple[float, str, str]]]:
        world = GossipWorld(6, 9, vnodes=8)
        world.run_until(10.0)
        world.kill("n001")
        world.run_until(20.0)
        world.restart("n001")
        world.run_until(30.0)
        return sum(n.bytes_sent for n in world.nodes.values()), world.recoveries

    assert run() == run()


# --- one gossiper, by hand ------------------------------------------------------------------


_SIGNERS: dict[str, Signer] = {}


def signer(node_id: str) -> Signer:
    """A fixed key per id, so the same record is signed the same way in every test."""
    if node_id not in _SIGNERS:
        _SIGNERS[node_id] = Signer(node_id, hashlib.sha256(node_id.encode()).digest())
    return _SIGNERS[node_id]


def member(node_id: str, version: int = 1, status: str = UP, generation: int = 7) -> Member:
    """`node_id`'s record, signed by itself."""
    return signer(node_id).sign(Member(node_id, f"{node_id}:1", f"{node_id}:2", (1,), status,
                                       version, generation))


def gossiper(*records: Member, self_id: str = "a", now: float = 0.0) -> Gossiper:
    return Gossiper(self_id, Membership(records), PhiAccrualDetector(), random.Random(1), now,
                    signer(self_id))


def test_rounds_keep_their_cadence_and_bump_the_heartbeat() -> None:
    g = gossiper(member("a"), member("b"))
    rounds = [t / 10 for t in range(0, 50) if g.tick(t / 10)]
    assert rounds == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert g.heartbeat("a") == (7, 10)


def test_our_record_rides_on_syns_for_a_while_after_it_changed() -> None:
    g = gossiper(member("a"), member("b"))
    assert all(isinstance(m, GossipSyn) and m.sender == member("a") for _, m in g.tick(0.0))
    assert all(isinstance(m, GossipSyn) and m.sender is None for _, m in g.tick(10.0))
    mine = g.update_own(member("a", status=LEAVING), 20.0)
    assert all(isinstance(m, GossipSyn) and m.sender == mine for _, m in g.tick(20.0))
    # A peer takes the sender's record (its new address) from the SYN itself, and only
    # the sender's own.
    peer = gossiper(member("a"), member("b"), self_id="b")
    moved = signer("a").sign(replace(member("a", version=2), rpc="elsewhere:2"))
    assert peer.receive("a", GossipSyn((), moved), 1.0).changed == [moved]
    assert peer.receive("c", GossipSyn((), member("a", version=3)), 1.0).changed == []


def test_no_gossip_before_joining() -> None:
    g = gossiper(member("b"))
    assert g.tick(0.0) == []


def test_a_syn_is_answered_with_newer_beats_records_and_wants() -> None:
    g = gossiper(member("a"), member("b", version=4), member("c"))
    g.tick(0.0)
    res = g.receive("b", GossipSyn((Beat("b", 7, 3, 4), Beat("c", 7, 0, 2),
                                    Beat("d", 1, 1, 1))), 0.1)
    assert res.sends == [("b", GossipAck((Beat("a", 7, 1, 1), ), (member("a"),),
                                         ("c", "d")))]
    assert g.heartbeat("b") == (7, 3)


def test_an_ack_merges_and_ack2_carries_what_was_wanted() -> None:
    g = gossiper(member("a"), member("b"))
    res = g.receive("b", GossipAck((Beat("c", 7, 5, 2),), (member("c", version=2),), ("a",)),
                    1.0)
    assert res.changed == [member("c", version=2)]
    assert res.sends == [("b", GossipAck2((member("a"),)))]
    assert g.heartbeat("c") == (7, 5)
    assert g.is_up("c", 1.0)


def test_heartbeats_of_an_unknown_life_are_ignored() -> None:
    g = gossiper(member("a"), member("b", generation=7))
    g.receive("c", GossipSyn((Beat("b", 8, 50, 1),)), 1.0)
    assert g.heartbeat("b") is None


def test_a_record_of_a_new_generation_resets_and_marks_up() -> None:
    g = gossiper(member("a"), member("b", generation=7))
    assert not g.is_up("b", 100.0)
    res = g.learn([member("b", version=2, generation=8)], 100.0)
    assert res.recovered == ["b"]
    assert g.is_up("b", 100.0)


def test_refutation_bumps_our_version_past_the_false_record() -> None:
    g = gossiper(member("a", version=3))
    res = g.receive("b", GossipAck2((member("a", version=5, status=LEAVING),)), 0.0)
    assert res.changed == [member("a", version=6)]
    # As new but different (an older life's record at our version): refuted too.
    res = g.learn([member("a", version=6, generation=1)], 0.0)
    assert res.changed == [member("a", version=7)]
    assert g.learn([member("a", version=2, status=LEAVING)], 0.0).changed == []


def test_a_removal_of_ourselves_is_refuted_whoever_signed_it() -> None:
    g = gossiper(member("a", version=3), member("b"))
    removal = replace(member("a", version=3), status=LEFT)
    forged = (removal,  # our signature, no longer matching
              replace(removal, version=9, sig=b"\x01" * 64),  # signed-looking
              signer("b").sign(replace(removal, version=12)),  # a member's removal
              signer("a").sign(replace(removal, version=15)))  # as if we wrote it
    version = 3
    for rec in forged:
        res = g.receive("b", GossipAck2((rec,)), 0.0)
        version = max(version, rec.version) + 1
        assert res.changed == [member("a", version=version)]
    assert g.membership.get("a") == member("a", version=16)


def test_a_removal_of_an_earlier_life_does_not_stop_a_rejoin() -> None:
    # Removed while dead, then back with an empty disk: a seed that had not yet heard
    # of the removal wrote our joining record at the removal's version. Refuted.
    g = gossiper(member("a", version=4, status=JOINING, generation=8))
    res = g.learn([member("a", version=4, status=LEFT, generation=7)], 0.0)
    assert res.changed == [member("a", version=5, status=JOINING, generation=8)]
    # A removal of this life, read by this life, is refuted too: it is alive.
    res = g.learn([member("a", version=6, status=LEFT, generation=8)], 0.0)
    assert res.changed == [member("a", version=7, status=JOINING, generation=8)]


def test_a_seed_written_record_of_ourselves_is_taken_before_joining() -> None:
    g = gossiper()
    # The seed's own record comes with it, and is taken first: it signed ours.
    ours = signer("b").sign(replace(member("a", version=2, status=JOINING)))
    res = g.learn([ours, member("b")], 0.0)
    assert res.changed == [member("b"), ours]
    assert ours.author == "b" and g.tick(0.0) != []


def test_a_seed_written_record_of_ourselves_under_another_key_is_refused() -> None:
    g = gossiper()
    other = Signer("a", bytes(32))  # someone else's key pair for our id
    theirs = signer("b").sign(other.sign(member("a", status=JOINING)))
    res = g.learn([member("b"), theirs], 0.0)
    assert res.changed == [member("b")] and g.membership.get("a") is None
    assert g.refused == 1 and g.tick(0.0) == []


def test_update_own_moves_past_the_current_version() -> None:
    g = gossiper(member("a", version=3))
    assert g.update_own(member("a", version=1, status=LEAVING), 0.0) == \
        member("a", version=4, status=LEAVING)
    assert g.update_own(member("a", version=4, status=LEAVING), 0.0) == \
        member("a", version=4, status=LEAVING)
    with pytest.raises(ValueError):
        g.update_own(member("b"), 0.0)


def test_a_peer_that_does_not_answer_loses_its_turn_but_is_still_probed() -> None:
    g = gossiper(member("a"), member("b"), member("c"), member("d"))
    deaf = g.tick(0.0)[0][0]
    probes = 0
    for t in range(1, 201):
        now = t * 0.5
        for peer in "bcd":  # news from elsewhere keeps every peer up
            g.receive("x", GossipSyn((Beat(peer, 7, t, 1),)), now)
        targets = [dst for dst, _ in g.tick(now)]
        # Every round reaches a peer that answers; the deaf one only as an extra probe.
        assert set(targets) - {deaf}
        probes += deaf in targets
        for dst in targets:
            if dst != deaf:
                g.receive(dst, GossipAck((), (), ()), now + 0.01)
    assert 30 < probes < 110  # probability quiet / (live + 1) = 1/3
    g.receive(deaf, GossipAck((), (), ()), 101.0)  # it answers again: a peer like others
    assert sum(deaf in [d for d, _ in g.tick(101.0 + t * 0.5)][:1] for t in range(60)) > 5


def test_targets_skip_left_and_probe_the_down_now_and_then() -> None:
    g = gossiper(member("a"), member("b"), member("c", status=LEFT), member("d"))
    g.detector.forget("d")  # d looks down
    targets: list[str] = []
    for i in range(200):
        targets += [dst for dst, _ in g.tick(i * 0.5)]
        g.receive("b", GossipSyn((Beat("b", 7, i + 1, 1),)), i * 0.5)
    assert "c" not in targets
    assert targets.count("b") == 200
    assert 60 < targets.count("d") < 140  # probability down / (live + 1) = 1/2


def test_a_join_moves_about_its_fair_share_of_keys_and_only_to_the_joiner() -> None:
    for row in movement_table(range(4, 7), vnodes=64):
        n = row.nodes
        assert row.replica_set_changed == pytest.approx(3 / (n + 1), rel=0.1)
        assert row.primary_changed == pytest.approx(1 / (n + 1), rel=0.1)
        assert row.between_old == 0.0
