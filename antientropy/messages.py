"""The anti-entropy messages (type ids 30-39) and their strict field codecs.

Job: the four steps of an exchange between two replicas, as frozen dataclasses that
`ringkv.core.wire.register` makes encodable:

    AeNodes(level 0)  roots of the ranges both replicas hold     initiator -> peer
    AeNodes(level k)  the children of every node that differed   alternately, down
    AeKeys            (key, hash) of every leaf that differed     then
    AePush            versions of the keys that differ, and the keys asked for
    AePushReply       versions the pusher lacks                   end of the exchange

Invariants: `from_fields` accepts exactly what `to_fields` produces and raises
ValueError/TypeError on anything else (wrong arity or types, out-of-range tokens,
indexes or hashes, over-long lists, keys outside 1..`MAX_KEY` bytes (stored keys,
`storage.namespace`), malformed versions), so a bad frame never reaches the tree or the
store. Every list is bounded by
`MAX_ITEMS` so one frame cannot make a node allocate without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from antientropy.merkle import LEAF_LEVEL, valid_index
from storage.keys import MAX_KEY_LEN
from storage.versions import Versions, from_wire, to_wire

MAX_ITEMS = 1 << 16
MAX_KEY = MAX_KEY_LEN

RangeNodes = tuple[int, int, tuple[tuple[int, int], ...]]
# (range start, range end, ((node index, hash), ...)): grouped by range, so a range's
# 8+8 bytes of bounds are sent once for all of its nodes.
LeafKeys = tuple[int, int, int, bytes, bool, tuple[tuple[bytes, int], ...]]
# (range start, range end, leaf index, after, truncated, ((key, hash), ...)): the keys
# of the leaf that come after the key `after` in tree order (b"": from the leaf's
# start); `truncated` when more follow the last one listed.


def _u64(x: Any) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 1 << 64:
        raise ValueError(f"expected an unsigned 64-bit int, got {x!r}")
    return x


def _list(x: Any, limit: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(x, list):
        raise TypeError(f"expected a list, got {type(x).__name__}")
    if len(x) > limit:
        raise ValueError("list too long")
    return x


def _key(x: Any) -> bytes:
    if not isinstance(x, bytes) or not 1 <= len(x) <= MAX_KEY:
        raise ValueError(f"keys are 1..{MAX_KEY} bytes")
    return x


def _arity(fields: list[Any], n: int, name: str) -> None:
    if not isinstance(fields, list) or len(fields) != n:
        raise ValueError(f"{name} takes {n} fields")


@dataclass(frozen=True, slots=True)
class AeNodes:
    """The sender's hashes of some tree nodes, all at one level, grouped by range."""

    TYPE: ClassVar[int] = 30
    xid: int
    level: int
    ranges: tuple[RangeNodes, ...]

    def to_fields(self) -> list[Any]:
        return [self.xid, self.level,
                [[s, e, [x for pair in nodes for x in pair]] for s, e, nodes in self.ranges]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> AeNodes:
        _arity(fields, 3, "AeNodes")
        xid, level, ranges = _u64(fields[0]), fields[1], _list(fields[2])
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= LEAF_LEVEL:
            raise ValueError("bad level")
        out = []
        total = 0
        for item in ranges:
            entry = _list(item, 3)
            if len(entry) != 3:
                raise ValueError("range entry takes 3 fields")
            start, end = _u64(entry[0]), _u64(entry[1])
            flat = [_u64(v) for v in _list(entry[2])]
            if len(flat) % 2:
                raise ValueError("node list holds (index, hash) pairs")
            total += len(flat)
            if total > MAX_ITEMS:
                raise ValueError("too many nodes")
            nodes = tuple(zip(flat[::2], flat[1::2], strict=True))
            if not all(valid_index(level, i) for i, _ in nodes):
                raise ValueError("node index out of range")
            out.append((start, end, nodes))
        return cls(xid, level, tuple(out))


@dataclass(frozen=True, slots=True)
class AeKeys:
    """For each leaf that differed: the sender's keys in a window of it, with hashes."""

    TYPE: ClassVar[int] = 31
    xid: int
    leaves: tuple[LeafKeys, ...]

    def to_fields(self) -> list[Any]:
        return [self.xid, [[s, e, i, after, more, [[k, h] for k, h in keys]]
                           for s, e, i, after, more, keys in self.leaves]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> AeKeys:
        _arity(fields, 2, "AeKeys")
        xid = _u64(fields[0])
        out = []
        for leaf in _list(fields[1]):
            entry = _list(leaf, 6)
            if len(entry) != 6:
                raise ValueError("leaf entry takes 6 fields")
            start, end, index = _u64(entry[0]), _u64(entry[1]), _u64(entry[2])
            if not valid_index(LEAF_LEVEL, index):
                raise ValueError("leaf index out of range")
            after = entry[3]
            if not isinstance(after, bytes) or len(after) > MAX_KEY:
                raise ValueError("bad leaf cursor")
            if not isinstance(entry[4], bool):
                raise TypeError("truncated flag must be a bool")
            keys = []
            for pair in _list(entry[5]):
                p = _list(pair, 2)
                if len(p) != 2:
                    raise ValueError("key entry takes 2 fields")
                keys.append((_key(p[0]), _u64(p[1])))
            out.append((start, end, index, after, entry[4], tuple(keys)))
        return cls(xid, tuple(out))


def _versions_items(doc: Any) -> tuple[tuple[bytes, Versions], ...]:
    out = []
    for pair in _list(doc):
        p = _list(pair, 2)
        if len(p) != 2:
            raise ValueError("item takes 2 fields")
        out.append((_key(p[0]), from_wire(p[1])))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AePush:
    """The sender's versions of keys that differ, and the keys it lacks."""

    TYPE: ClassVar[int] = 32
    xid: int
    items: tuple[tuple[bytes, Versions], ...]
    want: tuple[bytes, ...]

    def to_fields(self) -> list[Any]:
        return [self.xid, [[k, to_wire(v)] for k, v in self.items], list(self.want)]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> AePush:
        _arity(fields, 3, "AePush")
        return cls(_u64(fields[0]), _versions_items(fields[1]),
                   tuple(_key(k) for k in _list(fields[2])))


@dataclass(frozen=True, slots=True)
class AePushReply:
    """The merged versions of every key the pusher sent stale or asked for."""

    TYPE: ClassVar[int] = 33
    xid: int
    items: tuple[tuple[bytes, Versions], ...]

    def to_fields(self) -> list[Any]:
        return [self.xid, [[k, to_wire(v)] for k, v in self.items]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> AePushReply:
        _arity(fields, 2, "AePushReply")
        return cls(_u64(fields[0]), _versions_items(fields[1]))


MESSAGES = (AeNodes, AeKeys, AePush, AePushReply)
