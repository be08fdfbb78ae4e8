"""Tests for ringkv.net.transport: delivery, order, auth, hostile input, reconnects, flow control.

Every test drives its own event loop with ``asyncio.Runner`` (no pytest-asyncio) and fails
if anything reached the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgpack
import pytest

from gossip.membership import valid_node_id
from ringkv.core.addresses import seed_destination
from ringkv.net.connection import InboundConnection
from ringkv.net.handshake import NONCE_SIZE
from ringkv.net.transport import Transport
from tests.support.fake_socket import FakeTransport

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None

LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="no uvloop")),
]
HOST = "127.0.0.1"


def run(coro: Coroutine[Any, Any, None], loop_kind: str = "asyncio", timeout: float = 30.0) -> None:
    """Run coro on a fresh loop; fail if anything reached the loop's exception handler."""
    factory = uvloop.new_event_loop if loop_kind == "uvloop" and uvloop else asyncio.new_event_loop
    errors: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.get_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        runner.run(asyncio.wait_for(coro, timeout))
    assert not errors, errors


async def wait_until(pred: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.005)


class Node:
    """A Transport plus a record of what it received."""

    def __init__(self, node_id: str, **kw: Any) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.t = Transport(node_id, self.on_message, valid_peer_id=valid_node_id, **kw)

    def on_message(self, src: str, payload: bytes) -> None:
        self.got.append((src, payload))

    def payloads(self, src: str | None = None) -> list[bytes]:
        return [p for s, p in self.got if src is None or s == src]

    async def start(self, port: int = 0) -> Node:
        await self.t.listen(HOST, port)
        return self

    @property
    def port(self) -> int:
        addr = self.t.listen_address
        assert addr is not None
        return addr[1]


async def pair(
    a_kw: dict[str, Any] | None = None, b_kw: dict[str, Any] | None = None
) -> tuple[Node, Node]:
    a = await Node("a", **(a_kw or {})).start()
    b = await Node("b", **(b_kw or {})).start()
    a.t.set_address("b", HOST, b.port)
    b.t.set_address("a", HOST, a.port)
    return a, b


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def mframe(obj: object) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def hs_proof(
    secret: bytes, side: str, l_nonce: bytes, d_nonce: bytes, l_id: str, d_id: str
) -> bytes:
    """A handshake proof made by ``side``, written out by hand (protocol version 2)."""
    transcript = msgpack.packb(
        ["ringkv-hs", 2, side, l_nonce, d_nonce, l_id, d_id], use_bin_type=True
    )
    return hmac.digest(secret, transcript, "sha256")


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    return msgpack.unpackb(await reader.readexactly(n), raw=False)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """Read until EOF or reset; True if that happened within timeout."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


# --------------------------------------------------------------------------------------
# Delivery and order


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_exchange_both_ways_in_order(loop_kind: str) -> None:
    n = 10_000

    async def main() -> None:
        a, b = await pair()
        # First half sent at once: queued while the connections are being made.
        for i in range(n // 2):
            a.t.send("b", b"a%d" % i)
            b.t.send("a", b"b%d" % i)
        await wait_until(lambda: a.t.connected("b") and b.t.connected("a"))
        # Second half on established connections, in bursts.
        for i in range(n // 2, n):
            a.t.send("b", b"a%d" % i)
            b.t.send("a", b"b%d" % i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await wait_until(lambda: len(a.got) == n and len(b.got) == n, what="all frames")
        assert b.got == [("a", b"a%d" % i) for i in range(n)]
        assert a.got == [("b", b"b%d" % i) for i in range(n)]
        for node in (a, b):
            st = node.t.stats
            assert st.frames_in == n and st.frames_out == n
            assert st.dropped == 0 and st.bad_frames == 0 and st.auth_failures == 0
            assert st.connects == 2  # one outbound, one inbound
        await a.t.close()
        await b.t.close()

    run(main(), loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_large_and_odd_sized_frames_arrive_intact(loop_kind: str) -> None:
    rng = random.Random(7)
    sizes = [1, 2, 3, 4, 5, 1000, 65535, 65536, 65537, 1_000_003, 7, 4 * 1024 * 1024 + 1, 1]
    payloads = [rng.randbytes(s) for s in sizes]

    async def main() -> None:
        a, b = await pair()
        for p in payloads:
            a.t.send("b", p)
        await wait_until(lambda: len(b.got) == len(payloads), what="large frames")
        assert b.payloads() == payloads
        assert b.t.stats.bytes_in == sum(sizes) == a.t.stats.bytes_out
        await a.t.close()
        await b.t.close()

    run(main(), loop_kind)


def test_send_many_and_send_to_self() -> None:
    async def main() -> None:
        a, b = await pair()
        a.t.send_many([("b", b"1"), ("a", b"me"), ("b", b"2")])
        assert a.got == []  # local delivery is never re-entrant
        await wait_until(lambda: len(b.got) == 2 and len(a.got) == 1)
        assert b.payloads() == [b"1", b"2"]
        assert a.got == [("a", b"me")]
        await a.t.close()
        await b.t.close()

    run(main())


def test_callback_exception_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        got: list[bytes] = []

        def on_message(src: str, payload: bytes) -> None:
            if int(payload) % 2:
                raise ValueError("bad message")
            got.append(payload)

        a = await Node("a").start()
        b = Transport("b", on_message, valid_peer_id=valid_node_id)
        await b.listen(HOST, 0)
        addr = b.listen_address
        assert addr is not None
        a.t.set_address("b", *addr)
        for i in range(100):
            a.t.send("b", b"%d" % i)
        await wait_until(lambda: len(got) == 50)
        assert got == [b"%d" % i for i in range(0, 100, 2)]
        assert b.stats.callback_errors == 50
        assert a.t.connected("b") and a.t.stats.connects == 1 and a.t.stats.disconnects == 0
        await a.t.close()
        await b.close()

    with caplog.at_level(logging.WARNING, logger="ringkv.net.transport"):
        run(main())
    assert "on_message raised" in caplog.text
    assert caplog.text.count("on_message raised") == 1  # rate-limited


# --------------------------------------------------------------------------------------
# Authentication


def test_same_secret_talks() -> None:
    async def main() -> None:
        a, b = await pair({"secret": b"s3cret"}, {"secret": b"s3cret"})
        a.t.send("b", b"hello")
        b.t.send("a", b"hi")
        await wait_until(lambda: b.got and a.got)
        assert b.got == [("a", b"hello")] and a.got == [("b", b"hi")]
        assert a.t.stats.auth_failures == b.t.stats.auth_failures == 0
        await a.t.close()
        await b.t.close()

    run(main())


@pytest.mark.parametrize(
    ("a_secret", "b_secret", "who_fails"),
    [
        (b"one", b"two", "b"),  # different secrets: the server refuses the Hello
        (None, b"two", "b"),  # secret on the server only: refused
        (b"one", None, "a"),  # secret on the client only: the server cannot prove it
    ],
)
def test_mismatched_secrets_deliver_nothing(
    a_secret: bytes | None, b_secret: bytes | None, who_fails: str
) -> None:
    async def main() -> None:
        a, b = await pair({"secret": a_secret}, {"secret": b_secret})
        failing = a if who_fails == "a" else b
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            a.t.send("b", b"let me in")
            await asyncio.sleep(0.01)
        await wait_until(lambda: failing.t.stats.auth_failures >= 1)
        assert b.got == []
        assert not a.t.connected("b")
        assert a.t.stats.connect_failures >= 1
        assert a.t.stats.frames_out == 0 and a.t.stats.dropped > 0
        await a.t.close()
        await b.t.close()

    run(main())


def test_wrong_node_at_address_is_refused() -> None:
    async def main() -> None:
        a, b = await pair()
        a.t.set_address("c", HOST, b.port)  # b answers, but we wanted c
        a.t.send("c", b"for c")
        await wait_until(lambda: a.t.stats.peer_mismatches >= 1)
        assert b.got == [] and not a.t.connected("c")
        await a.t.close()
        await b.t.close()

    run(main())


def test_seed_peer_accepts_any_node_id() -> None:
    async def main() -> None:
        a, b = await pair({"secret": b"k"}, {"secret": b"k"})
        seed = seed_destination(f"{HOST}:{b.port}")  # a name, not a node id
        a.t.set_address(seed, HOST, b.port, any_node=True)
        a.t.send(seed, b"join me")
        await wait_until(lambda: b.got)
        assert b.got == [("a", b"join me")] and a.t.connected(seed)
        assert a.t.stats.peer_mismatches == 0
        await a.t.close()
        await b.t.close()

    run(main())


def test_a_name_is_only_a_key_when_any_node_may_answer() -> None:
    async def main() -> None:
        a, b = await pair()
        with pytest.raises(ValueError):
            a.t.set_address("seed:x:1", HOST, b.port)  # not a node id: must say any_node
        with pytest.raises(ValueError):
            a.t.set_address("", HOST, b.port, any_node=True)
        a.t.set_address("whoever is there", HOST, b.port, any_node=True)
        a.t.send("whoever is there", b"hi")
        await wait_until(lambda: b.got)
        assert b.got == [("a", b"hi")] and a.t.connected("whoever is there")
        # The same name, now required to be node c: the connection to b is dropped.
        a.t.set_address("c", HOST, b.port, any_node=True)
        a.t.send("c", b"to c?")
        await wait_until(lambda: a.t.connected("c"))
        a.t.set_address("c", HOST, b.port)
        assert not a.t.connected("c")
        a.t.send("c", b"not for b")
        await wait_until(lambda: a.t.stats.peer_mismatches >= 1)
        assert b.payloads() == [b"hi", b"to c?"]
        await a.t.close()
        await b.t.close()

    run(main())


# --------------------------------------------------------------------------------------
# Hostile input on the RPC port


def _bad_msgpack_hellos() -> list[bytes]:
    nonce = b"n" * NONCE_SIZE
    deep: object = []
    for _ in range(200):
        deep = [deep]
    return [
        mframe({"ringkv": 1}),
        mframe(["other", 2, "x", b"", nonce]),
        mframe(["ringkv", 1, "x", b"", nonce]),  # protocol version 1
        mframe(["ringkv", True, "x", b"", nonce]),
        mframe(["ringkv", 2, "bad id!", b"", nonce]),
        mframe(["ringkv", 2, "x" * 65, b"", nonce]),
        mframe(["ringkv", 2, "", b"", nonce]),
        mframe(["ringkv", 2, "x\n", b"", nonce]),
        mframe(["ringkv", 2, "x", "not bytes", nonce]),
        mframe(["ringkv", 2, "x", b"", b"short"]),
        mframe(["ringkv", 2, "x", b""]),  # the four-field Hello without a client nonce
        mframe(["ringkv", 2, 42, b"", nonce]),
        mframe(deep),
        frame(b"\xc1"),  # never-used msgpack byte
        frame(b"\x92\x01"),  # truncated array
    ]


def _garbage_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(1234)
    cases = [(f"random-{i}", rng.randbytes(rng.randint(1, 5000))) for i in range(8)]
    cases += [(f"random-small-len-{i}", b"\x00\x00\x00\x40" + rng.randbytes(64)) for i in range(4)]
    cases += [
        ("huge-length", b"\xff\xff\xff\xff" + b"x" * 100),
        ("over-handshake-limit", struct.pack(">I", 2000) + b"x" * 2000),
        ("zero-length", b"\x00\x00\x00\x00"),
        ("frame-before-hello", mframe([7, 1, "some", b"message"])),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]
    cases += [(f"bad-hello-{i}", f) for i, f in enumerate(_bad_msgpack_hellos())]
    return cases


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_garbage_on_the_port_closes_only_that_connection(loop_kind: str) -> None:
    secret = b"cluster-secret"

    async def main() -> None:
        srv = await Node("srv", secret=secret, handshake_timeout=0.3).start()
        cli = Node("cli", secret=secret)
        cli.t.set_address("srv", HOST, srv.port)
        delivered = 0

        async def legit_peer_still_served() -> None:
            nonlocal delivered
            cli.t.send("srv", b"ping %d" % delivered)
            delivered += 1
            await wait_until(lambda: len(srv.got) == delivered, what="legit delivery")
            assert srv.got[-1] == ("cli", b"ping %d" % (delivered - 1))

        await legit_peer_still_served()
        cases = _garbage_cases()
        for name, data in cases:
            reader, writer = await asyncio.open_connection(HOST, srv.port)
            writer.write(data)
            assert await closed_by_peer(reader), name
            await close_writer(writer)
            await legit_peer_still_served()
        assert srv.t.stats.bad_frames >= len(cases) - 4  # random bytes may also stall

        # A well-formed Hello with a wrong MAC.
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        challenge = await read_frame(reader)
        assert challenge[:2] == ["ringkv", 2] and len(challenge[2]) == NONCE_SIZE
        assert challenge[3] == "srv"
        nonce = os.urandom(NONCE_SIZE)
        mac = hs_proof(b"wrong", "dialer", challenge[2], nonce, "srv", "mallory")
        writer.write(mframe(["ringkv", 2, "mallory", mac, nonce]))
        writer.write(mframe([1, 2, 3]))  # pipelined data must not be delivered
        assert await closed_by_peer(reader)
        await close_writer(writer)
        assert srv.t.stats.auth_failures == 1
        # A correct MAC for another nonce (replay) fails too.
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        await read_frame(reader)
        mac = hs_proof(secret, "dialer", challenge[2], nonce, "srv", "mallory")
        writer.write(mframe(["ringkv", 2, "mallory", mac, nonce]))
        assert await closed_by_peer(reader)
        await close_writer(writer)
        assert srv.t.stats.auth_failures == 2
        await legit_peer_still_served()

        # Truncated frames then close, and connection resets.
        for data in (b"\x00", b"\x00\x00\x00\x10abc", mframe(["ringkv", 2, "x"])[:-1]):
            _, writer = await asyncio.open_connection(HOST, srv.port)
            writer.write(data)
            await writer.drain()
            await close_writer(writer)
            sock = socket.create_connection((HOST, srv.port))
            sock.sendall(data)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST
        # Slowloris: half a frame, then silence; the handshake deadline closes it.
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        writer.write(b"\x00\x00")
        t0 = time.monotonic()
        assert await closed_by_peer(reader, timeout=3.0)
        assert time.monotonic() - t0 < 2.0
        await close_writer(writer)
        await wait_until(lambda: srv.t.stats.handshake_timeouts >= 1)
        await legit_peer_still_served()
        # Nothing but the legitimate peer's connection is left open on the server.
        await wait_until(lambda: len(srv.t._conns) == 1, what="hostile connections cleaned up")
        assert all(src == "cli" for src, _ in srv.got)
        await cli.t.close()
        await srv.t.close()

    run(main(), loop_kind, timeout=60)


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 4, 5, 7, 64, 1000, 4096, 70000])
        out.append(data[pos : pos + step])
        pos += step
    return out


def test_framing_is_independent_of_chunking_and_survives_any_bytes() -> None:
    secret = b"k"

    async def main() -> None:
        got: list[tuple[str, bytes]] = []
        t = Transport(
            "srv", lambda src, p: got.append((src, p)), valid_peer_id=valid_node_id, secret=secret
        )

        def open_conn() -> tuple[InboundConnection, FakeTransport, bytes]:
            proto, ft = t._new_inbound(), FakeTransport()
            proto.connection_made(ft)
            nonce = msgpack.unpackb(bytes(ft.written[4:]))[2]
            cli_nonce = os.urandom(NONCE_SIZE)
            mac = hs_proof(secret, "dialer", nonce, cli_nonce, "srv", "cli")
            return proto, ft, mframe(["ringkv", 2, "cli", mac, cli_nonce])

        for seed in range(60):
            rng = random.Random(seed)
            proto, ft, hello = open_conn()
            frames = [
                rng.randbytes(rng.choice([1, 2, 3, 4, 5, 100, 5000, 100_000])) for _ in range(30)
            ]
            got.clear()
            for piece in chunks(hello + b"".join(frame(f) for f in frames), rng):
                proto.data_received(piece)
            assert not ft.aborted and got == [("cli", f) for f in frames], seed
            proto.connection_lost(None)

        for seed in range(400):
            rng = random.Random(seed)
            proto, ft, hello = open_conn()
            garbage = rng.randbytes(rng.randint(0, 3000))
            if seed % 4 == 0:  # garbage before or after a valid Hello
                garbage = hello + garbage
            elif seed % 4 == 1:
                garbage = struct.pack(">I", rng.randint(1, 50)) + garbage
            got.clear()
            for piece in chunks(garbage, rng):
                proto.data_received(piece)  # must never raise
            assert all(src == "cli" for src, _ in got)
            if seed % 4:
                assert got == []  # nothing is delivered without a valid Hello
            proto.connection_lost(ConnectionResetError())
        assert not t._conns
        await t.close()

    run(main())


def test_oversized_frame_from_authenticated_peer_closes_connection() -> None:
    async def main() -> None:
        a, b = await pair(b_kw={"max_frame": 1000})
        a.t.send("b", b"x" * 10)
        a.t.send("b", b"y" * 2000)  # over b's limit
        await wait_until(lambda: b.t.stats.bad_frames == 1)
        assert b.payloads() == [b"x" * 10]
        await wait_until(lambda: not a.t.connected("b"))
        # The sender reconnects and carries on.
        deadline = time.monotonic() + 5
        while not b.got[1:] and time.monotonic() < deadline:
            a.t.send("b", b"again")
            await asyncio.sleep(0.02)
        assert b.payloads()[1] == b"again"
        await a.t.close()
        await b.t.close()

    run(main())


# --------------------------------------------------------------------------------------
# A hostile or confused server, seen from the connecting side


class FakeServer:
    """A hand-written peer: ``handler(reader, writer, stop)`` plays the accepting side."""

    def __init__(
        self,
        handler: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]
        ],
    ) -> None:
        self.handler = handler
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        with contextlib.suppress(Exception):
            await self.handler(reader, writer, self.stop)
        await close_writer(writer)

    async def start(self) -> FakeServer:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.stop.set()  # handlers return normally (a cancelled one upsets asyncio.streams)
        assert self.server is not None
        self.server.close()
        await asyncio.gather(*self.tasks)
        await self.server.wait_closed()


async def idle(stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 10)


def _server_behaviours() -> list[tuple[str, bytes | None, str]]:
    """(name, what to send as the Challenge/Accept, which counter must move)."""
    return [
        ("silent", None, "connect_failures"),
        ("garbage", b"\xff\xff\xff\xff garbage", "bad_frames"),
        ("bad-challenge", mframe(["ringkv", 2, b"short", "b"]), "bad_frames"),
        ("bad-accept", b"ACCEPT:" + mframe(["ringkv", 2, "b", "not bytes"]), "bad_frames"),
        ("wrong-proof", b"ACCEPT:" + mframe(["ringkv", 2, "b", b"\x00" * 32]), "auth_failures"),
        ("extra-frame", b"ACCEPT-OK+", "bad_frames"),
    ]


@pytest.mark.parametrize(("name", "reply", "counter"), _server_behaviours())
def test_client_survives_hostile_server(name: str, reply: bytes | None, counter: str) -> None:
    secret = b"k"

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        if reply is None:
            await idle(stop)
            return
        if not reply.startswith(b"ACCEPT"):
            writer.write(reply)
            await idle(stop)
            return
        nonce = os.urandom(NONCE_SIZE)
        writer.write(mframe(["ringkv", 2, nonce, "b"]))
        hello = await read_frame(reader)
        if reply == b"ACCEPT-OK+":
            proof = hs_proof(secret, "listener", nonce, hello[4], "b", hello[2])
            writer.write(mframe(["ringkv", 2, "b", proof]) + mframe(["unexpected"]))
        else:
            writer.write(reply[len(b"ACCEPT:") :])
        await idle(stop)

    async def main() -> None:
        server = await FakeServer(handler).start()
        a = Node("a", secret=secret, connect_timeout=0.3)
        a.t.set_address("b", HOST, server.port)
        for i in range(10):
            a.t.send("b", b"%d" % i)
        await wait_until(lambda: getattr(a.t.stats, counter) >= 1, what=counter)
        await wait_until(lambda: a.t.stats.connect_failures + a.t.stats.disconnects >= 1)
        assert not a.t.connected("b") or name == "extra-frame"
        a.t.send("b", b"more")  # in backoff: dropped, never raises
        await a.t.close()
        await server.close()

    run(main())


# --------------------------------------------------------------------------------------
# Reconnects, unreachable peers, address changes, flow control


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_reconnect_after_receiver_restarts(loop_kind: str) -> None:
    async def main() -> None:
        a, b = await pair()
        port = b.port
        a.t.send("b", b"before")
        await wait_until(lambda: b.got)
        await b.t.close()
        await wait_until(lambda: not a.t.connected("b"))
        a.t.send("b", b"while down")  # dropped or refused; must not raise
        b2 = await Node("b").start(port)
        i = 0
        while not b2.got:
            a.t.send("b", b"after %d" % i)
            i += 1
            await asyncio.sleep(0.02)
            assert i < 250, "never reconnected"
        first = int(b2.got[0][1].split()[1])
        for j in range(i, i + 1000):
            a.t.send("b", b"after %d" % j)
        await wait_until(lambda: b2.got[-1][1] == b"after %d" % (i + 999))
        assert b2.payloads() == [b"after %d" % j for j in range(first, i + 1000)]
        assert a.t.stats.disconnects == 1
        await a.t.close()
        await b2.t.close()

    run(main(), loop_kind)


def test_unreachable_peer_does_not_block_and_is_retried() -> None:
    async def main() -> None:
        port = free_port()
        a = Node("a", max_queue_bytes=10_000)
        a.t.set_address("b", HOST, port)
        t0 = time.perf_counter()
        for i in range(5000):
            a.t.send("b", b"%04d" % i)  # the first ~1250 are queued, the rest dropped
        assert time.perf_counter() - t0 < 0.5
        await wait_until(lambda: a.t.stats.connect_failures >= 1)
        assert a.t.stats.dropped == 5000 and a.t.stats.frames_out == 0
        await asyncio.sleep(0.3)  # a few backoff rounds while sends keep coming
        for _ in range(10):
            a.t.send("b", b"x")
            await asyncio.sleep(0.03)
        assert a.t.stats.connect_failures >= 2
        b = await Node("b").start(port)
        t0 = time.monotonic()
        while not b.got:
            a.t.send("b", b"up?")
            await asyncio.sleep(0.02)
            assert time.monotonic() - t0 < 3.0, "not retried after the peer came up"
        assert b.got[0] == ("a", b"up?")
        await a.t.close()
        await b.t.close()

    run(main())


def test_send_without_address_and_after_close() -> None:
    async def main() -> None:
        a = Node("a")
        a.t.send("nobody", b"x")
        assert a.t.stats.dropped == 1
        a.t.send("a", b"")  # empty frames cannot be framed: dropped
        assert a.t.stats.dropped == 2
        await a.t.close()
        await a.t.close()  # idempotent
        a.t.set_address("b", HOST, 1)
        a.t.send("b", b"x")
        assert a.t.stats.dropped == 3 and a.got == []
        with pytest.raises(ValueError):
            Transport("bad id", a.on_message, valid_peer_id=valid_node_id)
        with pytest.raises(ValueError):
            a.t.set_address("", HOST, 1)

    run(main())


def test_address_change_moves_the_connection() -> None:
    async def main() -> None:
        a = Node("a")
        b1 = await Node("b").start()
        b2 = await Node("b").start()
        a.t.set_address("b", HOST, b1.port)
        a.t.send("b", b"one")
        await wait_until(lambda: b1.got)
        a.t.set_address("b", HOST, b2.port)
        assert not a.t.connected("b")
        a.t.send("b", b"two")
        await wait_until(lambda: b2.got)
        assert b1.payloads() == [b"one"] and b2.payloads() == [b"two"]
        await a.t.close()
        await b1.t.close()
        await b2.t.close()

    run(main())


def test_redial_drops_the_connection_and_the_next_frame_reconnects() -> None:
    async def main() -> None:
        a = Node("a")
        b = await Node("b").start()
        a.t.set_address("b", HOST, b.port)
        a.t.send("b", b"one")
        await wait_until(lambda: b.got)
        assert a.t.connected("b")
        a.t.redial("b")
        assert not a.t.connected("b")
        a.t.redial("b")  # nothing to drop: harmless
        a.t.send("b", b"two")
        await wait_until(lambda: len(b.got) == 2)
        assert b.payloads() == [b"one", b"two"] and a.t.connected("b")
        await a.t.close()
        await b.t.close()

    run(main())


def test_high_water_mark_drops_instead_of_growing() -> None:
    high_water = 256 * 1024

    async def stuck_server(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        writer.write(mframe(["ringkv", 2, os.urandom(NONCE_SIZE), "b"]))
        await read_frame(reader)
        writer.write(mframe(["ringkv", 2, "b", b""]))
        tr = writer.transport
        assert isinstance(tr, asyncio.Transport)
        tr.pause_reading()  # never read again
        await idle(stop)

    async def main() -> None:
        server = await FakeServer(stuck_server).start()
        a = Node("a", high_water=high_water)
        a.t.set_address("b", HOST, server.port)
        a.t.send("b", b"x")
        await wait_until(lambda: a.t.connected("b"))
        chunk = b"z" * 65536
        for _ in range(2000):  # 125 MiB offered
            for _ in range(8):
                a.t.send("b", chunk)
            await asyncio.sleep(0)
            if a.t.stats.dropped > 100:
                break
        assert a.t.stats.dropped > 100
        peer = a.t._peers["b"]
        assert peer.conn is not None and peer.conn.is_open()
        assert peer.conn.write_buffer_size() <= high_water + 8 * len(chunk)
        assert a.t.connected("b")
        await a.t.close()
        await server.close()

    run(main())
