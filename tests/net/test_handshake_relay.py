"""Tests for ringkv.net.handshake against an attacker without the secret who relays,
reflects and rewrites handshake messages between real nodes (issue 13, item 2).

The attacker works on decoded messages by the shape of their fields (a 16-byte nonce, a
32-byte MAC, a node id), not by their position, so each scenario reads as the attack
itself. Also property-based: the outcome of an honest handshake does not depend on how
the bytes were cut, and no input makes a machine raise or accept a stranger.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.membership import valid_node_id
from ringkv.net.handshake import (
    AUTH,
    MAGIC,
    MISMATCH,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    Accepted,
    DialerHandshake,
    Failed,
    ListenerHandshake,
)

SECRET = b"cluster-secret"
MAC_SIZE = 32


def mframe(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def fields(data: bytes) -> list[Any]:
    """The decoded message in one handshake frame (as the attacker sees it)."""
    (length,) = struct.unpack(">I", data[:4])
    assert len(data) == 4 + length, "one frame expected"
    msg = msgpack.unpackb(data[4:], raw=False)
    assert isinstance(msg, list)
    return msg


def rewrite(data: bytes, old: object, new: object) -> bytes:
    """The same message with every field equal to old replaced by new."""
    return mframe([new if f == old and f != MAGIC else f for f in fields(data)])


def nonce_in(data: bytes) -> bytes:
    (nonce,) = [f for f in fields(data) if type(f) is bytes and len(f) == NONCE_SIZE]
    return nonce


def macs_in(data: bytes) -> list[bytes]:
    return [f for f in fields(data) if type(f) is bytes and len(f) == MAC_SIZE]


def accept(listener_id: str, proof: bytes) -> bytes:
    return mframe([MAGIC, PROTOCOL_VERSION, listener_id, proof])


def node_listener(node_id: str, **kw: Any) -> ListenerHandshake:
    return ListenerHandshake(node_id, SECRET, valid_node_id, **kw)


def node_dialer(node_id: str, expect: str | None, **kw: Any) -> DialerHandshake:
    return DialerHandshake(node_id, SECRET, valid_node_id, expect, **kw)


# --------------------------------------------------------------------------------------
# Relay: a dialer's proof carried to another node


def test_a_hello_relayed_to_another_node_does_not_authenticate() -> None:
    # Real node d dials the attacker, whom it knows as node x (a stale address, a seed
    # list entry). The attacker opens a connection to real node b and hands b's challenge
    # to d, renamed for x, so that d answers it; then it carries d's Hello to b, hoping to
    # be taken for d there.
    b = node_listener("b")
    d = node_dialer("d", expect="x")
    challenge = rewrite(b.opening(), "b", "x")
    hello = d.receive(challenge)
    assert isinstance(hello, bytes) and hello, hello
    result = b.receive(hello)
    assert not isinstance(result, Accepted), f"b took the attacker for {result.peer_id!r}"
    assert isinstance(result, Failed) and result.kind == AUTH, result


def test_a_dialer_proves_nothing_to_a_node_other_than_the_one_it_meant() -> None:
    # Relayed unchanged, the challenge names b: d, which meant x, refuses before it
    # writes anything, so the attacker has no proof of d's to carry anywhere.
    b = node_listener("b")
    d = node_dialer("d", expect="x")
    result = d.receive(b.opening())
    assert isinstance(result, Failed) and result.kind == MISMATCH, result


def test_a_hello_carried_to_another_connection_of_the_same_node_fails() -> None:
    # The attacker relays d's Hello for one connection of b's to another one of b's.
    b1, b2 = node_listener("b"), node_listener("b")
    hello = node_dialer("d", expect="b").receive(b1.opening())
    assert isinstance(hello, bytes)
    result = b2.receive(hello)
    assert isinstance(result, Failed) and result.kind == AUTH, result


def test_a_hello_with_another_dialer_nonce_or_id_fails() -> None:
    b = node_listener("b")
    hello = node_dialer("d", expect="b").receive(b.opening())
    assert isinstance(hello, bytes)
    for forged in (rewrite(hello, nonce_in(hello), b"\x00" * NONCE_SIZE), rewrite(hello, "d", "e")):
        result = node_listener("b", nonce=nonce_in(b.opening())).receive(forged)
        assert isinstance(result, Failed) and result.kind == AUTH, result


# --------------------------------------------------------------------------------------
# Reflection and direction: a proof used for the other side of a handshake


def test_a_dialers_own_proof_reflected_back_does_not_pass_for_the_listeners() -> None:
    # Real node d dials the attacker twice (a seed address: any node id is welcome). On the
    # second connection the attacker challenges d with the nonce d sent on the first, then
    # answers the first with whatever proof d gave on the second.
    first = node_dialer("d", expect=None)
    challenge_1 = ListenerHandshake("d", None, valid_node_id).opening()
    hello_1 = first.receive(challenge_1)
    assert isinstance(hello_1, bytes)
    mirror = ListenerHandshake("d", None, valid_node_id, nonce=nonce_in(hello_1))
    hello_2 = node_dialer("d", expect=None).receive(mirror.opening())
    assert isinstance(hello_2, bytes)
    for proof in [*macs_in(hello_2), b""]:
        again = node_dialer("d", expect=None, nonce=nonce_in(hello_1))
        assert again.receive(challenge_1) == hello_1
        result = again.receive(accept("d", proof))
        assert not isinstance(result, Accepted), "d accepted its own reflected proof"
        assert isinstance(result, Failed) and result.kind == AUTH, result


def test_the_two_directions_never_share_a_proof() -> None:
    # Same nonce on both sides and the same id at both ends (a node reaching its own port):
    # everything the two proofs could cover is equal, except the direction.
    nonce = b"N" * NONCE_SIZE
    lst = node_listener("n", nonce=nonce)
    dia = node_dialer("n", expect="n", nonce=nonce)
    hello = dia.receive(lst.opening())
    assert isinstance(hello, bytes)
    got = lst.receive(hello)
    assert isinstance(got, Accepted)
    (dialer_proof,) = macs_in(hello)
    (listener_proof,) = macs_in(got.send)
    assert dialer_proof != listener_proof
    # Echoed the other way, each fails.
    again = node_dialer("n", expect="n", nonce=nonce)
    again.receive(node_listener("n", nonce=nonce).opening())
    result = again.receive(accept("n", dialer_proof))
    assert isinstance(result, Failed) and result.kind == AUTH, result
    result = node_listener("n", nonce=nonce).receive(rewrite(hello, dialer_proof, listener_proof))
    assert isinstance(result, Failed) and result.kind == AUTH, result


def test_an_accept_for_another_dialer_or_naming_another_node_fails() -> None:
    b = node_listener("b")
    challenge = b.opening()
    d = node_dialer("d", expect="b")
    hello = d.receive(challenge)
    assert isinstance(hello, bytes)
    got = b.receive(hello)
    assert isinstance(got, Accepted)
    # The same Accept to another dialer that answered the same challenge.
    e = node_dialer("e", expect="b")
    e.receive(challenge)
    result = e.receive(got.send)
    assert isinstance(result, Failed) and result.kind == AUTH, result
    # An Accept that names another node than the challenge did.
    f = node_dialer("f", expect=None)
    f.receive(challenge)
    result = f.receive(rewrite(got.send, "b", "c"))
    assert isinstance(result, Failed), result


# --------------------------------------------------------------------------------------
# Properties: chunking invariance, never raises


def _honest_streams(secret: bytes | None) -> tuple[bytes, bytes, bytes]:
    """(the listener's Challenge, the dialer's input, the listener's input) of one run."""
    lst = ListenerHandshake("b", secret, valid_node_id, nonce=b"L" * NONCE_SIZE)
    dia = DialerHandshake("a", secret, valid_node_id, "b", nonce=b"D" * NONCE_SIZE)
    challenge = lst.opening()
    hello = dia.receive(challenge)
    assert isinstance(hello, bytes)
    got = lst.receive(hello)
    assert isinstance(got, Accepted)
    return challenge, challenge + got.send, hello


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)]


def _run(machine: Any, pieces: list[bytes]) -> tuple[bytes, Any]:
    out = b""
    for piece in pieces:
        result = machine.receive(piece)
        if isinstance(result, bytes):
            out += result
            continue
        if isinstance(result, Accepted):
            out += result.send
        return out, result
    return out, None


@settings(max_examples=200, deadline=None)
@given(
    secret=st.sampled_from([None, SECRET]),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=12),
    tail=st.binary(max_size=64),
)
def test_the_outcome_does_not_depend_on_chunking(
    secret: bytes | None, cuts: list[int], tail: bytes
) -> None:
    _, to_dialer, to_listener = _honest_streams(secret)
    whole_out, whole = _run(
        DialerHandshake("a", secret, valid_node_id, "b", nonce=b"D" * NONCE_SIZE), [to_dialer]
    )
    out, result = _run(
        DialerHandshake("a", secret, valid_node_id, "b", nonce=b"D" * NONCE_SIZE),
        _cut(to_dialer + tail, cuts),
    )
    assert isinstance(whole, Accepted) and isinstance(result, Accepted)
    assert out == whole_out and result.peer_id == "b"
    assert tail.startswith(result.rest)
    lst = ListenerHandshake("b", secret, valid_node_id, nonce=b"L" * NONCE_SIZE)
    lst.opening()
    out, result = _run(lst, _cut(to_listener + tail, cuts))
    assert isinstance(result, Accepted) and result.peer_id == "a"
    assert tail.startswith(result.rest)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda n, rest: struct.pack(">I", n) + rest,
            st.integers(min_value=0, max_value=2000),
            st.binary(max_size=1100),
        ),
        st.builds(
            mframe,
            st.lists(
                st.one_of(
                    st.just(MAGIC),
                    st.just(PROTOCOL_VERSION),
                    st.binary(min_size=16, max_size=16),
                    st.binary(min_size=32, max_size=32),
                    st.sampled_from(["a", "b", "x", "bad id!"]),
                    st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.none(),
                ),
                max_size=6,
            ),
        ),
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=6),
    which=st.sampled_from(["listener", "dialer", "dialer-after-challenge"]),
)
def test_no_input_makes_a_machine_raise_or_accept_a_stranger(
    data: bytes, cuts: list[int], which: str
) -> None:
    challenge, _, _ = _honest_streams(SECRET)
    machine: Any
    if which == "listener":
        machine = ListenerHandshake("b", SECRET, valid_node_id)
        machine.opening()
    else:
        machine = DialerHandshake("a", SECRET, valid_node_id, None)
        if which == "dialer-after-challenge":
            assert isinstance(machine.receive(challenge), bytes)
    _, result = _run(machine, _cut(data, cuts))
    assert not isinstance(result, Accepted), result
    if isinstance(result, Failed):
        assert machine.receive(b"more") is result
