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
  oversized input), ``AUTH`` (wrong MAC or proof), ``MISMATCH`` (the dialer reached another
  node than the one expected) or ``TIMEOUT`` (from ``expire``).

The messages (the same with and without a cluster secret; the MACs are ``b""`` without
one), each a msgpack list in a length-prefixed frame (``ringkv.net.framing``)::

    listener -> dialer    Challenge  ["ringkv", 1, listener_nonce(16 bytes)]
    dialer -> listener    Hello      ["ringkv", 1, dialer_id, mac, dialer_nonce(16 bytes)]
                                       mac   = HMAC-SHA256(secret, listener_nonce + dialer_id)
    listener -> dialer    Accept     ["ringkv", 1, listener_id, proof]
                                       proof = HMAC-SHA256(secret, dialer_nonce + listener_id)

The listener speaks first (``ListenerHandshake.opening``). It checks the dialer's id with
the ``valid_peer_id`` rule it is given and, with a secret, the MAC; a listener without a
secret accepts any MAC. The dialer checks that the listener's id is valid and is the one
it expects (any valid id if it expects none: a seed addressed by host and port before its
id is known) and, with a secret, the proof; a dialer with a secret refuses a listener
that cannot produce it.

Invariants
----------
* ``receive`` never raises on any input, and between two calls keeps at most one
  incomplete handshake frame: none is over ``HANDSHAKE_MAX_FRAME`` bytes, which is judged
  as soon as its length is in.
* The outcome does not depend on how the input was chunked.
* Every message is a msgpack list that starts with ``MAGIC, PROTOCOL_VERSION``; anything
  else, a different version included, is a ``VIOLATION``. Undecodable msgpack is too.
* Nothing is ``Accepted`` before the peer's id passed ``valid_peer_id`` and, with a
  secret, its MAC or proof was checked, in constant time, against this machine's nonce.
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
PROTOCOL_VERSION: Final = 1
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
    """None if msg is a list of ``length`` items starting with MAGIC, 1; else why not."""
    if type(msg) is not list or len(msg) != length or msg[0] != MAGIC:
        return "malformed handshake frame"
    if type(msg[1]) is not int or msg[1] != PROTOCOL_VERSION:
        return f"unsupported protocol version {msg[1]!r}"
    return None


def _mac(secret: bytes, nonce: bytes, ident: bytes) -> bytes:
    """HMAC-SHA256(secret, nonce + ident): the Hello's mac and the Accept's proof."""
    return hmac.digest(secret, nonce + ident, "sha256")


def _mac_ok(secret: bytes, nonce: bytes, ident: bytes, mac: bytes) -> bool:
    """Whether mac is ``_mac(secret, nonce, ident)``, compared in constant time."""
    return hmac.compare_digest(mac, _mac(secret, nonce, ident))


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
        return _message(self._nonce)

    def _on_message(self, msg: Any) -> Result:
        why = _check_header(msg, 5)
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Hello)")
        peer_id, mac, peer_nonce = msg[2], msg[3], msg[4]
        if not self._valid_id(peer_id):
            return self._fail(VIOLATION, "Hello with an invalid node id")
        if type(mac) is not bytes or type(peer_nonce) is not bytes or len(peer_nonce) != NONCE_SIZE:
            return self._fail(VIOLATION, "malformed Hello")
        secret = self._secret
        if secret is None:
            proof = b""
        elif _mac_ok(secret, self._nonce, peer_id.encode(), mac):
            proof = _mac(secret, peer_nonce, self._node_id.encode())
        else:
            return self._fail(AUTH, f"authentication failed for {peer_id!r}")
        return Accepted(peer_id, _message(self._node_id, proof))


class DialerHandshake(_Machine):
    """The connecting side: answer the Challenge with a Hello, check the Accept.

    ``expect_id`` is the node meant; None accepts whichever valid node answers.
    """

    __slots__ = ("expect_id",)

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

    def _on_message(self, msg: Any) -> Result:
        if self.state == AWAIT_CHALLENGE:
            return self._on_challenge(msg)
        return self._on_accept(msg)

    def _on_challenge(self, msg: Any) -> Result:
        why = _check_header(msg, 3)
        if why is None and (type(msg[2]) is not bytes or len(msg[2]) != NONCE_SIZE):
            why = "malformed Challenge"
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Challenge)")
        secret = self._secret
        mac = _mac(secret, msg[2], self._node_id.encode()) if secret else b""
        self.state = AWAIT_ACCEPT
        return _message(self._node_id, mac, self._nonce)

    def _on_accept(self, msg: Any) -> Result:
        why = _check_header(msg, 4)
        if why is None and (not self._valid_id(msg[2]) or type(msg[3]) is not bytes):
            why = "malformed Accept"
        if why is not None:
            return self._fail(VIOLATION, f"{why} (expected Accept)")
        peer_id: str = msg[2]
        expect = self.expect_id
        if expect is not None and peer_id != expect:
            return self._fail(MISMATCH, f"the node there is {peer_id!r}, not {expect!r}")
        secret = self._secret
        if secret is not None and not _mac_ok(secret, self._nonce, peer_id.encode(), msg[3]):
            return self._fail(AUTH, "it failed to prove it knows the cluster secret")
        return Accepted(peer_id)
