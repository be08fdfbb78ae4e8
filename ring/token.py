"""Keys to tokens: the one hash every node must agree on.

A *token* is an unsigned 64-bit integer, a point on the ring ``[0, TOKEN_SPACE)``.
A key's token is the first 64 bits of MurmurHash3 x64-128 of the key bytes (seed 0),
read as unsigned. Virtual-node tokens live in the same space.

Invariants:

- ``0 <= key_token(key) < TOKEN_SPACE`` for every key, and the mapping never changes:
  it decides where data lives on disk and on which nodes, so changing the hash (or its
  seed) is a data migration, not a refactor.
- ``token_bytes`` is big endian and fixed width, so byte order equals numeric order and
  a token range is one contiguous scan in the storage engine (data keys are
  ``token_bytes(token) + key``).
- ``token_from_bytes(token_bytes(t)) == t``.
"""

from __future__ import annotations

from typing import NamedTuple

import mmh3

__all__ = [
    "MAX_TOKEN",
    "TOKEN_BITS",
    "TOKEN_BYTES",
    "TOKEN_SPACE",
    "TokenRange",
    "check_token",
    "key_token",
    "token_bytes",
    "token_from_bytes",
]

TOKEN_BITS = 64
TOKEN_SPACE: int = 1 << TOKEN_BITS  # 2**64; a shift so that type checkers see an int
MAX_TOKEN = TOKEN_SPACE - 1
TOKEN_BYTES = TOKEN_BITS // 8

# Bound once: key_token runs on every request, and a module-global lookup plus a
# positional call is measurably cheaper than attribute access with keyword arguments.
# Arguments are (key, seed, x64arch, signed); x64arch=True is MurmurHash3_x64_128,
# whose two halves hash64 returns; we keep the first.
_hash64 = mmh3.hash64
_MASK64 = (1 << 64) - 1


def key_token(key: bytes) -> int:
    """The ring token of ``key``: unsigned 64-bit MurmurHash3 (x64-128, first half)."""
    # mmh3 5.x ignores a positional `signed`, so the sign is masked off explicitly.
    return _hash64(key, 0, True)[0] & _MASK64


def check_token(token: int) -> int:
    """Return ``token`` if it is a valid token, else raise ``ValueError``.

    ``bool`` is rejected although it is an ``int``: a ``True`` token is always a bug.
    """
    if isinstance(token, bool) or not isinstance(token, int):
        raise ValueError(f"token must be an int, got {type(token).__name__}")
    if not 0 <= token < TOKEN_SPACE:
        raise ValueError(f"token {token} outside [0, 2**{TOKEN_BITS})")
    return token


def token_bytes(token: int) -> bytes:
    """``token`` as 8 bytes, big endian (byte order == numeric order)."""
    return token.to_bytes(TOKEN_BYTES, "big")


def token_from_bytes(data: bytes) -> int:
    """Inverse of :func:`token_bytes`; ``data`` must be exactly 8 bytes."""
    if len(data) != TOKEN_BYTES:
        raise ValueError(f"a token is {TOKEN_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data, "big")


class TokenRange(NamedTuple):
    """The tokens ``t`` with ``start < t <= end`` going clockwise: ``(start, end]``.

    ``start > end`` wraps past ``MAX_TOKEN`` to 0; ``start == end`` is the whole ring
    (the only way to say "everything" in this form, and what a one-node ring owns).
    A ``TokenRange`` is a plain tuple, so ``TokenRange(1, 5) == (1, 5)``.
    """

    start: int
    end: int

    def contains(self, token: int) -> bool:
        start, end = self.start, self.end
        if start < end:
            return start < token <= end
        if start > end:
            return token > start or token <= end
        return True

    def size(self) -> int:
        """How many tokens the range holds (``TOKEN_SPACE`` for the whole ring)."""
        return (self.end - self.start) % TOKEN_SPACE or TOKEN_SPACE

    @property
    def wraps(self) -> bool:
        return self.start >= self.end

    def pieces(self) -> list[tuple[int, int]]:
        """Non-wrapping *inclusive* ``(first, last)`` token intervals covering the range.

        This is the form a storage scan wants: data keys are prefixed by
        ``token_bytes(token)``, so each piece is one contiguous scan.
        """
        start, end = self.start, self.end
        if start < end:
            return [(start + 1, end)]
        pieces: list[tuple[int, int]] = []
        if start < MAX_TOKEN:
            pieces.append((start + 1, MAX_TOKEN))
        pieces.append((0, end))  # for start == end these two pieces are the whole ring
        return pieces
