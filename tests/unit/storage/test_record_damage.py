"""A damaged key record on disk is refused with ValueError, never another exception and
never a state that breaks later: found by the decoder fuzz (`scripts/fuzz decoders`)."""

from __future__ import annotations

import msgpack
import pytest

from storage.record import Record, decode_record, encode_record
from storage.versions import EMPTY_CONTEXT, update

DAMAGED = [
    b"\x93\x01\x00\x90",  # [1, 0, []]: versions not a list, actor empty
    b"\x93\x01\x93\x90\xa0\xa0\xc0",  # [1, [[], "", ""], nil]: strings for lists
    # a vector entry whose node id is a number: sorted with the others, it would fail
    # in a merge or an encode long after the read
    msgpack.packb([1, [[["n1", 1, 1, 1], [7, 1, 1, 1]], [], []], None]),
    msgpack.packb([1, [[], [], []], ["n1", "x", 1]]),  # an actor of the wrong shape
    b"\xc1",  # not msgpack at all
    b"",
]


@pytest.mark.parametrize("raw", DAMAGED)
def test_a_damaged_record_is_refused_with_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="corrupt record"):
        decode_record(raw)


def test_a_sound_record_reads_back_the_same() -> None:
    versions, _ = update(None, EMPTY_CONTEXT, ("n1", 5, 1), b"v", "text/plain", 1)
    record = Record(versions, ("n1", 5, 1))
    assert decode_record(encode_record(record)) == record
