"""`ringkv serve`: one node in this process until SIGTERM or SIGINT.

Job: put the pieces of a node together (the runtime, and the HTTP API it serves) on
uvloop, and stop them cleanly on a signal: stopping is not leaving, so nothing is
handed over; everything staged is committed before the process ends. SIGHUP reloads the
node's certificates and tokens file in place (`NodeRuntime.reload`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from ringkv.core.config import NodeConfig
from ringkv.server.http_api import make_app
from ringkv.server.runtime import NodeRuntime

log = logging.getLogger("ringkv")


def _reload(runtime: NodeRuntime) -> None:
    try:
        runtime.reload()
    except (OSError, ValueError) as exc:  # a bad file: the old ones stay in use
        log.error("reload failed, keeping the certificates and tokens in use: %s", exc)


async def _serve(config: NodeConfig) -> int:
    try:
        runtime = NodeRuntime(config)
    except (OSError, ValueError) as exc:  # a certificate or tokens file that will not load
        log.error("cannot start node %s: %s", config.node_id, exc)
        return 2
    try:
        await runtime.start(make_app(runtime))
    except OSError as exc:
        log.error("cannot start node %s: %s", config.node_id, exc)
        await runtime.transport.close()
        runtime.engine.close()
        return 1
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, runtime)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopping already: a second signal must not cut the clean stop short (once the
        # loop closes it would get the default action and end the process by signal).
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    log.info("node %s stopping", config.node_id)
    await runtime.stop()
    return 0


# Allocations between young-generation collections (CPython's default is 700). A
# request allocates a few hundred objects, nearly all freed by reference counting, so
# the default runs the cycle collector every couple of requests for almost nothing.
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Collect cycles less often: the objects a started node holds (its code, ring,
    tables) are moved out of the collector's view, and young collections run every
    `GC_YOUNG_THRESHOLD` allocations. Cycles are still collected, only in larger
    batches; what a node keeps for long is bounded elsewhere."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def serve(config: NodeConfig) -> int:
    """Run one node until SIGTERM or SIGINT; the exit code."""
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))
