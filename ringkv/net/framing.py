"""Length-prefixed framing: the byte layer shared by both directions of a connection.

Job
---
Cut an internode TCP byte stream into frames and hand each one on: to the handshake
(``_Conn._control``, implemented by ``ringkv.net.connection``) until the connection is
authenticated, to the transport's ``on_message`` afterwards. Also the socket options every
internode connection gets. What a frame carries is not this module's business: handshake
messages are ``ringkv.net.handshake``'s, data frames are opaque (``ringkv.core.wire`` encodes them).

Wire format
-----------
Every frame is a 4-byte big-endian length ``n`` followed by ``n`` bytes of payload, with
``1 <= n <= max_frame``. A length of 0 or above the limit is a protocol violation that
closes the connection. Before the handshake completes the limit is
``HANDSHAKE_MAX_FRAME`` (1 KiB), so an unauthenticated peer cannot make us buffer much.

Invariants
----------
* Frames come out in the order they arrived, however the stream was chunked; at most one
  incomplete frame (within the current limit) is buffered.
* Nothing raises out of ``data_received``: a protocol violation (counted in
  ``stats.bad_frames``) or an internal error costs only its connection, which is aborted and
  logged at a rate-limited WARNING.
* Nothing reaches ``on_message`` before the handshake has set the source id (``_src``); an
  exception raised by ``on_message`` is counted and the connection carries on.
* Once ``_closing`` is set no further frame is delivered and nothing more is written.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ringkv.net.transport import Transport

__all__ = ["HANDSHAKE_MAX_FRAME"]

HANDSHAKE_MAX_FRAME: Final = 1024

_LEN = struct.Struct(">I")
_pack_len = _LEN.pack
_unpack_len_from = _LEN.unpack_from
_MAX_LEN: Final = 0xFFFFFFFF


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


class _Conn(asyncio.Protocol):
    """Framing shared by both directions. Until ``_src`` is set every frame goes to
    ``_control`` (the handshake); afterwards frames are delivered to on_message."""

    __slots__ = (
        "_t",
        "_tr",
        "_buf",
        "_need",
        "_limit",
        "_src",
        "_closing",
        "_timer",
        "_addr",
    )

    def __init__(self, owner: Transport) -> None:
        self._t = owner
        self._tr: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 4
        self._limit = HANDSHAKE_MAX_FRAME
        self._src: str | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._addr = "?"

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._tr = transport  # type: ignore[assignment]
        self._addr = _fmt_addr(transport.get_extra_info("peername"))
        self._t._conns.add(self)
        _tune_socket(transport)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._feed(data)
        except Exception:  # a bug here must cost this connection only
            self._t._rlog.warning(
                "internal", "transport: internal error on connection %s", self._addr, exc_info=True
            )
            self._abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        self._buf = bytearray()
        self._t._conn_gone(self)

    # -- framing ----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = 0
        need = 4
        limit = self._limit
        src = self._src
        on_message = self._t._on_message
        frames = 0
        nbytes = 0
        try:
            while n - pos >= 4:
                length: int = _unpack_len_from(data, pos)[0]
                if length == 0 or length > limit:
                    self._violation(f"frame length {length} (limit {limit})")
                    return
                end = pos + 4 + length
                if end > n:
                    need = 4 + length
                    break
                payload = data[pos + 4 : end]
                pos = end
                if src is not None:
                    frames += 1
                    nbytes += length
                    try:
                        on_message(src, payload)
                    except Exception:
                        self._t._callback_failed(src)
                    if self._closing:
                        return
                else:
                    self._control(payload)
                    if self._closing:
                        return
                    limit = self._limit
                    src = self._src
                    on_message = self._t._on_message
        finally:
            if frames:
                t = self._t
                st = t.stats
                st.frames_in += frames
                st.bytes_in += nbytes
                if t._dirty:  # replies the callbacks sent: out now, not an iteration later
                    t._flush()
        if pos < n:
            buf += memoryview(data)[pos:]
        self._need = need

    def _control(self, payload: bytes) -> None:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------

    def _violation(self, why: str) -> None:
        self._t.stats.bad_frames += 1
        self._t._rlog.warning(
            ("violation", type(self)), "transport: %s from %s; closing", why, self._addr
        )
        self._abort()

    def _write(self, data: bytes) -> None:
        if self._tr is not None and not self._closing:
            self._tr.write(data)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _abort(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self._tr is not None:
            self._tr.abort()

    def _close(self) -> None:
        """Close after flushing what is already written."""
        self._closing = True
        self._cancel_timer()
        if self._tr is not None:
            self._tr.close()
