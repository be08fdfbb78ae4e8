"""What the transport reports: its counters and its rate-limited warnings.

Job
---
``TransportStats`` counts what happened on the wire (frames, bytes, violations, failed
authentications, connects and losses, drops) for metrics and tests. ``RateLimitedLog``
keeps a hostile or broken peer from flooding the log: at most one message per key per
interval, and the next one says how many were suppressed. Both are owned by one
``ringkv.net.transport.Transport``, which alone updates them.

Invariants
----------
* Frame and byte counts are of data frames and their payload bytes, never of handshake
  messages or of the 4-byte length headers.
* Every frame the transport accepted from ``send`` and did not hand to a socket (or
  deliver locally) is counted in ``dropped``, exactly once.
* A suppressed warning costs a dictionary lookup; nothing is formatted for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RateLimitedLog", "TransportStats"]


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


class RateLimitedLog:
    """At most one message per key per interval; says how many were suppressed."""

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
