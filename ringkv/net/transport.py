"""Internode transport: authenticated, length-prefixed frames over TCP.

Job
---
Carry opaque payloads (the msgpack-encoded messages of ``ringkv.core.wire``; this module never
looks inside them) from one node to another. This is message passing, not RPC: request
ids, replies, retries and timeouts belong to the pure core above. The transport does
framing, authentication, connection management and robustness, and nothing else.

Each node keeps ONE outbound TCP connection per peer, opened lazily by :meth:`Transport.send`
and used only for the frames this node sends. Connections a node accepts only receive:
after the handshake the accepting side never writes to them. Replies therefore travel on
the replier's own outbound connection.

Layout: ``ringkv.net.framing`` (the length-prefixed wire format and its limits),
``ringkv.net.handshake`` (Challenge / Hello / Accept and their HMACs), ``ringkv.net.connection``
(the inbound and outbound connection protocols and the per-peer state); this module is
the :class:`Transport` that owns them and decides when to connect, back off and drop.
Accepted connections that have not completed the handshake within ``handshake_timeout``
are closed; outbound ones within ``connect_timeout`` (TCP connect plus handshake).

Invariants
----------
* Nothing received from the network raises out of a protocol callback or crashes the
  loop: garbage, truncated frames, huge lengths, stalls and resets cost at most the one
  connection they arrived on (logged at a rate-limited WARNING and counted in ``stats``).
* ``on_message`` is called on the event loop, never re-entrantly from :meth:`send`, with a
  source id authenticated on that connection; an exception it raises is logged and counted
  and the connection carries on.
* Frames sent to one peer are delivered in the order sent as long as the connection lasts;
  delivery is at most once, with no guarantee across a reconnect.
* :meth:`send` never blocks and never raises for network reasons. Memory per peer is
  bounded: frames sent while connecting are queued up to ``max_queue_bytes`` and written as
  soon as the handshake completes; a failed connect drops them and retries with exponential
  backoff (``backoff_min`` doubling to ``backoff_max``); frames sent during the backoff are
  dropped, and the next attempt is made only if something was sent meanwhile. Once connected,
  frames are dropped while the connection's write buffer is above ``high_water``. Every
  dropped frame is counted in ``stats.dropped``.
* Writes are coalesced: the frames sent to a peer during one event-loop iteration leave in a
  single ``transport.write`` at the end of it.
* A frame sent to this node's own id is delivered locally (through ``loop.call_soon``).

Not provided: confidentiality, per-frame integrity after the handshake, or protection from
an active man in the middle; the secret keeps out nodes that do not know it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from ringkv.net.connection import _BACKOFF, _CONNECTING, _IDLE, _READY, _Inbound, _Outbound, _Peer
from ringkv.net.framing import _MAX_LEN, HANDSHAKE_MAX_FRAME, _Conn, _pack_len
from ringkv.net.handshake import (
    MAGIC,
    NODE_ID_RE,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SEED_PREFIX,
    _valid_node_id,
)

__all__ = [
    "HANDSHAKE_MAX_FRAME",
    "MAGIC",
    "NODE_ID_RE",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "SEED_PREFIX",
    "Transport",
    "TransportStats",
]

_LOG_INTERVAL: Final = 5.0  # seconds between two warnings of the same kind


@dataclass(slots=True)
class TransportStats:
    """Counters; frame and byte counts are of data frames (payload bytes), not handshakes."""

    frames_in: int = 0  # frames delivered to on_message (including local ones)
    frames_out: int = 0  # frames handed to a socket (or delivered locally)
    bytes_in: int = 0
    bytes_out: int = 0
    bad_frames: int = 0  # protocol violations (each closes its connection)
    auth_failures: int = 0  # wrong MAC / proof, either direction
    connects: int = 0  # handshakes completed, both directions
    disconnects: int = 0  # established connections lost (not counting close())
    connect_failures: int = 0  # outbound attempts that failed (refused, timeout, refused auth)
    handshake_timeouts: int = 0  # accepted connections closed for not saying Hello in time
    peer_mismatches: int = 0  # the node at a peer's address had another id
    dropped: int = 0  # frames dropped: peer unreachable, queue full, over high water, closed
    callback_errors: int = 0  # exceptions raised by on_message

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _RateLimitedLog:
    """At most one warning per key per interval; says how many were suppressed."""

    __slots__ = ("_log", "_interval", "_state")

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any], interval: float) -> None:
        self._log = log
        self._interval = interval
        self._state: dict[object, list[float]] = {}

    def warning(self, key: object, msg: str, *args: object, exc_info: bool = False) -> None:
        self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def info(self, key: object, msg: str, *args: object) -> None:
        self.log(logging.INFO, key, msg, *args)

    def log(self, level: int, key: object, msg: str, *args: object, exc_info: bool = False) -> None:
        if not self._log.isEnabledFor(level):
            return
        now = time.monotonic()
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = [now, 0.0]
        elif now - st[0] < self._interval:
            st[1] += 1
            return
        else:
            if st[1]:
                msg += " (%d similar messages suppressed)"
                args = (*args, int(st[1]))
            st[0] = now
            st[1] = 0.0
        self._log.log(level, msg, *args, exc_info=exc_info)


class Transport:
    """One node's endpoint: a listener for inbound frames and one connection per peer."""

    def __init__(
        self,
        node_id: str,
        on_message: Callable[[str, bytes], None],
        *,
        secret: bytes | None = None,
        max_frame: int = 64 * 1024 * 1024,
        connect_timeout: float = 1.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        handshake_timeout: float = 5.0,
        high_water: int = 64 * 1024 * 1024,
        max_queue_bytes: int = 16 * 1024 * 1024,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
    ) -> None:
        if not _valid_node_id(node_id):
            raise ValueError(f"invalid node id {node_id!r}: must match {NODE_ID_RE.pattern}")
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ValueError("secret must be non-empty bytes or None")
        if not 1 <= max_frame <= _MAX_LEN:
            raise ValueError("max_frame must be between 1 and 2**32 - 1")
        if connect_timeout <= 0 or handshake_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.node_id = node_id
        self._id_bytes = node_id.encode()
        self._on_message = on_message
        self._secret = secret
        self._max_frame = max_frame
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._high_water = high_water
        self._max_queue_bytes = max_queue_bytes
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._rlog = _RateLimitedLog(self._log, _LOG_INTERVAL)
        self.stats = TransportStats()
        self._peers: dict[str, _Peer] = {}
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._all_gone: asyncio.Future[None] | None = None
        self._dirty: list[_Peer] = []
        self._flush_scheduled = False

    # -- public API -----------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> None:
        """Start accepting connections on host:port (port 0: an ephemeral port)."""
        if self._closed:
            raise RuntimeError("transport is closed")
        if self._server is not None:
            raise RuntimeError("already listening")
        loop = self._get_loop()
        self._server = await loop.create_server(
            lambda: _Inbound(self), host, port, reuse_address=True, backlog=1024
        )

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) actually bound by :meth:`listen`, or None."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def set_address(self, peer_id: str, host: str, port: int) -> None:
        """Where to reach peer_id. A changed address drops the connection to the old one;
        frames queued for a connection in progress go to the new address."""
        if not _valid_node_id(peer_id):
            raise ValueError(f"invalid node id {peer_id!r}")
        peer = self._peers.get(peer_id)
        if peer is None:
            self._peers[peer_id] = _Peer(peer_id, host, port, self._backoff_min)
            return
        if peer.host == host and peer.port == port:
            return
        peer.host = host
        peer.port = port
        queued = bool(peer.queue)
        self._reset(peer, keep_queue=True)
        peer.delay = self._backoff_min
        if queued and not self._closed:
            self._start_connect(peer)

    def redial(self, peer_id: str) -> None:
        """Drop the connection to peer_id, so that the next frame dials afresh.

        For a peer judged down: its connection may be half-open (the peer moved to
        another address, or a network dropped it silently), and TCP would take many
        seconds to notice, while frames written into it are lost.
        """
        peer = self._peers.get(peer_id)
        if peer is None or peer.proto is None:
            return
        self._reset(peer, keep_queue=False)
        peer.delay = self._backoff_min

    def forget(self, peer_id: str) -> None:
        """Drop peer_id's address and connection (for a node that left the cluster)."""
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            self._reset(peer, keep_queue=False)

    def send(self, peer_id: str, payload: bytes) -> None:
        """Queue payload for peer_id. Never blocks; never raises for network reasons."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            n = len(payload)
            if 0 < n <= peer.budget and n <= self._max_frame:
                wbuf = peer.wbuf
                if not wbuf:
                    self._dirty.append(peer)
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        self._loop.call_soon(self._flush_soon)  # type: ignore[union-attr]
                wbuf += (_pack_len(n), payload)
                peer.budget -= n + 4
                return
        self._send_slow(peer_id, peer, payload)

    def send_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """send() each (peer_id, payload) in order."""
        send = self.send
        for peer_id, payload in messages:
            send(peer_id, payload)

    def connected(self, peer_id: str) -> bool:
        """True if the outbound connection to peer_id has completed its handshake."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.state == _READY

    async def close(self) -> None:
        """Stop listening, close every connection, drop whatever is still queued."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._dirty:
            self._flush()
        tasks: list[asyncio.Task[None]] = []
        for peer in self._peers.values():
            if peer.task is not None and not peer.task.done():
                tasks.append(peer.task)
            self._reset(peer, keep_queue=False, graceful=True)
        for conn in list(self._conns):
            conn._close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._conns:  # give graceful closes a second to flush, then abort
            self._all_gone = self._get_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_gone), 1.0)
            except TimeoutError:
                for conn in list(self._conns):
                    conn._abort()
                for _ in range(10):
                    if not self._conns:
                        break
                    await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()  # after the connections: 3.12+ waits for them

    # -- sending internals ----------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _drop(self, count: int, key: object, msg: str, *args: object) -> None:
        self.stats.dropped += count
        self._rlog.warning(key, msg, *args)

    def _send_slow(self, peer_id: str, peer: _Peer | None, payload: bytes) -> None:
        if self._closed:
            self.stats.dropped += 1
            return
        n = len(payload)
        if not 0 < n <= self._max_frame:
            self._drop(1, "size", "transport: not sending a frame of %d bytes to %s", n, peer_id)
            return
        if peer_id == self.node_id:
            self.stats.frames_out += 1
            self.stats.bytes_out += n
            self._get_loop().call_soon(self._deliver_local, payload)
            return
        if peer is None:
            self._drop(1, ("noaddr", peer_id), "transport: no address for peer %r", peer_id)
            return
        state = peer.state
        if state == _READY:  # the fast path refused: over the high-water mark
            self._drop(
                1, ("hw", peer_id), "transport: output to %s over high water; dropping", peer_id
            )
        elif state == _BACKOFF:
            peer.wanted = True
            self.stats.dropped += 1
        else:
            if state == _IDLE:
                self._start_connect(peer)
            if peer.queue_bytes + n + 4 > self._max_queue_bytes:
                self._drop(1, ("queue", peer_id), "transport: queue to %s full; dropping", peer_id)
                return
            peer.queue.append(_pack_len(n))
            peer.queue.append(payload)
            peer.queue_bytes += n + 4

    def _deliver_local(self, payload: bytes) -> None:
        if self._closed:
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(payload)
        try:
            self._on_message(self.node_id, payload)
        except Exception:
            self._callback_failed(self.node_id)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        """Write each dirty peer's frames in one transport.write. Runs once per loop
        iteration (scheduled by send) and right after an inbound batch was delivered."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        st = self.stats
        for peer in dirty:
            wbuf = peer.wbuf
            if not wbuf:
                continue
            frames = len(wbuf) >> 1
            proto = peer.proto
            tr = proto._tr if proto is not None else None
            if peer.state == _READY and tr is not None and not tr.is_closing():
                data = b"".join(wbuf)
                wbuf.clear()
                if not peer.paused:
                    peer.budget = self._high_water
                tr.write(data)  # may call pause_writing(), which zeroes the budget
                st.frames_out += frames
                st.bytes_out += len(data) - 4 * frames
            else:
                st.dropped += frames
                wbuf.clear()

    # -- connection management ------------------------------------------------------------

    def _start_connect(self, peer: _Peer) -> None:
        loop = self._get_loop()
        peer.epoch += 1
        peer.state = _CONNECTING
        peer.wanted = False
        peer.proto = None
        peer.task = loop.create_task(self._open(peer, peer.epoch))
        peer.timer = loop.call_later(self._connect_timeout, self._connect_expired, peer, peer.epoch)

    async def _open(self, peer: _Peer, epoch: int) -> None:
        def factory() -> _Outbound:
            proto = _Outbound(self, peer, epoch)
            if peer.epoch == epoch and peer.state == _CONNECTING:
                peer.proto = proto
            return proto

        host, port = peer.host, peer.port
        try:
            await self._get_loop().create_connection(factory, host, port)
        except Exception as exc:  # refused, unreachable, DNS, ...
            if peer.epoch == epoch and peer.state == _CONNECTING:
                self._connect_failed(peer, f"{type(exc).__name__}: {exc}")
        finally:
            if peer.epoch == epoch:
                peer.task = None

    def _connect_expired(self, peer: _Peer, epoch: int) -> None:
        if peer.epoch == epoch and peer.state == _CONNECTING:
            peer.timer = None
            self._connect_failed(peer, f"no connection within {self._connect_timeout:g} s")

    def _connect_failed(self, peer: _Peer, why: str) -> None:
        self.stats.connect_failures += 1
        self._rlog.warning(
            ("connect", peer.id),
            "transport %s: cannot reach %s at %s:%d: %s",
            self.node_id,
            peer.id,
            peer.host,
            peer.port,
            why,
        )
        self._reset(peer, keep_queue=False)
        self._enter_backoff(peer)

    def _enter_backoff(self, peer: _Peer) -> None:
        if self._closed:
            return
        delay = peer.delay
        peer.delay = min(delay * 2, self._backoff_max)
        peer.epoch += 1
        peer.state = _BACKOFF
        peer.wanted = False
        peer.timer = self._get_loop().call_later(delay, self._backoff_done, peer, peer.epoch)

    def _peer_reached_us(self, peer_id: str) -> None:
        """A peer just authenticated a connection to us: it is alive, so stop backing off.

        Without this, a node that restarts finds its peers still in backoff towards it
        for up to `backoff_max`, and every frame they send it then (acks included) is
        dropped: its first writes fail although every replica is up.
        """
        peer = self._peers.get(peer_id)
        if peer is None or peer.state != _BACKOFF:
            return
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        peer.delay = self._backoff_min
        wanted = peer.wanted
        peer.epoch += 1
        peer.state = _IDLE
        if wanted and not self._closed:
            self._start_connect(peer)

    def _backoff_done(self, peer: _Peer, epoch: int) -> None:
        if peer.epoch != epoch or peer.state != _BACKOFF:
            return
        peer.timer = None
        if peer.wanted and not self._closed and self._peers.get(peer.id) is peer:
            self._start_connect(peer)
        else:
            peer.epoch += 1
            peer.state = _IDLE

    def _reset(self, peer: _Peer, *, keep_queue: bool, graceful: bool = False) -> None:
        """Back to IDLE: cancel the attempt or connection in progress, invalidate its epoch."""
        peer.epoch += 1
        peer.state = _IDLE
        peer.paused = False
        peer.budget = 0
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        task = peer.task
        peer.task = None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        proto = peer.proto
        peer.proto = None
        if proto is not None:
            if graceful:
                proto._close()
            else:
                proto._abort()
        if peer.wbuf:
            self.stats.dropped += len(peer.wbuf) >> 1
            peer.wbuf.clear()
        if not keep_queue and peer.queue:
            self.stats.dropped += len(peer.queue) >> 1
            peer.queue.clear()
            peer.queue_bytes = 0

    def _peer_ready(self, peer: _Peer, proto: _Outbound) -> None:
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        peer.state = _READY
        peer.paused = False
        peer.budget = self._high_water
        peer.since = self._get_loop().time()
        self.stats.connects += 1
        self._log.debug("transport %s: connected to %s", self.node_id, peer.id)
        if peer.queue:
            frames = len(peer.queue) >> 1
            proto._write(b"".join(peer.queue))
            self.stats.frames_out += frames
            self.stats.bytes_out += peer.queue_bytes - 4 * frames
            peer.queue.clear()
            peer.queue_bytes = 0

    def _outbound_lost(self, proto: _Outbound, exc: Exception | None) -> None:
        peer = proto._peer
        if peer.proto is not proto or peer.epoch != proto._epoch:
            return  # an abandoned attempt or connection; already accounted for
        peer.proto = None
        if peer.state == _CONNECTING:
            why = proto._failed or "connection closed during the handshake"
            if exc is not None and proto._failed is None:
                why += f" ({exc})"
            if proto._failed is None and proto._phase == 1:
                why += " (refused: wrong or missing secret?)"
            self._connect_failed(peer, why)
            return
        # It was ready.
        self.stats.disconnects += 1
        lived = self._get_loop().time() - peer.since
        self._rlog.info(
            ("lost", peer.id),
            "transport %s: connection to %s lost%s",
            self.node_id,
            peer.id,
            f": {proto._failed or exc}" if (proto._failed or exc) else "",
        )
        self._reset(peer, keep_queue=False)
        if lived >= self._backoff_max:
            peer.delay = self._backoff_min  # a healthy connection: reconnect on the next send
        else:
            self._enter_backoff(peer)  # flapping: back off

    def _conn_gone(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    def _callback_failed(self, src: str) -> None:
        self.stats.callback_errors += 1
        self._rlog.warning(
            "callback", "transport: on_message raised for a frame from %s", src, exc_info=True
        )
