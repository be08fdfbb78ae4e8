"""ringkv's ring: where every key lives.

Pure and deterministic (no I/O, clock, threads or global randomness):

- ``ring.token``: key -> unsigned 64-bit token (MurmurHash3), token encoding, ranges.
- ``ring.allocation``: the tokens a node takes once, when it joins.
- ``ring.ring``: the immutable ``Ring``: owners, preference lists, ownership, ranges.
"""

from ring.allocation import allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import (
    MAX_TOKEN,
    TOKEN_BITS,
    TOKEN_SPACE,
    TokenRange,
    key_token,
    token_bytes,
    token_from_bytes,
)

__all__ = [
    "MAX_TOKEN",
    "TOKEN_BITS",
    "TOKEN_SPACE",
    "Ring",
    "TokenRange",
    "allocate_tokens",
    "initial_tokens",
    "key_token",
    "token_bytes",
    "token_from_bytes",
]
