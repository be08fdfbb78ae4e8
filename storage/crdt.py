"""Data types on dotted version vectors: a PN-counter, an add-wins set, bucket properties.

Job: the operations of contract section 5 (`POST /counters`, `POST /sets`) and the
bucket-properties record of section 7, as pure functions from a key's local state to
its next state. A counter, a set and the properties record are stored as ordinary
`storage.versions.Versions`, so replication, hints, read repair, anti-entropy and range
transfers carry them unchanged: their siblings are used as CRDT entries and the plain
DVV `merge` (rule 4: keep a sibling unless the other side's context covers its dot
without holding it) is the CRDT join. Each operation's `apply` replaces
`storage.versions.update` on the coordinator; nothing here reads a clock or draws a
random number (`now_ms` is passed in).

Representation (sibling values are msgpack, each type has its own content type):

    counter  actor entry       [0, p, n]   the cumulative increments p and decrements n
                                           coordinated by the sibling's actor
             idempotent entry  [1, token, amount, applied_ms]   one keyed increment
    set      one sibling per (element, adding coordinator); the value is the element
    props    [bucket, props]   one bucket's properties, last writer wins per bucket

Invariants (what every `apply` keeps, besides rules 1-7 of `storage.versions`: each
sibling's dot is covered by the new context, dots are unique, `from_wire` accepts the
state, and new dots are fresh: one past the greatest counter the state knows for the
actor, consecutive when an operation writes several; rule 5 makes them unique):

- Counter convergence. An actor entry only ever supersedes entries of its own actor,
  and those are cumulative, so the live entry of each actor is that actor's whole
  contribution. Merge keeps, per actor, the entry no other side superseded, which is
  the latest one; whatever order replicas exchange states in, the fully merged state
  holds every actor's latest entry once, and the value is the sum of all increments.
- Retries count once. A keyed increment is its own sibling carrying the token. The
  coordinator that already holds the token applies nothing; a retry that reached
  another coordinator before the first entry did adds a second sibling with the same
  token, and `counter_value` counts each token once (the least dot's amount, the same
  choice on every replica).
- Bounded idempotent entries. A token entry older than `IDEMPOTENCY_WINDOW_MS` (the
  contract promises 24 h; one hour of margin for clock skew) is folded into the
  coordinator's actor entry by the next write there, superseding every entry of that
  token the coordinator sees and adding its amount once. Only the node that issued
  the token's least dot folds it: two coordinators folding one token concurrently
  would each add its amount to their own actor entry and merge would keep both. A
  node coordinates a key sequentially from its own record, so it never races itself.
- Add wins. A remove drops exactly the dots its context observed for the element and
  joins them into the state's context, so every replica drops those dots on merge,
  also one the coordinator had not received yet. An add concurrent with that remove
  has a dot the remove never observed, and survives everywhere. An add supersedes only
  the siblings of its element that the coordinator holds. A removed dot no actor can
  have issued yet (the coordinator's own past its counter, another's more than
  `MAX_UNSEEN_DOTS` ahead) is ignored, so a forged context cannot push an actor's
  counter to the end of its range.
- Properties: a put supersedes the siblings of its bucket it sees; concurrent ones are
  resolved at read time by the greatest (timestamp_ms, actor, counter), the same on
  every replica.
- Bounds: a state is never grown past `MAX_SET_ELEMENTS` distinct elements,
  `MAX_BUCKETS` buckets or a uint64 counter; `apply` returns `OverLimit` (a 413)
  instead. An edit that does not grow a state past its bound always applies, so a set
  that concurrent adds pushed past it can still shrink.
- Garbage in is refused, never a crash: constructors and `operation_from_doc` raise
  ValueError, `decode_set_context` raises `ContextError`, and a stored sibling value
  that is not what this module writes is skipped by the readers (`counter_value`,
  `set_elements`, `set_context`, `props_table`) and never superseded.

Known limits: a token entry folded after the window while a duplicate of it (the same
retry applied by another coordinator) still exists unseen elsewhere counts twice once
they meet; anti-entropy runs every minute, so this needs a duplicate unseen for 25
hours. Likewise a node that folded a token, then lost its copy of the key within the
next minute and rebuilt it from a replica that missed the fold, can fold it again.
Entries of actors that never write the key again (an earlier life of a node, a
fallback's one-time actor) stay as siblings; they are correct, only not compacted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from storage.namespace import is_bucket_name
from storage.versions import (
    EMPTY,
    EMPTY_CONTEXT,
    MAX_CONTEXT_ENTRIES,
    Actor,
    Context,
    ContextError,
    Dot,
    Sibling,
    Versions,
)

__all__ = [
    "COUNTER_CONTENT_TYPE",
    "IDEMPOTENCY_WINDOW_MS",
    "MAX_BUCKETS",
    "MAX_EDIT_ELEMENTS",
    "MAX_ELEMENT_BYTES",
    "MAX_ELEMENT_DOTS",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_INCREMENT",
    "MAX_PROPS_BYTES",
    "MAX_SET_CONTEXT_CHARS",
    "MAX_SET_ELEMENTS",
    "MAX_UNSEEN_DOTS",
    "PROPS_CONTENT_TYPE",
    "SET_CONTENT_TYPE",
    "SET_CONTEXT_VERSION",
    "CounterAdd",
    "Operation",
    "OverLimit",
    "PropsPut",
    "SetEdit",
    "counter_value",
    "decode_set_context",
    "observed",
    "operation_from_doc",
    "operation_to_doc",
    "props_table",
    "set_context",
    "set_elements",
]

COUNTER_CONTENT_TYPE: Final = "application/x-ringkv-counter"
SET_CONTENT_TYPE: Final = "application/x-ringkv-set-element"
PROPS_CONTENT_TYPE: Final = "application/x-ringkv-bucket-props"

MAX_INCREMENT: Final = 2**53  # |n| < this: every value is exact in a JSON double
MAX_IDEMPOTENCY_KEY: Final = 128
IDEMPOTENCY_WINDOW_MS: Final = 25 * 3600 * 1000
MAX_ELEMENT_BYTES: Final = 1024
MAX_EDIT_ELEMENTS: Final = 1000  # adds + removes in one edit
# 10 000 elements of 1 KiB plus ~100 bytes of sibling each is ~11 MiB: within
# `storage.limits.MAX_RECORD_BYTES` (16 MiB).
MAX_SET_ELEMENTS: Final = 10_000
# Dots one element may name in a remove: one per coordinator that added it
# concurrently, so a handful honestly.
MAX_ELEMENT_DOTS: Final = 32
# A removed dot of another actor is joined into the state's context only if it is at
# most this far past the greatest counter the state knows for that actor. An honest dot
# is at most a few (unreplicated writes) ahead; a forged one that pushed an actor's
# counter towards 2**64 would make that actor's next dot unencodable.
MAX_UNSEEN_DOTS: Final = 1 << 32
MAX_PROPS_BYTES: Final = 4096
# 1 000 buckets of 4 KiB properties is ~4 MiB, within `MAX_RECORD_BYTES`.
MAX_BUCKETS: Final = 1000

# The set context: a tag distinct from `storage.versions.CONTEXT_VERSION`, so a value
# context sent to a set (or the reverse) is refused as garbage.
SET_CONTEXT_VERSION: Final = 0x5E7
MAX_SET_CONTEXT_ENTRIES: Final = MAX_SET_ELEMENTS
MAX_SET_CONTEXT_DOTS: Final = 4 * MAX_SET_ELEMENTS
MAX_SET_CONTEXT_ACTORS: Final = MAX_CONTEXT_ENTRIES
# The largest context `set_context` writes, in msgpack bytes: 4096 actors of at most
# 1 + 3 + 256 + 2 * 9 bytes (a 64-character node id is at most 256 UTF-8 bytes),
# 10 000 entries of 1 + 10 + 3 bytes (an 8-byte hash, a dots header), 40 000 dots of
# 1 + 3 + 9 bytes: 1.13 + 0.14 + 0.52 MB, 2.4 MB in base64. 4 MiB of text covers it
# with room; an honest set of 10 000 elements takes about 300 KB (actors are listed
# once and dots refer to them by index).
MAX_SET_CONTEXT_CHARS: Final = 4 << 20

_UINT64_MAX: Final = (1 << 64) - 1
_ACTOR_ENTRY: Final = 0
_TOKEN_ENTRY: Final = 1
_OP_COUNTER: Final = 1
_OP_SET: Final = 2
_OP_PROPS: Final = 3


@dataclass(frozen=True, slots=True)
class OverLimit:
    """A refusal (HTTP 413): the new state would pass a bound; nothing changes."""

    what: str
    size: int
    limit: int


# --- counters -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tally:
    """An actor entry: the cumulative increments and decrements of one actor."""

    p: int
    n: int


@dataclass(frozen=True, slots=True)
class _Once:
    """An idempotent entry: one keyed increment."""

    token: str
    amount: int
    applied_ms: int


@dataclass(frozen=True, slots=True)
class CounterAdd:
    """Add `amount` (non-zero, |amount| < `MAX_INCREMENT`) to a counter.

    With `idempotency_key`, a retry carrying the same key is applied at most once.
    """

    amount: int
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if not _is_amount(self.amount):
            raise ValueError(f"an increment is a non-zero integer with |n| < 2**53,"
                             f" got {self.amount!r}")
        if self.idempotency_key is not None and not _is_token(self.idempotency_key):
            raise ValueError(f"an idempotency key is 1-{MAX_IDEMPOTENCY_KEY} printable"
                             " ASCII characters")

    def apply(self, base: Versions | None, actor: Actor,
              now_ms: int) -> tuple[Versions, Context] | OverLimit:
        """The counter's next state; the client context is always empty.

        Rule 5: `base` holds every dot `actor` issued for the key.
        """
        state = base or EMPTY
        entries = _counter_entries(state.siblings)
        key = self.idempotency_key
        if key is not None and any(isinstance(e, _Once) and e.token == key
                                   for _, e in entries):
            return state, EMPTY_CONTEXT  # already applied here: at most once
        superseded, fold_p, fold_n = _fold_plan(entries, actor, now_ms)
        values: list[bytes] = []
        if key is None or superseded:
            # Supersede only this actor's own entry. Another actor's entry must never be
            # folded in: that actor may concurrently supersede it with a larger one,
            # which this write's context does not cover, and merge would then keep both
            # the copy folded in here and the new one: its increments counted twice.
            own = [(s, e) for s, e in entries if isinstance(e, _Tally) and s.actor == actor]
            p = n = 0
            if own:
                latest = max(own, key=lambda se: se[0].counter)[1]
                assert isinstance(latest, _Tally)
                p, n = latest.p, latest.n
                superseded |= {s.dot for s, _ in own}
            p += fold_p
            n += fold_n
            if key is None:
                if self.amount > 0:
                    p += self.amount
                else:
                    n -= self.amount
            if max(p, n) > _UINT64_MAX:
                return OverLimit("counter", max(p, n), _UINT64_MAX)
            values.append(_pack([_ACTOR_ENTRY, p, n]))
        if key is not None:
            values.append(_pack([_TOKEN_ENTRY, key, self.amount, now_ms]))
        return _issue(state, state.context, superseded, actor, values,
                      COUNTER_CONTENT_TYPE, now_ms)


def counter_value(siblings: Iterable[Sibling]) -> int:
    """The counter's value: each actor's p - n, plus each distinct token's amount once.

    Siblings that are not counter entries (tombstones, another content type, a value
    that is not a well-formed entry) are skipped. Should two entries of one actor ever
    coexist, the later (greater counter) one counts: entries are cumulative.
    """
    latest: dict[Actor, tuple[int, _Tally]] = {}
    tokens: dict[str, tuple[Dot, int]] = {}
    for s in siblings:
        e = _counter_entry(s)
        if isinstance(e, _Tally):
            prev = latest.get(s.actor)
            if prev is None or s.counter > prev[0]:
                latest[s.actor] = (s.counter, e)
        elif isinstance(e, _Once):
            seen = tokens.get(e.token)
            # One token applied by two coordinators: count it once, the least dot's.
            if seen is None or s.dot < seen[0]:
                tokens[e.token] = (s.dot, e.amount)
    return (sum(t.p - t.n for _, t in latest.values())
            + sum(amount for _, amount in tokens.values()))


def _fold_plan(entries: list[tuple[Sibling, _Tally | _Once]], actor: Actor,
               now_ms: int) -> tuple[set[Dot], int, int]:
    """The token entries `actor` folds now: their dots, and the p and n they add."""
    groups: dict[str, list[tuple[Sibling, _Once]]] = {}
    for s, e in entries:
        if isinstance(e, _Once):
            groups.setdefault(e.token, []).append((s, e))
    horizon = now_ms - IDEMPOTENCY_WINDOW_MS
    dots: set[Dot] = set()
    p = n = 0
    for group in groups.values():
        first, once = min(group, key=lambda se: se[0].dot)
        # Only the node that issued the least dot folds: a second folder, racing, would
        # add the amount to its own entry too (see the module docstring).
        if first.actor[0] != actor[0] or any(o.applied_ms >= horizon for _, o in group):
            continue
        dots |= {s.dot for s, _ in group}
        if once.amount > 0:
            p += once.amount
        else:
            n -= once.amount
    return dots, p, n


def _counter_entries(siblings: Iterable[Sibling]) -> list[tuple[Sibling, _Tally | _Once]]:
    out: list[tuple[Sibling, _Tally | _Once]] = []
    for s in siblings:
        e = _counter_entry(s)
        if e is not None:
            out.append((s, e))
    return out


def _counter_entry(s: Sibling) -> _Tally | _Once | None:
    if s.value is None or s.content_type != COUNTER_CONTENT_TYPE:
        return None
    doc = _unpack(s.value)
    if type(doc) is not list or not doc or type(doc[0]) is not int:
        return None
    if doc[0] == _ACTOR_ENTRY and len(doc) == 3:
        p, n = doc[1], doc[2]
        if _is_uint64(p) and _is_uint64(n):
            return _Tally(p, n)
    elif doc[0] == _TOKEN_ENTRY and len(doc) == 4:
        token, amount, applied_ms = doc[1], doc[2], doc[3]
        if (_is_token(token) and _is_amount(amount) and type(applied_ms) is int
                and -(1 << 63) <= applied_ms <= _UINT64_MAX):
            return _Once(token, amount, applied_ms)
    return None


# --- sets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetEdit:
    """Add and remove set elements; each remove names the dots its context observed.

    Elements are 1-`MAX_ELEMENT_BYTES` bytes of UTF-8; at most `MAX_EDIT_ELEMENTS`
    adds and removes in all; each remove names 1-`MAX_ELEMENT_DOTS` dots.
    """

    adds: tuple[bytes, ...] = ()
    removes: tuple[tuple[bytes, frozenset[Dot]], ...] = ()

    def __post_init__(self) -> None:
        if type(self.adds) is not tuple or type(self.removes) is not tuple:
            raise ValueError("adds and removes are tuples")
        if len(self.adds) + len(self.removes) > MAX_EDIT_ELEMENTS:
            raise ValueError(f"at most {MAX_EDIT_ELEMENTS} adds and removes in one edit")
        for element in self.adds:
            _check_element(element)
        for entry in self.removes:
            if type(entry) is not tuple or len(entry) != 2:
                raise ValueError("a remove is (element, dots)")
            element, dots = entry
            _check_element(element)
            if type(dots) is not frozenset or not 1 <= len(dots) <= MAX_ELEMENT_DOTS:
                raise ValueError(f"a remove names 1-{MAX_ELEMENT_DOTS} observed dots")
            for dot in dots:
                if not _is_dot(dot):
                    raise ValueError("malformed observed dot")

    def apply(self, base: Versions | None, actor: Actor,
              now_ms: int) -> tuple[Versions, Context] | OverLimit:
        """The set's next state (removes first, then adds); the client context is empty.

        Rule 5: `base` holds every dot `actor` issued for the key.
        """
        state = base or EMPTY
        by_dot = {s.dot: s for s in state.siblings}
        known = _known_counters(state.context)
        joined: set[Dot] = set()
        superseded: set[Dot] = set()
        for element, dots in self.removes:
            for dot in dots:
                if not _plausible(known, dot, actor):
                    continue
                joined.add(dot)
                s = by_dot.get(dot)
                if s is not None and _set_element(s) == element:
                    superseded.add(dot)
        # The observed dots join the context even when this coordinator does not hold
        # them yet: a replica (or this one, later) that merges the state then drops them.
        context = state.context.join(_context_of(joined))
        added = sorted(set(self.adds))
        adding = set(added)
        before: set[bytes] = set()
        after: set[bytes] = set(adding)
        for s in state.siblings:
            held = _set_element(s)
            if held is None:
                continue
            before.add(held)
            if held in adding:
                superseded.add(s.dot)  # this coordinator saw it: the new add replaces it
            elif s.dot not in superseded:
                after.add(held)
        if len(after) > MAX_SET_ELEMENTS and len(after) > len(before):
            return OverLimit("set elements", len(after), MAX_SET_ELEMENTS)
        return _issue(state, context, superseded, actor, added, SET_CONTENT_TYPE, now_ms)


def set_elements(siblings: Iterable[Sibling]) -> list[bytes]:
    """The distinct elements of the set, sorted; siblings that are not elements skipped."""
    return sorted({e for s in siblings if (e := _set_element(s)) is not None})


def set_context(siblings: Iterable[Sibling]) -> str:
    """The opaque context a client sends back to remove elements it read.

    URL-safe base64 of msgpack ``[SET_CONTEXT_VERSION, actors, entries]``: each entry
    is ``[hash of an element, [[actor index, counter], ...]]``, the dots of the siblings
    holding that element. The element is named by an 8-byte blake2b hash rather than
    itself: elements are up to 1 KiB and the client already has them, so a full set's
    context stays ~20 bytes an element instead of repeating up to 10 MiB. A collision
    (odds about 2**-64 a pair) would only let a remove of one element name the other's
    observed dots too; the remove still drops only siblings holding its own element
    from the coordinator's copy.

    A state past the decoder's bounds (only concurrent adds beyond `MAX_SET_ELEMENTS`
    make one) gets a context that leaves out its last elements in hash order, and an
    element holding more than `MAX_ELEMENT_DOTS` dots is listed with its least ones:
    a remove then leaves the rest, as if they were concurrent adds.
    """
    by_hash: dict[bytes, set[Dot]] = {}
    for s in siblings:
        element = _set_element(s)
        if element is not None:
            by_hash.setdefault(_element_hash(element), set()).add(s.dot)
    actors: dict[Actor, int] = {}
    entries: list[list[Any]] = []
    total = 0
    for digest in sorted(by_hash):
        dots = sorted(by_hash[digest])[:MAX_ELEMENT_DOTS]
        new = sorted({a for a, _ in dots if a not in actors})
        if (len(entries) >= MAX_SET_CONTEXT_ENTRIES or total + len(dots) > MAX_SET_CONTEXT_DOTS
                or len(actors) + len(new) > MAX_SET_CONTEXT_ACTORS):
            break
        for a in new:
            actors[a] = len(actors)
        entries.append([digest, [[actors[a], c] for a, c in dots]])
        total += len(dots)
    doc = [SET_CONTEXT_VERSION, [list(a) for a in actors], entries]
    return base64.urlsafe_b64encode(_pack(doc)).rstrip(b"=").decode("ascii")


def decode_set_context(text: str) -> dict[bytes, frozenset[Dot]]:
    """Element hash -> observed dots of a `set_context`; ContextError on anything else.

    Bounds: at most `MAX_SET_CONTEXT_CHARS` characters, `MAX_SET_CONTEXT_ACTORS`
    actors, `MAX_SET_CONTEXT_ENTRIES` elements, `MAX_ELEMENT_DOTS` dots an element and
    `MAX_SET_CONTEXT_DOTS` dots in all. The empty string observes nothing.
    """
    if not isinstance(text, str):
        raise ContextError("a set context is a string")
    if not text:
        return {}
    if len(text) > MAX_SET_CONTEXT_CHARS:
        raise ContextError("set context too long")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContextError("set context is not URL-safe base64") from exc
    try:
        doc = msgpack.unpackb(raw, use_list=True, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ContextError("not a ringkv set context") from exc
    try:
        return _set_context_from_doc(doc)
    except ValueError as exc:
        raise ContextError(f"malformed set context: {exc}") from exc


def observed(ctx_map: Mapping[bytes, frozenset[Dot]], element: bytes) -> frozenset[Dot]:
    """The dots a decoded set context observed for `element` (empty: none)."""
    return ctx_map.get(_element_hash(element), frozenset())


def _set_context_from_doc(doc: object) -> dict[bytes, frozenset[Dot]]:
    if not (type(doc) is list and len(doc) == 3 and type(doc[0]) is int
            and doc[0] == SET_CONTEXT_VERSION):
        raise ValueError("not a ringkv set context")
    actors_doc, entries_doc = doc[1], doc[2]
    if type(actors_doc) is not list or len(actors_doc) > MAX_SET_CONTEXT_ACTORS:
        raise ValueError("bad actor table")
    actors: list[Actor] = []
    for a in actors_doc:
        if not (type(a) is list and len(a) == 3 and _is_actor((a[0], a[1], a[2]))):
            raise ValueError("bad actor")
        actors.append((a[0], a[1], a[2]))
    if type(entries_doc) is not list or len(entries_doc) > MAX_SET_CONTEXT_ENTRIES:
        raise ValueError("bad element table")
    result: dict[bytes, frozenset[Dot]] = {}
    total = 0
    for entry in entries_doc:
        if not (type(entry) is list and len(entry) == 2):
            raise ValueError("bad element entry")
        digest, dots_doc = entry
        if type(digest) is not bytes or len(digest) != 8 or digest in result:
            raise ValueError("bad element hash")
        if type(dots_doc) is not list or not 1 <= len(dots_doc) <= MAX_ELEMENT_DOTS:
            raise ValueError("bad dot list")
        total += len(dots_doc)
        if total > MAX_SET_CONTEXT_DOTS:
            raise ValueError("too many dots")
        dots: set[Dot] = set()
        for d in dots_doc:
            if not (type(d) is list and len(d) == 2):
                raise ValueError("bad dot")
            index, counter = d
            if not (type(index) is int and 0 <= index < len(actors)
                    and type(counter) is int and 0 < counter <= _UINT64_MAX):
                raise ValueError("bad dot")
            dots.add((actors[index], counter))
        result[digest] = frozenset(dots)
    return result


def _element_hash(element: bytes) -> bytes:
    return hashlib.blake2b(element, digest_size=8).digest()


def _set_element(s: Sibling) -> bytes | None:
    v = s.value
    if v is None or s.content_type != SET_CONTENT_TYPE or not _is_element(v):
        return None
    return v


def _known_counters(context: Context) -> dict[Actor, int]:
    """The greatest counter `context` knows per actor (`max_counter` for all at once)."""
    known = dict(context.vector)
    for a, c in context.cloud:
        if c > known.get(a, 0):
            known[a] = c
    return known


def _plausible(known: Mapping[Actor, int], dot: Dot, actor: Actor) -> bool:
    """False for a removed dot no actor can have issued yet: join only the others.

    The coordinator's own actor issued nothing past what the state knows (rule 5);
    another actor may have issued a few writes not yet here, not 2**32.
    """
    a, counter = dot
    lead = 0 if a == actor else MAX_UNSEEN_DOTS
    return counter <= known.get(a, 0) + lead


def _check_element(element: object) -> None:
    if type(element) is not bytes or not _is_element(element):
        raise ValueError(f"a set element is 1-{MAX_ELEMENT_BYTES} bytes of UTF-8")


def _is_element(value: bytes) -> bool:
    if not 1 <= len(value) <= MAX_ELEMENT_BYTES:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- bucket properties --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropsPut:
    """Set one bucket's properties (opaque bytes here, at most `MAX_PROPS_BYTES`)."""

    bucket: str
    props: bytes

    def __post_init__(self) -> None:
        if type(self.bucket) is not str or not is_bucket_name(self.bucket):
            raise ValueError(f"bad bucket name {self.bucket!r}")
        if type(self.props) is not bytes or len(self.props) > MAX_PROPS_BYTES:
            raise ValueError(f"bucket properties are at most {MAX_PROPS_BYTES} bytes")

    def apply(self, base: Versions | None, actor: Actor,
              now_ms: int) -> tuple[Versions, Context] | OverLimit:
        """The properties record's next state; the client context is always empty."""
        state = base or EMPTY
        buckets: set[str] = set()
        superseded: set[Dot] = set()
        for s in state.siblings:
            entry = _props_entry(s)
            if entry is None:
                continue
            buckets.add(entry[0])
            if entry[0] == self.bucket:
                superseded.add(s.dot)
        if self.bucket not in buckets and len(buckets) + 1 > MAX_BUCKETS:
            return OverLimit("buckets", len(buckets) + 1, MAX_BUCKETS)
        value = _pack([self.bucket, self.props])
        return _issue(state, state.context, superseded, actor, [value],
                      PROPS_CONTENT_TYPE, now_ms)


def props_table(siblings: Iterable[Sibling]) -> dict[str, bytes]:
    """Each bucket's properties: the sibling with the greatest (timestamp, actor, counter).

    Siblings that are not well-formed property entries are skipped.
    """
    best: dict[str, tuple[tuple[int, Actor, int], bytes]] = {}
    for s in siblings:
        entry = _props_entry(s)
        if entry is None:
            continue
        bucket, props = entry
        rank = (s.timestamp_ms, s.actor, s.counter)
        prev = best.get(bucket)
        if prev is None or rank > prev[0]:
            best[bucket] = (rank, props)
    return {bucket: props for bucket, (_, props) in sorted(best.items())}


def _props_entry(s: Sibling) -> tuple[str, bytes] | None:
    if s.value is None or s.content_type != PROPS_CONTENT_TYPE:
        return None
    doc = _unpack(s.value)
    if not (type(doc) is list and len(doc) == 2):
        return None
    bucket, props = doc
    if (type(bucket) is not str or not is_bucket_name(bucket) or type(props) is not bytes
            or len(props) > MAX_PROPS_BYTES):
        return None
    return bucket, props


# --- operations on the wire ---------------------------------------------------------

Operation = CounterAdd | SetEdit | PropsPut


def operation_to_doc(op: Operation) -> list[Any]:
    """A msgpack-ready form of `op` (for the internode ForwardWrite frame)."""
    if isinstance(op, CounterAdd):
        return [_OP_COUNTER, op.amount, op.idempotency_key]
    if isinstance(op, SetEdit):
        return [_OP_SET, list(op.adds),
                [[element, [[a[0], a[1], a[2], c] for a, c in sorted(dots)]]
                 for element, dots in op.removes]]
    return [_OP_PROPS, op.bucket, op.props]


def operation_from_doc(doc: object) -> Operation:
    """Inverse of `operation_to_doc`; ValueError on anything malformed or out of bounds."""
    if not (type(doc) is list and len(doc) == 3 and type(doc[0]) is int):
        raise ValueError("malformed operation")
    tag, first, second = doc
    if tag == _OP_COUNTER:
        if type(first) is not int or not (second is None or type(second) is str):
            raise ValueError("malformed counter operation")
        return CounterAdd(first, second)
    if tag == _OP_SET:
        if type(first) is not list or type(second) is not list:
            raise ValueError("malformed set operation")
        if len(first) + len(second) > MAX_EDIT_ELEMENTS:
            raise ValueError(f"at most {MAX_EDIT_ELEMENTS} adds and removes in one edit")
        removes: list[tuple[bytes, frozenset[Dot]]] = []
        for entry in second:
            if not (type(entry) is list and len(entry) == 2 and type(entry[0]) is bytes
                    and type(entry[1]) is list and len(entry[1]) <= MAX_ELEMENT_DOTS):
                raise ValueError("malformed set remove")
            removes.append((entry[0], frozenset(_wire_dot(d) for d in entry[1])))
        return SetEdit(tuple(first), tuple(removes))
    if tag == _OP_PROPS:
        if type(first) is not str or type(second) is not bytes:
            raise ValueError("malformed properties operation")
        return PropsPut(first, second)
    raise ValueError(f"unknown operation {tag}")


def _wire_dot(entry: object) -> Dot:
    if not (type(entry) is list and len(entry) == 4):
        raise ValueError("a dot is [node, generation, epoch, counter]")
    dot = ((entry[0], entry[1], entry[2]), entry[3])
    if not _is_dot(dot):
        raise ValueError("malformed dot")
    return dot


# --- shared by the three types ----------------------------------------------------


def _issue(state: Versions, context: Context, superseded: set[Dot], actor: Actor,
           values: list[bytes], content_type: str,
           now_ms: int) -> tuple[Versions, Context] | OverLimit:
    """`state` without `superseded`, plus one sibling per value with fresh dots.

    `context` is the state's context with whatever the operation joins into it; the
    new dots follow the greatest counter it knows for `actor` (rule 5), consecutively.
    """
    first = context.max_counter(actor) + 1
    if first + len(values) - 1 > _UINT64_MAX:
        return OverLimit("dot counter", first + len(values) - 1, _UINT64_MAX)
    kept = tuple(s for s in state.siblings if s.dot not in superseded)
    new = tuple(Sibling(actor, first + i, value, content_type, now_ms)
                for i, value in enumerate(values))
    context = context.join(_context_of(s.dot for s in new))
    return Versions(context, kept + new), EMPTY_CONTEXT


def _context_of(dots: Iterable[Dot]) -> Context:
    """A compacted context of exactly `dots` (contiguous runs folded into the vector).

    `with_dot` on a non-empty cloud compacts once, so building it costs one sort.
    """
    rest = set(dots)
    if not rest:
        return EMPTY_CONTEXT
    last = rest.pop()
    return Context({}, frozenset(rest)).with_dot(last)


def _pack(doc: object) -> bytes:
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def _unpack(raw: bytes) -> object:
    try:
        doc: object = msgpack.unpackb(raw, use_list=True, raw=False)
    except Exception:  # msgpack raises several unrelated types on garbage
        return None
    return doc


def _is_uint64(x: object) -> bool:
    return type(x) is int and 0 <= x <= _UINT64_MAX


def _is_amount(x: object) -> bool:
    return type(x) is int and x != 0 and abs(x) < MAX_INCREMENT


def _is_token(x: object) -> bool:
    return (type(x) is str and 1 <= len(x) <= MAX_IDEMPOTENCY_KEY
            and all(" " <= c <= "~" for c in x))


def _is_actor(a: object) -> bool:
    return (type(a) is tuple and len(a) == 3 and type(a[0]) is str and 0 < len(a[0]) <= 64
            and _is_uint64(a[1]) and _is_uint64(a[2]))


def _is_dot(d: object) -> bool:
    return (type(d) is tuple and len(d) == 2 and _is_actor(d[0]) and type(d[1]) is int
            and 0 < d[1] <= _UINT64_MAX)
