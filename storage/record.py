"""The record a replica stores for one key: its versions plus local bookkeeping.

`local_actor` is this node's actor for the key, set when the node coordinated a write
for it. It lives only in the local record, never on the wire, and disappears with the
record: a node that forgets a key (handoff, disk loss) forgets its actor for it too and
must take a fresh epoch next time (rule 5 of `storage.versions`). Received versions never
carry a local actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from storage.versions import Actor, Versions, from_trusted_wire, to_wire

RECORD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Record:
    versions: Versions
    local_actor: Actor | None = None


def encode_record(record: Record) -> bytes:
    actor = list(record.local_actor) if record.local_actor is not None else None
    packed: bytes = msgpack.packb([RECORD_FORMAT, to_wire(record.versions), actor],
                                  use_bin_type=True)
    return packed


def decode_record(raw: bytes) -> Record:
    fmt, versions_doc, actor = msgpack.unpackb(raw, use_list=True, raw=False)
    if fmt != RECORD_FORMAT:
        raise ValueError(f"unknown record format {fmt!r}")
    # Records are written only by this node (validated on arrival): no re-validation.
    local = (actor[0], actor[1], actor[2]) if actor is not None else None
    return Record(from_trusted_wire(versions_doc), local)
