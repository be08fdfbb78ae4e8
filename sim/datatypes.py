"""Workloads of the data types and the newer operations (contract sections 5-7).

Job: the clients of `sim.workload.Workload` gain six operation kinds (`DATA_KINDS`),
each sent through a node chosen at random as the other kinds are, and recorded in a
`DataHistory` (`History.data`) for `sim.datatype_checkers`:

  incr   a counter increment (1-1000, one in five a decrement) on one of a few counter
         keys; half carry an idempotency key, and such an increment whose answer was
         lost or a 503 is RETRIED with the same key through another node (at most
         `max_attempts` tries); one without a key is never retried. The client also
         loses the answer of an attempt now and then (`lose_answer`: a connection
         reset after the request left), so that retries of increments that were
         applied are common, not just those the faults make
  set    the Jepsen set test on add-wins sets: add a fresh element (each added once),
         add again an element seen or removed lately (a concurrent add must survive a
         remove that did not observe it), or read the set and remove one or two of its
         elements with the read's context (`storage.crdt.set_context`, decoded and
         matched with `observed` exactly as the HTTP layer does); half the time
         another client adds one of those elements again between the read and the
         remove, so the remove's context misses that add
  cond   a conditional write on one of a few value keys, run as the HTTP layer runs it
         (`coordinator.conditional`): the coordinator reads the key, `check`s the
         precondition and writes with the context it returns, all through one node.
         `If-None-Match: *` creates (half the time two clients race, through two
         nodes at once); `If-Match` updates and deletes carry the ETag of a read the
         client made just before. The writes are ordinary `Write`s of the `History`,
         so the value checkers judge them too
  lput   a blind write to a key of the listing bucket (`LIST_BUCKET`): a new key, or
         an overwrite
  ldel   a delete of a key of that bucket, with the context of a read just before
         (not in the default mix: there the bucket's keys are only ever written)
  list   a full key listing of that bucket: follow the cursor page by page (a page
         limit drawn per listing) through random nodes, retrying a page that failed
         with the same cursor through another node; the keys whose write was
         acknowledged before the listing started are what it must hold

Invariants:
- Every random choice comes from the world's rng, in an order fixed by the seed: the
  kinds run in the simulated world and replay exactly like the others.
- Every operation ends by calling the client's `done` exactly once, so a client keeps
  one operation in flight (retries and listing pages included).
- Nothing is retried once the workload's stop time has passed, so every operation is
  over before the final reads (a 10-second timeout per attempt, the liveness window
  and the 15-second quiet period in between).
- An operation started in the liveness window must succeed at its first attempt,
  as every other operation must (`History.liveness_failures`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.conditional import ANY, Condition, PreconditionFailed, Tag, check, etag
from coordinator.requests import (
    ClientRequest,
    ClientResponse,
    ListOk,
    ListRequest,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from ring.token import MAX_TOKEN, key_token
from storage.crdt import (
    SET_CONTENT_TYPE,
    CounterAdd,
    SetEdit,
    decode_set_context,
    observed,
    set_context,
)
from storage.namespace import (
    COUNTER,
    DEFAULT_BUCKET,
    KV,
    SET,
    internal_key,
    split_internal_key,
)
from storage.versions import EMPTY_CONTEXT, Context, Dot, Sibling

DATA_KINDS = ("incr", "set", "cond", "lput", "ldel", "list")
# Their share of the default mix (the value kinds weigh 100 in all).
DATA_WEIGHTS: tuple[tuple[str, int], ...] = (("incr", 8), ("set", 10), ("cond", 8),
                                            ("lput", 4), ("list", 2))
LIST_BUCKET = "lst"


class WorkloadWorld(Protocol):
    """What a workload needs of the world it runs in: `sim.world.World` (virtual time,
    simulated nodes) or `sim.live.world.HttpWorld` (real time, a cluster over HTTP)."""

    @property
    def rng(self) -> random.Random: ...

    @property
    def now(self) -> float: ...

    @property
    def hosts(self) -> Mapping[str, object]: ...

    def at(self, when: float, fn: Callable[..., object], /, *args: Any) -> None: ...

    def after(self, delay: float, fn: Callable[..., object], /, *args: Any) -> None: ...

    def elapsed(self) -> float: ...

    def running(self) -> list[str]: ...

    def call(self, node: str, request: ClientRequest,
             then: Callable[[ClientResponse | None], None], timeout: float, /) -> object: ...


class WrittenValue(Protocol):
    """A value write as `sim.workload` records it (its `Write`), as far as these kinds
    read one."""

    @property
    def id(self) -> int: ...

    @property
    def key(self) -> bytes: ...

    @property
    def outcome(self) -> str: ...

    @property
    def end(self) -> float | None: ...


class Recorded(Protocol):
    """The parts of the workload's `History` these kinds write to."""

    keys: dict[bytes, str]
    reads: int
    reads_ok: int
    violations: list[str]
    liveness_failures: list[str]
    data: DataHistory


class ValueClient(Protocol):
    """What these kinds use of the workload that runs them (`sim.workload.Workload`): its
    world, rng, history and time marks, and its value operations (a read, a write, the
    end of a client's operation). A protocol, so that this module does not import the
    one that drives it."""

    @property
    def world(self) -> WorkloadWorld: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def history(self) -> Recorded: ...

    @property
    def stop_at(self) -> float: ...

    @property
    def live_from(self) -> float: ...

    def _pick(self, keys: list[bytes]) -> bytes: ...

    def _done(self, client: int) -> None: ...

    def _read(self, client: int, key: bytes, live: bool,
              then: Callable[[ClientResponse | None], object], *, node: str | None = None,
              quorums: tuple[int | None, ...] = ...) -> None: ...

    def _write(self, client: int, key: bytes, value: bytes | None, context: Context,
               live: bool, *, delete: bool = False, ttl: int | None = None,
               element: int | None = None, node: str | None = None,
               done: Callable[[int], None] | None = None) -> WrittenValue: ...


@dataclass(frozen=True)
class DataTypesConfig:
    counters: int = 3
    sets: int = 3
    cond_keys: int = 2  # few, so that conditional creates race
    max_attempts: int = 3  # tries of an idempotent increment, the first included
    retry_pause: float = 0.5  # seconds before a retry (of an increment, a page)
    page_attempts: int = 6  # tries of one listing page before the listing is abandoned
    page_limit: tuple[int, int] = (1, 8)  # keys a listing page asks for, drawn per listing
    readd_memory: int = 8  # elements per set remembered as candidates to add again
    lose_answer: float = 0.2  # odds the client loses the answer to an idempotent attempt
    # Odds a conditional create has a rival sent at the same instant, and a set remove
    # a re-add of its element between its read and it.
    race: float = 0.5


@dataclass(eq=False)
class Increment:
    id: int
    client: int
    key: bytes
    amount: int
    token: str | None  # the idempotency key; None: never retried
    start: float
    live: bool
    nodes: list[str] = field(default_factory=list)  # the node of each attempt
    outcome: str = "pending"  # ok | failed (503) | unknown (no answer) | rejected
    end: float | None = None


@dataclass(eq=False)
class SetAdd:
    id: int
    client: int
    key: bytes
    element: bytes
    start: float
    live: bool
    again: bool  # an element added before (a re-add)
    outcome: str = "pending"
    end: float | None = None


@dataclass(eq=False)
class SetRemove:
    id: int
    client: int
    key: bytes
    element: bytes
    observed: frozenset[Dot]  # the dots of the element the read's context observed
    read_at: float  # when the read those dots come from was answered
    start: float
    live: bool
    outcome: str = "pending"
    end: float | None = None


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What the primaries of a key held, in the ring of the node a listing page was sent
    to, both when the page was sent and when it was answered (`DataTypes.viewer`).

    The listing promises what a read promises (contract 7, `coordinator.listing`): it
    asks R up primaries and does not scan hints, so a write acknowledged by fallbacks
    alone (a sloppy quorum) is listed only once handed off to primaries. A key is due
    in a listing when `quorum` (N - R + 1) primaries held it at both instants: any R
    of them then meet one.
    """

    quorum: int
    live: tuple[int, int]  # primaries holding a live version: when sent, when answered
    contexts: tuple[tuple[Context, ...], tuple[Context, ...]]  # the primaries' contexts

    def held(self) -> bool:
        return min(self.live) >= self.quorum

    def covered(self, dot: Dot) -> bool:
        """Whether `quorum` primaries' contexts covered `dot` at both instants."""
        return all(sum(1 for c in contexts if c.covers(dot)) >= self.quorum
                   for contexts in self.contexts)


# node, stored keys -> (N - R + 1, per key: primaries holding it live, their contexts)
Viewer = Callable[[str, list[bytes]], tuple[int, dict[bytes, tuple[int, tuple[Context, ...]]]]]


@dataclass(eq=False)
class KeyListing:
    id: int
    client: int
    start: float
    limit: int
    expected: frozenset[bytes]  # user keys whose write was acknowledged before `start`
    keys: list[bytes] = field(default_factory=list)
    views: dict[bytes, ReplicaView] = field(default_factory=dict)  # user key -> view
    pages: int = 0
    retries: int = 0
    outcome: str = "pending"  # complete | abandoned | rejected
    end: float | None = None


@dataclass
class DataHistory:
    increments: list[Increment] = field(default_factory=list)
    set_adds: list[SetAdd] = field(default_factory=list)
    set_removes: list[SetRemove] = field(default_factory=list)
    # (set key, element) -> every dot seen holding it -> when it was first seen
    set_seen: dict[tuple[bytes, bytes], dict[Dot, float]] = field(default_factory=dict)
    cond: dict[int, str] = field(default_factory=dict)  # write id -> create|update|delete
    # Every answered read of a conditional key: (key, when, its context, its values).
    cond_reads: list[tuple[bytes, float, Context, frozenset[bytes]]] = field(
        default_factory=list)
    cond_outcomes: dict[str, int] = field(default_factory=dict)  # e.g. create-412
    listings: list[KeyListing] = field(default_factory=list)
    list_keys: dict[bytes, bytes] = field(default_factory=dict)  # stored -> user key
    counters: list[bytes] = field(default_factory=list)
    sets: list[bytes] = field(default_factory=list)

    def count(self, what: str) -> None:
        self.cond_outcomes[what] = self.cond_outcomes.get(what, 0) + 1

    def keys(self) -> list[bytes]:
        """The counter and set keys (the others are value keys of `History.keys`)."""
        return self.counters + self.sets

    def stats(self) -> dict[str, int]:
        incs = self.increments
        ok = [s for s in self.listings if s.outcome == "complete"]
        return {
            "increments": len(incs),
            "increments_acked": sum(1 for i in incs if i.outcome == "ok"),
            "increments_retried": sum(1 for i in incs if len(i.nodes) > 1),
            "set_adds": len(self.set_adds),
            "set_adds_acked": sum(1 for a in self.set_adds if a.outcome == "ok"),
            "set_readds": sum(1 for a in self.set_adds if a.again),
            "set_removes": len(self.set_removes),
            "set_removes_acked": sum(1 for r in self.set_removes if r.outcome == "ok"),
            "cond_writes": len(self.cond),
            "cond_412": sum(v for k, v in self.cond_outcomes.items() if k.endswith("412")),
            "listings_complete": len(ok),
            "listings_abandoned": sum(1 for s in self.listings if s.outcome == "abandoned"),
            "listing_pages": sum(s.pages for s in self.listings),
            "keys_listed": sum(len(s.keys) for s in ok),
        }


def element_dots(siblings: tuple[Sibling, ...]) -> dict[bytes, set[Dot]]:
    """Element -> the dots holding it, in a set's state (siblings not elements skipped)."""
    out: dict[bytes, set[Dot]] = {}
    for s in siblings:
        if s.value is not None and s.content_type == SET_CONTENT_TYPE:
            out.setdefault(s.value, set()).add(s.dot)
    return out


class DataTypes:
    """The data-type kinds of one `Workload` (which owns the clients and the rng)."""

    def __init__(self, workload: ValueClient, config: DataTypesConfig,
                 kinds: tuple[str, ...], timeout: float) -> None:
        self.w = workload
        self.config = config
        self.timeout = timeout  # seconds a client waits for one answer
        self.data = workload.history.data
        h = workload.history
        if "incr" in kinds:
            self.data.counters = [internal_key(DEFAULT_BUCKET, COUNTER, b"ctr-%d" % i)
                                  for i in range(config.counters)]
        if "set" in kinds:
            self.data.sets = [internal_key(DEFAULT_BUCKET, SET, b"set-%d" % i)
                              for i in range(config.sets)]
        self.cond_keys = [b"cond-%d" % i for i in range(config.cond_keys)] \
            if "cond" in kinds else []
        for key in self.cond_keys:
            h.keys[key] = "cond"
        self._cond_set = frozenset(self.cond_keys)
        self._next = 0
        self._readd: dict[bytes, list[bytes]] = {key: [] for key in self.data.sets}
        self._added: dict[bytes, set[bytes]] = {key: set() for key in self.data.sets}
        self._list_writes: list[WrittenValue] = []  # the writes of `lput`
        self._positions: dict[bytes, tuple[int, bytes]] = {}  # stored key -> position
        # Set by a simulated world: what the replicas of the listed keys hold (see
        # `ReplicaView`). Without one, every key acknowledged before a listing is due.
        self.viewer: Viewer | None = None

    def _id(self) -> int:
        self._next += 1
        return self._next

    def op(self, kind: str, client: int, live: bool) -> None:
        if kind == "incr":
            self._incr(client, live)
        elif kind == "set":
            self._set(client, live)
        elif kind == "cond":
            self._cond(client, live)
        elif kind == "lput":
            self._lput(client, live)
        elif kind == "ldel":
            self._ldel(client, live)
        else:
            self._list(client, live)

    # --- plumbing ----------------------------------------------------------------------

    def _node(self, avoid: list[str] | None = None) -> str:
        world = self.w.world
        running = world.running() or list(world.hosts)
        others = [n for n in running if not avoid or n not in avoid]
        return self.w.rng.choice(others or running)

    def _call(self, node: str, req: ClientRequest,
              then: Callable[[ClientResponse | None], None]) -> None:
        self.w.world.call(node, req, then, self.timeout)

    def _liveness(self, live: bool, what: str, resp: ClientResponse | None) -> None:
        if live:
            self.w.history.liveness_failures.append(
                f"t={self.w.world.elapsed():.3f} {what}: {brief(resp)}")

    def _violation(self, text: str) -> None:
        self.w.history.violations.append(text)

    def _joint(self, count: int) -> Callable[[int], None]:
        """A `done` for `count` requests sent at once for one client: the client's
        operation ends when the last of them does."""
        left = [count]

        def one_done(client: int) -> None:
            left[0] -= 1
            if left[0] == 0:
                self.w._done(client)

        return one_done

    def _quorum(self) -> int | None:
        return self.w.rng.choice((None, None, None, 3))

    # --- counters ------------------------------------------------------------------------

    def _incr(self, client: int, live: bool) -> None:
        rng = self.w.rng
        key = self.w._pick(self.data.counters)
        amount = rng.randint(1, 1000) * (-1 if rng.random() < 0.2 else 1)
        iid = self._id()
        token = f"inc-{iid}" if rng.random() < 0.5 else None
        inc = Increment(iid, client, key, amount, token, self.w.world.now, live)
        self.data.increments.append(inc)
        self._incr_attempt(inc)

    def _incr_attempt(self, inc: Increment) -> None:
        node = self._node(inc.nodes[-1:])
        inc.nodes.append(node)
        req = WriteRequest(inc.key, None, "", EMPTY_CONTEXT, self._quorum(),
                           op=CounterAdd(inc.amount, inc.token))
        first = len(inc.nodes) == 1

        # Drawn when sent, so the draw does not depend on how the attempt ends.
        lost = inc.token is not None and self.w.rng.random() < self.config.lose_answer

        def on_reply(resp: ClientResponse | None) -> None:
            inc.end = self.w.world.now
            if lost and isinstance(resp, WriteOk | QuorumFailed):
                resp = None  # the answer never reached the client: retried below
            if isinstance(resp, WriteOk):
                inc.outcome = "ok"
            elif resp is None or isinstance(resp, QuorumFailed):
                inc.outcome = "unknown" if resp is None else "failed"
            else:
                inc.outcome = "rejected"
                self._violation(f"increment #{inc.id} of {show_key(inc.key)} refused: {resp!r}")
            if first and inc.outcome != "ok" and not lost:
                self._liveness(inc.live, f"increment #{inc.id} {show_key(inc.key)}", resp)
            if (inc.outcome in ("failed", "unknown") and inc.token is not None
                    and len(inc.nodes) < self.config.max_attempts
                    and self.w.world.now < self.w.stop_at):
                # The same idempotency key through another node: applied at most once.
                self.w.world.after(self.config.retry_pause, self._incr_attempt, inc)
                return
            self.w._done(inc.client)

        self._call(node, req, on_reply)

    # --- sets ------------------------------------------------------------------------------

    def _set(self, client: int, live: bool) -> None:
        rng = self.w.rng
        key = self.w._pick(self.data.sets)
        roll = rng.random()
        candidates = self._readd[key]
        if roll < 0.45 or (roll < 0.65 and not candidates):
            self._set_edit(client, key, live, adds=[b"e%d" % self._id()], again=False)
        elif roll < 0.65:
            element = rng.choice(candidates)
            self._set_edit(client, key, live, adds=[element], again=True)
        else:
            self._set_read(client, key, live, lambda resp: self._set_remove(
                client, key, live, resp))

    def _set_read(self, client: int, key: bytes, live: bool,
                  then: Callable[[ClientResponse | None], None]) -> None:
        r = self.w.rng.choice((None, None, None, 1, 3))
        self.w.history.reads += 1

        def on_reply(resp: ClientResponse | None) -> None:
            if isinstance(resp, ReadOk | NotFound):
                self.w.history.reads_ok += 1
            else:
                self._liveness(live, f"read of set {show_key(key)} r={r}", resp)
            if isinstance(resp, ReadOk):
                self.observe(key, resp, "read")
            then(resp)

        self._call(self._node(), ReadRequest(key, r), on_reply)

    def observe(self, key: bytes, resp: ClientResponse | None, where: str) -> None:
        """Record the dots a read of a set returned (the first sighting of each)."""
        if not isinstance(resp, ReadOk) or key not in self._readd:
            return
        self.observe_state(key, resp.siblings, where)
        remembered = self._readd[key]
        for element in element_dots(resp.siblings):
            if element not in remembered:
                remembered.append(element)
        del remembered[:max(0, len(remembered) - self.config.readd_memory)]

    def observe_state(self, key: bytes, siblings: tuple[Sibling, ...], where: str) -> None:
        now = self.w.world.now
        added = self._added.get(key)
        for element, dots in element_dots(siblings).items():
            if added is None or element not in added:
                self._violation(f"{where} of set {show_key(key)} returned {element!r}, which"
                                " nobody added")
            seen = self.data.set_seen.setdefault((key, element), {})
            for dot in dots:
                seen.setdefault(dot, now)

    def _set_remove(self, client: int, key: bytes, live: bool,
                    resp: ClientResponse | None) -> None:
        if not isinstance(resp, ReadOk):
            self.w._done(client)
            return
        rng = self.w.rng
        elements = sorted(element_dots(resp.siblings))
        if not elements:
            self.w._done(client)
            return
        chosen = rng.sample(elements, min(len(elements), rng.choice((1, 1, 2))))
        # The context as a client gets it from GET /sets and sends back, matched as
        # `ringkv.server.http_types.parse_set_edit` matches it.
        seen = decode_set_context(set_context(resp.siblings))
        read_at = self.w.world.now
        removes = [SetRemove(self._id(), client, key, e, observed(seen, e), read_at,
                             read_at, live) for e in chosen]  # `start`: set when sent
        adds = [b"e%d" % self._id()] if rng.random() < 0.2 else []
        if rng.random() >= self.config.race:
            self._set_edit(client, key, live, adds=adds, again=False, removes=removes)
            return
        # Another client adds one of the elements again first, and the remove is sent
        # once that add is answered, with the context read before it: an add the
        # remove did not observe, which must survive it (add wins).
        self._set_edit(client, key, live, adds=[chosen[0]], again=True,
                       done=lambda c: self._set_edit(c, key, live, adds=adds, again=False,
                                                     removes=removes))

    def _set_edit(self, client: int, key: bytes, live: bool, adds: list[bytes],
                  again: bool, removes: list[SetRemove] | None = None,
                  node: str | None = None, done: Callable[[int], None] | None = None
                  ) -> None:
        now = self.w.world.now
        finish = done or self.w._done
        removes = removes or []
        records = [SetAdd(self._id(), client, key, e, now, live, again) for e in adds]
        self.data.set_adds.extend(records)
        self._added[key].update(adds)
        self.data.set_removes.extend(removes)
        for r in removes:
            r.start = now
            self._readd[key].append(r.element)
        edit = SetEdit(tuple(adds), tuple((r.element, r.observed) for r in removes))
        req = WriteRequest(key, None, "", EMPTY_CONTEXT, self._quorum(), op=edit)

        def on_reply(resp: ClientResponse | None) -> None:
            end = self.w.world.now
            if isinstance(resp, WriteOk):
                outcome = "ok"
            elif resp is None or isinstance(resp, QuorumFailed):
                outcome = "unknown" if resp is None else "failed"
            else:
                outcome = "rejected"
                self._violation(f"set edit of {show_key(key)} refused: {resp!r}")
            ended: list[SetAdd | SetRemove] = [*records, *removes]
            for rec in ended:
                rec.outcome, rec.end = outcome, end
            if outcome != "ok":
                self._liveness(live, f"set edit of {show_key(key)}", resp)
            finish(client)

        self._call(node or self._node(), req, on_reply)

    # --- conditional writes ----------------------------------------------------------------

    def observe_value_read(self, key: bytes, resp: ClientResponse | None) -> None:
        """Keep the answer of a read of a conditional key (`Workload._observe_read`)."""
        if key not in self._cond_set:
            return
        if isinstance(resp, ReadOk):
            values = frozenset(s.value for s in resp.siblings if s.value is not None)
            self.data.cond_reads.append((key, self.w.world.now, resp.context, values))
        elif isinstance(resp, NotFound) and resp.context is not None:
            self.data.cond_reads.append((key, self.w.world.now, resp.context, frozenset()))

    def _cond(self, client: int, live: bool) -> None:
        rng = self.w.rng
        key = rng.choice(self.cond_keys)
        roll = rng.random()
        if roll < 0.4:
            create = Condition(if_none_match=ANY)
            if rng.random() >= self.config.race:
                self._conditional(client, key, live, "create", create)
                return
            # Two clients create at the same instant through two nodes.
            one_done = self._joint(2)
            first = self._node()
            self._conditional(client, key, live, "create", create, first, one_done)
            self._conditional(client, key, live, "create", create, self._node([first]),
                              one_done)
            return
        kind = "update" if roll < 0.7 else "delete"

        def with_tag(resp: ClientResponse | None) -> None:
            tag = etag(resp) if isinstance(resp, ReadOk | NotFound) else None
            if tag is None:  # nothing to match: a client would not send If-Match
                self.w._done(client)
                return
            self._conditional(client, key, live, kind,
                              Condition(if_match=(Tag(tag[1:-1], False),)))

        self.w._read(client, key, live, with_tag)

    def _conditional(self, client: int, key: bytes, live: bool, kind: str,
                     condition: Condition, node: str | None = None,
                     done: Callable[[int], None] | None = None) -> None:
        """Read at one coordinator, check, write there: the HTTP layer's sequence.

        `done` (the client's own by default) is called once, when it is over.
        """
        node = node or self._node()
        finish = done or self.w._done

        def decide(resp: ClientResponse | None) -> None:
            if not isinstance(resp, ReadOk | NotFound):
                self.data.count(f"{kind}-read-failed")
                finish(client)
                return
            decided = check(condition, resp, EMPTY_CONTEXT)
            if isinstance(decided, PreconditionFailed):
                self.data.count(f"{kind}-412")
                finish(client)
                return
            self.data.count(f"{kind}-written")
            w = self.w._write(client, key, None, decided, live, delete=kind == "delete",
                              node=node, done=finish)
            self.data.cond[w.id] = kind

        self.w._read(client, key, live, decide, node=node, quorums=(None, None, 1))

    # --- key listing ---------------------------------------------------------------------

    def _lput(self, client: int, live: bool) -> None:
        rng = self.w.rng
        keys = list(self.data.list_keys)
        if keys and rng.random() < 0.3:
            stored = rng.choice(keys)
        else:
            user = b"k%d" % self._id()
            stored = internal_key(LIST_BUCKET, KV, user)
            self.data.list_keys[stored] = user
            self._positions[stored] = listing_position(stored)
            self.w.history.keys[stored] = "list"
        self._list_writes.append(self.w._write(client, stored, None, EMPTY_CONTEXT, live))

    def _ldel(self, client: int, live: bool) -> None:
        keys = list(self.data.list_keys)
        if not keys:
            self.w._done(client)
            return
        stored = self.w.rng.choice(keys)
        self.w._read(client, stored, live, lambda resp: self.w._write(
            client, stored, None, context_of(resp), live, delete=True))

    def _list(self, client: int, live: bool) -> None:
        now = self.w.world.now
        expected = frozenset(self.data.list_keys[w.key] for w in self._list_writes
                             if w.outcome == "ok" and w.end is not None and w.end < now)
        listing = KeyListing(self._id(), client, now,
                             self.w.rng.randint(*self.config.page_limit), expected)
        self.data.listings.append(listing)
        self._page(listing, None, [], live)

    def _page(self, listing: KeyListing, after: tuple[int, bytes] | None,
              tried: list[str], live: bool) -> None:
        node = self._node(tried[-1:])
        tried.append(node)
        req = ListRequest(LIST_BUCKET, KV, after, listing.limit)
        start = (0, b"") if after is None else after
        ahead = [k for k, p in self._positions.items() if p > start]
        sent = self.viewer(node, ahead) if self.viewer is not None else None

        def on_reply(resp: ClientResponse | None) -> None:
            world = self.w.world
            if isinstance(resp, ListOk):
                listing.pages += 1
                listing.keys.extend(resp.keys)
                cursor = resp.cursor
                if sent is not None and self.viewer is not None:
                    self._view(listing, node, ahead, sent, cursor)
                if cursor is None or cursor[0] > MAX_TOKEN:  # past the ring's end: done
                    listing.outcome, listing.end = "complete", world.now
                    self.w._done(listing.client)
                else:
                    self._page(listing, cursor, [], world.now >= self.w.live_from)
                return
            if not isinstance(resp, QuorumFailed) and resp is not None:
                listing.outcome, listing.end = "rejected", world.now
                self._violation(f"listing #{listing.id} page refused: {resp!r}")
                self.w._done(listing.client)
                return
            if len(tried) == 1:
                self._liveness(live, f"listing #{listing.id} page", resp)
            if len(tried) < self.config.page_attempts and world.now < self.w.stop_at:
                listing.retries += 1  # the same cursor again, through another node
                world.after(self.config.retry_pause, self._page, listing, after, tried,
                            live)
                return
            listing.outcome, listing.end = "abandoned", world.now
            self.w._done(listing.client)

        self._call(node, req, on_reply)


    def _view(self, listing: KeyListing, node: str, ahead: list[bytes],
              sent: tuple[int, dict[bytes, tuple[int, tuple[Context, ...]]]],
              cursor: tuple[int, bytes] | None) -> None:
        """Keep the views of the keys the page covered, (after, cursor]."""
        assert self.viewer is not None
        covered = [k for k in ahead if cursor is None or self._positions[k] <= cursor]
        quorum, before = sent
        _, now = self.viewer(node, covered)
        for stored in covered:
            if stored in before and stored in now:
                (live_a, ctx_a), (live_b, ctx_b) = before[stored], now[stored]
                listing.views.setdefault(self.data.list_keys[stored], ReplicaView(
                    quorum, (live_a, live_b), (ctx_a, ctx_b)))


def context_of(resp: ClientResponse | None) -> Context:
    """The context a read hands back (a 404 that knows a deletion has one too)."""
    if isinstance(resp, ReadOk):
        return resp.context
    if isinstance(resp, NotFound) and resp.context is not None:
        return resp.context
    return EMPTY_CONTEXT


def listing_position(stored: bytes) -> tuple[int, bytes]:
    """Where a stored key comes in a listing: (token, stored key) order."""
    return key_token(stored), stored


def show_key(key: bytes) -> str:
    """A stored key for humans: `bucket/kind/key` unless a plain value key."""
    try:
        bucket, kind, user = split_internal_key(key)
    except ValueError:
        return repr(key)
    text = user.decode(errors="replace")
    return text if (bucket, kind) == (DEFAULT_BUCKET, KV) else f"{bucket}/{kind}/{text}"


def brief(resp: ClientResponse | None) -> str:
    """A response in a few words, for failure lines."""
    if resp is None:
        return "no answer (timeout or node down)"
    if isinstance(resp, QuorumFailed):
        return f"QuorumFailed(acks={resp.acks}, required={resp.required}, {resp.error!r})"
    return type(resp).__name__
