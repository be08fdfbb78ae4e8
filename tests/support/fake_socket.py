"""A stand-in for a socket's asyncio transport, so a connection can be fed bytes directly.

It records what the connection writes and whether it aborted; nothing reaches a network.
"""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    def __init__(self, peername: tuple[str, int] = ("fake", 1)) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False
        self._peername = peername

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peername if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass
