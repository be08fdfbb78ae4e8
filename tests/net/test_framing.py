"""Tests for ringkv.net.framing: the frame decoder, fed streams cut every which way."""

from __future__ import annotations

import random
import struct

import pytest

from ringkv.net.framing import (
    HANDSHAKE_MAX_FRAME,
    MAX_FRAME_LIMIT,
    FrameDecoder,
    encode_frame,
    frame_error,
)


def test_encode_frame_is_a_big_endian_length_then_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert HANDSHAKE_MAX_FRAME == 1024 and MAX_FRAME_LIMIT == 2**32 - 1


def test_frames_come_out_whole_and_in_order_however_the_stream_is_cut() -> None:
    payloads = [b"a", b"bb", b"x" * 70000, b"c" * 3, b"d" * 1000]
    stream = b"".join(encode_frame(p) for p in payloads)
    for cut in range(0, len(stream) + 1, 997):
        dec = FrameDecoder(100_000)
        assert dec.feed(stream[:cut]) + dec.feed(stream[cut:]) == payloads, cut
    for seed in range(20):
        rng = random.Random(seed)
        dec = FrameDecoder(100_000)
        got: list[bytes] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 4, 5, 64, 4096, 70000])
            got += dec.feed(stream[pos : pos + step])
            pos += step
        assert got == payloads and dec.error is None


def test_small_stream_split_at_every_offset() -> None:
    stream = encode_frame(b"one") + encode_frame(b"two!")
    for cut in range(len(stream) + 1):
        dec = FrameDecoder(10)
        assert dec.feed(stream[:cut]) + dec.feed(stream[cut:]) == [b"one", b"two!"]


@pytest.mark.parametrize(
    ("header", "why"), [(0, "frame length 0 (limit 10)"), (11, "frame length 11 (limit 10)")]
)
def test_a_bad_length_stops_the_decoder_after_the_good_frames(header: int, why: str) -> None:
    dec = FrameDecoder(10)
    assert dec.feed(encode_frame(b"ok") + struct.pack(">I", header)) == [b"ok"]
    assert dec.error == why
    assert dec.feed(encode_frame(b"later")) == []  # dead from now on


def test_an_oversized_length_is_refused_before_its_payload_arrives() -> None:
    dec = FrameDecoder(HANDSHAKE_MAX_FRAME)
    assert dec.feed(b"\xff\xff") == [] and dec.error is None
    assert dec.feed(b"\xff\xff") == [] and dec.error is not None
    assert frame_error(1, 1) is None and frame_error(2, 1) is not None


def test_the_limit_may_change_between_feeds() -> None:
    dec = FrameDecoder(4)
    assert dec.feed(encode_frame(b"tiny")) == [b"tiny"]
    dec.limit = 100
    assert dec.feed(encode_frame(b"x" * 50)) == [b"x" * 50]
