"""Key layout of the ``data`` and ``hints`` tables.

::

    data key   token (8 bytes, big endian) + key
    hint key   token (8) + len(key) (2 bytes, big endian) + key + target (utf-8)

Invariants:

- A token is an unsigned 64-bit ring position (``ring.token``), written big endian and
  fixed width, so byte order of data keys is token order and the keys of a token range
  form one or two contiguous scans (``token_range_bounds``).
- Keys are stored keys (`storage.namespace`: a user key, or a bucket's or data
  type's key), 1..`MAX_KEY_LEN` bytes; every function here checks its inputs and raises
  ``ValueError`` on a malformed key, so a bad key never reaches disk.
- The key length in a hint key makes ``hint_prefix(token, key)`` match the hints of
  exactly that key: a key that merely starts with ``key`` has a different length field.
  Hints of one token sort together, so hint replay can also walk a token range.
- ``split_*`` inverts ``*_key``: ``split_data_key(data_key(t, k)) == (t, k)`` and
  ``split_hint_key(hint_key(t, k, n)) == (t, k, n)``.
"""

from __future__ import annotations

from typing import Final

from storage.namespace import MAX_STORED_KEY

__all__ = [
    "MAX_KEY_LEN",
    "MAX_TOKEN",
    "TOKEN_BYTES",
    "data_key",
    "hint_key",
    "hint_prefix",
    "prefix_end",
    "split_data_key",
    "split_hint_key",
    "token_range_bounds",
]

TOKEN_BYTES: Final = 8
MAX_TOKEN: Final = 2**64 - 1
MAX_KEY_LEN: Final = MAX_STORED_KEY
_LEN_BYTES: Final = 2


def _token(token: int) -> bytes:
    if not 0 <= token <= MAX_TOKEN:
        raise ValueError(f"token out of range: {token}")
    return token.to_bytes(TOKEN_BYTES, "big")


def _check_key(key: bytes) -> None:
    if not 1 <= len(key) <= MAX_KEY_LEN:
        raise ValueError(f"keys are 1..{MAX_KEY_LEN} bytes, got {len(key)}")


def data_key(token: int, key: bytes) -> bytes:
    """The ``data`` table key of ``key`` (whose ring token is ``token``)."""
    _check_key(key)
    return _token(token) + key


def split_data_key(raw: bytes) -> tuple[int, bytes]:
    """``(token, key)`` of a data key."""
    if not TOKEN_BYTES < len(raw) <= TOKEN_BYTES + MAX_KEY_LEN:
        raise ValueError(f"not a data key: {raw[:32]!r}")
    return int.from_bytes(raw[:TOKEN_BYTES], "big"), raw[TOKEN_BYTES:]


def hint_prefix(token: int, key: bytes) -> bytes:
    """The common prefix of every hint of ``key``; scan ``[p, prefix_end(p))``."""
    _check_key(key)
    return _token(token) + len(key).to_bytes(_LEN_BYTES, "big") + key


def hint_key(token: int, key: bytes, target: str) -> bytes:
    """The ``hints`` table key of a hint for ``key`` meant for node ``target``."""
    if not target:
        raise ValueError("hint target must not be empty")
    return hint_prefix(token, key) + target.encode("utf-8")


def split_hint_key(raw: bytes) -> tuple[int, bytes, str]:
    """``(token, key, target)`` of a hint key."""
    head = TOKEN_BYTES + _LEN_BYTES
    if len(raw) < head:
        raise ValueError(f"not a hint key: {raw[:32]!r}")
    n = int.from_bytes(raw[TOKEN_BYTES:head], "big")
    if not 1 <= n <= MAX_KEY_LEN or len(raw) <= head + n:
        raise ValueError(f"not a hint key: {raw[:32]!r}")
    token = int.from_bytes(raw[:TOKEN_BYTES], "big")
    return token, raw[head : head + n], raw[head + n :].decode("utf-8")


def prefix_end(prefix: bytes) -> bytes | None:
    """The least byte string above every string starting with ``prefix``.

    ``None`` when there is none (``prefix`` is empty or all ``0xff``): scan to the end.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def token_range_bounds(
    start_exclusive: int, end_inclusive: int
) -> list[tuple[bytes, bytes | None]]:
    """Data-key scan ranges ``[lo, hi)`` (``hi=None``: to the end) for tokens in a range.

    Covers every data key whose token ``t`` has ``start_exclusive < t <= end_inclusive``
    on the ring. ``start_exclusive >= end_inclusive`` wraps past ``2**64 - 1``;
    ``start_exclusive == end_inclusive`` is the whole ring (the range a single token
    owns). Ranges are returned in increasing key order and do not overlap.
    """
    _token(start_exclusive)
    _token(end_inclusive)
    hi = None if end_inclusive == MAX_TOKEN else _token(end_inclusive + 1)
    if start_exclusive < end_inclusive:
        return [(_token(start_exclusive + 1), hi)]
    if start_exclusive == end_inclusive:
        return [(_token(0), None)]
    ranges: list[tuple[bytes, bytes | None]] = [(_token(0), hi)]
    if start_exclusive < MAX_TOKEN:
        ranges.append((_token(start_exclusive + 1), None))
    return ranges
