"""A hostile member: an authenticated peer that sends random, well-formed messages.

Job: model a process that holds the cluster secret (so the transport accepts its
frames) and uses it against the cluster. It makes itself a member the way any peer can,
by gossiping its own record, signed with a key of its own (every member signs its own
record; `gossip.signing`), and then, every tick, sends a few messages drawn from its
own seeded rng to random running nodes, of every type in the wire registry
(`MESSAGE_TYPES`, checked against `ringkv.core.wire` by the tests):

- joins: a `JoinRequest` naming another member, or naming itself with a vnode count out
  of range; a `JoinReply` (ok or not) carrying replayed records and random n/r/w;
- gossip: digests with stale, current and future heartbeats, its own record at stale,
  current and future versions under every status (never with tokens, always signed: it
  may write its own record as it likes), and replays of member records it received;
- data path: `ReplicaPutAck`, `ReplicaGetReply` and `ForwardReply` for request ids it
  guesses (small ints, and ids near those it observed in frames addressed to it);
  `ReplicaPut` of versions it read earlier (stale replays) or of its own writes to keys
  of its own, with `hint_for` absent, itself or a member; `ReplicaGet` of workload keys
  (what it learns feeds the replays); `ForwardWrite` of its own keys;
- anti-entropy: `AeNodes`/`AeKeys`/`AePush`/`AePushReply` for real and bogus ranges, with
  guessed exchange ids, and pushes of stale replays;
- range transfers: `RangeFetch`, `RangeBatch` of stale replays, `RangeBusy`, and the
  leave handshake (`SyncDone` and the like) with real or random fingerprints and guessed
  ids: any type without a generator of its own gets one built from its fields.

A frame the codec refuses on arrival (a value the receiving decoder rules out) is
dropped and counted by the world, as the transport refuses it.

What it does not do, and why (each is a trust boundary of the design, not a bug):
- it takes no place in the ring: a self-named join with valid vnodes, or its own record
  with tokens, would make it a replica, and a replica that lies about what it stored is
  outside what any Dynamo-style quorum survives;
- it forges no record of another member unless `forge_records` is set; a forged record
  (say `left` for a live node) keeps the signature of the record it was made from, which
  no longer verifies, so every node refuses it (`gossip.signing`). Heartbeats of other
  members ahead of theirs (`forge_beats`) are not signed: nodes hold relayed beats to
  what a member's rounds could have done (`gossip.gossiper`);
- it writes no workload key under a context it invented: that is a delete any member may
  issue, and the lost-write checker would rightly call it a write outside the history.

Invariants: every frame goes through `ringkv.core.wire.encode` here and the world's
decode on arrival, exactly as a real peer's; randomness only from the rng given (the
scenario derives it from the seed, apart from the world's, so a run without a hostile
replays unchanged), and its key from the seed and its id, with no draw from any rng;
iteration is over sorted ids only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from antientropy.merkle import LEAF_LEVEL
from antientropy.messages import AeKeys, AeNodes, AePush, AePushReply
from coordinator.listing_messages import (
    MAX_SCAN_ENTRIES,
    ReplicaScan,
    ReplicaScanReply,
    outline,
)
from coordinator.messages import (
    ForwardReply,
    ForwardWrite,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.requests import QuorumFailed, Rejected, WriteOk, WriteRequest
from gossip.membership import COUNTER_LIMIT, JOINING, LEAVING, LEFT, STATUSES, UP, Member
from gossip.messages import Beat, GossipAck, GossipAck2, GossipSyn
from gossip.signing import Signer
from ring.allocation import MAX_VNODES
from ring.token import MAX_TOKEN
from ringkv.core import wire
from ringkv.core.join_wire import JoinReply, JoinRequest
from ringkv.core.transfer_wire import RangeBatch, RangeBusy, RangeFetch
from ringkv.core.wire import Message
from storage.namespace import COUNTER, KV, SET
from storage.store import unpack_versions
from storage.versions import EMPTY_CONTEXT, Context, Sibling, Versions

# Every message type the registry knows, in type-id order: the hostile member sends them
# all. Types with no generator of their own below (a type added since) get `_generic`,
# which fills each field by its annotation, so a new type is attacked from day one.
MESSAGE_TYPES: tuple[type, ...] = tuple(wire.registered_types().values())

KEEP_IDS = 64  # observed request ids remembered
KEEP_REPLAYS = 256  # observed (key, versions) remembered for stale replays
KEEP_RECORDS = 64  # observed member records remembered for replays
HTTP = "127.0.0.1:8900"


@dataclass(frozen=True)
class HostileConfig:
    node_id: str = "x1"
    rpc: str = "127.0.0.1:9900"
    per_tick: tuple[int, int] = (1, 4)  # messages sent each tick (inclusive bounds)
    forge_records: bool = False  # records of other members (refused once signed)
    # Heartbeats of other members ahead of theirs, up to near 2^62 (dropped as too far
    # ahead, or outrun by the member's real beats: gossip.gossiper). Off by default: it
    # may keep a dead member looking alive, which delays what the checks wait for.
    forge_beats: bool = False
    workload_keys: tuple[bytes, ...] = ()  # keys it reads, to replay what it read


@dataclass
class HostileStats:
    sent: dict[str, int] = field(default_factory=dict)
    received: int = 0
    observed_ids: int = 0


Send = Callable[[str, Message], None]


class Hostile:
    """The adversary's state and its message generators (see the module docstring)."""

    def __init__(self, config: HostileConfig, rng: random.Random,
                 key: bytes | None = None) -> None:
        self.config = config
        self.id = config.node_id
        self.rng = rng
        # Its own key signs its own records; none other's (see the module docstring).
        self.signer = Signer(self.id, key if key is not None
                             else hashlib.sha256(self.id.encode()).digest())
        self.stats = HostileStats()
        self.generation = rng.getrandbits(62)
        self.version = 1
        self.counter = 0
        self.ids: list[int] = []
        self.replays: list[tuple[bytes, Versions]] = []
        self.records: dict[str, Member] = {}
        self.heard: dict[str, tuple[int, int]] = {}  # beats seen: id -> (generation, counter)
        self.fingerprints: list[int] = []
        self._next_own = 0
        self._gets: dict[int, bytes] = {}  # ReplicaGet id -> key
        # Once the scenario heals, it stops attacking and only keeps its membership
        # (heartbeats, answers, acks of hints it is handed), like a member that behaves:
        # hints held for it drain, so the checks judge what the attack left behind.
        self.quiet = False
        self._generators: dict[type, Callable[[list[str]], Message]] = {
            JoinRequest: self._join_request, JoinReply: self._join_reply,
            GossipSyn: self._syn, GossipAck: self._ack, GossipAck2: self._ack2,
            ReplicaPut: self._put, ReplicaPutAck: self._put_ack, ReplicaGet: self._get,
            ReplicaGetReply: self._get_reply, ForwardWrite: self._forward,
            ForwardReply: self._forward_reply, AeNodes: self._ae_nodes, AeKeys: self._ae_keys,
            AePush: self._ae_push, AePushReply: self._ae_push_reply,
            RangeFetch: self._range_fetch, RangeBatch: self._range_batch,
            RangeBusy: self._range_busy, ReplicaScan: self._scan,
            ReplicaScanReply: self._scan_reply,
        }

    # --- what it sends -----------------------------------------------------------------

    def tick(self, members: list[str], send: Send) -> None:
        """Send a few random messages to random members (`members`: running nodes)."""
        if not members:
            return
        rng = self.rng
        self.counter += 1
        # Its own heartbeat and record first, so that it is (and stays) a member.
        if self.quiet:
            self.version += 1
            me = self.signer.sign(Member(self.id, HTTP, self.config.rpc, (), UP, self.version,
                                         self.generation))
            send(rng.choice(members), GossipSyn(self._beats([]), me))
            return
        send(rng.choice(members), GossipSyn(self._digest(members), self._own_record()))
        for _ in range(rng.randint(*self.config.per_tick)):
            kind = rng.choice(MESSAGE_TYPES)
            msg = self.message(kind, members)
            name = kind.__name__
            self.stats.sent[name] = self.stats.sent.get(name, 0) + 1
            send(rng.choice(members), msg)

    def message(self, kind: type, members: list[str]) -> Message:
        """One message of `kind`."""
        make = self._generators.get(kind)
        return make(members) if make is not None else self._generic(kind, members)

    # --- what it learns from frames addressed to it ---------------------------------------

    def receive(self, src: str, msg: Message, send: Send) -> None:
        self.stats.received += 1
        req_id = getattr(msg, "req_id", None)
        if isinstance(req_id, int) and req_id > 0:
            self._remember_id(req_id)
        xid = getattr(msg, "xid", None)
        if isinstance(xid, int):
            self._remember_id(xid)
        match msg:
            case GossipSyn(digest, sender):
                self._remember_beats(digest)
                self._remember_records((sender,) if sender is not None else ())
                send(src, GossipAck(self._beats([]), (self._own_record(),), ()))
            case GossipAck(beats, records, wanted):
                self._remember_beats(beats)
                self._remember_records(records)
                if wanted:
                    send(src, GossipAck2((self._own_record(),)))
            case GossipAck2(records=records) | JoinReply(records=records):
                self._remember_records(records)
            case ReplicaPut(rid, key, versions, _):
                self._remember_replay(key, versions)
                if rid and (self.quiet or self.rng.random() < 0.7):
                    send(src, ReplicaPutAck(rid))  # a hint delivered to it: "stored"
            case ReplicaGetReply(rid, versions):
                asked = self._gets.pop(rid, None)
                if asked is not None and versions is not None:
                    # Replies travel packed, as the replica stores them.
                    self._remember_replay(asked, versions if isinstance(versions, Versions)
                                          else unpack_versions(versions))
            case RangeBatch(_, items, _):
                for key, versions in items[:8]:
                    self._remember_replay(key, versions)
            case _:
                fp = getattr(msg, "fingerprint", None)  # SyncDone, and what asks for one
                if isinstance(fp, int):
                    self.fingerprints = (self.fingerprints + [fp])[-8:]

    def _remember_id(self, rid: int) -> None:
        self.stats.observed_ids += 1
        self.ids = (self.ids + [rid])[-KEEP_IDS:]

    def _remember_replay(self, key: bytes, versions: Versions) -> None:
        self.replays = (self.replays + [(key, versions)])[-KEEP_REPLAYS:]

    def _remember_beats(self, beats: tuple[Beat, ...]) -> None:
        for b in beats:
            known = self.heard.get(b.node_id)
            if b.node_id == self.id or known is None and len(self.heard) >= KEEP_RECORDS:
                continue
            if known is None or known[0] != b.generation or known[1] < b.counter:
                self.heard[b.node_id] = (b.generation, b.counter)

    def _remember_records(self, records: Any) -> None:
        for rec in records:
            if rec.node_id != self.id:
                self.records[rec.node_id] = rec
        if len(self.records) > KEEP_RECORDS:
            for k in sorted(self.records)[KEEP_RECORDS:]:
                del self.records[k]

    # --- small random parts -------------------------------------------------------------

    def _rid(self) -> int:
        """A guessed request id: a small int, or one near an id seen in its traffic."""
        rng = self.rng
        if self.ids and rng.random() < 0.7:
            return max(0, rng.choice(self.ids) + rng.randint(-3, 8))
        return rng.randint(0, 64)

    def _version(self, current: int) -> int:
        """A stale, current or future version (within what peers decode)."""
        rng = self.rng
        return rng.choice((0, max(0, current - rng.randint(1, 5)), current,
                           current + rng.randint(1, 1000), COUNTER_LIMIT - rng.randint(1, 4),
                           rng.randrange(COUNTER_LIMIT)))

    def _own_record(self) -> Member:
        rng = self.rng
        # Mostly a plain member (up, and newer each time), now and then stale or odd.
        if rng.random() < 0.8:
            self.version += 1
            status, version = UP, self.version
        else:
            status, version = rng.choice(STATUSES), self._version(self.version)
        return self.signer.sign(Member(self.id, HTTP, self.config.rpc, (), status, version,
                                       self.generation))

    def _replayed_record(self) -> Member:
        rng = self.rng
        if not self.records:
            return self._own_record()
        rec = self.records[rng.choice(sorted(self.records))]
        if self.config.forge_records and rng.random() < 0.5:
            return replace(rec, status=rng.choice((LEFT, LEAVING, JOINING)),
                           version=self._version(rec.version))
        if rng.random() < 0.5:
            return replace(rec, version=max(0, rec.version - rng.randint(1, 3)),
                           status=rec.status)  # an older copy of it
        return rec

    def _beats(self, ids: list[str]) -> tuple[Beat, ...]:
        rng = self.rng
        beats = [Beat(self.id, self.generation, self.counter, self.version)]
        for node_id in sorted(ids)[:8]:
            rec = self.records.get(node_id)
            gen, heard = self.heard.get(node_id, (0, 0))
            if rng.random() < 0.3:
                gen = rng.randrange(COUNTER_LIMIT)  # a life nobody knows: ignored
            elif rec is not None and gen != rec.generation:
                gen, heard = rec.generation, 0
            if self.config.forge_beats and rng.random() < 0.5:
                counter = rng.choice((heard + rng.randint(1, 10), rng.randrange(COUNTER_LIMIT)))
            else:
                counter = rng.randint(0, heard)  # what it heard, or older: a replay
            beats.append(Beat(node_id, gen, counter,
                              self._version(rec.version if rec is not None else 1)))
        return tuple(beats)

    def _digest(self, members: list[str]) -> tuple[Beat, ...]:
        return self._beats(members if self.rng.random() < 0.3 else [])

    def _records(self) -> tuple[Member, ...]:
        return tuple(self._replayed_record() for _ in range(self.rng.randint(0, 3))) + (
            self._own_record(),)

    def _own_versions(self) -> tuple[bytes, Versions]:
        """A write of its own, to a key of its own (never a workload key)."""
        rng = self.rng
        self._next_own += 1
        key = b"hostile-%d" % rng.randint(0, 20)
        actor = (self.id, self.generation, 1)
        value = None if rng.random() < 0.2 else b"h%d" % self._next_own
        sib = Sibling(actor, self._next_own, value, "text/plain", 0,
                      None if rng.random() < 0.7 else rng.randint(0, 1 << 40))
        return key, Versions(Context({actor: self._next_own}), (sib,))

    def _some_versions(self) -> tuple[bytes, Versions]:
        if self.replays and self.rng.random() < 0.6:
            return self.rng.choice(self.replays)
        return self._own_versions()

    def _range(self) -> tuple[int, int]:
        """A real range of a member it knows (one it does not replicate), or a bogus one."""
        rng = self.rng
        owners = [r for r in sorted(self.records) if self.records[r].tokens]
        if owners and rng.random() < 0.6:
            tokens = sorted(self.records[rng.choice(owners)].tokens)
            i = rng.randrange(len(tokens))
            return tokens[i - 1], tokens[i]
        return rng.randint(0, MAX_TOKEN), rng.randint(0, MAX_TOKEN)

    def _key(self) -> bytes:
        keys = self.config.workload_keys
        if keys and self.rng.random() < 0.8:
            return self.rng.choice(keys)
        return self._own_versions()[0]

    # --- one generator per message type ----------------------------------------------

    def _join_request(self, members: list[str]) -> Message:
        rng = self.rng
        if rng.random() < 0.5 and self.records:
            other = self.records[rng.choice(sorted(self.records))]
            return JoinRequest(replace(other, version=0), rng.randint(1, MAX_VNODES))
        me = self._own_record()
        return JoinRequest(me, rng.choice((0, MAX_VNODES + 1, MAX_VNODES * 4)))

    def _join_reply(self, members: list[str]) -> Message:
        rng = self.rng
        n = rng.randint(1, 5)
        r, w = rng.randint(1, n), rng.randint(1, n)
        if rng.random() < 0.1:
            n, r, w = rng.randint(0, 7), rng.randint(0, 7), rng.randint(0, 7)  # refused
        return JoinReply(rng.random() < 0.7, rng.choice(("", "no")), self._records(), n, r, w)

    def _syn(self, members: list[str]) -> Message:
        return GossipSyn(self._beats(members), self.rng.choice((None, self._own_record())))

    def _ack(self, members: list[str]) -> Message:
        wanted = tuple(sorted(self.rng.sample(sorted(members), min(2, len(members)))))
        return GossipAck(self._beats(members), self._records(), wanted)

    def _ack2(self, members: list[str]) -> Message:
        return GossipAck2(self._records())

    def _put(self, members: list[str]) -> Message:
        rng = self.rng
        key, versions = self._some_versions()
        hint_for = rng.choice((None, None, self.id, rng.choice(members)))
        return ReplicaPut(self._rid(), key, versions, hint_for)

    def _put_ack(self, members: list[str]) -> Message:
        return ReplicaPutAck(self._rid())

    def _get(self, members: list[str]) -> Message:
        rid, key = self._rid() or 1, self._key()
        self._gets[rid] = key  # what the answer is about, for later replays
        while len(self._gets) > KEEP_IDS:
            del self._gets[next(iter(self._gets))]
        return ReplicaGet(rid, key)

    def _get_reply(self, members: list[str]) -> Message:
        versions = None if self.rng.random() < 0.3 else self._some_versions()[1]
        return ReplicaGetReply(self._rid(), versions)

    def _forward(self, members: list[str]) -> Message:
        key, versions = self._own_versions()
        value = versions.siblings[0].value
        return ForwardWrite(self._rid() + 1 + self.rng.randint(0, 1000),
                            WriteRequest(key, value, "text/plain", EMPTY_CONTEXT,
                                         self.rng.choice((None, 1, 2, 3)), None, None))

    def _forward_reply(self, members: list[str]) -> Message:
        rng = self.rng
        response = rng.choice((WriteOk(EMPTY_CONTEXT, 2), QuorumFailed(0, 2, "forged"),
                               Rejected("forged")))
        return ForwardReply(self._rid(), response)

    def _ae_nodes(self, members: list[str]) -> Message:
        rng = self.rng
        level = rng.choice((0, 0, 1, LEAF_LEVEL))
        ranges = tuple((*self._range(), ((0, rng.getrandbits(64)),))
                       for _ in range(rng.randint(0, 3)))
        return AeNodes(self._rid(), level, ranges)

    def _ae_keys(self, members: list[str]) -> Message:
        rng = self.rng
        leaves = []
        for _ in range(rng.randint(1, 3)):
            start, end = self._range()
            keys = tuple((self._key(), rng.getrandbits(64)) for _ in range(rng.randint(0, 3)))
            leaves.append((start, end, 0, b"", rng.random() < 0.3, keys))
        return AeKeys(self._rid(), tuple(leaves))

    def _ae_push(self, members: list[str]) -> Message:
        items = tuple(self._some_versions() for _ in range(self.rng.randint(0, 3)))
        want = tuple(self._key() for _ in range(self.rng.randint(0, 3)))
        return AePush(self._rid(), _unique(items), want)

    def _ae_push_reply(self, members: list[str]) -> Message:
        items = tuple(self._some_versions() for _ in range(self.rng.randint(0, 3)))
        return AePushReply(self._rid(), _unique(items))

    def _range_fetch(self, members: list[str]) -> Message:
        start, end = self._range()
        return RangeFetch(self._rid(), start, end, None, self.rng.randint(0, 1000))

    def _range_batch(self, members: list[str]) -> Message:
        items = tuple(self._some_versions() for _ in range(self.rng.randint(0, 3)))
        return RangeBatch(self._rid(), _unique(items),
                          None if self.rng.random() < 0.5 else bytes(9))

    def _generic(self, kind: type, members: list[str]) -> Message:
        """A message of any dataclass type, each field drawn by its annotation: ints are
        guessed ids (a fingerprint it saw, for a field named so), bytes are keys, str
        are member ids, versions are replays."""
        rng = self.rng
        values: dict[str, Any] = {}
        for f in fields(kind):
            t = str(f.type)
            if f.name == "fingerprint":
                values[f.name] = (rng.choice(self.fingerprints) if self.fingerprints
                                  and rng.random() < 0.5 else rng.randint(0, MAX_TOKEN))
            elif t == "int":
                values[f.name] = self._rid()
            elif t == "bool":
                values[f.name] = rng.random() < 0.5
            elif t.startswith("bytes"):
                values[f.name] = self._key()
            elif t.startswith("str"):
                values[f.name] = rng.choice(sorted(members))
            elif t.startswith("Versions"):
                values[f.name] = self._some_versions()[1]
            elif "None" in t:
                values[f.name] = None
            else:
                raise TypeError(f"no generator for {kind.__name__}.{f.name}: {t}")
        msg: Message = kind(**values)
        return msg

    def _scan(self, members: list[str]) -> Message:
        rng = self.rng
        start, end = sorted(self._range())
        after = (start, b"" if rng.random() < 0.5 else self._key())
        return ReplicaScan(self._rid(), after, end, rng.choice(("default", "b", "photos")),
                           rng.choice((KV, COUNTER, SET)), rng.randint(1, MAX_SCAN_ENTRIES))

    def _scan_reply(self, members: list[str]) -> Message:
        rng = self.rng
        items = _unique(tuple(self._some_versions() for _ in range(rng.randint(0, 3))))
        reached = None if rng.random() < 0.5 else (rng.randint(0, MAX_TOKEN), self._key())
        return ReplicaScanReply(self._rid(), tuple((k, outline(s)) for k, s in items), reached)

    def _range_busy(self, members: list[str]) -> Message:
        return RangeBusy(self._rid())


def _unique(items: tuple[tuple[bytes, Versions], ...]) -> tuple[tuple[bytes, Versions], ...]:
    """One entry per key, as honest senders make them."""
    seen: dict[bytes, Versions] = {}
    for key, versions in items:
        seen.setdefault(key, versions)
    return tuple(seen.items())


class WorldLike(Protocol):
    now: float
    tick_interval: float

    def attach(self, peer_id: str, rpc: str,
               on_frame: Callable[[str, Message], None]) -> None: ...

    def inject(self, src: str, dst: str, msg: Message) -> None: ...

    def at(self, when: float, fn: Callable[..., object], *args: Any) -> None: ...

    def running(self) -> list[str]: ...

    def log(self, text: str) -> None: ...


def deploy(world: WorldLike, count: int, seed: int, begin: float, quiet_at: float,
           end: float, workload_keys: tuple[bytes, ...] = (),
           forge_records: bool = False, forge_beats: bool = False) -> list[Hostile]:
    """Attach `count` hostile members (x1, x2, ...) that attack from `begin` until
    `quiet_at`, then only keep their membership until `end`.

    Each draws from a generator of its own, seeded from the scenario seed: the world's
    rng is used only for the links and latencies of their frames. Its signing key comes
    from the seed and its id, as the world derives honest nodes' keys, drawing nothing.
    """
    hostiles = []
    for i in range(1, count + 1):
        config = HostileConfig(node_id=f"x{i}", rpc=f"127.0.0.1:{9900 + i}",
                               forge_records=forge_records, forge_beats=forge_beats,
                               workload_keys=workload_keys)
        key = random.Random(f"{seed}/{config.node_id}/hostile").randbytes(32)
        hostile = Hostile(config, random.Random(seed * 104_729 + 31 * i), key)
        hostiles.append(hostile)

        def send(dst: str, msg: Message, hid: str = hostile.id) -> None:
            world.inject(hid, dst, msg)

        def on_frame(src: str, msg: Message, h: Hostile = hostile,
                     out: Send = send) -> None:
            h.receive(src, msg, out)

        def tick(h: Hostile = hostile, out: Send = send) -> None:
            if world.now >= end:
                return
            if not h.quiet and world.now >= quiet_at:
                h.quiet = True
                world.log(f"hostile {h.id} quiet")
            h.tick(world.running(), out)
            world.at(world.now + world.tick_interval, tick)

        world.attach(hostile.id, config.rpc, on_frame)
        world.at(begin + 0.01 * i, tick)
    return hostiles
