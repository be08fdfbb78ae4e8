"""One real node in this process, serving HTTP on loopback, for the HTTP edge tests.

`live_node(**overrides)` starts a `NodeRuntime` (in memory, N=R=W=1, so one node is a
whole cluster) with the real HTTP stack on free ports and stops it on the way out.
`raw_exchange` speaks bytes to it over a plain socket, for what an HTTP client library
would not send (half a request, an idle connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ringkv.core.config import fast_test_config
from ringkv.server.http_api import make_app
from ringkv.server.runtime import NodeRuntime
from tests.support.procs import HOST, free_ports


@contextlib.asynccontextmanager
async def live_node(**overrides: Any) -> AsyncIterator[NodeRuntime]:
    http_port, rpc_port = free_ports(2)
    settings: dict[str, Any] = {"n": 1, "r": 1, "w": 1, "http_port": http_port,
                                "rpc_port": rpc_port, "host": HOST}
    settings.update(overrides)
    runtime = NodeRuntime(fast_test_config("n1", **settings))
    await runtime.start(make_app(runtime))
    try:
        yield runtime
    finally:
        await runtime.stop()


def base_url(runtime: NodeRuntime) -> str:
    return f"http://{HOST}:{runtime.config.http_port}"


async def open_raw(runtime: NodeRuntime) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, runtime.config.http_port)


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Everything the server sends until it closes; raises TimeoutError past `limit`."""
    chunks: list[bytes] = []
    async with asyncio.timeout(limit):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
