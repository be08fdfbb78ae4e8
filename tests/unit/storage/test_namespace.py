"""Stored keys of buckets and data types: injective, invertible, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.keys import MAX_KEY_LEN, data_key
from storage.namespace import (
    COUNTER,
    DEFAULT_BUCKET,
    KV,
    MAX_STORED_KEY,
    META,
    PROPS_KEY,
    SET,
    belongs,
    internal_key,
    split_internal_key,
)

BUCKETS = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
KINDS = st.sampled_from([KV, COUNTER, SET])
KEYS = st.binary(min_size=1, max_size=1024)


def test_plain_keys_of_the_default_bucket_are_stored_as_they_are() -> None:
    # Data written before buckets existed keeps its stored key.
    assert internal_key(DEFAULT_BUCKET, KV, b"cart") == b"cart"
    assert split_internal_key(b"cart") == (DEFAULT_BUCKET, KV, b"cart")


def test_a_default_key_starting_with_the_escape_byte_takes_the_long_form() -> None:
    raw = internal_key(DEFAULT_BUCKET, KV, b"\x00c\x07default")
    assert raw != b"\x00c\x07default"
    assert split_internal_key(raw) == (DEFAULT_BUCKET, KV, b"\x00c\x07default")


@given(BUCKETS, KINDS, KEYS)
def test_split_inverts_internal_key(bucket: str, kind: str, key: bytes) -> None:
    raw = internal_key(bucket, kind, key)
    assert split_internal_key(raw) == (bucket, kind, key)
    assert belongs(raw, bucket, kind)
    assert len(raw) <= MAX_STORED_KEY == MAX_KEY_LEN
    data_key(0, raw)  # every stored key fits the data table's key layout


@given(BUCKETS, KINDS, KEYS, BUCKETS, KINDS, KEYS)
def test_distinct_triples_never_share_a_stored_key(b1: str, k1: str, key1: bytes,
                                                   b2: str, k2: str, key2: bytes) -> None:
    if (b1, k1, key1) != (b2, k2, key2):
        assert internal_key(b1, k1, key1) != internal_key(b2, k2, key2)


def test_keys_of_other_buckets_and_kinds_do_not_belong() -> None:
    assert not belongs(internal_key("b", COUNTER, b"x"), "b", KV)
    assert not belongs(internal_key("b", KV, b"x"), "bb", KV)
    assert not belongs(internal_key("b", KV, b"x"), DEFAULT_BUCKET, KV)
    assert not belongs(PROPS_KEY, DEFAULT_BUCKET, KV)
    assert split_internal_key(PROPS_KEY)[1] == META


@pytest.mark.parametrize("bad", [
    lambda: internal_key("no spaces", KV, b"k"),
    lambda: internal_key("b" * 65, KV, b"k"),
    lambda: internal_key("", KV, b"k"),
    lambda: internal_key("b", KV, b""),
    lambda: internal_key("b", KV, b"k" * 1025),
    lambda: internal_key("b", "table", b"k"),
    lambda: split_internal_key(b""),
    lambda: split_internal_key(b"\x00k"),
    lambda: split_internal_key(b"\x00z\x01bk"),
    lambda: split_internal_key(b"\x00k\x09b"),
    lambda: split_internal_key(b"\x00k\x02b!k"),
])
def test_malformed_input_raises_value_error(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        bad()
