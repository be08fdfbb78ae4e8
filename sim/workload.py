"""Workloads: simulated clients that go through the client-facing coordinator path.

Job: a few clients, each with one operation in flight at a time, send requests to a
node chosen at random (`World.call` -> `Node.client_request`) and record everything they
did and heard in a `History` for the checkers:

  cart   the Jepsen set test as a shopping cart: read, merge the siblings (set union
         of JSON lists of ints), add one new element, write back with the read's
         context (a failed read means a blind write of the one element)
  put    a register overwrite without a context (supersedes nothing: a sibling)
  cput   a register overwrite with the context of a read just before
  del    a delete (a tombstone) with the context of a read just before
  ttl    a write with a time to live, on keys that only ever get TTL writes
  read   a plain read, with a random read quorum

and the kinds of the data types and newer operations (`sim.datatypes`): `incr`
(counters, idempotent retries), `set` (add-wins sets), `cond` (conditional writes),
`lput` and `list` (key listing while faults and membership changes go on; `ldel`,
deletes in the listed bucket, only in a mix that asks for it).

The world is anything of the `WorkloadWorld` shape: the simulated one, or a real cluster
over HTTP (`sim.live`, which `scripts/compose-test` drives), so the compose fault
test runs this very workload and these very checks.

Values are unique per write (`v<id>`, `t<id>`; a cart value contains the element its
write adds, which no other write can hold without having read it), so a sibling seen in
a read names the write that made it.

Invariants the recorder checks as it goes (each breach is a `History.violations` line):
- a value nobody wrote is never read, no dot ever names two different writes (dots are
  unique: rule 5 of `storage.versions`), and no write gets two dots (a write is applied
  once, however often the network duplicates its frames);
- no read returns two siblings where one's write had a context covering the other's
  dot (a write supersedes exactly what its context covers, so siblings form an antichain
  of truly concurrent writes; sibling explosion would break it);
- no request is `Rejected` (the workload only sends valid requests);
- an operation started in the liveness window (all nodes healthy, failure detection
  caught up) succeeds: every read and every write in it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.requests import (
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
    WriteOk,
    WriteRequest,
)
from sim.datatypes import (
    DATA_KINDS,
    DATA_WEIGHTS,
    DataHistory,
    DataTypes,
    DataTypesConfig,
    WorkloadWorld,
    show_key,
)
from sim.datatypes import brief as _brief
from sim.datatypes import context_of as _context_of
from storage.versions import EMPTY_CONTEXT, Context, Dot, Sibling

VALUE_KINDS = ("cart", "put", "cput", "del", "ttl", "read")
OP_KINDS = VALUE_KINDS + DATA_KINDS
# The mix of the value kinds alone (`ringkv sim --no-datatypes`, the traces before the
# data types); the default mix adds `DATA_WEIGHTS` to it.
VALUE_WEIGHTS: tuple[tuple[str, int], ...] = (("cart", 45), ("put", 8), ("cput", 15),
                                              ("del", 8), ("ttl", 8), ("read", 16))


@dataclass(frozen=True)
class WorkloadConfig:
    clients: int = 4
    think: float = 1.0  # mean seconds a client waits between operations
    carts: int = 6
    registers: int = 24  # a few hot, most cold: cold keys test convergence without reads
    ttl_keys: int = 3
    max_ttl: int = 15  # seconds
    timeout: float = 10.0  # a client gives up on a request after this long
    weights: tuple[tuple[str, int], ...] = VALUE_WEIGHTS + DATA_WEIGHTS
    data: DataTypesConfig = DataTypesConfig()
    # When set, keys are named `cart-<namespace>-<i>` (and so on), so that a workload
    # can run again against a real cluster that still holds an earlier run's keys.
    namespace: str = ""


@dataclass(eq=False)
class Write:
    id: int
    client: int
    key: bytes
    value: bytes | None  # None: a delete
    context: Context  # what the client sent: the versions this write supersedes
    ttl: int | None
    start: float
    live: bool  # started in the liveness window
    element: int | None = None  # the element a cart write adds
    end: float | None = None
    outcome: str = "pending"  # ok | failed (503) | unknown (no answer) | rejected
    dot: Dot | None = None  # the acknowledged dot, or the first one seen in a read
    # Every dot this write's value was seen with. More than one means the write was
    # applied twice (a duplicated ForwardWrite coordinated twice, as before the node
    # remembered forwards): a violation, since the workload never retries.
    dots: set[Dot] = field(default_factory=set)


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)
    keys: dict[bytes, str] = field(default_factory=dict)  # key -> "cart" | "reg" | "ttl"
    by_value: dict[tuple[bytes, bytes], Write] = field(default_factory=dict)
    ops: int = 0
    reads: int = 0
    reads_ok: int = 0
    max_siblings: int = 0
    reapplied: set[int] = field(default_factory=set)  # ids of writes applied twice
    dot_owner: dict[tuple[bytes, Dot], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    liveness_failures: list[str] = field(default_factory=list)
    data: DataHistory = field(default_factory=DataHistory)  # the `sim.datatypes` kinds

    def writes_to(self, key: bytes) -> list[Write]:
        return [w for w in self.writes if w.key == key]

    def write_of(self, key: bytes, sibling: Sibling) -> Write | None:
        return None if sibling.value is None else self.write_with_value(key, sibling.value)

    def write_with_value(self, key: bytes, value: bytes) -> Write | None:
        """The write that sent `value` to `key` (values are unique per write)."""
        return self.by_value.get((key, value))

    @property
    def acknowledged(self) -> int:
        return sum(1 for w in self.writes if w.outcome == "ok")


def new_dot(sent: Context, returned: Context) -> Dot | None:
    """The dot a write added: the one the returned context has beyond the sent one."""
    actors = set(returned.vector) | {a for a, _ in returned.cloud}
    for actor in sorted(actors):
        top = returned.max_counter(actor)
        if top > sent.max_counter(actor):
            return (actor, top)
    return None


def cart_items(siblings: tuple[Sibling, ...] | list[Sibling]) -> set[int]:
    items: set[int] = set()
    for s in siblings:
        if s.value is not None:
            items.update(json.loads(s.value))
    return items


class Workload:
    def __init__(self, world: WorkloadWorld, config: WorkloadConfig) -> None:
        self.world = world
        self.config = config
        self.rng: random.Random = world.rng
        self.history = History()
        prefix = f"{config.namespace}-".encode() if config.namespace else b""
        self.carts = [b"cart-%s%d" % (prefix, i) for i in range(config.carts)]
        self.registers = [b"reg-%s%d" % (prefix, i) for i in range(config.registers)]
        self.ttl_keys = [b"ttl-%s%d" % (prefix, i) for i in range(config.ttl_keys)]
        for keys, kind in ((self.carts, "cart"), (self.registers, "reg"),
                           (self.ttl_keys, "ttl")):
            for key in keys:
                self.history.keys[key] = kind
        self._kinds = [k for k, _ in config.weights]
        self._weights = [w for _, w in config.weights]
        self._next_write = 0
        self._next_element = 0
        self.stop_at = 0.0
        self.live_from = float("inf")
        self.datatypes = DataTypes(self, config.data, tuple(self._kinds), config.timeout)

    def start(self, begin: float, stop_at: float, live_from: float) -> None:
        self.stop_at, self.live_from = stop_at, live_from
        for client in range(1, self.config.clients + 1):
            self.world.at(begin + self.rng.uniform(0, self.config.think), self._op, client)

    # --- plumbing ----------------------------------------------------------------------

    def _request(self, req: WriteRequest | ReadRequest,
                 then: Callable[[ClientResponse | None], None], node: str | None = None
                 ) -> None:
        if node is None:
            running = self.world.running()
            node = self.rng.choice(running) if running else \
                self.rng.choice(list(self.world.hosts))
        self.world.call(node, req, then, self.config.timeout)

    def _pick(self, keys: list[bytes]) -> bytes:
        """A key, skewed: three times in four from the first third (the hot keys)."""
        if self.rng.random() < 0.75:
            return keys[self.rng.randrange(max(1, len(keys) // 3))]
        return self.rng.choice(keys)

    def _done(self, client: int) -> None:
        self.world.after(self.rng.expovariate(1.0 / self.config.think), self._op, client)

    def _op(self, client: int) -> None:
        if self.world.now >= self.stop_at:
            return
        self.history.ops += 1
        kind = self.rng.choices(self._kinds, self._weights)[0]
        live = self.world.now >= self.live_from
        if kind == "cart":
            key = self._pick(self.carts)
            self._next_element += 1
            element = self._next_element
            self._read(client, key, live, lambda resp: self._cart_write(
                client, key, element, resp, live))
        elif kind == "put":
            self._write(client, self._pick(self.registers), None, EMPTY_CONTEXT, live)
        elif kind in ("cput", "del"):
            key = self._pick(self.registers)
            self._read(client, key, live, lambda resp: self._write(
                client, key, None, _context_of(resp), live, delete=kind == "del"))
        elif kind == "ttl":
            key = self.rng.choice(self.ttl_keys)
            ttl = self.rng.randint(1, self.config.max_ttl)
            if self.rng.random() < 0.5:
                self._write(client, key, None, EMPTY_CONTEXT, live, ttl=ttl)
            else:
                self._read(client, key, live, lambda resp: self._write(
                    client, key, None, _context_of(resp), live, ttl=ttl))
        elif kind == "read":
            key = self.rng.choice(self.carts + self.registers + self.ttl_keys)
            self._read(client, key, live, lambda resp: self._done(client))
        else:
            self.datatypes.op(kind, client, live)

    # --- reads ---------------------------------------------------------------------------

    def _read(self, client: int, key: bytes, live: bool,
              then: Callable[[ClientResponse | None], object], *, node: str | None = None,
              quorums: tuple[int | None, ...] = (None, None, None, 1, 3)) -> None:
        r = self.rng.choice(quorums)
        self.history.reads += 1

        def on_reply(resp: ClientResponse | None) -> None:
            self._observe_read(key, resp, live, r)
            then(resp)

        self._request(ReadRequest(key, r), on_reply, node)

    def _observe_read(self, key: bytes, resp: ClientResponse | None, live: bool,
                      r: int | None) -> None:
        h = self.history
        if isinstance(resp, ReadOk | NotFound):
            h.reads_ok += 1
        elif isinstance(resp, Rejected):
            h.violations.append(f"read of {key!r} rejected: {resp.message}")
        elif live:
            h.liveness_failures.append(
                f"t={self.world.elapsed():.3f} read {show_key(key)} r={r}: {_brief(resp)}")
        if isinstance(resp, ReadOk):
            self.observe_siblings(key, resp.siblings, "read")
        self.datatypes.observe_value_read(key, resp)

    def observe_siblings(self, key: bytes, siblings: tuple[Sibling, ...], where: str) -> None:
        h = self.history
        h.max_siblings = max(h.max_siblings, len(siblings))
        writes = []
        for s in siblings:
            w = h.write_of(key, s)
            if w is None:
                h.violations.append(f"{where} of {key!r} returned a value nobody wrote: "
                                    f"{s.value[:60]!r}")  # type: ignore[index]
                continue
            self.saw_dot(key, w, s.dot, where)
            writes.append((s, w))
        for s, _ in writes:
            for other, w in writes:
                if other is not s and w.context.covers(s.dot):
                    h.violations.append(
                        f"{where} of {key!r} returned {_name(h, key, s)} beside write "
                        f"#{w.id}, whose context covers (superseded) it")

    def saw_dot(self, key: bytes, w: Write, dot: Dot, where: str) -> None:
        """`w`'s value was seen under `dot` (in a read, a final read or the answer to
        `w` itself): checks that dots and writes pair up one to one.

        The hook for a world whose reads carry no dots (`sim.live.world`): it overrides
        this to skip the dots it had to make up.
        """
        h = self.history
        owner = h.dot_owner.setdefault((key, dot), w.id)
        if owner != w.id:
            h.violations.append(f"{where} of {key!r}: dot {dot} names two writes, "
                                f"#{owner} and #{w.id} (a dot was reused)")
        if dot not in w.dots:
            if w.dots:
                h.reapplied.add(w.id)
                h.violations.append(f"{where} of {key!r}: write #{w.id} was applied twice, "
                                    f"with dots {sorted(w.dots)[0]} and {dot}")
            w.dots.add(dot)
        if w.dot is None:
            w.dot = dot

    # --- writes ----------------------------------------------------------------------------

    def _cart_write(self, client: int, key: bytes, element: int,
                    resp: ClientResponse | None, live: bool) -> None:
        items = cart_items(resp.siblings) if isinstance(resp, ReadOk) else set()
        items.add(element)
        value = json.dumps(sorted(items), separators=(",", ":")).encode()
        self._write(client, key, value, _context_of(resp), live, element=element)

    def _write(self, client: int, key: bytes, value: bytes | None, context: Context,
               live: bool, *, delete: bool = False, ttl: int | None = None,
               element: int | None = None, node: str | None = None,
               done: Callable[[int], None] | None = None) -> Write:
        self._next_write += 1
        wid = self._next_write
        if value is None and not delete:
            value = (b"t%d" if ttl else b"v%d") % wid
        w = Write(wid, client, key, value, context, ttl, self.world.now, live, element)
        h = self.history
        h.writes.append(w)
        if value is not None:
            if (key, value) in h.by_value:
                h.violations.append(f"workload bug: value {value!r} written twice")
            h.by_value[(key, value)] = w
        quorum = self.rng.choice((None, None, None, 3))
        req = WriteRequest(key, value, "application/json" if element else "text/plain",
                           context, quorum, ttl)

        def on_reply(resp: ClientResponse | None) -> None:
            w.end = self.world.now
            if isinstance(resp, WriteOk):
                w.outcome = "ok"
                dot = new_dot(context, resp.context)
                if dot is None:
                    h.violations.append(f"write #{w.id} acknowledged without a new dot")
                else:
                    self.saw_dot(key, w, dot, "acknowledgement")
                    w.dot = dot
            elif isinstance(resp, Rejected):
                w.outcome = "rejected"
                h.violations.append(f"write #{w.id} to {key!r} rejected: {resp.message}")
            else:
                w.outcome = "failed" if isinstance(resp, QuorumFailed) else "unknown"
            if live and w.outcome != "ok":
                h.liveness_failures.append(
                    f"t={self.world.elapsed():.3f} write #{w.id} {show_key(key)} "
                    f"w={quorum}: {_brief(resp)}")
            (done or self._done)(client)

        self._request(req, on_reply, node)
        return w


def _name(h: History, key: bytes, s: Sibling) -> str:
    w = h.write_of(key, s)
    return f"write #{w.id} {s.dot}" if w else f"sibling {s.dot}"
