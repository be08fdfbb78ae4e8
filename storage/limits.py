"""How large a key's state may be: the one home of the record-size arithmetic.

The store must never accept what it cannot keep or move. A key's state travels whole in
several messages (a replica put, a hint delivery, a read reply, a range-transfer page,
an anti-entropy push), each inside one internode frame, and it is decoded by
validators (`storage.versions.from_wire`, `decode_context`) on every hop. So a write
is refused when the state it would leave, or the context it would hand back, exceeds
the bounds here (`write_problem`); everything a write produces then passes those
validators and fits those frames by construction.

The arithmetic (frame sizes in bytes):

    FRAME_BYTES        64 MiB   the transport's frame cap after the handshake
                                (`ringkv.net.transport.Transport`'s `max_frame`)
    MAX_RECORD_BYTES   16 MiB   a quarter of a frame: the message that carries the most
                                states is a range page or an anti-entropy push, which
                                stops growing once past its byte budget
                                (`PAGE_BYTES` 1 MiB, `MAX_PUSH_BYTES` 8 MiB), so it holds
                                at most budget + one state: 8 + 16 = 24 MiB; a read reply
                                merges a record with the hints a fallback holds for the
                                key, a few states. Envelopes (keys of 1 KiB, ids, cursors)
                                are a few KiB. All stay well under 64 MiB.

    Context entries: a write leaves at most `MAX_WRITE_CONTEXT_ENTRIES` (half the
    `MAX_CONTEXT_ENTRIES` every decoder accepts) and a context of at most
    `MAX_WRITE_CONTEXT_CHARS` (a quarter of `MAX_CONTEXT_CHARS`, 64 KiB) once encoded.
    The halves leave room for the join of two replicas' states (a merge joins
    contexts), so a replica that missed some writes still decodes what a repair brings
    it. The context is also a response header, and HTTP clients cap those (Python's
    httpx at 100 KiB a response head): 64 KiB leaves every client that room. Honest keys
    hold about N actors (a context of ~100 characters), far below either bound.

With the default 1 MiB values this allows 15 full-size siblings in one key (and up to
`max_siblings` small ones); a write past it gets `RecordTooLarge` (a 413 naming the
size and the limit) and changes nothing. A write whose context covers the siblings
leaves one version and always fits.
"""

from __future__ import annotations

from typing import Final

import msgpack

from storage.versions import (
    MAX_CONTEXT_CHARS,
    MAX_CONTEXT_ENTRIES,
    Context,
    Versions,
    encode_context,
    to_wire,
)

FRAME_BYTES: Final = 64 << 20
MAX_RECORD_BYTES: Final = FRAME_BYTES // 4
MAX_WRITE_CONTEXT_ENTRIES: Final = MAX_CONTEXT_ENTRIES // 2
MAX_WRITE_CONTEXT_CHARS: Final = MAX_CONTEXT_CHARS // 4

# Upper bounds on encoded sizes, for a cheap first check: a context entry is an array
# header, a node id of at most 64 characters (256 UTF-8 bytes) and three uint64s; a
# sibling adds its value, content type and three more integers.
_ENTRY_BYTES: Final = 1 + 3 + 256 + 3 * 9
_SIBLING_BYTES: Final = 1 + _ENTRY_BYTES + 5 + 5 + 3 * 9


def entries(ctx: Context) -> int:
    return len(ctx.vector) + len(ctx.cloud)


def context_problem(ctx: Context) -> str | None:
    """Why `ctx` is larger than a write may leave (or hand back), or None."""
    n = entries(ctx)
    if n > MAX_WRITE_CONTEXT_ENTRIES:
        return (f"context too large: the key's causal context would hold {n} entries"
                f" (limit {MAX_WRITE_CONTEXT_ENTRIES})")
    # base64 makes 4 characters of 3 bytes; only a context that might exceed is encoded.
    if (8 + n * _ENTRY_BYTES) * 4 // 3 + 4 > MAX_WRITE_CONTEXT_CHARS:
        chars = len(encode_context(ctx))
        if chars > MAX_WRITE_CONTEXT_CHARS:
            return (f"context too large: the key's causal context would take {chars}"
                    f" characters (limit {MAX_WRITE_CONTEXT_CHARS})")
    return None


def record_bytes(state: Versions) -> int:
    """The encoded size of `state` on the wire (and, within a few bytes, on disk)."""
    return len(msgpack.packb(to_wire(state), use_bin_type=True))


def record_too_large(state: Versions) -> int | None:
    """The encoded size of `state` if it exceeds `MAX_RECORD_BYTES`, else None."""
    bound = 16 + entries(state.context) * _ENTRY_BYTES
    for s in state.siblings:
        bound += _SIBLING_BYTES + len(s.content_type.encode()) * 2 + (
            0 if s.value is None else len(s.value))
        if bound > MAX_RECORD_BYTES:
            break
    if bound <= MAX_RECORD_BYTES:
        return None  # the cheap upper bound fits: no need to encode
    size = record_bytes(state)
    return size if size > MAX_RECORD_BYTES else None
