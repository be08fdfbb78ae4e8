"""One peer's outbound side: its address, its single connection, queued frames and backoff.

Job
---
A ``Peer`` is everything this node keeps about sending to one peer name: where to dial,
which node must answer there, how far the connection got, the frames waiting for it, how
much may still be written this loop iteration, and the backoff after a failure. It owns
its connection attempts (it is their ``OutboundOwner``) and decides, for its own frames,
whether to write, queue or drop. What all peers of one transport share (settings,
counters, logs, the loop) comes in a ``PeerContext``; what only the transport can do
(track connections, schedule the end-of-iteration flush) goes through ``PeerOwner``.

States::

    IDLE --send--> CONNECTING --handshake accepted--> READY
                       |                                |
                    failed                             lost
                       v                                v
                    BACKOFF --timer, something sent--> CONNECTING
                            --timer, nothing sent----> IDLE

A lost READY connection goes to IDLE if it had lived at least ``backoff_max`` (a healthy
connection: reconnect on the next send) and to BACKOFF otherwise (it was flapping). A
peer that authenticates a connection to us leaves BACKOFF at once (``reached_us``).

Invariants
----------
* ``epoch`` changes on every state change that invalidates an earlier attempt's timers and
  tasks; a timer or task of an older epoch changes nothing, and neither does a callback
  from a connection that is not ``conn`` (the current attempt's, None when IDLE or BACKOFF).
* ``budget`` is 0 unless READY and below the high-water mark, so the fast path of
  ``send`` needs a single comparison; frames it accepts go to ``wbuf`` and leave in one
  write when the owner calls ``flush`` at the end of the loop iteration.
* ``queue`` holds frames only while CONNECTING, at most ``max_queue_bytes`` of them, and
  is written as soon as the handshake accepts the peer. Every frame given to a peer
  leaves, or is counted in ``stats.dropped`` exactly once.
* A retired peer (forgotten by the transport) never dials again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ringkv.net.connection import Connection, OutboundConnection
from ringkv.net.framing import pack_len
from ringkv.net.handshake import AUTH, MISMATCH, DialerHandshake, Failed
from ringkv.net.stats import RateLimitedLog, TransportStats
from ringkv.net.tls import TlsContexts

__all__ = ["BACKOFF", "CONNECTING", "IDLE", "READY", "Peer", "PeerContext", "PeerOwner"]

IDLE: Final = 0  # no connection; the next send starts one
CONNECTING: Final = 1  # TCP connect or handshake under way; sends are queued
READY: Final = 2  # handshake done; sends are written
BACKOFF: Final = 3  # the last attempt failed; sends are dropped until the timer fires


class PeerOwner(Protocol):
    """What a peer needs from the transport that owns it."""

    @property
    def closed(self) -> bool: ...  # closed for good: connect no more

    def loop(self) -> asyncio.AbstractEventLoop: ...

    def mark_dirty(self, peer: Peer) -> None: ...  # flush peer at the end of this iteration

    def conn_opened(self, conn: Connection) -> None: ...

    def conn_gone(self, conn: Connection) -> None: ...


@dataclass(slots=True)
class PeerContext:
    """What every peer of one transport shares: settings, counters, logs and the owner."""

    owner: PeerOwner
    node_id: str
    secret: bytes | None
    valid_peer_id: Callable[[str], bool]
    max_frame: int
    connect_timeout: float
    high_water: int
    max_queue_bytes: int
    backoff_min: float
    backoff_max: float
    tls: TlsContexts | None
    stats: TransportStats
    log: logging.Logger | logging.LoggerAdapter[Any]
    rlog: RateLimitedLog


class Peer:
    """Outbound state for the peer called ``name``: a node id, or any key when whichever
    node answers at the address will do (``expect_id`` None)."""

    __slots__ = (
        "name", "expect_id", "host", "port", "state", "epoch", "conn", "budget", "wbuf",
        "_ctx", "_max_frame", "_task", "_timer", "_queue", "_queue_bytes", "_paused",
        "_delay", "_wanted", "_since", "_retired",
    )

    def __init__(
        self, ctx: PeerContext, name: str, expect_id: str | None, host: str, port: int
    ) -> None:
        self.name = name
        self.expect_id = expect_id  # the node id the handshake must name; None: any
        self.host, self.port = host, port
        self.state: int = IDLE
        self.epoch = 0
        self.conn: OutboundConnection | None = None
        self.budget = 0  # bytes send() may still add to wbuf
        self.wbuf: list[bytes] = []  # this iteration's frames: header, payload, ...
        self._ctx = ctx
        self._max_frame = ctx.max_frame
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queue: list[bytes] = []  # frames sent while connecting: header, payload, ...
        self._queue_bytes = 0
        self._paused = False  # the socket's write buffer is above high water
        self._delay = ctx.backoff_min  # the next backoff
        self._wanted = False  # something was sent during the backoff
        self._since = 0.0  # loop time the connection became ready
        self._retired = False

    # -- sending (called by the transport) ----------------------------------------------

    def send(self, payload: bytes) -> bool:
        """The fast path: take payload for this iteration's write if the budget allows;
        False if not (the transport then decides through ``send_slow``)."""
        n = len(payload)
        if 0 < n <= self.budget and n <= self._max_frame:
            wbuf = self.wbuf
            if not wbuf:
                self._ctx.owner.mark_dirty(self)
            wbuf += (pack_len(n), payload)
            self.budget -= n + 4
            return True
        return False

    def send_slow(self, payload: bytes) -> None:
        """A frame the fast path refused: drop it, queue it, or start connecting."""
        ctx = self._ctx
        state = self.state
        if state == READY:  # the fast path refused: over the high-water mark
            ctx.stats.dropped += 1
            ctx.rlog.warning(("hw", self.name),
                             "transport: output to %s over high water; dropping", self.name)
        elif state == BACKOFF:
            self._wanted = True
            ctx.stats.dropped += 1
        else:
            if state == IDLE:
                self._connect()
            n = len(payload)
            if self._queue_bytes + n + 4 > ctx.max_queue_bytes:
                ctx.stats.dropped += 1
                ctx.rlog.warning(("queue", self.name),
                                 "transport: queue to %s full; dropping", self.name)
                return
            self._queue += (pack_len(n), payload)
            self._queue_bytes += n + 4

    def flush(self) -> None:
        """Write this iteration's frames in one write (or drop them if the connection went)."""
        wbuf = self.wbuf
        if not wbuf:
            return
        frames = len(wbuf) >> 1
        st = self._ctx.stats
        conn = self.conn
        if self.state == READY and conn is not None and conn.is_open():
            data = b"".join(wbuf)
            wbuf.clear()
            if not self._paused:
                self.budget = self._ctx.high_water
            conn.write(data)  # may call pause_writing(), which zeroes the budget
            st.frames_out += frames
            st.bytes_out += len(data) - 4 * frames
        else:
            st.dropped += frames
            wbuf.clear()

    # -- lifecycle (called by the transport) --------------------------------------------

    def move(self, host: str, port: int, expect_id: str | None) -> None:
        """Dial host:port for expect_id from now on; a connection to the old target is
        dropped, frames queued for one in progress go to the new one."""
        if self.host == host and self.port == port and self.expect_id == expect_id:
            return
        self.host, self.port, self.expect_id = host, port, expect_id
        queued = bool(self._queue)
        self._reset(keep_queue=True)
        self._delay = self._ctx.backoff_min
        if queued and not self._ctx.owner.closed:
            self._connect()

    def redial(self) -> None:
        """Drop the connection (or attempt), so that the next frame dials afresh."""
        if self.conn is None:
            return
        self._reset(keep_queue=False)
        self._delay = self._ctx.backoff_min

    def retire(self, *, graceful: bool = False) -> asyncio.Task[None] | None:
        """Drop everything for good; the connect task still running, if any."""
        task = self._task if self._task is not None and not self._task.done() else None
        self._retired = True
        self._reset(keep_queue=False, graceful=graceful)
        return task

    def reached_us(self) -> None:
        """The peer just authenticated a connection to us: it is alive, so stop backing off.
        Else a node that restarts finds its peers backing off towards it for up to
        `backoff_max`, dropping every frame they send it then (acks included): its first
        writes would fail although every replica is up."""
        if self.state != BACKOFF:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delay = self._ctx.backoff_min
        wanted = self._wanted
        self.epoch += 1
        self.state = IDLE
        if wanted and not self._ctx.owner.closed:
            self._connect()

    # -- connecting and backing off -------------------------------------------------------

    def _connect(self) -> None:
        loop = self._ctx.owner.loop()
        self.epoch += 1
        self.state = CONNECTING
        self._wanted = False
        self.conn = None
        self._task = loop.create_task(self._open(self.epoch))
        self._timer = loop.call_later(self._ctx.connect_timeout, self._connect_expired, self.epoch)

    async def _open(self, epoch: int) -> None:
        ctx = self._ctx

        def factory() -> OutboundConnection:
            hs = DialerHandshake(ctx.node_id, ctx.secret, ctx.valid_peer_id, self.expect_id)
            conn = OutboundConnection(self, self.name, hs, high_water=ctx.high_water,
                                      tls=ctx.tls is not None)
            if self.epoch == epoch and self.state == CONNECTING:
                self.conn = conn
            return conn

        try:
            if ctx.tls is None:
                await ctx.owner.loop().create_connection(factory, self.host, self.port)
            else:
                await ctx.owner.loop().create_connection(
                    factory, self.host, self.port, ssl=ctx.tls.client,
                    ssl_handshake_timeout=ctx.connect_timeout)
        except Exception as exc:  # refused, unreachable, DNS, ...
            if self.epoch == epoch and self.state == CONNECTING:
                self._connect_failed(f"{type(exc).__name__}: {exc}")
        finally:
            if self.epoch == epoch:
                self._task = None

    def _connect_expired(self, epoch: int) -> None:
        if self.epoch == epoch and self.state == CONNECTING:
            self._timer = None
            self._connect_failed(f"no connection within {self._ctx.connect_timeout:g} s")

    def _connect_failed(self, why: str) -> None:
        ctx = self._ctx
        ctx.stats.connect_failures += 1
        ctx.rlog.warning(("connect", self.name), "transport %s: cannot reach %s at %s:%d: %s",
                         ctx.node_id, self.name, self.host, self.port, why)
        self._reset(keep_queue=False)
        self._enter_backoff()

    def _enter_backoff(self) -> None:
        ctx = self._ctx
        if ctx.owner.closed:
            return
        delay = self._delay
        self._delay = min(delay * 2, ctx.backoff_max)
        self.epoch += 1
        self.state = BACKOFF
        self._wanted = False
        self._timer = ctx.owner.loop().call_later(delay, self._backoff_done, self.epoch)

    def _backoff_done(self, epoch: int) -> None:
        if self.epoch != epoch or self.state != BACKOFF:
            return
        self._timer = None
        if self._wanted and not self._ctx.owner.closed and not self._retired:
            self._connect()
        else:
            self.epoch += 1
            self.state = IDLE

    def _reset(self, *, keep_queue: bool, graceful: bool = False) -> None:
        """Back to IDLE: cancel the attempt or connection in progress, invalidate its epoch."""
        self.epoch += 1
        self.state = IDLE
        self._paused = False
        self.budget = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        self._task = None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        conn = self.conn
        self.conn = None
        if conn is not None:
            if graceful:
                conn.close()
            else:
                conn.abort()
        st = self._ctx.stats  # what was waiting is lost
        if self.wbuf:
            st.dropped += len(self.wbuf) >> 1
            self.wbuf.clear()
        if not keep_queue and self._queue:
            st.dropped += len(self._queue) >> 1
            self._queue.clear()
            self._queue_bytes = 0

    # -- OutboundOwner: what our connections report ---------------------------------------

    def outbound_opened(self, conn: OutboundConnection) -> bool:
        self._ctx.owner.conn_opened(conn)
        return conn is self.conn and not self._ctx.owner.closed

    def outbound_failed(self, conn: OutboundConnection, failure: Failed) -> None:
        st = self._ctx.stats
        if failure.kind == AUTH:
            st.auth_failures += 1
        elif failure.kind == MISMATCH:
            st.peer_mismatches += 1
        else:
            st.bad_frames += 1

    def outbound_ready(self, conn: OutboundConnection) -> None:
        if conn is not self.conn:
            conn.abort()
            return
        ctx = self._ctx
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.state = READY
        self._paused = False
        self.budget = ctx.high_water
        self._since = ctx.owner.loop().time()
        ctx.stats.connects += 1
        ctx.log.debug("transport %s: connected to %s", ctx.node_id, self.name)
        if self._queue:
            frames = len(self._queue) >> 1
            conn.write(b"".join(self._queue))
            ctx.stats.frames_out += frames
            ctx.stats.bytes_out += self._queue_bytes - 4 * frames
            self._queue.clear()
            self._queue_bytes = 0

    def outbound_paused(self, conn: OutboundConnection, paused: bool) -> None:
        if conn is not self.conn:
            return
        self._paused = paused
        if paused:
            self.budget = 0
        elif self.state == READY:
            self.budget = self._ctx.high_water

    def internal_error(self, conn: Connection) -> None:
        self._ctx.rlog.warning(
            "internal", "transport: internal error on connection %s", conn.addr, exc_info=True
        )

    def outbound_lost(self, conn: OutboundConnection, exc: Exception | None) -> None:
        ctx = self._ctx
        ctx.owner.conn_gone(conn)
        if conn is not self.conn:
            return  # an abandoned attempt or connection; already accounted for
        self.conn = None
        failure = conn.failure
        if self.state == CONNECTING:
            why = failure or "connection closed during the handshake"
            if exc is not None and failure is None:
                why += f" ({exc})"
            if failure is None and conn.awaiting_accept:
                why += " (refused: wrong or missing secret?)"
            self._connect_failed(why)
            return
        # It was ready.
        ctx.stats.disconnects += 1
        lived = ctx.owner.loop().time() - self._since
        ctx.rlog.info(("lost", self.name), "transport %s: connection to %s lost%s",
                      ctx.node_id, self.name, f": {failure or exc}" if failure or exc else "")
        self._reset(keep_queue=False)
        if lived >= ctx.backoff_max:
            self._delay = ctx.backoff_min  # a healthy connection: reconnect on the next send
        else:
            self._enter_backoff()  # flapping: back off
