"""The internode handshake as two sans-I/O state machines: the listener's and the dialer's.

Job
---
Decide, from the bytes a new connection receives, whether the node at the other end may
talk to us (listener) or is the node we meant to reach (dialer), and say what to answer.
Pure: no sockets, no event loop, no clock. The connections in ``ringkv.net.connection``
drive a machine: they write what it returns, close on ``Failed``, and enforce the
deadline themselves (calling ``expire``); this module only judges bytes.

Each side's machine takes the bytes as they arrive, in chunks of any size, through
``receive(data)``, which returns one of:

* ``bytes``: what to write now (often ``b""``); the handshake is still under way;
* ``Accepted(peer_id, send, rest)``: done. Write ``send`` (the listener's Accept, or the
  dialer's Hello if Challenge and Accept came in one chunk); ``rest`` holds the bytes that
  followed the last handshake frame, which belong to the data phase;
* ``Failed(kind, reason)``: refuse the connection. ``kind`` is ``VIOLATION`` (malformed or
  oversized input), ``AUTH`` (wrong or missing proof), ``MISMATCH`` (the dialer reached
  another node than the one expected) or ``TIMEOUT`` (from ``expire``).

The messages (the same with and without a cluster secret; the proofs are ``b""`` without
one), each a msgpack list in a length-prefixed frame (``ringkv.net.framing``)::

    listener -> dialer    Challenge  ["ringkv", 2, listener_nonce(16 bytes), listener_id]
    dialer -> listener    Hello      ["ringkv", 2, dialer_id, proof, dialer_nonce(16 bytes)]
                                       proof = HMAC-SHA256(secret, transcript("dialer"))
    listener -> dialer    Accept     ["ringkv", 2, listener_id, proof]
                                       proof = HMAC-SHA256(secret, transcript("listener"))

    transcript(side) = msgpack ["ringkv-hs", 2, side, listener_nonce, dialer_nonce,
                                listener_id, dialer_id]

Each proof covers both nonces, both ids and the side that made it; msgpack gives every
field its own type and length, so no field can be shifted into another. A proof therefore
convinces only the other end of the one connection it was made for: not another connection
(the other end's nonce differs), not another node (its id differs), and never as the
opposite side's proof (the side differs). Version 1 MACed only the peer's nonce and one id,
the same way in both directions, so a dialer's MAC could be relayed to a third node or
reflected back as a listener's proof.

The listener speaks first (``ListenerHandshake.opening``) and names itself. The dialer
checks that name is valid and is the node it expects (any valid id if it expects none: a
seed addressed by host and port before its id is known) before it writes anything, so it
proves nothing to a node it did not mean to reach. The listener checks the dialer's id
with the ``valid_peer_id`` rule it is given and, with a secret, its proof; only then does it
prove itself in the Accept. The dialer checks that the Accept names the node the Challenge
named and, with a secret, the proof. A side without a secret accepts any proof; a side with
one refuses a peer that cannot produce it.

Why the dialer proves first (three messages, not a fourth Confirm after the listener
proved itself): its proof names the listener and that listener's fresh nonce, so it is
worth nothing anywhere but on the connection the dialer meant; and a listener answers a
stranger who connects with nothing it could grind offline against a guessed secret (a
listener that proved first would), so, as with version 1, only a node that a dialer chose
to reach sees a proof. What no handshake without channel keys prevents is a man in the
middle on the path to the node meant, or at an address dialed as a seed (any node may
answer there), who hands the handshake on to a real node: both ends then are the nodes
they believe, and the data phase is unprotected (see ``ringkv.net.transport``).

Invariants
----------
* ``receive`` never raises on any input, and between two calls keeps at most one
  incomplete handshake frame: none is over ``HANDSHAKE_MAX_FRAME`` bytes, which is judged
  as soon as its length is in.
* The outcome does not depend on how the input was chunked.
* Every message is a msgpack list that starts with ``MAGIC, PROTOCOL_VERSION``; anything
  else, a different version included, is a ``VIOLATION``. Undecodable msgpack is too.
* Nothing is ``Accepted`` before the peer's id passed ``valid_peer_id`` and, with a
  secret, its proof was checked, in constant time (``hmac.compare_digest``), against the
  transcript of this connection: this machine's nonce and id, the peer's, and the peer's
  side. The dialer writes no proof before the listener named the node it expects.
* ``Failed`` is final: later calls of ``receive`` return the same ``Failed``. Calling
  ``receive`` after ``Accepted`` is a driver error (the bytes belong to the data phase).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any, Final

import msgpack

from ringkv.net.framing import HANDSHAKE_MAX_FRAME, encode_frame, frame_error, unpack_len_from

__all__ = [
    "AUTH",
    "MAGIC",
    "MISMATCH",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "TIMEOUT",
    "VIOLATION",
    "Accepted",
    "DialerHandshake",
    "Failed",
    "ListenerHandshake",
]

MAGIC: Final = "ringkv"
PROTOCOL_VERSION: Final = 2
NONCE_SIZE: Final = 16

# Failure kinds.
VIOLATION: Final = "violation"
AUTH: Final = "auth"
MISMATCH: Final = "mismatch"
TIMEOUT: Final = "timeout"

# Machine states.
AWAIT_CHALLENGE: Final = "await-challenge"  # dialer
AWAIT_HELLO: Final = "await-hello"  # listener
AWAIT_ACCEPT: Final = "await-accept"  # dialer
ACCEPTED: Final = "accepted"
FAILED: Final = "failed"


class Accepted:
    """The handshake succeeded: ``peer_id`` is authenticated."""

    __slots__ = ("peer_id", "send", "rest")

    def __init__(self, peer_id: str, send: bytes = b"", rest: bytes = b"") -> None:
        self.peer_id = peer_id
        self.send = send  # to write before anything else
        self.rest = rest  # received after the handshake: the start of the data phase

    def __repr__(self) -> str:
        return f"Accepted({self.peer_id!r}, send={len(self.send)} B, rest={len(self.rest)} B)"


class Failed:
    """The handshake failed; the connection must be closed without delivering anything."""

    __slots__ = ("kind", "reason")

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason

    def __repr__(self) -> str:
        return f"Failed({self.kind!r}, {self.reason!r})"


Result = bytes | Accepted | Failed


def _message(*fields: object) -> bytes:
    body: bytes = msgpack.packb([MAGIC, PROTOCOL_VERSION, *fields], use_bin_type=True)
    return encode_frame(body)


def _decode(payload: bytes) -> Any:
    """The msgpack object in payload, or None if it is not msgpack (never raises)."""
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        return None


def _check_header(msg: Any, length: int) -> str | None:
    """None if msg is a list of ``length`` items starting with MAGIC, PROTOCOL_VERSION."""
    if type(msg) is not list or len(msg) != length or msg[0] != MAGIC:
        return "malformed handshake frame"
    if type(msg[1]) is not int or msg[1] != PROTOCOL_VERSION:
        return f"unsupported protocol version {msg[1]!r}"
    return None


# The transcript's own label and the side keep these MACs apart from any other use of the
# secret and from each other.
TRANSCRIPT_LABEL: Final = "ringkv-hs"
DIALER: Final = "dialer"
LISTENER: Final = "listener"


def _proof(
    secret: bytes,
    side: str,
    listener_nonce: bytes,
    dialer_nonce: bytes,
    listener_id: str,
    dialer_id: str,
) -> bytes:
    """HMAC-SHA256 over the transcript of one connection, made by ``side``."""
    transcript: bytes = msgpack.packb(
        [
            TRANSCRIPT_LABEL,
            PROTOCOL_VERSION,
            side,
            listener_nonce,
            dialer_nonce,
            listener_id,
            dialer_id,
        ],
        use_bin_type=True,
    )
    return hmac.digest(secret, transcript, "sha256")


def _proof_ok(proof: bytes, expected: bytes) -> bool:
    """Whether proof is the expected one, compared in constant time."""
    return hmac.compare_digest(proof, expected)


class _Machine:
    """What both sides share: cutting handshake frames out of the input, final states."""

    __slots__ = ("state", "_node_id", "_secret", "_valid", "_nonce", "_buf", "_failure")

    def __init__(
        self,
        state: str,
        node_id: str,
        secret: bytes | None,
        valid_peer_id: Callable[[str], bool],
        nonce: bytes | None,
    ) -> None:
        if nonce is not None and len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        self.state = state
        self._node_id = node_id
        self._secret = secret
        self._valid = valid_peer_id
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._buf = bytearray()
        self._failure: Failed | None = None

    @property
    def done(self) -> bool:
        """Accepted or failed: no more input is expected."""
        return self.state == ACCEPTED or self.state == FAILED

    def receive(self, data: bytes) -> Result:
        """Take the bytes just received; see the module docstring for the result."""
        if self._failure is not None:
            return self._failure
        if self.state == ACCEPTED:
            raise RuntimeError("the handshake is over: these bytes belong to the data phase")
        buf = self._buf
        buf += data
        out = b""
        while len(buf) >= 4:
            length: int = unpack_len_from(buf, 0)[0]
            why = frame_error(length, HANDSHAKE_MAX_FRAME)
            if why is not None:
                return self._fail(VIOLATION, why)
            end = 4 + length
            if len(buf) < end:
                break
            payload = bytes(buf[4:end])
            del buf[:end]
            result = self._on_message(_decode(payload))
            if isinstance(result, Accepted):
                self.state = ACCEPTED
                result.send = out + result.send
                result.rest = bytes(buf)
                self._buf = bytearray()
                return result
            if isinstance(result, Failed):
                return result
            out += result
        return out

    def expire(self) -> Failed | None:
        """The driver's deadline passed: fail unless already done (then None)."""
        if self.done:
            return None
        return self._fail(TIMEOUT, "no handshake in time")

    def _fail(self, kind: str, reason: str) -> Failed:
        self.state = FAILED
        self._buf = bytearray()
        self._failure = Failed(kind, reason)
        return self._failure

    def _valid_id(self, node_id: object) -> bool:
        return type(node_id) is str and self._valid(node_id)

    def _on_message(self, msg: Any) -> Result:
        raise NotImplementedError


class ListenerHandshake(_Machine):
    """The accepting side: send the Challenge, verify the Hello, answer with the Accept."""

    __slots__ = ()

    def __init__(
        self,
        node_id: str,
        secret: bytes | None,
        valid_peer_id: Callable[[str], bool],
        *,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(AWAIT_HELLO, node_id, secret, valid_peer_id, nonce)

    def opening(self) -> bytes:
        """The Challenge: the listener speaks first, as soon as the connection is made."""
        return _message(self._nonce, self._node_id)

    def _on_message(self, msg: Any) -> Result:
        why = _check_header(msg, 5)
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Hello)")
        peer_id, proof, peer_nonce = msg[2], msg[3], msg[4]
        if not self._valid_id(peer_id):
            return self._fail(VIOLATION, "Hello with an invalid node id")
        if (
            type(proof) is not bytes
            or type(peer_nonce) is not bytes
            or len(peer_nonce) != NONCE_SIZE
        ):
            return self._fail(VIOLATION, "malformed Hello")
        secret, nonce, node_id = self._secret, self._nonce, self._node_id
        mine = b""
        if secret is not None:
            if not _proof_ok(proof, _proof(secret, DIALER, nonce, peer_nonce, node_id, peer_id)):
                return self._fail(AUTH, f"authentication failed for {peer_id!r}")
            mine = _proof(secret, LISTENER, nonce, peer_nonce, node_id, peer_id)
        return Accepted(peer_id, _message(node_id, mine))


class DialerHandshake(_Machine):
    """The connecting side: answer the Challenge with a Hello, check the Accept.

    ``expect_id`` is the node meant; None accepts whichever valid node answers.
    """

    __slots__ = ("expect_id", "_listener_id", "_listener_nonce")

    def __init__(
        self,
        node_id: str,
        secret: bytes | None,
        valid_peer_id: Callable[[str], bool],
        expect_id: str | None,
        *,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(AWAIT_CHALLENGE, node_id, secret, valid_peer_id, nonce)
        self.expect_id = expect_id
        self._listener_id = ""  # as the Challenge named it
        self._listener_nonce = b""

    def _on_message(self, msg: Any) -> Result:
        if self.state == AWAIT_CHALLENGE:
            return self._on_challenge(msg)
        return self._on_accept(msg)

    def _proof_as(self, side: str, secret: bytes) -> bytes:
        return _proof(
            secret, side, self._listener_nonce, self._nonce, self._listener_id, self._node_id
        )

    def _on_challenge(self, msg: Any) -> Result:
        why = _check_header(msg, 4)
        if why is None and (
            type(msg[2]) is not bytes or len(msg[2]) != NONCE_SIZE or not self._valid_id(msg[3])
        ):
            why = "malformed Challenge"
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Challenge)")
        listener_id: str = msg[3]
        expect = self.expect_id
        if expect is not None and listener_id != expect:  # before proving anything to it
            return self._fail(MISMATCH, f"the node there is {listener_id!r}, not {expect!r}")
        self._listener_id, self._listener_nonce = listener_id, msg[2]
        secret = self._secret
        proof = self._proof_as(DIALER, secret) if secret is not None else b""
        self.state = AWAIT_ACCEPT
        return _message(self._node_id, proof, self._nonce)

    def _on_accept(self, msg: Any) -> Result:
        why = _check_header(msg, 4)
        if why is None and (not self._valid_id(msg[2]) or type(msg[3]) is not bytes):
            why = "malformed Accept"
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Accept)")
        peer_id: str = msg[2]
        if peer_id != self._listener_id:
            return self._fail(
                VIOLATION, f"the Accept names {peer_id!r}, the Challenge {self._listener_id!r}"
            )
        secret = self._secret
        if secret is not None and not _proof_ok(msg[3], self._proof_as(LISTENER, secret)):
            return self._fail(AUTH, "it failed to prove it knows the cluster secret")
        return Accepted(peer_id)
