"""The HTTP edge of a real node on loopback: sizes, malformed input, slow and idle clients.

- Every context a node returns can be sent back as X-Context, up to the largest a
  write hands back (far beyond aiohttp's default 8,190-byte header field); one larger
  than the node decodes is a 400 JSON error that does not echo it, and changes nothing.
- aiohttp's own refusals (a garbled request line) are JSON and do not echo the input.
- A request head that never completes is cut after the header timeout; a body that
  never completes gets 408 after the body timeout; an idle keep-alive connection is
  closed after the keep-alive timeout; connections past the cap are refused.
"""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp

from storage.limits import MAX_WRITE_CONTEXT_CHARS
from storage.versions import (
    MAX_CONTEXT_CHARS,
    MAX_DOT_COUNTER,
    Context,
    decode_context,
    encode_context,
)
from tests.unit.server.live import base_url, live_node, open_raw, read_until_closed

AIOHTTP_FIELD_DEFAULT = 8190
BOUND = 5.0  # seconds: far above every configured timeout below, far below aiohttp's own


def _context_of_about(chars: int) -> str:
    """A valid context whose encoding is as long as possible without passing `chars`."""

    def ctx(entries: int) -> str:
        return encode_context(Context(
            {("a" * 56 + f"{i:08d}", (1 << 63) + i, (1 << 63) + i): MAX_DOT_COUNTER - i
             for i in range(entries)}, frozenset()))

    low, high = 1, 8192
    while low < high:
        mid = (low + high + 1) // 2
        if len(ctx(mid)) <= chars:
            low = mid
        else:
            high = mid - 1
    return ctx(low)


def _status_and_body(raw: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def test_a_context_of_the_largest_size_round_trips() -> None:
    # The largest context a write may hand back, less room for the dot it adds.
    sent = _context_of_about(MAX_WRITE_CONTEXT_CHARS - 1024)
    assert len(sent) > AIOHTTP_FIELD_DEFAULT

    async def go() -> None:
        # aiohttp's client has the same 8,190-byte default for the answer's headers.
        async with live_node() as runtime, \
                aiohttp.ClientSession(max_field_size=MAX_CONTEXT_CHARS) as http:
            url = f"{base_url(runtime)}/kv/big"
            async with http.put(url, data=b"v1", headers={"X-Context": sent}) as resp:
                assert resp.status == 204, await resp.text()
                back = resp.headers["X-Context"]
            assert len(back) > len(sent)
            assert decode_context(back).descends(decode_context(sent))
            async with http.put(url, data=b"v2", headers={"X-Context": back}) as resp:
                assert resp.status == 204, await resp.text()
            async with http.get(url) as resp:
                assert resp.status == 200
                assert await resp.read() == b"v2"  # v1 superseded: one value, no siblings
                again = resp.headers["X-Context"]
            async with http.delete(url, headers={"X-Context": again}) as resp:
                assert resp.status == 204, await resp.text()

    asyncio.run(go())


def test_an_oversize_context_is_a_400_json_error_that_does_not_echo_it() -> None:
    marker = "Zq" * 64
    for size in (MAX_CONTEXT_CHARS + 1, 4 * MAX_CONTEXT_CHARS):
        oversize = (marker * (size // len(marker) + 1))[:size]

        async def go(oversize: str = oversize) -> None:
            async with live_node() as runtime:
                reader, writer = await open_raw(runtime)
                writer.write(b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                             b"Connection: close\r\n"
                             + b"X-Context: " + oversize.encode() + b"\r\n\r\nv")
                await writer.drain()
                raw = await read_until_closed(reader, BOUND)
                writer.close()
                status, head, body = _status_and_body(raw)
                assert status == 400, raw[:300]
                assert b"application/json" in head
                assert "error" in json.loads(body)
                assert marker.encode()[:16] not in raw
                async with aiohttp.ClientSession() as http, \
                        http.get(f"{base_url(runtime)}/kv/k") as resp:
                    assert resp.status == 404  # nothing was written

        asyncio.run(go())


def test_a_garbled_request_is_a_json_400_that_does_not_echo_it() -> None:
    async def go() -> None:
        async with live_node() as runtime:
            for garbage in (b"GET /kv/k HTTP/1.1\r\nBad\x01Header<script>: 1\r\n\r\n",
                            b"G<script>ET / HTTP/1.1\r\n\r\n"):
                reader, writer = await open_raw(runtime)
                writer.write(garbage)
                await writer.drain()
                raw = await read_until_closed(reader, BOUND)
                writer.close()
                status, head, body = _status_and_body(raw)
                assert status == 400, raw[:300]
                assert b"application/json" in head
                assert "error" in json.loads(body)
                assert b"<script>" not in raw

    asyncio.run(go())


def test_a_half_sent_request_head_is_cut_after_the_header_timeout() -> None:
    async def go() -> None:
        async with live_node(http_header_timeout=0.3) as runtime:
            reader, writer = await open_raw(runtime)
            writer.write(b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            raw = await read_until_closed(reader, BOUND)  # TimeoutError if never cut
            writer.close()
            if raw:
                assert _status_and_body(raw)[0] == 408
            # A connection that never sends a byte is cut the same way.
            reader, writer = await open_raw(runtime)
            await read_until_closed(reader, BOUND)
            writer.close()
            assert runtime.edge.head_timeouts == 2

    asyncio.run(go())


def test_the_rest_of_a_refused_large_body_is_not_taken_for_a_request_head() -> None:
    async def go() -> None:
        async with live_node() as runtime, aiohttp.ClientSession() as http:
            url = f"{base_url(runtime)}/kv/large"
            limit = runtime.config.max_value_bytes
            async with http.put(url, data=io.BytesIO(b"x" * (limit + 1))) as resp:
                assert resp.status == 413
            async with http.put(url, data=io.BytesIO(b"y" * limit)) as resp:
                assert resp.status == 204, await resp.text()
            assert runtime.edge.heads_too_large == 0

    asyncio.run(go())


def test_a_half_sent_body_gets_408_after_the_body_timeout() -> None:
    async def go() -> None:
        async with live_node(http_body_timeout=0.3) as runtime:
            reader, writer = await open_raw(runtime)
            writer.write(b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            await writer.drain()
            raw = await read_until_closed(reader, BOUND)
            writer.close()
            status, _, body = _status_and_body(raw)
            assert status == 408, raw[:300]
            assert "error" in json.loads(body)

    asyncio.run(go())


def test_an_idle_keep_alive_connection_is_closed() -> None:
    async def go() -> None:
        async with live_node(http_keepalive_timeout=0.3) as runtime:
            reader, writer = await open_raw(runtime)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            raw = await read_until_closed(reader, BOUND)  # the answer, then the close
            writer.close()
            assert _status_and_body(raw)[0] == 200

    asyncio.run(go())


def test_connections_past_the_cap_are_refused() -> None:
    async def go() -> None:
        async with live_node(max_http_connections=2, http_header_timeout=60.0) as runtime:
            held = [await open_raw(runtime) for _ in range(2)]
            await asyncio.sleep(0)  # let the server take them
            reader, writer = await open_raw(runtime)
            raw = await read_until_closed(reader, BOUND)  # closed at once
            writer.close()
            if raw:
                assert _status_and_body(raw)[0] == 503
            assert runtime.edge.refused == 1
            for _, w in held:
                w.close()
            async with asyncio.timeout(BOUND):
                while runtime.edge.active:
                    await asyncio.sleep(0.01)
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{base_url(runtime)}/health") as resp:
                assert resp.status == 200

    asyncio.run(go())
