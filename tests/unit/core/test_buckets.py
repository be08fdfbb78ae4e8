"""Bucket properties: validation, defaults, hostile tables, per-bucket conflict mode."""

from __future__ import annotations

import pytest

from ringkv.core.buckets import BucketProps, Buckets, decode_props, encode_props, parse_props_update
from storage.namespace import COUNTER, DEFAULT_BUCKET, KV, internal_key
from storage.versions import EMPTY_CONTEXT, update


def _buckets() -> Buckets:
    return Buckets(lambda: (3, 2, 2), "siblings", 100)


def _two_siblings():  # type: ignore[no-untyped-def]
    s, _ = update(None, EMPTY_CONTEXT, ("a", 1, 0), b"x", "text/plain", 1)
    s, _ = update(s, EMPTY_CONTEXT, ("b", 1, 0), b"y", "text/plain", 2)
    return s


def test_a_bucket_never_configured_has_the_cluster_defaults() -> None:
    assert _buckets().effective("carts") == {"n": 3, "r": 2, "w": 2, "ttl": None,
                                             "conflict": "siblings", "max_siblings": 100}


def test_updates_are_validated_and_name_the_bad_property() -> None:
    assert parse_props_update({"r": 1, "ttl": 60}, 3) == {"r": 1, "ttl": 60}
    assert parse_props_update({"ttl": None}, 3) == {"ttl": None}
    for doc, word in [({"r": 4}, "r"), ({"w": 0}, "w"), ({"r": True}, "r"),
                      ({"ttl": -1}, "ttl"), ({"conflict": "merge"}, "conflict"),
                      ({"max_siblings": 0}, "max_siblings"), ({"n": 5}, "unknown"),
                      ({}, "JSON object"), ([1], "JSON object")]:
        with pytest.raises(ValueError, match=word):
            parse_props_update(doc, 3)


def test_properties_round_trip_and_override_defaults() -> None:
    b = _buckets()
    props = b.with_changes("cache", {"r": 1, "ttl": 60, "conflict": "lww"})
    assert decode_props(encode_props(props), 3) == props
    b.set("cache", props)
    assert b.effective("cache")["r"] == 1 and b.effective("cache")["w"] == 2
    assert b.effective("cache")["ttl"] == 60
    b.set("cache", BucketProps())  # every property cleared: back to the defaults
    assert b.effective("cache")["r"] == 2


def test_a_hostile_table_is_skipped_entry_by_entry() -> None:
    b = _buckets()
    good = encode_props(BucketProps(r=1))
    assert b.load({"ok": good, "garbage": b"\xc1\xff", "bad-r": encode_props(BucketProps(r=9)),
                   "list": b"\x91\x01"})
    assert b.effective("ok")["r"] == 1
    assert b.effective("bad-r")["r"] == 2 and b.effective("garbage")["r"] == 2
    assert not b.load(b.table())  # the same table again changes nothing


def test_lww_applies_to_values_of_its_bucket_only_never_to_counters() -> None:
    b = _buckets()
    b.set("last", BucketProps(conflict="lww"))
    state = _two_siblings()
    assert len(b.resolve(internal_key("last", KV, b"k"), state).siblings) == 1
    assert len(b.resolve(internal_key("other", KV, b"k"), state).siblings) == 2
    assert len(b.resolve(internal_key("last", COUNTER, b"k"), state).siblings) == 2
    b.set(DEFAULT_BUCKET, BucketProps(conflict="lww"))
    assert len(b.resolve(b"plain", state).siblings) == 1


def test_max_siblings_is_the_buckets_or_the_nodes() -> None:
    b = _buckets()
    b.set("tight", BucketProps(max_siblings=3))
    assert b.max_siblings_for(internal_key("tight", KV, b"k")) == 3
    assert b.max_siblings_for(b"plain") == 100
