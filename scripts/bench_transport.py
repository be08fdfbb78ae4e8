"""Throughput of ringkv.net.transport on loopback: one-way frames/s and round trips/s.

    python scripts/bench_transport.py [--loop asyncio|uvloop|both] [--seconds 3] [--size 100]

The echo node runs in a child process (its own core), the driver in this one, each with
its own Transport, as two nodes of a cluster would. Every payload is a msgpack array
``[kind, seq, blob]`` that the receiver decodes, as the node core would.

* round trips: ``--inflight`` (64) requests outstanding; the echo node sends each one back
  on its own outbound connection; reports round trips/s and latency percentiles.
* baseline (``--baseline``): the same round trips over a bare ``asyncio.Protocol``, one
  connection carrying requests and replies (the perf-notes reference design), to read the
  figures above as ratios on a machine whose absolute speed is unknown.
* one way: the driver streams frames; the echo node acknowledges every 1,000 with one small
  frame and the driver keeps at most ``--window`` (16,384) unacknowledged; reports frames/s
  actually received.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gossip.membership import valid_node_id  # noqa: E402
from ringkv.net.transport import Transport  # noqa: E402

ECHO, ONEWAY, ACK = 0, 1, 2
ACK_EVERY = 1000


def _run(loop_kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


class _Bare(asyncio.Protocol):
    """Baseline: length-prefixed frames, replies batched per data_received."""

    def __init__(self, on_frame: Callable[[_Bare, bytes], None]) -> None:
        self.buf = b""
        self.on_frame = on_frame
        self.out: list[bytes] = []
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while n - pos >= 4:
            length = int.from_bytes(buf[pos : pos + 4], "big")
            if pos + 4 + length > n:
                break
            self.on_frame(self, buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
        self.buf = buf[pos:]
        self.flush()

    def send(self, payload: bytes) -> None:
        self.out += (len(payload).to_bytes(4, "big"), payload)

    def flush(self) -> None:
        if self.out and self.tr is not None:
            self.tr.write(b"".join(self.out))
            self.out.clear()


def serve_bare(loop_kind: str, ports: Any) -> None:
    async def main() -> None:
        def on_frame(proto: _Bare, payload: bytes) -> None:
            msgpack.unpackb(payload)
            proto.send(payload)

        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Bare(on_frame), "127.0.0.1", 0)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    _run(loop_kind, main())


async def drive_bare(port: int, seconds: float, size: int, inflight: int) -> float:
    blob = os.urandom(size)
    done = 0
    seq = 0

    def on_frame(proto: _Bare, payload: bytes) -> None:
        nonlocal done, seq
        msgpack.unpackb(payload)
        done += 1
        seq += 1
        proto.send(msgpack.packb([ECHO, seq, blob]))

    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_connection(lambda: _Bare(on_frame), "127.0.0.1", port)
    t0 = time.perf_counter()
    for i in range(inflight):
        proto.send(msgpack.packb([ECHO, i, blob]))
    proto.flush()
    await asyncio.sleep(seconds)
    rate = done / (time.perf_counter() - t0)
    tr.close()
    return rate


def bench_bare(loop_kind: str, seconds: float, size: int, inflight: int) -> None:
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    p = ctx.Process(target=serve_bare, args=(loop_kind, ports), daemon=True)
    p.start()
    try:
        rate = _run(loop_kind, drive_bare(ports.get(), seconds, size, inflight))
    finally:
        p.terminate()
        p.join()
    print(f"{loop_kind:8} baseline: bare Protocol, 1 connection, req/resp: {rate:>9,.0f}/s")


def serve(loop_kind: str, ports: Any, driver_port: int) -> None:
    """The echo node: echo ECHO frames, acknowledge ONEWAY frames every ACK_EVERY."""

    async def main() -> None:
        received = 0
        packb, unpackb = msgpack.packb, msgpack.unpackb

        def on_message(src: str, payload: bytes) -> None:
            nonlocal received
            kind, seq, _blob = unpackb(payload)
            if kind == ECHO:
                t.send(src, payload)
            elif kind == ONEWAY:
                received += 1
                if received % ACK_EVERY == 0:
                    t.send(src, packb([ACK, received, b""]))

        t = Transport("echo", on_message, valid_peer_id=valid_node_id)
        await t.listen("127.0.0.1", 0)
        t.set_address("driver", "127.0.0.1", driver_port)
        addr = t.listen_address
        assert addr is not None
        ports.put(addr[1])
        await asyncio.Event().wait()

    _run(loop_kind, main())


async def drive(
    echo_port_q: Any, proc: Any, seconds: float, size: int, inflight: int, window: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    blob = os.urandom(size)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    state: dict[str, Any] = {"mode": "rt", "done": 0, "acked": 0}
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    window_open = asyncio.Event()
    next_seq = 0

    def on_message(src: str, payload: bytes) -> None:
        nonlocal next_seq
        kind, seq, _ = unpackb(payload)
        if kind == ECHO:
            now = time.perf_counter()
            latencies.append(now - sent_at.pop(seq))
            state["done"] += 1
            if state["mode"] == "rt":
                sent_at[next_seq] = now
                t.send("echo", packb([ECHO, next_seq, blob]))
                next_seq += 1
        elif kind == ACK:
            state["acked"] = seq
            window_open.set()

    t = Transport("driver", on_message, valid_peer_id=valid_node_id)
    await t.listen("127.0.0.1", 0)
    addr = t.listen_address
    assert addr is not None
    proc.driver_port = addr[1]
    proc.start()
    echo_port = await loop.run_in_executor(None, echo_port_q.get)
    t.set_address("echo", "127.0.0.1", echo_port)

    # Warm up and connect both ways.
    t.send("echo", packb([ECHO, -1, b""]))
    sent_at[-1] = time.perf_counter()
    while state["done"] < 1:
        await asyncio.sleep(0.01)

    # Round trips, `inflight` outstanding.
    state["done"] = 0
    latencies.clear()
    t0 = time.perf_counter()
    for _ in range(inflight):
        sent_at[next_seq] = time.perf_counter()
        t.send("echo", packb([ECHO, next_seq, blob]))
        next_seq += 1
    await asyncio.sleep(seconds)
    state["mode"] = "drain"
    rt = state["done"] / (time.perf_counter() - t0)
    while sent_at:
        await asyncio.sleep(0.01)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3

    # One way, windowed.
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    frame = packb([ONEWAY, 0, blob])
    while time.perf_counter() < deadline:
        if sent - state["acked"] >= window:
            window_open.clear()
            await window_open.wait()
            continue
        for _ in range(500):
            t.send("echo", frame)
        sent += 500
        await asyncio.sleep(0)
    target = sent - sent % ACK_EVERY
    while state["acked"] < target:
        window_open.clear()
        await window_open.wait()
    oneway = state["acked"] / (time.perf_counter() - t0)
    dropped = t.stats.dropped
    await t.close()
    return {
        "rt_per_s": rt,
        "p50_ms": p50,
        "p99_ms": p99,
        "oneway_per_s": oneway,
        "dropped": dropped,
    }


def bench(loop_kind: str, seconds: float, size: int, inflight: int, window: int) -> None:
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()

    class Proc:
        driver_port = 0

        def start(self) -> None:
            self.p = ctx.Process(
                target=serve, args=(loop_kind, ports, self.driver_port), daemon=True
            )
            self.p.start()

    proc = Proc()
    try:
        r = _run(loop_kind, drive(ports, proc, seconds, size, inflight, window))
    finally:
        if hasattr(proc, "p"):
            proc.p.terminate()
            proc.p.join()
    print(
        f"{loop_kind:8} round trips ({inflight} in flight): {r['rt_per_s']:>9,.0f}/s  "
        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms | "
        f"one way: {r['oneway_per_s']:>9,.0f} frames/s | dropped {r['dropped']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=100, help="blob bytes per message")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--window", type=int, default=16384)
    ap.add_argument("--baseline", action="store_true", help="also measure a bare Protocol")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kinds = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    for kind in kinds:
        bench(kind, args.seconds, args.size, args.inflight, args.window)
        if args.baseline:
            bench_bare(kind, args.seconds, args.size, args.inflight)


if __name__ == "__main__":
    main()
