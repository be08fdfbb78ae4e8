"""Only a member changes its own record: signatures, pinned keys, removals and joins.

A peer that can send gossip (it holds the cluster secret, maybe a member's key) must not
be able to rewrite another member's record: mark it `left`, move its address, change
its tokens. The two records a node writes for another (a seed's record of a joiner, an
operator's removal) are taken only while that member is not heard from.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import pytest

from gossip.gossiper import Gossiper
from gossip.membership import JOINING, LEFT, UP, Member, Membership
from gossip.messages import GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector
from gossip.signing import AUTHORED_STEP, Signer, refusal, signed_bytes, verify

FORGED_VERSION = 1 << 40


def signer(node_id: str, life: int = 0) -> Signer:
    return Signer(node_id, hashlib.sha256(f"{node_id}/{life}".encode()).digest())


def member(node_id: str, version: int = 1, status: str = UP, generation: int = 7,
           tokens: tuple[int, ...] = (1,)) -> Member:
    return signer(node_id).sign(Member(node_id, f"{node_id}:1", f"{node_id}:2", tokens,
                                       status, version, generation))


def gossiper(*records: Member, self_id: str = "a") -> Gossiper:
    return Gossiper(self_id, Membership(records), PhiAccrualDetector(), random.Random(1),
                    0.0, signer(self_id))


def cluster_view(self_id: str = "a") -> Gossiper:
    return gossiper(member("a"), member("b"), member("c"), member("d"), self_id=self_id)


def statuses(g: Gossiper) -> dict[str, str]:
    return {m.node_id: m.status for m in g.membership.members()}


# --- signatures ---------------------------------------------------------------------------


def test_a_signature_covers_every_field_key_and_author_included() -> None:
    rec = member("b")
    assert verify(rec, signer("b").public_key)
    assert not verify(rec, signer("c").public_key)
    for changed in (replace(rec, version=2), replace(rec, status=LEFT),
                    replace(rec, rpc="elsewhere:2"), replace(rec, tokens=(2,)),
                    replace(rec, generation=8), replace(rec, author="c"),
                    replace(rec, key=signer("c").public_key)):
        assert signed_bytes(changed) != signed_bytes(rec)
        assert not verify(changed, signer("b").public_key)
    assert not verify(replace(rec, sig=b""), signer("b").public_key)


def test_records_with_signatures_survive_the_wire() -> None:
    rec = signer("c").sign(replace(member("b", version=3), status=LEFT))
    assert Member.from_wire(rec.to_wire()) == rec
    assert rec.author == "c" and rec.signer == "c" and member("b").signer == "b"
    for bad in ([*rec.to_wire()[:7], b"k" * 31, "", b""],
                [*rec.to_wire()[:7], b"", "", b"s" * 65],
                [*rec.to_wire()[:7], b"", "b", b""],  # the owner named as another author
                [*rec.to_wire()[:7], b"", "bad id!", b""],
                rec.to_wire()[:7]):
        with pytest.raises(ValueError):
            Member.from_wire(bad)


# --- the attack of the issue: every member `left` at 2^40 ---------------------------------


def _everyone_left(g: Gossiper, author: Signer | None) -> tuple[Member, ...]:
    """Every member `left`, b included when unsigned (b marking itself left, signed,
    would be b's own leave)."""
    recs = []
    for m in g.membership.members():
        if author is not None and m.node_id == author.node_id:
            continue
        forged = replace(m, status=LEFT, version=FORGED_VERSION)
        recs.append(forged if author is None else author.sign(forged))
    return tuple(recs)


@pytest.mark.parametrize("author", [None, "b"])
def test_an_ack2_marking_every_member_left_at_2_40_changes_nothing(author: str | None) -> None:
    g = cluster_view()
    before = {m.node_id: m for m in g.membership.members() if m.node_id != "a"}
    forged = _everyone_left(g, None if author is None else signer(author))
    res = g.receive("b", GossipAck2(forged), 0.1)
    assert statuses(g) == dict.fromkeys("abcd", UP)
    assert {k: g.membership.get(k) for k in before} == before
    # Our own record is refuted, not adopted: still up, one past the forgery.
    me = g.membership.get("a")
    assert me == member("a", version=FORGED_VERSION + 1)
    assert res.changed == [me] and g.refused == len(forged) - 1
    # The same records by every other leg of the exchange change nothing either.
    g.receive("b", GossipAck((), forged, ()), 0.2)
    g.receive("b", GossipSyn((), forged[1]), 0.3)
    assert statuses(g) == dict.fromkeys("abcd", UP) and g.tick(0.5) != []


def test_a_forged_record_of_a_third_node_is_refused() -> None:
    g = cluster_view()
    true = g.membership.get("c")
    assert true is not None
    moved = replace(true, version=true.version + 5, rpc="evil:2", http="evil:1",
                    tokens=(1, 2, 3))
    attempts = [
        moved,  # c's signature, no longer matching
        signer("c", life=1).sign(moved),  # self-signed under a new key
        signer("b").sign(moved),  # a member writing c's record, up
        signer("b").sign(replace(moved, status=JOINING)),  # a "join" of a live member
        signer("b").sign(replace(moved, status=LEFT)),  # a removal of a live member
        signer("x").sign(replace(moved, status=LEFT)),  # by no member at all
        signer("b").sign(replace(moved, status=LEFT, key=signer("x").public_key)),
    ]
    for rec in attempts:
        assert g.learn([rec], 1.0).changed == []
        assert g.membership.get("c") == true
    assert g.refused == len(attempts)


def test_a_members_own_change_is_taken_from_anyone_who_relays_it() -> None:
    g = cluster_view()
    moved = signer("c").sign(replace(member("c", version=2), rpc="new:2", tokens=(5, 6)))
    assert g.receive("b", GossipAck2((moved,)), 1.0).changed == [moved]
    left = member("c", version=3, status=LEFT)
    assert g.receive("d", GossipAck2((left,)), 1.0).changed == [left]


# --- removals and joins written by another member ------------------------------------------


def test_a_removal_is_taken_only_while_the_member_is_not_heard_from() -> None:
    g = cluster_view()
    removal = signer("b").sign(replace(member("c", version=2), status=LEFT))
    assert g.learn([removal], 1.0).changed == []  # c is up here
    g.detector.forget("c")  # c is not heard from
    assert g.learn([removal], 1.0).changed == [removal]
    assert "c" not in g.membership.ring_tokens()
    # A record too far past the held one is refused, even so.
    far = signer("b").sign(replace(member("d", version=2 + AUTHORED_STEP), status=LEFT))
    g.detector.forget("d")
    assert g.learn([far], 1.0).changed == []


def test_a_removal_of_a_member_never_seen_is_taken() -> None:
    # A newcomer learns of members removed before it came: nothing to pin yet.
    g = gossiper(member("a"), member("b"))
    removal = signer("b").sign(replace(member("z", version=4), status=LEFT))
    assert g.learn([removal], 1.0).changed == [removal]


def test_a_seed_may_admit_a_new_node_or_a_new_life_of_a_dead_one() -> None:
    g = cluster_view()
    fresh = signer("b").sign(member("e", status=JOINING))
    assert g.learn([fresh], 1.0).changed == [fresh]
    # c lost its disk (and its key): the seed admits its new life under a new key, taken
    # once c's old life is not heard from here; never while it is.
    new_life = signer("b").sign(signer("c", life=1).sign(
        member("c", version=3, status=JOINING, generation=8)))
    assert g.learn([new_life], 1.0).changed == []
    g.detector.forget("c")
    assert g.learn([new_life], 1.0).changed == [new_life]
    assert g.is_up("c", 1.0)  # the new life is watched afresh
    # From now on only the new key speaks for c.
    old_key = member("c", version=9)
    assert g.learn([old_key], 1.0).changed == []
    new_key = signer("c", life=1).sign(member("c", version=4, generation=8))
    assert g.learn([new_key], 1.0).changed == [new_key]


def test_a_left_id_is_free_for_a_new_key() -> None:
    g = gossiper(member("a"), member("b"), member("c", version=5, status=LEFT))
    again = signer("b").sign(signer("c", life=1).sign(
        member("c", version=6, status=JOINING, generation=9)))
    assert g.learn([again], 1.0).changed == [again]


def test_a_placeholder_saved_before_signing_is_replaced_by_the_first_signed_record() -> None:
    legacy = Member("c", "c:1", "c:2", (1,), UP, 0, 7)  # no key, no signature
    g = gossiper(member("a"), member("b"), legacy)
    assert refusal(legacy, None, None, up=False) == "record carries no key"
    rec = signer("c", life=3).sign(member("c", version=1))
    assert g.learn([rec], 1.0).changed == [rec]
    assert g.learn([member("c", version=2)], 1.0).changed == []  # now pinned


def test_update_own_signs_and_peers_take_it() -> None:
    g = cluster_view()
    mine = g.update_own(replace(member("a"), status="leaving"), 1.0)
    assert verify(mine, signer("a").public_key) and mine.version == 2
    peer = cluster_view(self_id="b")
    assert peer.receive("a", GossipAck2((mine,)), 1.0).changed == [mine]
