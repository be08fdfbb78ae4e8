"""Length-prefixed framing: the byte layer of every internode connection, both directions.

Job
---
Turn a payload into a frame and cut a TCP byte stream back into payloads, with a cap on
the frame size. Pure: no sockets, no event loop, no knowledge of what a frame carries
(handshake messages are ``ringkv.net.handshake``'s, data frames are opaque). The
handshake state machines and the connections in ``ringkv.net.connection`` both use it.

Wire format
-----------
Every frame is a 4-byte big-endian length ``n`` followed by ``n`` bytes of payload, with
``1 <= n <= limit``. A length of 0 or above the limit is a protocol violation that costs
the connection. Before the handshake completes the limit is ``HANDSHAKE_MAX_FRAME``
(1 KiB), so an unauthenticated peer cannot make us buffer much; afterwards it is the
receiving transport's ``max_frame`` (at most ``MAX_FRAME_LIMIT``, what 4 bytes can say).

Invariants
----------
* ``FrameDecoder`` returns frames in the order they arrived, however the stream was
  chunked, and buffers at most one incomplete frame (within its limit).
* A length is judged as soon as its 4 bytes are in: an oversized frame is refused before
  any of its payload is buffered.
* After a violation the decoder is dead: ``error`` says why, and it returns no further
  frame, but every frame that preceded the bad length has been returned.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "HANDSHAKE_MAX_FRAME",
    "MAX_FRAME_LIMIT",
    "FrameDecoder",
    "encode_frame",
    "frame_error",
    "pack_len",
]

HANDSHAKE_MAX_FRAME: Final = 1024
MAX_FRAME_LIMIT: Final = 0xFFFFFFFF
HEADER_SIZE: Final = 4

_LEN = struct.Struct(">I")
pack_len = _LEN.pack
unpack_len_from = _LEN.unpack_from


def encode_frame(payload: bytes) -> bytes:
    """The frame that carries payload (which must not be empty)."""
    return pack_len(len(payload)) + payload


def frame_error(length: int, limit: int) -> str | None:
    """Why a frame of this length is refused under this limit, or None if it is fine."""
    if length == 0 or length > limit:
        return f"frame length {length} (limit {limit})"
    return None


class FrameDecoder:
    """Cuts a byte stream into payloads of at most ``limit`` bytes.

    ``feed`` returns the payloads completed by a chunk; a protocol violation stops the
    decoder and sets ``error``. ``limit`` may be changed between two feeds.
    """

    __slots__ = ("limit", "error", "_buf", "_need")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.error: str | None = None
        self._buf = bytearray()
        self._need = HEADER_SIZE  # bytes _buf must hold before anything can be cut

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by data, in order (possibly none)."""
        if self.error is not None:
            return []
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:  # a large frame arriving in pieces: no copy yet
                return []
            data = bytes(buf)
            buf.clear()
        frames: list[bytes] = []
        n = len(data)
        pos = 0
        need = HEADER_SIZE
        limit = self.limit
        while n - pos >= 4:
            length: int = unpack_len_from(data, pos)[0]
            if length == 0 or length > limit:
                self.error = frame_error(length, limit)
                self._buf = bytearray()
                return frames
            end = pos + 4 + length
            if end > n:
                need = 4 + length
                break
            frames.append(data[pos + 4 : end])
            pos = end
        if pos < n:
            buf += memoryview(data)[pos:]
        self._need = need
        return frames
