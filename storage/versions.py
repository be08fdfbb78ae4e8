"""Versions of one key: dotted version vectors, siblings and the client context.

A key's state is a `Versions`: a causal context (`Context`: a version vector plus a
"dot cloud" of dots seen beyond its contiguous prefix) and the siblings still live
under it, each tagged with the *dot* (actor, counter) of the write that created it.
This is the dotted-version-vector model Riak adopted (riak_kv#746) to stop sibling
explosion: a write names exactly the versions it supersedes through its context, so
interleaved read-modify-write cycles never multiply siblings.

Rules (the invariants every function here keeps):

1. Every sibling's dot is covered by the state's context.
2. No two siblings share a dot.
3. `update(state, context, actor, ...)` drops exactly the siblings whose dots the client
   context covers, adds one sibling with a new dot, and joins the context and the dot
   into the state's context. A write without a context (an empty one) drops nothing.
   The context handed back to that client is its own context plus the new dot, not the
   state's: it covers what the client saw and wrote, never a concurrent sibling it did
   not see. Such a context may hold a dot beyond a gap (the client saw (A, 5) but not
   another client's (A, 4)); that is what the dot cloud is for. Folding (A, 5) into a
   plain vector would claim (A, 4) too and silently drop it.
4. `merge(a, b)` keeps a sibling of either side unless the *other* side's context covers
   its dot without holding it (then the other side saw it and superseded it). Merge is
   commutative, associative and idempotent, so replicas converge whatever the order.
5. Dots are unique cluster-wide only if the coordinator that issues `(actor, c)` holds
   every dot that actor ever issued for the key. The node guarantees it by taking a new
   actor epoch whenever it coordinates a key it does not hold under its own actor
   (riak_kv's per-key epochs), and a new generation on every start (riak_kv#679: a
   node that lost its disk, or crashed before its own write reached it, must never
   reuse a counter).
6. Expiry is a deterministic rewrite of a dot: a sibling whose `expires_at_ms` has
   passed becomes `expired_form(s)`, the same sibling with its value dropped, on
   whichever replica notices first. Merge prefers that tombstone form when both sides
   hold the dot, so the rewrite spreads like a delete and replicas agree byte for byte.
7. Dropping a tombstone keeps the causal context (`compact`): a record with no siblings
   still covers every dot it ever saw, so a late copy of a deleted live sibling (an old
   hint, a replica back from a long absence) is dropped by rule 4 and never returns.

The vector grows by one entry per actor that coordinated writes for the key (about N in
a steady cluster), never with the number of writes; the cloud holds only gaps, and
merges fill them (`Context` compacts a cloud dot into the vector once contiguous).

A sibling whose value is `None` is a tombstone; one whose `expires_at_ms` has passed
reads as absent. Both are still versions and converge like any other.

The context handed to clients is a `Context`, encoded as URL-safe base64 of msgpack.
`decode_context` validates every field, so garbage or a truncated context raises
`ContextError` (the HTTP layer turns it into a 400), never anything else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

Actor = tuple[str, int, int]
"""(node_id, generation, epoch): who issued a dot."""

Dot = tuple[Actor, int]

CONTEXT_VERSION = 1
MAX_CONTEXT_ENTRIES = 4096
MAX_CONTEXT_CHARS = 256 * 1024
# The greatest counter a dot may carry. An actor issues one per write, so no real
# history comes near it; the cap keeps a forged context from pushing an actor's next
# dot (one past the greatest it has seen) beyond the 64 bits msgpack can carry.
MAX_DOT_COUNTER = 1 << 62


class ContextError(ValueError):
    """A client context that is not one this store produced."""


@dataclass(frozen=True, slots=True)
class Context:
    """A causal context: a version vector plus the dots seen beyond its prefix.

    Invariant: no cloud dot is covered by the vector (`compacted` restores it).
    """

    vector: Mapping[Actor, int] = field(default_factory=dict)
    cloud: frozenset[Dot] = frozenset()

    def covers(self, dot: Dot) -> bool:
        actor, counter = dot
        return self.vector.get(actor, 0) >= counter or dot in self.cloud

    def max_counter(self, actor: Actor) -> int:
        best = self.vector.get(actor, 0)
        for a, c in self.cloud:
            if a == actor and c > best:
                best = c
        return best

    def join(self, other: Context) -> Context:
        if not other.vector and not other.cloud:
            return self
        if not self.vector and not self.cloud:
            return other
        if not other.cloud and not self.cloud:
            # The common case: plain vectors, often one already covering the other.
            mine = self.vector
            if all(mine.get(a, 0) >= c for a, c in other.vector.items()):
                return self
        vector = dict(self.vector)
        for actor, counter in other.vector.items():
            if counter > vector.get(actor, 0):
                vector[actor] = counter
        return _compacted(vector, self.cloud | other.cloud)

    def with_dot(self, dot: Dot) -> Context:
        actor, counter = dot
        if not self.cloud and counter == self.vector.get(actor, 0) + 1:
            return Context({**self.vector, actor: counter}, frozenset())
        return _compacted(dict(self.vector), self.cloud | {dot})

    def descends(self, other: Context) -> bool:
        """True when this context has seen everything `other` has."""
        return all(
            self.vector.get(a, 0) >= c for a, c in other.vector.items()
        ) and all(self.covers(d) for d in other.cloud)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return dict(self.vector) == dict(other.vector) and self.cloud == other.cloud

    def __hash__(self) -> int:
        return hash((frozenset(self.vector.items()), self.cloud))

    def __bool__(self) -> bool:
        return bool(self.vector) or bool(self.cloud)


EMPTY_CONTEXT = Context()


def _compacted(vector: dict[Actor, int], cloud: frozenset[Dot]) -> Context:
    if not cloud:
        return Context(vector, frozenset())
    # Fold contiguous dots into the vector, in counter order per actor.
    remaining = set()
    for actor, counter in sorted(cloud):
        have = vector.get(actor, 0)
        if counter <= have:
            continue
        if counter == have + 1:
            vector[actor] = counter
        else:
            remaining.add((actor, counter))
    # A dot left behind may have become contiguous after a later fold of its actor.
    changed = True
    while changed and remaining:
        changed = False
        for dot in sorted(remaining):
            actor, counter = dot
            have = vector.get(actor, 0)
            if counter <= have:
                remaining.discard(dot)
                changed = True
            elif counter == have + 1:
                vector[actor] = counter
                remaining.discard(dot)
                changed = True
    return Context(vector, frozenset(remaining))


@dataclass(frozen=True, slots=True)
class Sibling:
    """One concurrent version of a key's value."""

    actor: Actor
    counter: int
    value: bytes | None  # None: a tombstone
    content_type: str
    timestamp_ms: int  # the coordinator's wall clock when written (diagnostics, LWW)
    expires_at_ms: int | None = None

    @property
    def dot(self) -> Dot:
        return (self.actor, self.counter)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def is_live(self, now_ms: int) -> bool:
        """True when the sibling holds a value a read should return."""
        if self.value is None:
            return False
        return self.expires_at_ms is None or now_ms < self.expires_at_ms


@dataclass(frozen=True, slots=True)
class Versions:
    """Every version of one key a replica knows, under one causal context."""

    context: Context
    siblings: tuple[Sibling, ...]

    def live(self, now_ms: int) -> list[Sibling]:
        return [s for s in self.siblings if s.is_live(now_ms)]

    def dots(self) -> frozenset[Dot]:
        return frozenset(s.dot for s in self.siblings)

    def tombstone_dots(self) -> frozenset[Dot]:
        return frozenset(s.dot for s in self.siblings if s.value is None)

    def same_as(self, other: Versions) -> bool:
        """Equal causal knowledge and the same siblings: nothing to repair.

        A dot held live on one side and as a tombstone (expired) on the other differs:
        the tombstone form must still spread.
        """
        return (self.context == other.context and self.dots() == other.dots()
                and self.tombstone_dots() == other.tombstone_dots())


EMPTY = Versions(context=EMPTY_CONTEXT, siblings=())


def update(
    state: Versions | None,
    context: Context,
    actor: Actor,
    value: bytes | None,
    content_type: str,
    timestamp_ms: int,
    expires_at_ms: int | None = None,
) -> tuple[Versions, Context]:
    """Apply a client write coordinated by `actor` (rule 3).

    Returns the new state and the context to hand back to the client. The caller
    must guarantee rule 5: `state` holds every dot `actor` ever issued for this key,
    so one past the greatest counter it knows for `actor` is fresh.
    """
    state = state or EMPTY
    counter = max(state.context.max_counter(actor), context.max_counter(actor)) + 1
    dot: Dot = (actor, counter)
    kept = tuple(s for s in state.siblings if not context.covers(s.dot))
    new = Sibling(actor, counter, value, content_type, timestamp_ms, expires_at_ms)
    new_state = Versions(context=state.context.join(context).with_dot(dot), siblings=(*kept, new))
    return new_state, context.with_dot(dot)


def merge(a: Versions | None, b: Versions | None) -> Versions:
    """Combine two replicas' states of one key (rule 4)."""
    if a is None or not a.context:
        return b or EMPTY
    if b is None or not b.context:
        return a
    b_by_dot = {s.dot: s for s in b.siblings}
    kept: list[Sibling] = []
    for s in a.siblings:
        other = b_by_dot.get(s.dot)
        if other is not None:
            # One dot, two forms: the tombstone an expiry made of it wins (rule 6).
            kept.append(other if other.value is None and s.value is not None else s)
        elif not b.context.covers(s.dot):
            kept.append(s)
    seen = {s.dot for s in kept}
    kept.extend(
        s for s in b.siblings if s.dot not in seen and not a.context.covers(s.dot)
    )
    kept.sort(key=_sibling_order)
    return Versions(context=a.context.join(b.context), siblings=tuple(kept))


def expired_form(s: Sibling) -> Sibling:
    """The tombstone an expired sibling becomes: same dot, timestamps and type."""
    return Sibling(s.actor, s.counter, None, s.content_type, s.timestamp_ms,
                   s.expires_at_ms)


def expire(state: Versions, now_ms: int) -> Versions:
    """`state` with every sibling expired at `now_ms` in its tombstone form (rule 6)."""
    if not any(s.value is not None and s.expires_at_ms is not None
               and s.expires_at_ms <= now_ms for s in state.siblings):
        return state
    return Versions(state.context, tuple(
        expired_form(s) if s.value is not None and s.expires_at_ms is not None
        and s.expires_at_ms <= now_ms else s
        for s in state.siblings))


def next_expiry(state: Versions) -> int | None:
    """The earliest expiry among live siblings, or None."""
    times = [s.expires_at_ms for s in state.siblings
             if s.value is not None and s.expires_at_ms is not None]
    return min(times) if times else None


def is_dead(state: Versions) -> bool:
    """Only tombstones left: the key reads as absent and may be compacted later."""
    return bool(state.siblings) and all(s.value is None for s in state.siblings)


def compact(state: Versions) -> Versions:
    """Drop the tombstones, keep the causal context (rule 7)."""
    return Versions(state.context, ())


def merge_all(states: Iterable[Versions | None]) -> Versions:
    result = EMPTY
    for state in states:
        result = merge(result, state)
    return result


def _sibling_order(s: Sibling) -> tuple[int, Actor, int]:
    # A stable, replica-independent order, so every replica lists siblings alike.
    return (s.timestamp_ms, s.actor, s.counter)


def lww_resolve(state: Versions) -> Versions:
    """Last-write-wins: keep only the sibling with the greatest timestamp.

    This silently drops concurrent writes; it exists as a documented conflict mode
    (as Riak's allow_mult=false and Cassandra offer) and as the negative control that
    proves the simulation's lost-write checker can fail.
    """
    if len(state.siblings) <= 1:
        return state
    winner = max(state.siblings, key=_sibling_order)
    return Versions(context=state.context, siblings=(winner,))


# --- the client context -----------------------------------------------------------


def _context_doc(ctx: Context) -> list[object]:
    return [
        [[a[0], a[1], a[2], c] for a, c in sorted(ctx.vector.items())],
        [[a[0], a[1], a[2], c] for a, c in sorted(ctx.cloud)],
    ]


def encode_context(ctx: Context) -> str:
    packed = msgpack.packb([CONTEXT_VERSION, *_context_doc(ctx)], use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def decode_context(text: str) -> Context:
    """Parse a client context, or raise ContextError; never anything else."""
    if not text:
        return EMPTY_CONTEXT
    if len(text) > MAX_CONTEXT_CHARS:
        raise ContextError("context too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ContextError("context is not URL-safe base64") from exc
    try:
        doc = msgpack.unpackb(raw, use_list=True, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ContextError("context is not a ringkv context") from exc
    if not (isinstance(doc, list) and len(doc) == 3 and doc[0] == CONTEXT_VERSION):
        raise ContextError("context is not a ringkv context")
    try:
        return _context_from_doc(doc[1], doc[2])
    except ValueError as exc:
        raise ContextError(f"malformed context: {exc}") from exc


def _context_from_doc(vector_doc: object, cloud_doc: object) -> Context:
    if not isinstance(vector_doc, list) or not isinstance(cloud_doc, list):
        raise ValueError("expected lists")
    if len(vector_doc) + len(cloud_doc) > MAX_CONTEXT_ENTRIES:
        raise ValueError("too many entries")
    vector = {}
    for entry in vector_doc:
        actor, counter = _dot_entry(entry)
        vector[actor] = counter
    cloud = frozenset(_dot_entry(entry) for entry in cloud_doc)
    return _compacted(vector, cloud)


def _dot_entry(entry: object) -> Dot:
    if not (isinstance(entry, list) and len(entry) == 4):
        raise ValueError("entry is not [node, generation, epoch, counter]")
    node, generation, epoch, counter = entry
    if not (
        isinstance(node, str)
        and 0 < len(node) <= 64
        and _is_uint(generation)
        and _is_uint(epoch)
        and _is_uint(counter)
        and 0 < counter <= MAX_DOT_COUNTER
    ):
        raise ValueError("bad entry field")
    return ((node, generation, epoch), counter)


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64


# --- the wire and disk form --------------------------------------------------------


def to_wire(state: Versions) -> list[object]:
    """A msgpack-ready form: [vector, cloud, siblings]."""
    return [
        *_context_doc(state.context),
        [
            [s.actor[0], s.actor[1], s.actor[2], s.counter, s.value, s.content_type,
             s.timestamp_ms, s.expires_at_ms]
            for s in state.siblings
        ],
    ]


def from_trusted_wire(doc: list[Any]) -> Versions:
    """`from_wire` without validation, for records this node wrote to its own disk."""
    vector_doc, cloud_doc, sib_doc = doc
    vector = {(n, g, e): c for n, g, e, c in vector_doc}
    cloud = frozenset(((n, g, e), c) for n, g, e, c in cloud_doc)
    siblings = tuple(
        Sibling((n, g, e), c, value, ctype, ts, exp)
        for n, g, e, c, value, ctype, ts, exp in sib_doc
    )
    return Versions(Context(vector, cloud), siblings)


def from_wire(doc: object) -> Versions:
    """Inverse of `to_wire`; raises ValueError on anything malformed."""
    if not (isinstance(doc, list) and len(doc) == 3 and isinstance(doc[2], list)):
        raise ValueError("malformed versions")
    context = _context_from_doc(doc[0], doc[1])
    siblings = []
    for entry in doc[2]:
        if not (isinstance(entry, list) and len(entry) == 8):
            raise ValueError("malformed sibling")
        n, g, e, c, value, ctype, ts, exp = entry
        (actor, counter) = _dot_entry([n, g, e, c])
        if value is not None and not isinstance(value, bytes):
            raise ValueError("sibling value must be bytes or nil")
        if not isinstance(ctype, str) or not isinstance(ts, int):
            raise ValueError("malformed sibling")
        if exp is not None and not isinstance(exp, int):
            raise ValueError("malformed sibling expiry")
        sibling = Sibling(actor, counter, value, ctype, ts, exp)
        if not context.covers(sibling.dot):
            raise ValueError("sibling not covered by its context")
        siblings.append(sibling)
    if len({s.dot for s in siblings}) != len(siblings):
        raise ValueError("duplicate sibling dots")
    return Versions(context=context, siblings=tuple(siblings))
