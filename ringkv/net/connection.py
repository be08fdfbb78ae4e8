"""Internode connections: the accepting side, the connecting side, and the per-peer slot.

Job
---
``_Inbound`` is a connection this node accepted: it sends the Challenge, verifies the Hello,
and from then on only receives. ``_Outbound`` is this node's connection to a peer: it answers
the Challenge, checks the Accept, and from then on only sends. ``_Peer`` is the outbound
state ``Transport`` keeps per peer (address, state, queued frames, write budget, backoff).
Framing comes from ``ringkv.net.framing._Conn``, messages and MACs from ``ringkv.net.handshake``;
policy (when to connect, back off, drop, reconnect) is ``ringkv.net.transport.Transport``'s.

Peer states: ``_IDLE`` -> ``_CONNECTING`` (something was sent) -> ``_READY`` (handshake
done); a failed attempt goes to ``_BACKOFF``, whose timer goes back to ``_CONNECTING`` if
something was sent meanwhile and to ``_IDLE`` otherwise; a lost ready connection goes to
``_IDLE`` (it had lived long) or ``_BACKOFF`` (it was flapping).

Invariants
----------
* An accepted connection writes nothing after its Accept; an outbound one delivers nothing
  (any frame after the Accept is a violation).
* Inbound: nothing is delivered before a valid Hello (with a secret: a valid MAC); no Hello
  within ``handshake_timeout`` closes the connection.
* Outbound: the peer becomes ready (``Transport._peer_ready``) only after the Accept named
  the node meant (any node for a ``SEED_PREFIX`` peer) and, with a secret, proved it.
* ``_Peer.epoch`` changes on every state change that invalidates an earlier attempt's
  timers, tasks and protocols; an ``_Outbound`` touches its peer only while
  ``peer.proto is self and peer.epoch == self._epoch``.
* ``_Peer.budget`` is 0 unless the peer is ready and below the high-water mark.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Final

from ringkv.net.framing import _Conn
from ringkv.net.handshake import (
    MAGIC,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SEED_PREFIX,
    _check_header,
    _decode,
    _frame,
    _mac,
    _mac_ok,
    _valid_node_id,
)

if TYPE_CHECKING:
    from ringkv.net.transport import Transport

# Peer connection states.
_IDLE: Final = 0  # no connection; the next send starts one
_CONNECTING: Final = 1  # TCP connect or handshake under way; sends are queued
_READY: Final = 2  # handshake done; sends are written
_BACKOFF: Final = 3  # the last attempt failed; sends are dropped until the timer fires


class _Peer:
    """Outbound state for one peer. ``epoch`` changes on every state change that
    invalidates pending timers, tasks and protocols of an earlier attempt."""

    __slots__ = (
        "id",
        "host",
        "port",
        "state",
        "epoch",
        "proto",
        "task",
        "timer",
        "queue",
        "queue_bytes",
        "wbuf",
        "budget",
        "paused",
        "delay",
        "wanted",
        "since",
    )

    def __init__(self, peer_id: str, host: str, port: int, delay: float) -> None:
        self.id = peer_id
        self.host = host
        self.port = port
        self.state: int = _IDLE
        self.epoch = 0
        self.proto: _Outbound | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.queue: list[bytes] = []  # header, payload, header, payload, ... while connecting
        self.queue_bytes = 0
        self.wbuf: list[bytes] = []  # the same, for this loop iteration's writes when ready
        # Bytes send() may still add to wbuf: 0 unless ready and below the high-water mark,
        # so the fast path needs a single comparison.
        self.budget = 0
        self.paused = False
        self.delay = delay
        self.wanted = False
        self.since = 0.0


class _Inbound(_Conn):
    """An accepted connection: challenge, verify the Hello, then only receive."""

    __slots__ = ("_nonce",)

    def __init__(self, owner: Transport) -> None:
        super().__init__(owner)
        self._nonce = os.urandom(NONCE_SIZE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        t = self._t
        if t._closed:
            self._abort()
            return
        self._timer = t._get_loop().call_later(t._handshake_timeout, self._handshake_expired)
        self._write(_frame([MAGIC, PROTOCOL_VERSION, self._nonce]))

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._src is None and not self._closing:
            self._t.stats.handshake_timeouts += 1
            self._t._rlog.warning(
                "hs-timeout", "transport: no handshake from %s in time; closing", self._addr
            )
            self._abort()

    def _control(self, payload: bytes) -> None:
        t = self._t
        msg = _decode(payload)
        why = _check_header(msg, 5)
        if why is not None:
            self._violation(f"{why} (expected Hello)")
            return
        node_id, mac, cnonce = msg[2], msg[3], msg[4]
        if not _valid_node_id(node_id):
            self._violation("Hello with an invalid node id")
            return
        if type(mac) is not bytes or type(cnonce) is not bytes or len(cnonce) != NONCE_SIZE:
            self._violation("malformed Hello")
            return
        secret = t._secret
        if secret is not None:
            if not _mac_ok(secret, self._nonce, node_id.encode(), mac):
                t.stats.auth_failures += 1
                t._rlog.warning(
                    "auth-in",
                    "transport: authentication failed for %r from %s; closing",
                    node_id,
                    self._addr,
                )
                self._abort()
                return
            proof = _mac(secret, cnonce, t._id_bytes)
        else:
            proof = b""
        self._write(_frame([MAGIC, PROTOCOL_VERSION, t.node_id, proof]))
        self._cancel_timer()
        self._src = node_id
        self._limit = t._max_frame
        t.stats.connects += 1
        t._peer_reached_us(node_id)
        t._log.debug("transport %s: accepted %s from %s", t.node_id, node_id, self._addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._src is not None and not self._t._closed:
            self._t.stats.disconnects += 1
        super().connection_lost(exc)


class _Outbound(_Conn):
    """Our connection to a peer: answer the challenge, check the Accept, then only send."""

    __slots__ = ("_peer", "_epoch", "_phase", "_cnonce", "_failed")

    def __init__(self, owner: Transport, peer: _Peer, epoch: int) -> None:
        super().__init__(owner)
        self._peer = peer
        self._epoch = epoch
        self._phase = 0  # 0: await Challenge, 1: await Accept, 2: ready
        self._cnonce = os.urandom(NONCE_SIZE)
        self._failed: str | None = None  # why we closed it ourselves, for the log

    def _current(self) -> bool:
        peer = self._peer
        return peer.proto is self and peer.epoch == self._epoch

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._current() or self._t._closed:
            self._abort()  # the attempt was given up (timeout, new address, close)
            return
        assert self._tr is not None
        self._tr.set_write_buffer_limits(high=self._t._high_water, low=self._t._high_water // 4)

    def _fail(self, why: str) -> None:
        self._failed = why
        self._abort()

    def _violation(self, why: str) -> None:
        self._failed = why
        super()._violation(why)

    def _control(self, payload: bytes) -> None:
        t = self._t
        peer = self._peer
        msg = _decode(payload)
        if self._phase == 0:
            why = _check_header(msg, 3)
            nonce = msg[2] if why is None else None
            if why is None and (type(nonce) is not bytes or len(nonce) != NONCE_SIZE):
                why = "malformed Challenge"
            if why is not None:
                t.stats.bad_frames += 1
                self._fail(f"{why} (expected Challenge)")
                return
            assert isinstance(nonce, bytes)
            secret = t._secret
            mac = _mac(secret, nonce, t._id_bytes) if secret else b""
            self._write(_frame([MAGIC, PROTOCOL_VERSION, t.node_id, mac, self._cnonce]))
            self._phase = 1
        elif self._phase == 1:
            why = _check_header(msg, 4)
            if why is None and (not _valid_node_id(msg[2]) or type(msg[3]) is not bytes):
                why = "malformed Accept"
            if why is not None:
                t.stats.bad_frames += 1
                self._fail(f"{why} (expected Accept)")
                return
            server_id: str = msg[2]
            # A seed is addressed before its id is known ("seed-host-port"): accept any.
            if server_id != peer.id and not peer.id.startswith(SEED_PREFIX):
                t.stats.peer_mismatches += 1
                self._fail(f"the node there is {server_id!r}, not {peer.id!r}")
                return
            secret = t._secret
            if secret is not None and not _mac_ok(secret, self._cnonce, server_id.encode(), msg[3]):
                t.stats.auth_failures += 1
                self._fail("it failed to prove it knows the cluster secret")
                return
            self._phase = 2
            if self._current():
                t._peer_ready(peer, self)
            else:
                self._abort()
        else:
            t.stats.bad_frames += 1
            self._fail("unexpected frame from the accepting side")

    def pause_writing(self) -> None:
        if self._current():
            self._peer.paused = True
            self._peer.budget = 0

    def resume_writing(self) -> None:
        if self._current():
            peer = self._peer
            peer.paused = False
            if peer.state == _READY:
                peer.budget = self._t._high_water

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._t._outbound_lost(self, exc)
