"""Gossip messages through the real codec: round trips, and garbage refused."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest

from gossip.membership import COUNTER_LIMIT, LEFT, UP, Member
from gossip.messages import MAX_MEMBERS, MAX_TOKENS, Beat, GossipAck, GossipAck2, GossipSyn
from ringkv.core import wire

# The largest legal values: tokens are 64-bit ring positions; versions, counters and
# generations stay under COUNTER_LIMIT (2^62).
TOP = COUNTER_LIMIT - 1
M1 = Member("n1", "127.0.0.1:8001", "127.0.0.1:9001", (0, 5, 2**64 - 1), UP, 3, TOP)
M2 = Member("n2", "h:1", "[::1]:2", (), LEFT, 9, 0)
B1 = Beat("n1", TOP, 17, 3)
B2 = Beat("n2" * 32, 0, TOP, TOP)

MESSAGES = [
    GossipSyn(()),
    GossipSyn((B1, B2)),
    GossipSyn((B1,), M1),
    GossipAck((), (), ()),
    GossipAck((B1,), (M1, M2), ("n3", "n4")),
    GossipAck2(()),
    GossipAck2((M1, M2)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Any) -> None:
    assert wire.decode(wire.encode(msg)) == msg


def test_type_ids() -> None:
    assert (GossipSyn.TYPE, GossipAck.TYPE, GossipAck2.TYPE) == (6, 7, 8)
    with pytest.raises(ValueError):
        wire.register(type("Clash", (), {"TYPE": 6}))


def frame(*doc: Any) -> bytes:
    packed: bytes = msgpack.packb(list(doc), use_bin_type=True)
    return packed


GOOD_MEMBER = M1.to_wire()
GARBAGE = [
    frame(6),                                             # missing field
    frame(6, []),                                         # missing sender
    frame(6, [], None, []),                               # extra field
    frame(6, ["n1", 1, 2], None),                         # not a multiple of 4
    frame(6, ["", 1, 2, 3], None),                        # empty id
    frame(6, ["n" * 65, 1, 2, 3], None),                  # id too long
    frame(6, [b"n1", 1, 2, 3], None),                     # id not text
    frame(6, ["n1", -1, 2, 3], None),                     # negative
    frame(6, ["n1", True, 2, 3], None),                   # a bool is not an int
    frame(6, ["n1", 1.5, 2, 3], None),
    frame(6, ["n1", 1, None, 3], None),
    frame(6, {"n1": 1}, None),                            # not a list
    frame(6, ["n1", 1, 2, 3] * (MAX_MEMBERS + 1), None),  # too many beats
    frame(6, [], GOOD_MEMBER[:-1]),                       # a bad sender record
    frame(6, [], [GOOD_MEMBER]),
    frame(7, [], [], []),                                 # fine so far...
    frame(7, [], [GOOD_MEMBER[:-1]], []),                 # short record
    frame(7, [], [[*GOOD_MEMBER[:4], "dead", *GOOD_MEMBER[5:]]], []),  # bad status
    frame(7, [], [[*GOOD_MEMBER[:3], [1] * (MAX_TOKENS + 1), *GOOD_MEMBER[4:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:5], -1, GOOD_MEMBER[6]]], []),  # negative version
    frame(7, [], [["", *GOOD_MEMBER[1:]]], []),           # empty member id
    frame(7, [], [["bad id!", *GOOD_MEMBER[1:]]], []),    # ids follow the node-id rule
    frame(7, [], [["../x", *GOOD_MEMBER[1:]]], []),
    frame(7, [], [["n" * 65, *GOOD_MEMBER[1:]]], []),
    frame(6, ["bad id!", 1, 2, 3], None),
    frame(6, [], ["../x", *GOOD_MEMBER[1:]]),
    frame(7, [], [], ["bad id!"]),
    frame(7, [], [[GOOD_MEMBER[0], "nohost", *GOOD_MEMBER[2:]]], []),  # addresses
    frame(7, [], [[GOOD_MEMBER[0], "h:99999", *GOOD_MEMBER[2:]]], []),
    frame(7, [], [[GOOD_MEMBER[0], "h:", *GOOD_MEMBER[2:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:2], ":80", *GOOD_MEMBER[3:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:2], 80, *GOOD_MEMBER[3:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:2], "a b:80", *GOOD_MEMBER[3:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:2], "h" * 300 + ":80", *GOOD_MEMBER[3:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:3], [-1], *GOOD_MEMBER[4:]]], []),  # token range
    frame(7, [], [[*GOOD_MEMBER[:3], [True], *GOOD_MEMBER[4:]]], []),
    frame(7, [], [[*GOOD_MEMBER[:4], ["up"], *GOOD_MEMBER[5:]]], []),   # status type
    frame(7, [], [[*GOOD_MEMBER[:5], 2**64 - 1, GOOD_MEMBER[6]]], []),  # over the bound
    frame(7, [], [[*GOOD_MEMBER[:5], COUNTER_LIMIT, GOOD_MEMBER[6]]], []),
    frame(7, [], [[*GOOD_MEMBER[:6], COUNTER_LIMIT]], []),
    frame(7, [], [[*GOOD_MEMBER[:5], True, GOOD_MEMBER[6]]], []),
    frame(6, ["n1", 1, 2, 2**64 - 1], None),                # beat version over the bound
    frame(6, ["n1", COUNTER_LIMIT, 2, 3], None),
    frame(6, ["n1", 1, COUNTER_LIMIT, 3], None),
    frame(7, [], [], [""]),                               # bad wanted id
    frame(7, [], [], "n1"),                               # wanted not a list
    frame(7, [], []),                                     # missing field
    frame(8),
    frame(8, [GOOD_MEMBER], []),
    frame(8, GOOD_MEMBER),                                # a record, not a list of them
]


@pytest.mark.parametrize("bad", GARBAGE)
def test_garbage_is_a_wire_error(bad: bytes) -> None:
    if bad == frame(7, [], [], []):
        assert wire.decode(bad) == GossipAck((), (), ())
        return
    with pytest.raises(wire.WireError):
        wire.decode(bad)


def test_mutated_frames_never_raise_anything_but_wire_errors() -> None:
    rng = random.Random(5)
    seeds = [wire.encode(m) for m in MESSAGES]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        with contextlib.suppress(wire.WireError):
            msg = wire.decode(bytes(data))
            wire.encode(msg)  # whatever decodes is a well-formed message
