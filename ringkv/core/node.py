"""One ringkv node as a pure state machine: inputs in, effects out.

The node never touches a socket, the event loop or the wall clock. The runtime (and the
simulation) call

    client_request(client_id, request, now) -> effects
    receive(src, message, now)              -> effects
    timer(key, now)                         -> effects
    tick(now)                               -> effects

and carry out the effects: `Send` a message to a node (itself included), `Reply` to a
client, `SetTimer`. An effect marked `durable` may only be carried out once every write
the node staged in its engine so far is committed: a replica acknowledges a write only
once it is on disk, while the coordinator's fan-out leaves at once (group commit).

Job: composition. The node holds its identity, its membership state (the records, the
current and pending rings, n/r/w) and its parts, and routes inputs to them:
- `coordinator.coordinator.Coordinator`: client requests, the data-path messages,
  request timers and hint replay (dot uniqueness and forwarding are its invariants);
- `ringkv.core.cluster.Cluster`: joining, gossip, statuses, leave and removal;
- `ringkv.core.transfer.Transfers`: range transfers when the rings change;
- `ringkv.core.anti_entropy.AntiEntropy`: Merkle-tree repair between replicas.

Invariants:
- Every start draws a new generation (an incarnation), before any actor is formed.
- The node's Ed25519 key pair (it signs its member records, `gossip.signing`) is drawn
  once, on the first start of a data dir, and kept in its metadata with the identity:
  a restart keeps the key peers pinned; a lost disk means a new key, which peers take
  only through a seed's join while the old life is not heard from.
- One dispatch table, built once, maps every message type id to the one part that
  handles it; a message of no part is dropped.
- With an `on_fault` sink (the runtime's), a failure is contained where it happens: a
  part of the tick, a message handler or a timer that raises yields no effects, is
  counted in `faults` and reported, and every other part still runs. Without one (the
  simulation, tests) it propagates, so a bug fails the run that found it.
- Request ids come from one counter (`new_id`), starting at a random point in every
  life, so a late answer to a request of an earlier life is never taken for one to a
  new request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from coordinator.coordinator import Coordinator, Handler
from coordinator.effects import Effect, Send
from coordinator.requests import ClientRequest
from gossip.gossiper import Gossiper
from gossip.membership import LEAVING, LEFT, UP, Member, Membership
from gossip.phi import PhiAccrualDetector, PhiSettings
from gossip.signing import Signer, new_private_key
from ring.ring import Ring
from ring.token import key_token
from ringkv.core.anti_entropy import AntiEntropy
from ringkv.core.buckets import BucketProps, Buckets
from ringkv.core.cluster import Cluster
from ringkv.core.config import NodeConfig
from ringkv.core.transfer import Transfers
from ringkv.core.wire import Message
from storage.engine import Engine
from storage.store import KeyStore

# Told where a contained failure happened (`Node._contained`) and what it was.
FaultSink = Callable[[str, Exception], None]

BUCKETS_META = "bucket_props"  # the meta-table entry holding the last bucket table seen
ANNOUNCE_FOR = 10.0  # seconds a node sends its own record with its gossip after a change


class Node:
    def __init__(self, config: NodeConfig, engine: Engine, now: float,
                 rng: random.Random, *,
                 new_key: Callable[[], bytes] = new_private_key,
                 on_fault: FaultSink | None = None) -> None:
        """`new_key` draws the 32 bytes of a private key on the first start of a data
        dir: the OS CSPRNG by default; the simulation and tests pass one drawn from a
        seeded rng, so that a seed replays exactly."""
        self.config = config
        self.id = config.node_id
        self.on_fault = on_fault
        self.faults: dict[str, int] = {}  # contained failures, by where they happened
        self.store = KeyStore(engine)
        self.rng = rng
        self.detector = PhiAccrualDetector(PhiSettings.for_interval(
            config.heartbeat_interval, config.phi_convict_threshold))
        self.members = Membership()
        self.n, self.r, self.w = config.n, config.r, config.w
        # Bucket properties; last-write-wins (a bucket's, or the cluster's conflict
        # mode) keeps one sibling everywhere a value's state is formed.
        self.buckets = Buckets(lambda: (self.n, self.r, self.w), config.conflict,
                               config.max_siblings)
        self.resolve = self.buckets.resolve
        self.max_siblings_for = self.buckets.max_siblings_for
        saved = self.store.get_meta(BUCKETS_META)
        if isinstance(saved, dict):
            self.buckets.load({k: v for k, v in saved.items()
                               if isinstance(k, str) and isinstance(v, bytes)})
        # Request ids start at a random point in every life, so that a late answer to a
        # request of an earlier life can never be taken for an answer to a new one.
        self._next_id = rng.getrandbits(48) + 1
        self.addresses_changed = True
        self._load_identity(new_key)
        self.coordinator = Coordinator(self, self.generation)
        self.stats = self.coordinator.stats
        self.cluster = Cluster(self, now)
        self.ring = Ring()
        self.pending = self.ring
        self.transfers = Transfers(self)
        self.joined = self.cluster.load(now)
        self.gossiper = Gossiper(self.id, self.members, self.detector, rng, now,
                                 self.signer, interval=config.heartbeat_interval,
                                 announce_for=ANNOUNCE_FOR)
        self.cluster.rebuild_rings()
        if self.transfers.held is None and self.joined:
            # A node founding a cluster, or data kept from before held rings existed.
            self.transfers.hold(self.pending)
        if self.joined:
            # A restart in the middle of a transfer resumes it; the only effects a
            # completed one has are on this node's own record, which pings spread.
            self.transfers.ring_changed(now)
        self.anti_entropy = AntiEntropy(self)
        self._handlers = self._dispatch_table()

    def _load_identity(self, new_key: Callable[[], bytes]) -> None:
        # A new incarnation on every start. Nothing needs persisting for it to be safe:
        # 62 random bits make a repeat across restarts practically impossible, where a
        # persisted counter would repeat after a crash that lost its last update.
        self.generation = self.rng.getrandbits(62)
        ident = self.store.get_meta("identity")
        starts = int(ident.get("starts", 0)) if isinstance(ident, dict) else 0
        key = ident.get("key") if isinstance(ident, dict) else None
        if not (isinstance(key, bytes) and len(key) == 32):
            key = new_key()  # a new data dir (or one from before records were signed)
        self.signer = Signer(self.id, key)
        # Staged with the identity, before any record signed with it can leave.
        self.store.put_meta("identity", {"node_id": self.id, "starts": starts + 1,
                                         "generation": self.generation, "key": key})

    def _dispatch_table(self) -> dict[int, Handler]:
        table: dict[int, Handler] = {}
        parts: list[dict[int, Handler]] = [
            self.coordinator.handlers(),
            self.cluster.handlers(),
            dict.fromkeys(self.transfers.MESSAGE_TYPES, self.transfers.receive),
            dict.fromkeys(self.anti_entropy.MESSAGE_TYPES, self.anti_entropy.receive),
        ]
        for part in parts:
            for type_id, handler in part.items():
                if type_id in table:
                    raise ValueError(f"message type {type_id} has two handlers")
                table[type_id] = handler
        return table

    # --- views and what the node's parts ask of it ----------------------------------------

    def is_up(self, node_id: str, now: float) -> bool:
        return self.gossiper.is_up(node_id, now)

    def is_departing(self, node_id: str) -> bool:
        member = self.members.get(node_id)
        return member is not None and member.status in (LEAVING, LEFT)

    def view_status(self, member: Member, now: float) -> str:
        if member.status == UP and not self.is_up(member.node_id, now):
            return "down"
        return member.status

    def preference_list(self, key: bytes) -> list[str]:
        return self.ring.preference_list(key_token(key), self.n)

    def learn_buckets(self, table: Mapping[str, bytes]) -> None:
        """Take the bucket properties read from the cluster (`storage.crdt.props_table`),
        and keep them on disk for the next start when they changed."""
        if self.buckets.load(table):
            self.store.put_meta(BUCKETS_META, self.buckets.table())

    def set_bucket_props(self, bucket: str, props: BucketProps) -> None:
        """Apply properties this node just wrote to the cluster, before the next read."""
        self.buckets.set(bucket, props)
        self.store.put_meta(BUCKETS_META, self.buckets.table())

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- membership -------------------------------------------------------------------------

    def set_own_status(self, status: str, now: float) -> list[Effect]:
        """Change this node's membership status and spread it."""
        return self.cluster.set_own_status(status, now)

    def start_leave(self, now: float) -> tuple[str | None, list[Effect]]:
        """Begin handing this node's ranges to their new owners; an error or effects."""
        return self.cluster.start_leave(now)

    def remove_member(self, node_id: str, now: float) -> tuple[str | None, list[Effect]]:
        """Remove a node that is dead for good; its ranges are re-replicated."""
        return self.cluster.remove_member(node_id, now)

    # --- inputs -----------------------------------------------------------------------------

    def client_request(self, client_id: int, req: ClientRequest, now: float) -> list[Effect]:
        return self.coordinator.client_request(client_id, req, now)

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        handler = self._handlers.get(msg.TYPE)
        if handler is None:
            return []
        return self._contained("message", handler, src, msg, now)

    def timer(self, key: int, now: float) -> list[Effect]:
        return self._contained("timer", self.coordinator.timer, key, now)

    def tick(self, now: float) -> list[Effect]:
        if not self.joined:
            return self._contained("tick:join", self.cluster.join_attempts, now)
        # Each part on its own: one that fails every time (a hint that cannot be read)
        # must not stop gossip, transfers or anti-entropy with it.
        effects = self._contained("tick:gossip", self._gossip_tick, now)
        effects.extend(self._contained("tick:coordinator", self.coordinator.tick, now))
        effects.extend(self._contained("tick:transfers", self.transfers.tick, now))
        effects.extend(self._contained("tick:anti_entropy", self.anti_entropy.tick, now))
        return effects

    def _gossip_tick(self, now: float) -> list[Effect]:
        return [Send(dst, msg) for dst, msg in self.gossiper.tick(now)]

    def _contained(self, where: str, step: Callable[..., list[Effect]],
                   *args: object) -> list[Effect]:
        """`step(*args)`; with a fault sink, a failure is counted, reported and no effects."""
        if self.on_fault is None:
            return step(*args)
        try:
            return step(*args)
        except Exception as exc:
            self.faults[where] = self.faults.get(where, 0) + 1
            self.on_fault(where, exc)
            return []
