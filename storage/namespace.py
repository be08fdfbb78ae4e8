"""Stored keys of buckets and data types: one byte string per (bucket, kind, user key).

Everything below the HTTP layer (the ring, replication, hints, anti-entropy, transfers)
treats a key as opaque bytes. Buckets and data types therefore live entirely in the
stored key, so that a counter or a key of another bucket replicates, hints, repairs and
moves exactly like a plain value::

    plain key of bucket "default"        user key, as it is           (most keys)
    any other (bucket, kind, key)        0x00 kind len(bucket) bucket key

`kind` is one byte: ``k`` a value (`/kv/`), ``c`` a counter, ``s`` a set, ``m`` cluster
metadata (bucket properties, `PROPS_KEY`).

Invariants:

- The encoding is injective: a user key of bucket ``default`` that itself starts with
  0x00 takes the long form too, so no plain key can collide with any other key, and
  `split_internal_key` inverts `internal_key`.
- User keys are 1..`MAX_USER_KEY` bytes and bucket names match `BUCKET_PATTERN`, so a
  stored key is at most `MAX_STORED_KEY` bytes; every layer that checks key lengths
  checks against that.
- The keys of one (bucket, kind) other than the plain ones share the prefix
  `kind_prefix(bucket, kind)`, so a scan can filter them without decoding.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BUCKET_PATTERN",
    "COUNTER",
    "DEFAULT_BUCKET",
    "KINDS",
    "KV",
    "MAX_BUCKET_LEN",
    "MAX_STORED_KEY",
    "MAX_USER_KEY",
    "META",
    "PROPS_KEY",
    "SET",
    "belongs",
    "internal_key",
    "is_bucket_name",
    "split_internal_key",
]

MAX_USER_KEY: Final = 1024
MAX_BUCKET_LEN: Final = 64
# 0x00, the kind, the bucket's length, the bucket, the user key.
MAX_STORED_KEY: Final = 3 + MAX_BUCKET_LEN + MAX_USER_KEY
DEFAULT_BUCKET: Final = "default"
BUCKET_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

KV: Final = "kv"
COUNTER: Final = "counter"
SET: Final = "set"
META: Final = "meta"
KINDS: Final = {KV: b"k", COUNTER: b"c", SET: b"s", META: b"m"}
_KIND_OF_BYTE: Final = {code[0]: name for name, code in KINDS.items()}
_ESCAPE: Final = 0


def is_bucket_name(name: str) -> bool:
    return BUCKET_PATTERN.fullmatch(name) is not None


def _prefix(bucket: str, kind: str) -> bytes:
    raw = bucket.encode("ascii")
    return bytes([_ESCAPE]) + KINDS[kind] + bytes([len(raw)]) + raw


def internal_key(bucket: str, kind: str, key: bytes) -> bytes:
    """The stored key of user key `key` of kind `kind` in `bucket`.

    Raises ValueError on a bad bucket name, an unknown kind or a key outside
    1..`MAX_USER_KEY` bytes (`META` keys may be empty: the metadata itself).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if not is_bucket_name(bucket):
        raise ValueError(f"bad bucket name {bucket!r}")
    if len(key) > MAX_USER_KEY or (not key and kind != META):
        raise ValueError(f"keys are 1..{MAX_USER_KEY} bytes, got {len(key)}")
    if kind == KV and bucket == DEFAULT_BUCKET and key[0] != _ESCAPE:
        return key
    return _prefix(bucket, kind) + key


def split_internal_key(raw: bytes) -> tuple[str, str, bytes]:
    """``(bucket, kind, user key)`` of a stored key; ValueError if it is not one."""
    if not raw:
        raise ValueError("empty key")
    if raw[0] != _ESCAPE:
        return DEFAULT_BUCKET, KV, raw
    if len(raw) < 4:
        raise ValueError("malformed stored key")
    kind = _KIND_OF_BYTE.get(raw[1])
    size = raw[2]
    bucket_raw = raw[3:3 + size]
    if kind is None or len(bucket_raw) != size:
        raise ValueError("malformed stored key")
    bucket = bucket_raw.decode("ascii", "replace")
    if not is_bucket_name(bucket):
        raise ValueError("malformed stored key")
    return bucket, kind, raw[3 + size:]


def belongs(raw: bytes, bucket: str, kind: str) -> bool:
    """True when stored key `raw` is a key of `kind` in `bucket` (no decoding)."""
    if kind == KV and bucket == DEFAULT_BUCKET and raw[:1] != b"\x00":
        return True
    prefix = _prefix(bucket, kind)
    return len(raw) > len(prefix) and raw.startswith(prefix)


# The one key that holds every bucket's properties (`ringkv.core.buckets`).
PROPS_KEY: Final = _prefix(DEFAULT_BUCKET, META) + b"bucket-props"
