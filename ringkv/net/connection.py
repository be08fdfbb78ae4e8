"""Internode connections: the asyncio protocols that drive a handshake and then move frames.

Job
---
``InboundConnection`` is a connection this node accepted: it sends the Challenge, feeds what
arrives to a ``ListenerHandshake`` until it accepts or fails, then cuts data frames
(``ringkv.net.framing``) and hands each to ``on_message``; it never writes again. An
``OutboundConnection`` is this node's connection to one peer: it drives a
``DialerHandshake``, then only sends (what its owner writes into it). Each connection owns
its socket, its handshake machine, its frame decoder and its deadline, and nothing else.

Everything else (counters, logs, when to connect, back off or drop) belongs to the owner,
which a connection reaches only through the narrow interfaces below: the ``Transport`` for
an accepted connection (``InboundOwner``), the ``Peer`` it was dialed for otherwise
(``OutboundOwner``). A connection reports what happened; its owner decides.

Invariants
----------
* Nothing raises out of an asyncio callback: a bug costs its connection only
  (``internal_error``, then abort).
* Inbound: nothing reaches ``on_message`` before the handshake accepted the peer, and then
  always with that peer's id; frames are delivered in order, each at most once, and none
  after the connection started closing. An exception from ``on_message`` is reported
  (``callback_failed``) and the connection carries on. No accepted handshake within
  ``handshake_timeout``: the connection is closed.
* Inbound: after the Accept nothing more is written. Outbound: nothing is ever delivered;
  any frame from the accepting side after its Accept is a violation.
* A failed handshake or a framing violation is reported once (``*_failed``) and aborts the
  connection; ``connection_lost`` always follows, reported as ``*_lost``.
* ``OutboundConnection.failure`` says why we closed it ourselves, if we did.
* With TLS (``ringkv.net.tls``) the peer's certificate must name a node, and the id it
  claims in the handshake must be that node: a mismatch fails the handshake. An
  inbound TLS handshake that fails or does not finish within ``handshake_timeout`` is
  reported like any failed handshake, with its reason.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from ringkv.net.framing import HANDSHAKE_MAX_FRAME, FrameDecoder
from ringkv.net.handshake import (
    AUTH,
    AWAIT_ACCEPT,
    VIOLATION,
    Accepted,
    DialerHandshake,
    Failed,
    ListenerHandshake,
)
from ringkv.net.tls import node_identity

__all__ = [
    "Connection",
    "InboundConnection",
    "InboundOwner",
    "OutboundConnection",
    "OutboundOwner",
]


def _tls_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    return f"{type(exc).__name__}: {exc}"


class InboundOwner(Protocol):
    """What an accepted connection tells the transport that accepted it."""

    def inbound_opened(self, conn: InboundConnection) -> bool:
        """Track conn; False if it must be closed at once (the owner is closing)."""

    def inbound_failed(self, conn: InboundConnection, failure: Failed) -> None:
        """The handshake failed or timed out, or a frame was malformed: conn is aborted."""

    def inbound_accepted(self, conn: InboundConnection) -> None:
        """The handshake accepted ``conn.peer_id``; its frames follow."""

    def frames_delivered(self, frames: int, nbytes: int) -> None:
        """A batch of frames (payload bytes) just went to on_message."""

    def callback_failed(self, src: str) -> None:
        """on_message raised (called from the except block)."""

    def internal_error(self, conn: Connection) -> None:
        """A bug in the connection itself (called from the except block)."""

    def inbound_lost(self, conn: InboundConnection) -> None:
        """The connection is gone."""


class OutboundOwner(Protocol):
    """What a connection to a peer tells the transport that opened it."""

    def outbound_opened(self, conn: OutboundConnection) -> bool:
        """Track conn; False if the attempt was given up meanwhile (conn is aborted)."""

    def outbound_failed(self, conn: OutboundConnection, failure: Failed) -> None:
        """The handshake failed or the peer sent a bad frame: conn is aborted."""

    def outbound_ready(self, conn: OutboundConnection) -> None:
        """The handshake accepted the peer: conn may carry frames."""

    def outbound_paused(self, conn: OutboundConnection, paused: bool) -> None:
        """The socket's write buffer went above (True) or back below (False) high water."""

    def internal_error(self, conn: Connection) -> None:
        """A bug in the connection itself (called from the except block)."""

    def outbound_lost(self, conn: OutboundConnection, exc: Exception | None) -> None:
        """The connection is gone (``conn.failure`` says why, if we closed it)."""


def _fmt_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _tune_socket(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # unacknowledged data for 30 s: give up
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)
    except (OSError, AttributeError, TypeError):
        pass


class Connection(asyncio.Protocol):
    """The socket side both directions share: writing, closing, the handshake deadline."""

    __slots__ = ("addr", "_tr", "_closing", "_timer")

    def __init__(self) -> None:
        self.addr = "?"  # the peer's host:port, for logs
        self._tr: asyncio.Transport | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._tr = transport  # type: ignore[assignment]
        self.addr = _fmt_addr(transport.get_extra_info("peername"))
        _tune_socket(transport)

    def _detach(self) -> None:
        self._closing = True
        self._cancel_timer()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def is_open(self) -> bool:
        """Whether frames written now can still leave."""
        tr = self._tr
        return tr is not None and not tr.is_closing()

    def write(self, data: bytes) -> None:
        """Write data unless the connection is closing (then it is dropped)."""
        if self._tr is not None and not self._closing:
            self._tr.write(data)

    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._tr.get_write_buffer_size() if self._tr is not None else 0

    def abort(self) -> None:
        """Close now, discarding whatever is not yet sent."""
        self._closing = True
        self._cancel_timer()
        if self._tr is not None:
            self._tr.abort()

    def close(self) -> None:
        """Close after flushing what is already written."""
        self._closing = True
        self._cancel_timer()
        if self._tr is not None:
            self._tr.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class InboundConnection(Connection):
    """An accepted connection: challenge, verify the Hello, then only receive."""

    __slots__ = ("peer_id", "cert_id", "_owner", "_hs", "_timeout", "_max_frame",
                 "_on_message", "_decoder", "_tls", "_tls_obj", "_tls_in", "_tls_out",
                 "_tls_heard")

    def __init__(
        self,
        owner: InboundOwner,
        handshake: ListenerHandshake,
        on_message: Callable[[str, bytes], None],
        *,
        max_frame: int,
        handshake_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__()
        self.peer_id: str | None = None  # set once the handshake accepted the peer
        self.cert_id: str | None = None  # the node its TLS certificate names
        self._owner = owner
        self._hs = handshake
        self._on_message = on_message
        self._max_frame = max_frame
        self._timeout = handshake_timeout
        self._decoder: FrameDecoder | None = None  # the data phase's, after the handshake
        self._tls = tls
        self._tls_obj: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._tls_heard = False  # any TLS bytes from the peer yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._attach(transport)
        if not self._owner.inbound_opened(self):
            self.abort()
            return
        # One deadline for TLS and the ringkv handshake together.
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)
        if self._tls is not None:
            # TLS is run here over memory buffers rather than by the listener, so that a
            # refused handshake (plaintext, another CA, an expired certificate) is
            # reported with its reason, where a TLS listener drops it without a word,
            # and alike on asyncio's loop and uvloop.
            self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self._tls_obj = self._tls.wrap_bio(self._tls_in, self._tls_out, server_side=True)
            return
        self.write(self._hs.opening())

    def write(self, data: bytes) -> None:
        if self._tls_obj is None:
            super().write(data)
        elif not self._closing:
            self._tls_obj.write(data)
            self._tls_flush()

    def _tls_flush(self) -> None:
        if self._tls_out is not None and self._tr is not None and not self._closing:
            pending = self._tls_out.read()
            if pending:
                self._tr.write(pending)

    def _tls_receive(self, data: bytes) -> bytes:
        """The plaintext in `data` (TLS records); b"" while the TLS handshake runs."""
        obj, incoming = self._tls_obj, self._tls_in
        assert obj is not None and incoming is not None
        self._tls_heard = True
        incoming.write(data)
        if self.cert_id is None:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                self._tls_flush()
                return b""
            except ssl.SSLError as exc:
                self._tls_flush()  # the alert that tells the peer why
                self._fail(Failed(AUTH, f"TLS handshake failed: {_tls_reason(exc)}"))
                return b""
            self._tls_flush()
            self.cert_id = node_identity(obj)
            if self.cert_id is None:
                self._fail(Failed(AUTH, "TLS certificate names no ringkv node"))
                return b""
            self.write(self._hs.opening())
        chunks = []
        while not self._closing:
            try:
                chunk = obj.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                self.close()
                break
            except ssl.SSLError as exc:
                self._fail(Failed(VIOLATION, f"TLS: {_tls_reason(exc)}"))
                return b""
            if not chunk:
                break
            chunks.append(chunk)
        self._tls_flush()
        return b"".join(chunks)

    def _expired(self) -> None:
        self._timer = None
        if self._tls_obj is not None and self.cert_id is None and not self._closing:
            self._fail(Failed(AUTH, "no TLS handshake in time (a plaintext peer?)"))
            return
        failure = self._hs.expire()
        if failure is not None and not self._closing:
            self._fail(failure)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            if self._tls_obj is not None:
                data = self._tls_receive(data)
                if not data or self._closing:
                    return
            if self._decoder is not None:
                self._deliver(data)
            else:
                self._handshake(data)
        except Exception:  # a bug here must cost this connection only
            self._owner.internal_error(self)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tls_obj is not None and self.cert_id is None and not self._closing:
            # The peer gave up on TLS: a plaintext dialer timing out, or one that does
            # not trust this node's certificate and hung up without its alert arriving.
            # This node refused nothing, but an operator wants to see who tried.
            heard = self._tls_in is not None and self._tls_heard
            self._owner.inbound_failed(self, Failed(AUTH, (
                "closed during the TLS handshake (does it trust this node's CA?)" if heard
                else "closed before a TLS handshake (a plaintext peer?)")))
        self._detach()
        self._decoder = None
        self._owner.inbound_lost(self)

    def _handshake(self, data: bytes) -> None:
        result = self._hs.receive(data)
        if isinstance(result, Accepted) and self._tls is not None \
                and result.peer_id != self.cert_id:
            self._fail(Failed(AUTH, f"peer claims to be {result.peer_id!r} but its"
                              f" certificate names {self.cert_id!r}"))
        elif isinstance(result, Accepted):
            self.write(result.send)
            self._cancel_timer()
            self.peer_id = result.peer_id
            self._decoder = FrameDecoder(self._max_frame)
            self._owner.inbound_accepted(self)
            if result.rest and not self._closing:
                self._deliver(result.rest)
        elif isinstance(result, Failed):
            self._fail(result)
        elif result:
            self.write(result)

    def _deliver(self, data: bytes) -> None:
        decoder = self._decoder
        assert decoder is not None
        frames = decoder.feed(data)
        if frames:
            src = self.peer_id
            assert src is not None
            on_message = self._on_message
            delivered = 0
            nbytes = 0
            try:
                for payload in frames:
                    delivered += 1
                    nbytes += len(payload)
                    try:
                        on_message(src, payload)
                    except Exception:
                        self._owner.callback_failed(src)
                    if self._closing:
                        return
            finally:
                self._owner.frames_delivered(delivered, nbytes)
        if decoder.error is not None:
            self._fail(Failed(VIOLATION, decoder.error))

    def _fail(self, failure: Failed) -> None:
        self._owner.inbound_failed(self, failure)
        self.abort()


class OutboundConnection(Connection):
    """This node's connection to the peer named ``name``: handshake, then only send."""

    __slots__ = ("name", "failure", "_owner", "_hs", "_high_water", "_decoder", "_tls")

    def __init__(
        self, owner: OutboundOwner, name: str, handshake: DialerHandshake, *, high_water: int,
        tls: bool = False,
    ) -> None:
        super().__init__()
        self._tls = tls  # dialed over TLS: the listener's id must be its certificate's
        self.name = name  # the owner's key for the peer, not necessarily its node id
        self.failure: str | None = None  # why we closed it ourselves, for the log
        self._owner = owner
        self._hs = handshake
        self._high_water = high_water
        self._decoder: FrameDecoder | None = None  # after the Accept: every frame is wrong

    @property
    def awaiting_accept(self) -> bool:
        """The Hello went out and no Accept came back (yet)."""
        return self._hs.state == AWAIT_ACCEPT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._attach(transport)
        if not self._owner.outbound_opened(self):
            self.abort()  # the attempt was given up (timeout, new address, close)
            return
        assert self._tr is not None
        self._tr.set_write_buffer_limits(high=self._high_water, low=self._high_water // 4)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            if self._decoder is not None:
                self._after_accept(data)
            else:
                self._handshake(data)
        except Exception:  # a bug here must cost this connection only
            self._owner.internal_error(self)
            self.abort()

    def pause_writing(self) -> None:
        self._owner.outbound_paused(self, True)

    def resume_writing(self) -> None:
        self._owner.outbound_paused(self, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._detach()
        self._owner.outbound_lost(self, exc)

    def _handshake(self, data: bytes) -> None:
        result = self._hs.receive(data)
        cert_id = (node_identity(self._tr.get_extra_info("ssl_object"))
                   if self._tls and self._tr is not None else None)
        if isinstance(result, Accepted) and self._tls and result.peer_id != cert_id:
            self._fail(Failed(AUTH, f"listener claims to be {result.peer_id!r} but its"
                              f" certificate names {cert_id!r}"))
        elif isinstance(result, Accepted):
            self.write(result.send)
            self._decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
            self._owner.outbound_ready(self)
            if result.rest and not self._closing:
                self._after_accept(result.rest)
        elif isinstance(result, Failed):
            self._fail(result)
        elif result:
            self.write(result)

    def _after_accept(self, data: bytes) -> None:
        decoder = self._decoder
        assert decoder is not None
        if decoder.feed(data):
            self._fail(Failed(VIOLATION, "unexpected frame from the accepting side"))
        elif decoder.error is not None:
            self._fail(Failed(VIOLATION, decoder.error))

    def _fail(self, failure: Failed) -> None:
        self.failure = failure.reason
        self._owner.outbound_failed(self, failure)
        self.abort()
