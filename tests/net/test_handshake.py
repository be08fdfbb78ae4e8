"""Tests for ringkv.net.handshake: the two state machines, with no socket and no loop.

The bytes on the wire are pinned here (fixed nonces): the listener's Challenge, the
dialer's Hello and the listener's Accept must stay exactly what deployed nodes exchange
(protocol version 2). Relay, reflection and property-based tests are in
``test_handshake_relay.py``.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import struct
from typing import Any

import msgpack
import pytest

from gossip.membership import valid_node_id
from ringkv.net.handshake import (
    AUTH,
    MISMATCH,
    NONCE_SIZE,
    TIMEOUT,
    VIOLATION,
    Accepted,
    DialerHandshake,
    Failed,
    ListenerHandshake,
)
from ringkv.net.transport import Transport
from tests.support.fake_socket import FakeTransport

L_NONCE = b"L" * NONCE_SIZE
D_NONCE = b"D" * NONCE_SIZE


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def mframe(obj: object) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def proof(secret: bytes, side: str, dialer_nonce: bytes = D_NONCE, listener: str = "b") -> bytes:
    """The proof ``side`` makes on a connection from a (nonce dialer_nonce) to listener."""
    transcript = msgpack.packb(
        ["ringkv-hs", 2, side, L_NONCE, dialer_nonce, listener, "a"], use_bin_type=True
    )
    return hmac.digest(secret, transcript, "sha256")


def listener(secret: bytes | None = None, node_id: str = "b") -> ListenerHandshake:
    return ListenerHandshake(node_id, secret, valid_node_id, nonce=L_NONCE)


def dialer(
    secret: bytes | None = None, expect: str | None = "b", node_id: str = "a"
) -> DialerHandshake:
    return DialerHandshake(node_id, secret, valid_node_id, expect, nonce=D_NONCE)


def wire(secret: bytes | None) -> tuple[bytes, bytes, bytes]:
    """The Challenge, Hello and Accept between dialer a and listener b, by hand."""
    challenge = mframe(["ringkv", 2, L_NONCE, "b"])
    hello = mframe(["ringkv", 2, "a", proof(secret, "dialer") if secret else b"", D_NONCE])
    accept = mframe(["ringkv", 2, "b", proof(secret, "listener") if secret else b""])
    return challenge, hello, accept


def feed(machine: Any, data: bytes, cuts: list[int]) -> tuple[bytes, Any]:
    """Feed data cut at the given offsets; (everything to send, the final result)."""
    out = b""
    result: Any = b""
    bounds = [0, *cuts, len(data)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        result = machine.receive(data[lo:hi])
        if isinstance(result, bytes):
            out += result
        else:
            if isinstance(result, Accepted):
                out += result.send
            return out, result
    return out, result


# --------------------------------------------------------------------------------------
# Success, and the exact bytes


@pytest.mark.parametrize("secret", [None, b"s3cret"])
def test_two_machines_fed_each_other_agree_on_the_exact_bytes(secret: bytes | None) -> None:
    challenge, hello, accept = wire(secret)
    lst, dia = listener(secret), dialer(secret)
    assert lst.opening() == challenge
    assert dia.receive(lst.opening()) == hello
    assert not dia.done
    got = lst.receive(hello)
    assert isinstance(got, Accepted) and got.peer_id == "a"
    assert got.send == accept and got.rest == b""
    done = dia.receive(got.send)
    assert isinstance(done, Accepted) and done.peer_id == "b"
    assert done.send == b"" and done.rest == b""
    assert lst.done and dia.done


def test_random_nonces_still_agree() -> None:
    lst = ListenerHandshake("b", b"k", valid_node_id)
    dia = DialerHandshake("a", b"k", valid_node_id, "b")
    hello = dia.receive(lst.opening())
    assert isinstance(hello, bytes)
    got = lst.receive(hello)
    assert isinstance(got, Accepted)
    assert isinstance(dia.receive(got.send), Accepted)


@pytest.mark.parametrize("secret", [None, b"k"])
def test_listener_input_split_at_every_offset(secret: bytes | None) -> None:
    _, hello, accept = wire(secret)
    after = frame(b"data-1") + frame(b"x" * 3000)  # over the handshake limit: data phase
    stream = hello + after
    for cut in range(len(stream) + 1):
        lst = listener(secret)
        first = lst.receive(stream[:cut])
        if cut < len(hello):
            assert first == b"", cut
            first = lst.receive(stream[cut:])
            assert isinstance(first, Accepted), cut
            assert first.rest == after
        else:
            assert isinstance(first, Accepted), cut
            assert first.rest == stream[len(hello) : cut]
        assert first.peer_id == "a" and first.send == accept


@pytest.mark.parametrize("secret", [None, b"k"])
def test_dialer_input_split_at_every_offset_and_byte_by_byte(secret: bytes | None) -> None:
    challenge, hello, accept = wire(secret)
    stream = challenge + accept
    for cut in range(len(stream) + 1):
        out, result = feed(dialer(secret), stream, [cut])
        assert isinstance(result, Accepted) and result.peer_id == "b", cut
        assert out == hello, cut
    out, result = feed(dialer(secret), stream, list(range(1, len(stream))))
    assert isinstance(result, Accepted) and out == hello


def test_truncated_input_waits_for_more() -> None:
    challenge, hello, _ = wire(b"k")
    for n in range(len(hello)):
        lst = listener(b"k")
        assert lst.receive(hello[:n]) == b"" and not lst.done
    for n in range(len(challenge)):
        dia = dialer(b"k")
        assert dia.receive(challenge[:n]) == b"" and not dia.done


def test_any_node_when_none_is_expected() -> None:
    dia = dialer(expect=None)
    dia.receive(mframe(["ringkv", 2, L_NONCE, "whoever"]))
    got = dia.receive(mframe(["ringkv", 2, "whoever", b""]))
    assert isinstance(got, Accepted) and got.peer_id == "whoever"


# --------------------------------------------------------------------------------------
# Failures


def assert_failed(result: object, kind: str, words: str = "") -> None:
    assert isinstance(result, Failed), result
    assert result.kind == kind, result
    assert words in result.reason, result


def test_wrong_secret_fails_on_each_side() -> None:
    challenge, hello, _ = wire(b"one")
    assert_failed(listener(b"two").receive(hello), AUTH, "authentication failed for 'a'")
    assert_failed(listener(b"two").receive(wire(None)[1]), AUTH)  # no secret on the dialer
    dia = dialer(b"one")
    dia.receive(challenge)
    assert_failed(dia.receive(mframe(["ringkv", 2, "b", b""])), AUTH, "cluster secret")
    dia = dialer(b"one")
    dia.receive(challenge)
    wrong = proof(b"two", "listener")
    assert_failed(dia.receive(mframe(["ringkv", 2, "b", wrong])), AUTH)
    # A listener without a secret accepts any MAC.
    assert isinstance(listener(None).receive(hello), Accepted)


def test_replayed_mac_for_another_nonce_fails() -> None:
    lst = ListenerHandshake("b", b"k", valid_node_id)  # a fresh nonce
    _, hello, _ = wire(b"k")  # a proof over L_NONCE
    assert_failed(lst.receive(hello), AUTH)


def test_wrong_or_invalid_ids() -> None:
    challenge, _, accept = wire(None)
    # The dialer refuses on the Challenge, before it writes a Hello.
    assert_failed(dialer(expect="c").receive(challenge), MISMATCH, "the node there is 'b', not 'c'")
    dia = dialer(expect=None)
    dia.receive(challenge)
    assert_failed(dia.receive(mframe(["ringkv", 2, "c", b""])), VIOLATION, "the Challenge 'b'")
    for bad in ["bad id!", "", "x" * 65, 42, None, "x\n"]:
        dia = dialer(expect=None)
        dia.receive(challenge)
        assert_failed(dia.receive(mframe(["ringkv", 2, bad, b""])), VIOLATION, "malformed Accept")
        hello = mframe(["ringkv", 2, bad, b"", D_NONCE])
        assert_failed(listener().receive(hello), VIOLATION)
        bad_challenge = mframe(["ringkv", 2, L_NONCE, bad])
        assert_failed(dialer(expect=None).receive(bad_challenge), VIOLATION, "malformed Challenge")


def test_the_rule_is_the_callers() -> None:
    _, hello, _ = wire(None)
    strict = ListenerHandshake("b", None, lambda node_id: node_id.startswith("n"))
    assert_failed(strict.receive(hello), VIOLATION, "invalid node id")


def test_malformed_messages_are_violations() -> None:
    nonce = b"n" * NONCE_SIZE
    for msg in [
        mframe({"ringkv": 1}),
        mframe(["other", 2, "x", b"", nonce]),
        mframe(["ringkv", 1, "x", b"", nonce]),
        mframe(["ringkv", 3, "x", b"", nonce]),
        mframe(["ringkv", True, "x", b"", nonce]),
        mframe(["ringkv", 2, "x", "not bytes", nonce]),
        mframe(["ringkv", 2, "x", b"", b"short"]),
        mframe(["ringkv", 2, "x", b""]),
        frame(b"\xc1"),
        frame(b"\x92\x01"),
    ]:
        assert_failed(listener().receive(msg), VIOLATION)
    for msg in [
        mframe(["ringkv", 2, b"short", "b"]),
        mframe(["ringkv", 2, L_NONCE]),  # version 1's Challenge shape
        mframe(["ringkv", 1, L_NONCE]),
        mframe(["ringkv", 1, L_NONCE, "b"]),
        frame(b"\xc1"),
    ]:
        assert_failed(dialer().receive(msg), VIOLATION, "expected Challenge")
    v1 = mframe(["ringkv", 1, "a", b"", D_NONCE])  # a version-1 node is refused plainly
    assert_failed(listener().receive(v1), VIOLATION, "unsupported protocol version 1")


def test_oversized_and_empty_frames_fail_on_their_header() -> None:
    assert_failed(listener().receive(struct.pack(">I", 1025)), VIOLATION, "frame length 1025")
    assert_failed(dialer().receive(b"\xff\xff\xff\xff"), VIOLATION, "limit 1024")
    assert_failed(listener().receive(b"\x00\x00\x00\x00"), VIOLATION, "frame length 0")
    # Exactly the limit is a frame, then judged as a message.
    assert_failed(listener().receive(frame(b"\xc0" * 1024)), VIOLATION, "malformed")


def test_garbage_never_raises_and_is_never_accepted() -> None:
    rng = random.Random(99)
    for i in range(500):
        data = rng.randbytes(rng.randint(0, 2000))
        if i % 3 == 0:
            data = struct.pack(">I", rng.randint(1, 60)) + data
        for machine in (listener(b"k"), dialer(b"k")):
            cuts = sorted(rng.sample(range(len(data) + 1), min(5, len(data) + 1)))
            _, result = feed(machine, data, cuts)
            assert not isinstance(result, Accepted)


def test_failure_is_final_and_timeout_is_the_drivers() -> None:
    _, hello, _ = wire(None)
    lst = listener()
    assert lst.receive(hello[:10]) == b""
    failed = lst.expire()
    assert_failed(failed, TIMEOUT)
    assert lst.receive(hello[10:]) is failed  # too late: still failed
    assert lst.expire() is None and lst.done
    dia = dialer()
    bad = dia.receive(b"\x00\x00\x00\x00")
    assert dia.receive(wire(None)[0]) is bad
    ok = listener()
    assert isinstance(ok.receive(hello), Accepted)
    assert ok.expire() is None
    with pytest.raises(RuntimeError):
        ok.receive(b"more")


def test_pipelined_challenge_and_accept_return_the_hello_to_send() -> None:
    challenge, hello, accept = wire(None)
    got = dialer().receive(challenge + accept + b"\x00\x00")
    assert isinstance(got, Accepted) and got.send == hello and got.rest == b"\x00\x00"


# --------------------------------------------------------------------------------------
# The driver's deadline


def test_the_connection_enforces_the_handshake_deadline() -> None:
    async def main() -> None:
        t = Transport("srv", lambda src, p: None, valid_peer_id=valid_node_id,
                      handshake_timeout=0.05)
        slow, quick = t._new_inbound(), t._new_inbound()
        slow_sock, quick_sock = FakeTransport(), FakeTransport()
        slow.connection_made(slow_sock)
        quick.connection_made(quick_sock)
        challenge = msgpack.unpackb(bytes(quick_sock.written[4:]))
        quick.data_received(mframe(["ringkv", 2, "cli", b"", D_NONCE]))
        slow.data_received(b"\x00\x00")  # half a header, then silence
        await asyncio.sleep(0.2)
        assert slow_sock.aborted and t.stats.handshake_timeouts == 1
        assert not quick_sock.aborted and quick.peer_id == "cli" and len(challenge[2]) == 16
        slow.connection_lost(None)
        quick.connection_lost(None)
        await t.close()

    asyncio.run(main())
