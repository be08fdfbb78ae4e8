"""Internode transport: authenticated, length-prefixed frames over TCP.

Job
---
Carry opaque payloads (the msgpack-encoded messages of ``ringkv.core.wire``; this package
never looks inside them) from one node to another. This is message passing, not RPC:
request ids, replies, retries and timeouts belong to the pure core above. The transport
does framing, authentication, connection management and robustness, and nothing else.

Each node keeps ONE outbound TCP connection per peer, opened lazily by :meth:`Transport.send`
and used only for the frames this node sends. Connections a node accepts only receive:
after the handshake the accepting side never writes to them. Replies therefore travel on
the replier's own outbound connection.

Layout (each module imports only those before it): ``framing`` (the frame format and its
limits), ``handshake`` (the Challenge / Hello / Accept state machines, pure), ``tls``
(the mutual-TLS contexts and the node id a certificate names),
``connection`` (the asyncio protocols that drive them), ``stats`` (counters, rate-limited
warnings), ``peer`` (one peer's outbound side: its connection, queue and backoff) and this
module, the :class:`Transport` that owns the listener, the accepted connections and the
peers. Accepted connections report to the Transport (it is their ``InboundOwner``);
outbound ones to their ``Peer`` (``OutboundOwner``), which asks the Transport for what only
it can do (``PeerOwner``). Nothing reaches into another module's private state.

Peers are named by the caller; a name is only a key. By default the name is the node id
the handshake must find at the address; ``set_address(..., any_node=True)`` accepts
whichever valid node answers (a seed known only by host and port). The node-id rule is the
caller's: ``valid_peer_id`` is handed to the constructor.

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
  single write at the end of it.
* A frame sent to this node's own id is delivered locally (through ``loop.call_soon``).
* Accepted connections that have not completed the handshake within ``handshake_timeout``
  are closed; outbound ones within ``connect_timeout`` (TCP connect plus handshake).

With ``tls`` (``ringkv.net.tls``) every connection is mutual TLS: confidentiality and
integrity for every frame, a peer certificate signed by the cluster CA required in both
directions, and the node id each side claims bound to the one its certificate names; a
plaintext peer is refused. Without it: no confidentiality, no per-frame integrity after
the handshake, no protection from an active man in the middle; the secret keeps out
nodes that do not know it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from ringkv.net.connection import Connection, InboundConnection
from ringkv.net.framing import MAX_FRAME_LIMIT
from ringkv.net.handshake import AUTH, TIMEOUT, Failed, ListenerHandshake
from ringkv.net.peer import READY, Peer, PeerContext
from ringkv.net.stats import RateLimitedLog, TransportStats
from ringkv.net.tls import TlsContexts

__all__ = ["Transport", "TransportStats"]

_LOG_INTERVAL: Final = 5.0  # seconds between two warnings of the same kind


class Transport:
    """One node's endpoint: a listener for inbound frames and one connection per peer."""

    def __init__(
        self,
        node_id: str,
        on_message: Callable[[str, bytes], None],
        *,
        valid_peer_id: Callable[[str], bool],
        secret: bytes | None = None,
        max_frame: int = 64 * 1024 * 1024,
        connect_timeout: float = 1.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        handshake_timeout: float = 5.0,
        high_water: int = 64 * 1024 * 1024,
        max_queue_bytes: int = 16 * 1024 * 1024,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
        tls: TlsContexts | None = None,
    ) -> None:
        if type(node_id) is not str or not valid_peer_id(node_id):
            raise ValueError(f"invalid node id {node_id!r}")
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ValueError("secret must be non-empty bytes or None")
        if not 1 <= max_frame <= MAX_FRAME_LIMIT:
            raise ValueError("max_frame must be between 1 and 2**32 - 1")
        if connect_timeout <= 0 or handshake_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.node_id = node_id
        self._on_message = on_message
        self._valid_peer_id = valid_peer_id
        self._secret = secret
        self._max_frame = max_frame
        self._handshake_timeout = handshake_timeout
        self.tls = tls  # mutual TLS (ringkv.net.tls); its contexts may be swapped (reload)
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._rlog = RateLimitedLog(self._log, _LOG_INTERVAL)
        self.stats = TransportStats()
        self._ctx = PeerContext(
            self,
            node_id,
            secret,
            valid_peer_id,
            max_frame=max_frame,
            connect_timeout=connect_timeout,
            high_water=high_water,
            max_queue_bytes=max_queue_bytes,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            tls=tls,
            stats=self.stats,
            log=self._log,
            rlog=self._rlog,
        )
        self._peers: dict[str, Peer] = {}
        self._conns: set[Connection] = set()  # open connections, both directions
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._all_gone: asyncio.Future[None] | None = None
        self._dirty: list[Peer] = []  # peers with frames to write at the end of the iteration
        self._flush_scheduled = False

    # -- public API -----------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> None:
        """Start accepting connections on host:port (port 0: an ephemeral port)."""
        if self._closed:
            raise RuntimeError("transport is closed")
        if self._server is not None:
            raise RuntimeError("already listening")
        self._server = await self.loop().create_server(
            self._new_inbound, host, port, reuse_address=True, backlog=1024
        )

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) actually bound by :meth:`listen`, or None."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def set_address(self, name: str, host: str, port: int, *, any_node: bool = False) -> None:
        """Where to reach the peer called name. Without ``any_node`` the name is the node id
        the handshake must find there; with it, the name is only a key and whichever valid
        node answers will do (a seed known by its address alone). A changed address drops
        the connection to the old one; frames queued for a connection in progress go to the
        new address."""
        if any_node:
            if type(name) is not str or not name:
                raise ValueError(f"invalid peer name {name!r}")
            expect_id = None
        elif type(name) is not str or not self._valid_peer_id(name):
            raise ValueError(f"invalid node id {name!r}")
        else:
            expect_id = name
        peer = self._peers.get(name)
        if peer is None:
            self._peers[name] = Peer(self._ctx, name, expect_id, host, port)
        else:
            peer.move(host, port, expect_id)

    def redial(self, name: str) -> None:
        """Drop the connection to the peer, so that the next frame dials afresh.

        For a peer judged down: its connection may be half-open (the peer moved to
        another address, or a network dropped it silently), and TCP would take many
        seconds to notice, while frames written into it are lost.
        """
        peer = self._peers.get(name)
        if peer is not None:
            peer.redial()

    def forget(self, name: str) -> None:
        """Drop the peer's address and connection (a node that left, a seed once joined)."""
        peer = self._peers.pop(name, None)
        if peer is not None:
            peer.retire()

    def send(self, name: str, payload: bytes) -> None:
        """Queue payload for the peer. Never blocks; never raises for network reasons."""
        peer = self._peers.get(name)
        if peer is None or not peer.send(payload):
            self._send_slow(name, peer, payload)

    def send_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """send() each (name, payload) in order."""
        send = self.send
        for name, payload in messages:
            send(name, payload)

    def connected(self, name: str) -> bool:
        """True if the outbound connection to the peer has completed its handshake."""
        peer = self._peers.get(name)
        return peer is not None and peer.state == READY

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
            task = peer.retire(graceful=True)
            if task is not None:
                tasks.append(task)
        for conn in list(self._conns):
            conn.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._conns:  # give graceful closes a second to flush, then abort
            self._all_gone = self.loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_gone), 1.0)
            except TimeoutError:
                for conn in list(self._conns):
                    conn.abort()
                for _ in range(10):
                    if not self._conns:
                        break
                    await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()  # after the connections: 3.12+ waits for them

    # -- sending internals ----------------------------------------------------------------

    def _send_slow(self, name: str, peer: Peer | None, payload: bytes) -> None:
        if self._closed:
            self.stats.dropped += 1
            return
        n = len(payload)
        if not 0 < n <= self._max_frame:
            self._drop("size", "transport: not sending a frame of %d bytes to %s", n, name)
            return
        if name == self.node_id:
            self.stats.frames_out += 1
            self.stats.bytes_out += n
            self.loop().call_soon(self._deliver_local, payload)
            return
        if peer is None:
            self._drop(("noaddr", name), "transport: no address for peer %r", name)
            return
        peer.send_slow(payload)

    def _drop(self, key: object, msg: str, *args: object) -> None:
        self.stats.dropped += 1
        self._rlog.warning(key, msg, *args)

    def _deliver_local(self, payload: bytes) -> None:
        if self._closed:
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(payload)
        try:
            self._on_message(self.node_id, payload)
        except Exception:
            self.callback_failed(self.node_id)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        """Write each dirty peer's frames in one write. Runs once per loop iteration
        (scheduled by the first send of it) and right after an inbound batch was delivered."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for peer in dirty:
            peer.flush()

    # -- PeerOwner: what the peers need ----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this transport runs on (the running one, from its first use)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def mark_dirty(self, peer: Peer) -> None:
        self._dirty.append(peer)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop().call_soon(self._flush_soon)

    def conn_opened(self, conn: Connection) -> None:
        self._conns.add(conn)

    def conn_gone(self, conn: Connection) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    # -- InboundOwner: what accepted connections report ------------------------------------

    def _new_inbound(self) -> InboundConnection:
        """The protocol for a connection the listener accepted."""
        hs = ListenerHandshake(self.node_id, self._secret, self._valid_peer_id)
        return InboundConnection(
            self,
            hs,
            self._on_message,
            max_frame=self._max_frame,
            handshake_timeout=self._handshake_timeout,
            tls=self.tls.server if self.tls is not None else None,
        )

    def inbound_opened(self, conn: InboundConnection) -> bool:
        self._conns.add(conn)
        return not self._closed

    def inbound_failed(self, conn: InboundConnection, failure: Failed) -> None:
        st = self.stats
        if failure.kind == TIMEOUT:
            st.handshake_timeouts += 1
            self._rlog.warning(
                "hs-timeout", "transport: no handshake from %s in time; closing", conn.addr
            )
            return
        if failure.kind == AUTH:
            st.auth_failures += 1
            key: object = "auth-in"
        else:
            st.bad_frames += 1
            key = ("violation", "in")
        self._rlog.warning(key, "transport: %s from %s; closing", failure.reason, conn.addr)

    def inbound_accepted(self, conn: InboundConnection) -> None:
        peer_id = conn.peer_id
        assert peer_id is not None
        self.stats.connects += 1
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.reached_us()
        self._log.debug("transport %s: accepted %s from %s", self.node_id, peer_id, conn.addr)

    def frames_delivered(self, frames: int, nbytes: int) -> None:
        st = self.stats
        st.frames_in += frames
        st.bytes_in += nbytes
        if self._dirty:  # replies the callbacks sent: out now, not an iteration later
            self._flush()

    def callback_failed(self, src: str) -> None:
        self.stats.callback_errors += 1
        self._rlog.warning(
            "callback", "transport: on_message raised for a frame from %s", src, exc_info=True
        )

    def internal_error(self, conn: Connection) -> None:
        self._rlog.warning(
            "internal", "transport: internal error on connection %s", conn.addr, exc_info=True
        )

    def inbound_lost(self, conn: InboundConnection) -> None:
        if conn.peer_id is not None and not self._closed:
            self.stats.disconnects += 1
        self.conn_gone(conn)
