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

Invariants:
- Dot uniqueness (rule 5 of `storage.versions`): a node coordinates a write for a key
  with the actor stored in its local record for that key if that actor was created in
  this process life, or else with a fresh epoch. Every start draws a new generation
  (an incarnation), so no actor of an earlier life is ever reused: a crash between a
  write's fan-out and its local commit leaves replicas holding a dot the node has
  forgotten, and a disk loss forgets every dot; neither can be issued again.
- Writes are coordinated by a replica of the key (requests that reach another node are
  forwarded), so a key's context holds about N actors however many writes it sees.
- A replica merges what it receives; it never overwrites. Merge is commutative,
  associative and idempotent, so duplicated, reordered or repeated messages are safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.quorum import ReadQuorum, Target, WriteQuorum, choose_targets
from coordinator.requests import (
    ClientRequest,
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
    WriteOk,
    WriteRequest,
)
from gossip.gossiper import Gossiper, GossipResult
from gossip.membership import JOINING, LEAVING, LEFT, UP, Member, Membership
from gossip.messages import GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector, PhiSettings
from ring.allocation import MAX_VNODES, allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import key_token
from ring.transition import write_extras
from ringkv.core.anti_entropy import AntiEntropy
from ringkv.core.config import NodeConfig
from ringkv.core.transfer import Transfers
from ringkv.core.wire import (
    ForwardReply,
    ForwardWrite,
    JoinReply,
    JoinRequest,
    Message,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from storage.engine import Engine
from storage.keys import split_hint_key
from storage.record import Record
from storage.store import KeyStore
from storage.versions import Actor, Versions, lww_resolve, update

ANNOUNCE_FOR = 10.0  # seconds a node sends its own record with its gossip after a change
FORWARD_MEMORY = 30.0  # seconds a forwarded write's id is remembered, to drop duplicates
JOIN_RETRY = 1.0  # seconds between join attempts while no seed has answered
HINT_TIMEOUT = 5.0  # seconds before an unacknowledged hint delivery is retried
REPAIR_ID = 0  # request id of fire-and-forget repairs: their acks are ignored


@dataclass(slots=True)
class _ReplyTo:
    client_id: int | None = None  # a local client
    node: str | None = None  # or a node that forwarded the request
    node_req: int = 0


@dataclass(slots=True)
class _WriteOp:
    key: bytes
    quorum: WriteQuorum
    client_context: object
    reply_to: _ReplyTo
    state: Versions  # what the replicas were sent; hinted to those that never acked


@dataclass(slots=True)
class _ReadOp:
    key: bytes
    quorum: ReadQuorum
    reply_to: _ReplyTo
    repaired: bool = False


@dataclass(slots=True)
class _ForwardOp:
    reply_to: _ReplyTo


@dataclass(slots=True)
class _HintOp:
    target: str
    hint_key: bytes
    sent: Versions
    deadline: float


@dataclass(slots=True)
class Stats:
    """Counters the runtime exports as metrics; plain ints, no clock."""

    read_repairs: int = 0
    hints_delivered: int = 0
    hints_stored: int = 0
    forwarded: int = 0
    stale_replies: int = 0


def _keep_all(versions: Versions) -> Versions:
    return versions


class Node:
    def __init__(self, config: NodeConfig, engine: Engine, now: float,
                 rng: random.Random) -> None:
        self.config = config
        self.id = config.node_id
        self.store = KeyStore(engine)
        self.rng = rng
        self.stats = Stats()
        self.detector = PhiAccrualDetector(PhiSettings.for_interval(
            config.heartbeat_interval, config.phi_convict_threshold))
        self.members = Membership()
        self.n, self.r, self.w = config.n, config.r, config.w
        # Last-write-wins keeps one sibling everywhere a state is formed.
        self.resolve = lww_resolve if config.conflict == "lww" else _keep_all
        self._ops: dict[int, _WriteOp | _ReadOp | _ForwardOp | _HintOp] = {}
        # Request ids start at a random point in every life, so that a late answer to a
        # request of an earlier life can never be taken for an answer to a new one.
        self._next_id = rng.getrandbits(48) + 1
        self._seen_forwards: dict[tuple[str, int], float] = {}
        self._next_join = now
        self.addresses_changed = True
        self._load_identity()
        self.ring = Ring()
        self.pending = self.ring
        self.transfers = Transfers(self)
        self.joined = self._load_membership(now)
        self.gossiper = Gossiper(self.id, self.members, self.detector, rng, now,
                                 interval=config.heartbeat_interval, announce_for=ANNOUNCE_FOR)
        self._rebuild_rings()
        if self.transfers.held is None and self.joined:
            # A node founding a cluster, or data kept from before held rings existed.
            self.transfers.hold(self.pending)
        if self.joined:
            # A restart in the middle of a transfer resumes it; the only effects a
            # completed one has are on this node's own record, which pings spread.
            self.transfers.ring_changed(now)
        self.anti_entropy = AntiEntropy(self)

    # --- identity and metadata ---------------------------------------------------------

    def _load_identity(self) -> None:
        # A new incarnation on every start. Nothing needs persisting for it to be safe:
        # 62 random bits make a repeat across restarts practically impossible, where a
        # persisted counter would repeat after a crash that lost its last update.
        self.generation = self.rng.getrandbits(62)
        self._epoch = 0
        ident = self.store.get_meta("identity")
        starts = int(ident.get("starts", 0)) if isinstance(ident, dict) else 0
        self.store.put_meta("identity", {"node_id": self.id, "starts": starts + 1,
                                         "generation": self.generation})

    def _fresh_actor(self) -> Actor:
        self._epoch += 1
        return (self.id, self.generation, self._epoch)

    def _own_actor(self, record: Record | None) -> Actor | None:
        """This node's actor for a key, if it was created in this process life."""
        if record is None or record.local_actor is None:
            return None
        return record.local_actor if record.local_actor[1] == self.generation else None

    def _my_record(self, tokens: tuple[int, ...], version: int) -> Member:
        c = self.config
        return Member(self.id, f"{c.advertise_host}:{c.http_port}",
                      f"{c.advertise_host}:{c.rpc_port}", tokens, UP, version,
                      self.generation)

    def _load_membership(self, now: float) -> bool:
        cluster = self.store.get_meta("cluster")
        records = self.store.get_meta("members")
        if isinstance(cluster, dict) and isinstance(records, list):
            self.n, self.r, self.w = int(cluster["n"]), int(cluster["r"]), int(cluster["w"])
            self.members.merge(Member.from_wire(m) for m in records)
            me = self.members.get(self.id)
            if me is not None and me.tokens:
                # A restart: same place in the ring and status, fresh addresses and
                # incarnation, a newer version.
                status = me.status
                if status == LEFT:
                    # A node that left (or was removed) and is started again joins
                    # again: what it still holds may be stale, so it holds no ring
                    # and fetches every range it will replicate.
                    status = JOINING
                    self.transfers.hold(Ring())
                    self.transfers.delay(now + self.config.join_settle)
                fresh = replace(self._my_record(me.tokens, me.version + 1), status=status)
                self.members.merge_one(fresh)
                self._persist_membership()
                return True
        if self._bootstraps():
            me = self._my_record(initial_tokens(self.id, self.config.vnodes), 1)
            self.members.merge_one(me)
            self._persist_membership()
            return True
        return False

    def _own_rpc(self) -> str:
        return f"{self.config.advertise_host}:{self.config.rpc_port}"

    def _seeds(self) -> list[str]:
        """The seeds to join through, never this node itself."""
        return [s for s in self.config.seeds if s != self._own_rpc()]

    def _bootstraps(self) -> bool:
        """True when this node starts a new cluster rather than joining one.

        With no seeds, or when this node is the first of its seed list: one seed list
        can then be handed to every node (as in a compose file) and exactly one of
        them founds the cluster while the others join it.
        """
        seeds = self.config.seeds
        return not seeds or seeds[0] == self._own_rpc()

    def _persist_membership(self) -> None:
        self.store.put_meta("cluster", {"n": self.n, "r": self.r, "w": self.w})
        self.store.put_meta("members", [m.to_wire() for m in self.members.members()])

    def _rebuild_rings(self) -> bool:
        """Rebuild the current and pending rings from member statuses; True if changed."""
        current = self.members.ring_tokens((UP, LEAVING))
        pending = self.members.ring_tokens((JOINING, UP))
        changed = False
        if current != self.ring.token_map():
            self.ring = Ring(current)
            changed = True
        if pending == current:
            changed |= self.pending is not self.ring
            self.pending = self.ring
        elif pending != self.pending.token_map() or self.pending is self.ring:
            self.pending = Ring(pending)
            changed = True
        return changed

    def _membership_changed(self, now: float) -> list[Effect]:
        self.addresses_changed = True
        self._persist_membership()
        if self._rebuild_rings():
            return self.transfers.ring_changed(now)
        return []

    def set_own_status(self, status: str, now: float) -> list[Effect]:
        """Change this node's membership status and spread it."""
        me = self.members.get(self.id)
        if me is None or me.status == status:
            return []
        self.gossiper.update_own(replace(me, status=status, version=me.version + 1), now)
        return self._membership_changed(now)

    def start_leave(self, now: float) -> tuple[str | None, list[Effect]]:
        """Begin handing this node's ranges to their new owners; an error or effects."""
        me = self.members.get(self.id)
        if not self.joined or me is None:
            return "node has not joined a cluster", []
        if me.status in (LEAVING, LEFT):
            return None, []
        if me.status != UP:
            return f"node is {me.status}; only an up node can leave", []
        others = [m for m in self.members.members()
                  if m.node_id != self.id and m.status in (UP, JOINING)]
        if not others:
            return "the last node of a cluster cannot leave it", []
        return None, self.set_own_status(LEAVING, now)

    def remove_member(self, node_id: str, now: float) -> tuple[str | None, list[Effect]]:
        """Remove a node that is dead for good; its ranges are re-replicated."""
        member = self.members.get(node_id)
        if member is None:
            return f"no member named {node_id!r}", []
        if node_id == self.id:
            return "a node cannot remove itself; use leave", []
        if member.status == LEFT:
            return None, []
        if self.is_up(node_id, now):
            return f"{node_id} is up; stop it first, or ask it to leave", []
        # The one record a node writes for another: a newer version wins everywhere.
        removed = replace(member, status=LEFT, version=member.version + 1)
        return None, self._on_gossip(self.gossiper.learn([removed], now), now)

    # --- views for the HTTP layer -------------------------------------------------------

    def is_up(self, node_id: str, now: float) -> bool:
        return self.gossiper.is_up(node_id, now)

    def view_status(self, member: Member, now: float) -> str:
        if member.status == UP and not self.is_up(member.node_id, now):
            return "down"
        return member.status

    def preference_list(self, key: bytes) -> list[str]:
        return self.ring.preference_list(key_token(key), self.n)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- client requests ------------------------------------------------------------------

    def client_request(self, client_id: int, req: ClientRequest, now: float) -> list[Effect]:
        reply_to = _ReplyTo(client_id=client_id)
        if not self.joined or not self.ring.nodes:
            return [Reply(client_id, QuorumFailed(0, 1, "node has not joined a cluster"))]
        if isinstance(req, ReadRequest):
            return self._start_read(req, reply_to, now)
        return self._start_write(req, reply_to, now, forwarded=False)

    def _quorum(self, asked: int | None, default: int) -> int | str:
        value = default if asked is None else asked
        if not 1 <= value <= self.n:
            return f"quorum {value} out of range 1..{self.n}"
        return value

    def _deadline(self, timeout_ms: int | None, now: float) -> float:
        ms = self.config.request_timeout_ms if timeout_ms is None else timeout_ms
        return now + ms / 1000.0

    def _targets(self, token: int, now: float) -> list[Target]:
        return choose_targets(
            self.ring.preference_list(token, self.n),
            lambda: self.ring.extended_list(token),
            lambda node: self.is_up(node, now),
        )

    def _answer(self, reply_to: _ReplyTo, response: ClientResponse,
                durable: bool = False) -> Effect:
        if reply_to.node is not None:
            return Send(reply_to.node, ForwardReply(reply_to.node_req, response), durable)
        assert reply_to.client_id is not None
        return Reply(reply_to.client_id, response, durable)

    def _start_write(self, req: WriteRequest, reply_to: _ReplyTo, now: float,
                     forwarded: bool) -> list[Effect]:
        w = self._quorum(req.w, self.w)
        if isinstance(w, str):
            return [self._answer(reply_to, Rejected(w))]
        token = key_token(req.key)
        targets = self._targets(token, now)
        if len(targets) < w:
            return [self._answer(reply_to, QuorumFailed(0, w, "too few replicas reachable"))]
        deadline = self._deadline(req.timeout_ms, now)
        mine = next((t for t in targets if t.node == self.id), None)
        if mine is None and not forwarded:
            # Coordinate on a replica, which holds a stable actor for the key.
            fwd = self.new_id()
            self._ops[fwd] = _ForwardOp(reply_to)
            self.stats.forwarded += 1
            ms = max(1, int((deadline - now) * 1000))
            fwd_req = WriteRequest(req.key, req.value, req.content_type, req.context, w,
                                   req.ttl, ms)
            # The forwarder waits a little longer than the coordinator so that the
            # coordinator's own 503 (with its ack count) arrives first.
            return [Send(targets[0].node, ForwardWrite(fwd, fwd_req)),
                    SetTimer(deadline + 0.25, fwd)]
        now_ms = int(now * 1000)
        expires = now_ms + req.ttl * 1000 if req.ttl else None
        if mine is not None and mine.hint_for is None:
            record = self.store.get_record(token, req.key)
            actor = self._own_actor(record)
            base = record.versions if record else None
            if actor is None:
                actor = self._fresh_actor()
            state, client_ctx = update(base, req.context, actor, req.value,
                                       req.content_type, now_ms, expires)
            state = self.resolve(state)
            self.store.put_record(token, req.key, Record(state, actor))
        else:
            # A fallback (or a node outside the list) holds no stable actor for the key.
            state, client_ctx = update(None, req.context, self._fresh_actor(), req.value,
                                       req.content_type, now_ms, expires)
            if mine is not None and mine.hint_for is not None:
                self.store.merge_hint(token, req.key, mine.hint_for, state, self.resolve)
                self.stats.hints_stored += 1
        self._hint_uncovered(token, req.key, targets, state)
        required = w
        for extra in write_extras(self.ring, self.pending, token, self.n):
            # A range in transit: its pending owner gets every write too, and must
            # acknowledge it (Cassandra's W + pending), unless it is down: then a hint.
            if any(t.node == extra for t in targets):
                continue
            if self.is_up(extra, now):
                targets.append(Target(extra, None))
                required += 1
            elif extra != self.id:
                self.store.merge_hint(token, req.key, extra, state, self.resolve)
                self.stats.hints_stored += 1
        req_id = self.new_id()
        quorum = WriteQuorum(required, tuple(targets))
        self._ops[req_id] = _WriteOp(req.key, quorum, client_ctx, reply_to, state)
        effects: list[Effect] = [SetTimer(deadline, req_id)]
        for t in targets:
            if t.node == self.id:
                effects.append(Send(self.id, ReplicaPutAck(req_id), durable=True))
            else:
                effects.append(Send(t.node, ReplicaPut(req_id, req.key, state, t.hint_for)))
        return effects

    def _hint_uncovered(self, token: int, key: bytes, targets: list[Target],
                        state: Versions) -> None:
        """Keep a hint for every primary that no target stands in for.

        When a primary is down and no fallback is reachable, the write still succeeds
        with W acknowledgements; without this hint the primary would learn of it only
        from a read.
        """
        if len(targets) >= self.n:
            return
        covered = {t.node for t in targets} | {t.hint_for for t in targets}
        for primary in self.ring.preference_list(token, self.n):
            if primary not in covered and primary != self.id:
                self.store.merge_hint(token, key, primary, state, self.resolve)
                self.stats.hints_stored += 1

    def _hint_unacked(self, op: _WriteOp) -> None:
        """Keep a hint for every replica that did not acknowledge in time.

        As Cassandra does: a replica that is up but dropped or lost the write gets it
        by hinted handoff, so replicas converge without waiting for a read.
        """
        token = key_token(op.key)
        for target in op.quorum.targets:
            if target.node in op.quorum.acked or target.node == self.id:
                continue
            owner = target.hint_for or target.node
            if owner == self.id:
                continue
            self.store.merge_hint(token, op.key, owner, op.state, self.resolve)
            self.stats.hints_stored += 1

    def _start_read(self, req: ReadRequest, reply_to: _ReplyTo, now: float) -> list[Effect]:
        r = self._quorum(req.r, self.r)
        if isinstance(r, str):
            return [self._answer(reply_to, Rejected(r))]
        targets = self._targets(key_token(req.key), now)
        if len(targets) < r:
            return [self._answer(reply_to, QuorumFailed(0, r, "too few replicas reachable"))]
        req_id = self.new_id()
        self._ops[req_id] = _ReadOp(req.key, ReadQuorum(r, tuple(targets)), reply_to)
        effects: list[Effect] = [SetTimer(self._deadline(req.timeout_ms, now), req_id)]
        effects.extend(Send(t.node, ReplicaGet(req_id, req.key)) for t in targets)
        return effects

    def _read_response(self, op: _ReadOp, now: float) -> ClientResponse:
        merged = self.resolve(op.quorum.merged())
        stale = tuple(op.quorum.stale(merged))
        replied = tuple(sorted(op.quorum.replies))
        self.stats.stale_replies += len(stale)
        live = merged.live(int(now * 1000))
        if not live:
            return NotFound(merged.context if merged.context else None, replied, stale)
        return ReadOk(tuple(live), merged.context, replied, stale)

    def _read_repair(self, op: _ReadOp) -> list[Effect]:
        if op.repaired:
            return []
        op.repaired = True
        merged = op.quorum.merged()
        effects: list[Effect] = []
        for target in op.quorum.repairs():
            self.stats.read_repairs += 1
            effects.append(Send(target.node, ReplicaPut(REPAIR_ID, op.key, merged,
                                                        target.hint_for)))
        return effects

    # --- messages ---------------------------------------------------------------------

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        match msg:
            case ReplicaPut():
                return self._on_replica_put(src, msg)
            case ReplicaPutAck(req_id):
                return self._on_put_ack(src, req_id)
            case ReplicaGet(req_id, key):
                versions = self.store.read_merged(key_token(key), key)
                return [Send(src, ReplicaGetReply(req_id, versions))]
            case ReplicaGetReply(req_id, versions):
                return self._on_get_reply(src, req_id, versions, now)
            case ForwardWrite(req_id, request):
                if (src, req_id) in self._seen_forwards:
                    return []  # a duplicated frame: coordinating it again adds a sibling
                self._seen_forwards[(src, req_id)] = now + FORWARD_MEMORY
                reply_to = _ReplyTo(node=src, node_req=req_id)
                if not self.joined:
                    return [self._answer(reply_to, QuorumFailed(0, request.w or self.w,
                                                                "node has not joined"))]
                return self._start_write(request, reply_to, now, forwarded=True)
            case ForwardReply(req_id, response):
                op = self._ops.get(req_id)
                if isinstance(op, _ForwardOp):
                    del self._ops[req_id]
                    return [self._answer(op.reply_to, response)]
                return []
            case GossipSyn() | GossipAck() | GossipAck2():
                if not self.joined:
                    return []  # our own record must come from a seed's join reply
                return self._on_gossip(self.gossiper.receive(src, msg, now), now)
            case JoinRequest(record, vnodes):
                return self._on_join_request(src, record, vnodes, now)
            case JoinReply():
                return self._on_join_reply(msg, now)
        if msg.TYPE in self.transfers.MESSAGE_TYPES:
            return self.transfers.receive(src, msg, now)
        if msg.TYPE in self.anti_entropy.MESSAGE_TYPES:
            return self.anti_entropy.receive(src, msg, now)
        return []

    def _on_replica_put(self, src: str, msg: ReplicaPut) -> list[Effect]:
        token = key_token(msg.key)
        if msg.hint_for is not None and msg.hint_for != self.id:
            self.store.merge_hint(token, msg.key, msg.hint_for, msg.versions, self.resolve)
            self.stats.hints_stored += 1
        else:
            self.store.merge_record(token, msg.key, msg.versions, self.resolve)
        if msg.req_id == REPAIR_ID:
            return []
        return [Send(src, ReplicaPutAck(msg.req_id), durable=True)]

    def _on_put_ack(self, src: str, req_id: int) -> list[Effect]:
        op = self._ops.get(req_id)
        if isinstance(op, _HintOp):
            return self._on_hint_ack(req_id, op)
        if not isinstance(op, _WriteOp):
            return []
        effects: list[Effect] = []
        if op.quorum.ack(src):
            effects.append(self._answer(op.reply_to, WriteOk(op.client_context,  # type: ignore[arg-type]
                                                             op.quorum.acks)))
        if op.quorum.done():
            del self._ops[req_id]
        return effects

    def _on_get_reply(self, src: str, req_id: int, versions: Versions | None,
                      now: float) -> list[Effect]:
        op = self._ops.get(req_id)
        if not isinstance(op, _ReadOp):
            return []
        effects: list[Effect] = []
        if op.quorum.reply(src, versions):
            effects.append(self._answer(op.reply_to, self._read_response(op, now)))
        if op.quorum.complete():
            del self._ops[req_id]
            effects.extend(self._read_repair(op))
        return effects

    # --- timers -------------------------------------------------------------------------

    def timer(self, key: int, now: float) -> list[Effect]:
        op = self._ops.pop(key, None)
        if op is None:
            return []
        if isinstance(op, _WriteOp):
            self._hint_unacked(op)
            if op.quorum.answered:
                return []
            return [self._answer(op.reply_to, QuorumFailed(op.quorum.acks,
                                                           op.quorum.required))]
        if isinstance(op, _ReadOp):
            effects: list[Effect] = []
            if not op.quorum.answered:
                op.quorum.answered = True
                effects.append(self._answer(op.reply_to, QuorumFailed(
                    len(op.quorum.replies), op.quorum.required)))
            if op.quorum.replies:
                effects.extend(self._read_repair(op))
            return effects
        if isinstance(op, _ForwardOp):
            return [self._answer(op.reply_to, QuorumFailed(0, self.w,
                                                           "coordinator did not answer"))]
        return []  # a hint delivery that timed out is simply retried later

    # --- periodic work ------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if not self.joined:
            if now >= self._next_join:
                self._next_join = now + JOIN_RETRY
                me = self._my_record((), 0)
                for seed in self._seeds():
                    effects.append(Send(f"seed:{seed}", JoinRequest(me, self.config.vnodes)))
            return effects
        effects.extend(Send(dst, msg) for dst, msg in self.gossiper.tick(now))
        effects.extend(self._replay_hints(now))
        effects.extend(self.transfers.tick(now))
        effects.extend(self.anti_entropy.tick(now))
        if self._seen_forwards:
            self._seen_forwards = {k: t for k, t in self._seen_forwards.items() if t > now}
        return effects

    def _replay_hints(self, now: float) -> list[Effect]:
        """Hand hints to their targets that are back: paced, a bounded number in flight."""
        in_flight: dict[str, set[bytes]] = {}
        for req_id, op in list(self._ops.items()):
            if isinstance(op, _HintOp):
                if now > op.deadline:
                    del self._ops[req_id]
                else:
                    in_flight.setdefault(op.target, set()).add(op.hint_key)
        effects: list[Effect] = []
        for target in self.store.hint_targets():
            if target == self.id:
                continue
            member = self.members.get(target)
            if member is not None and member.status in (LEAVING, LEFT):
                self._redirect_hints(target, in_flight.get(target, set()))
                continue
            if not self.is_up(target, now):
                continue
            busy = in_flight.get(target, set())
            room = self.config.hint_replay_batch - len(busy)
            if room <= 0:
                continue
            for hkey in self.store.hints_for(target, room, busy):
                versions = self.store.get_hint(hkey)
                if versions is None:
                    continue
                _, key, _ = split_hint_key(hkey)
                req_id = self.new_id()
                self._ops[req_id] = _HintOp(target, hkey, versions, now + HINT_TIMEOUT)
                effects.append(Send(target, ReplicaPut(req_id, key, versions, None)))
        return effects

    def _redirect_hints(self, target: str, busy: set[bytes]) -> None:
        """Turn hints for a node that is leaving or has left into hints for the key's
        replicas in the pending ring, which are its heirs.

        Handed to the departing node, a hint could land after its heirs fetched its
        ranges and be lost with it; and a node that has left never takes one again.
        Paced like replay: `hint_replay_batch` a tick.
        """
        for hkey in self.store.hints_for(target, self.config.hint_replay_batch, busy):
            versions = self.store.get_hint(hkey)
            token, key, _ = split_hint_key(hkey)
            if versions is not None:
                for owner in self.pending.preference_list(token, self.n):
                    if owner == self.id:
                        self.store.merge_record(token, key, versions, self.resolve)
                    elif owner != target:
                        self.store.merge_hint(token, key, owner, versions, self.resolve)
            self.store.delete_hint(hkey)

    def _on_hint_ack(self, req_id: int, op: _HintOp) -> list[Effect]:
        del self._ops[req_id]
        current = self.store.get_hint(op.hint_key)
        # Drop the hint only if nothing new was hinted for the key while it was in flight.
        if current is not None and current.same_as(op.sent):
            self.store.delete_hint(op.hint_key)
            self.stats.hints_delivered += 1
        return []

    # --- membership -----------------------------------------------------------------------

    def _on_gossip(self, result: GossipResult, now: float) -> list[Effect]:
        effects: list[Effect] = [Send(dst, msg) for dst, msg in result.sends]
        if result.recovered:
            self.addresses_changed = True  # the runtime redials a member that is back
        if result.changed:
            effects.extend(self._membership_changed(now))
        return effects

    def _on_join_request(self, src: str, record: Member, vnodes: int,
                         now: float) -> list[Effect]:
        def refuse(error: str) -> list[Effect]:
            return [Send(src, JoinReply(False, error, (), self.n, self.r, self.w))]

        if not self.joined:
            return refuse("seed has not joined a cluster yet")
        if record.node_id != src:
            return refuse("record does not name the sender")
        if not 1 <= vnodes <= MAX_VNODES:
            return refuse("vnodes out of range")
        known = self.members.get(src)
        if record.tokens:
            tokens = record.tokens
        elif known is not None and known.tokens:
            tokens = known.tokens  # the node lost its disk: give it back its place
        else:
            existing = {k: v for k, v in self.members.ring_tokens().items() if k != src}
            tokens = allocate_tokens(existing, src, vnodes, replicas=self.n)
        version = max(record.version, known.version if known else 0) + 1
        # Joining until it has fetched its ranges: it takes writes, not reads.
        joined = Member(src, record.http, record.rpc, tokens, JOINING, version,
                        record.generation)
        effects = self._on_gossip(self.gossiper.learn([joined], now), now)
        effects.append(Send(src, JoinReply(True, "", tuple(self.members.members()),
                                           self.n, self.r, self.w)))
        return effects

    def _on_join_reply(self, msg: JoinReply, now: float) -> list[Effect]:
        if self.joined or not msg.ok:
            return []
        me = next((m for m in msg.records if m.node_id == self.id), None)
        if me is None or not me.tokens:
            return []
        self.n, self.r, self.w = msg.n, msg.r, msg.w
        self.joined = True
        self.transfers.delay(now + self.config.join_settle)
        result = self.gossiper.learn(msg.records, now)
        return self._on_gossip(result, now) if result.changed else self._membership_changed(now)
