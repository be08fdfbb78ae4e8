"""How a node enters, keeps and leaves its cluster's membership.

Job: the membership side of a node. On start, load the member records it persisted
(a restart keeps its place in the ring) or found a cluster; until joined, ask its seeds
to let it in (`JoinRequest`), and as a seed, admit others (`JoinReply`); merge what
gossip learns; rebuild the current ring (members up or leaving) and the pending ring
(members joining or up) from the statuses; persist the records; and change this node's
own status (leave) or another's (removal of a node dead for good). Whenever the rings
change, range transfers are told (`ring_changed`).

Invariants:
- A node's own record comes from a seed's join reply (or from its own disk): until it
  has joined it ignores gossip, and takes no part in requests.
- The cluster places a joiner, never the joiner itself (as Riak's claimant assigns
  partitions): the seed ignores any tokens a join request names and allocates at most
  its own configured vnodes, or gives back the place a known member held. A joiner
  takes a reply only with a nonce it sent to a seed, sane n/r/w, its own record as it
  asked, and a ring in which no token has two owners; saved n/r/w are checked the same.
- At most one leave or removal is in flight: none starts while another member is
  joining or leaving (the message names it), or while this node still fetches ranges,
  and none leaves fewer than N members up or joining. A removal takes only a member
  this node cannot hear from, and only while it hears from most of the others (a node
  cut off from the rest must not evict them).
- A saved record that does not decode is skipped (and counted), never fatal: the node
  still starts and learns the other members.
- Every record is persisted before the effects of its change leave, so a restart
  resumes with the membership it last acted on.
- A node that left (or was removed) and is started again joins again: it holds no ring
  and fetches every range it will replicate, since what it still holds may be stale.
- Every record this node writes is signed with its key (`gossip.signing`). It writes
  another's record only to remove it (a newer version, signed as its author, which
  peers take only while they too cannot hear from the member, and which the member, if
  alive, refutes) or, as a seed, to admit a joiner whose request its own key signed.
- Records saved before records were signed load as placeholders: this node's own is
  signed anew at start, the others' at version 0 until a signed one is learned.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from coordinator.coordinator import Handler
from coordinator.effects import Effect, Send
from gossip.gossiper import Gossiper, GossipResult
from gossip.membership import JOINING, LEAVING, LEFT, UP, Member, Membership
from gossip.messages import GOSSIP_MESSAGES
from gossip.signing import Signer, verify
from ring.allocation import MAX_VNODES, allocate_tokens, initial_tokens
from ring.ring import Ring
from ringkv.core.addresses import seed_destination
from ringkv.core.config import NodeConfig
from ringkv.core.join_wire import JoinReply, JoinRequest, valid_quorums
from storage.store import KeyStore

JOIN_RETRY = 1.0  # seconds between join attempts while no seed has answered


class RingMoves(Protocol):
    """What membership asks of range transfers."""

    def hold(self, ring: Ring) -> None: ...

    def delay(self, until: float) -> None: ...

    def ring_changed(self, now: float) -> list[Effect]: ...

    def busy(self) -> bool:
        """True while ranges this node gained are still being fetched."""
        ...


class ClusterNode(Protocol):
    """The node whose membership this is: what it reads, and the state it keeps."""

    ring: Ring
    pending: Ring
    n: int
    r: int
    w: int
    joined: bool
    addresses_changed: bool  # the runtime redials members when set

    @property
    def id(self) -> str: ...

    @property
    def signer(self) -> Signer: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def generation(self) -> int: ...

    @property
    def store(self) -> KeyStore: ...

    @property
    def members(self) -> Membership: ...

    @property
    def gossiper(self) -> Gossiper: ...

    @property
    def transfers(self) -> RingMoves: ...

    def is_up(self, node_id: str, now: float) -> bool: ...

    def new_id(self) -> int: ...


class Cluster:
    def __init__(self, node: ClusterNode, now: float) -> None:
        self._node = node
        self._next_join = now
        self.skipped_records = 0  # saved member records that no longer decode
        self.refused_replies = 0  # join replies not to this node's requests, or not sane
        self._nonces: dict[str, int] = {}  # seed host:port -> the nonce sent it, per life

    def handlers(self) -> dict[int, Handler]:
        """The handler of each gossip and join message, by type id."""
        table: dict[int, Handler] = {cls.TYPE: self._on_gossip for cls in GOSSIP_MESSAGES}
        table[JoinRequest.TYPE] = self._on_join_request
        table[JoinReply.TYPE] = self._on_join_reply
        return table

    # --- this node's record, persisted ------------------------------------------------

    def my_record(self, tokens: tuple[int, ...], version: int, status: str = UP) -> Member:
        """This node's record as it is now, signed."""
        node, c = self._node, self._node.config
        return node.signer.sign(Member(node.id, f"{c.advertise_host}:{c.http_port}",
                                       f"{c.advertise_host}:{c.rpc_port}", tokens, status,
                                       version, node.generation))

    def load(self, now: float) -> bool:
        """Load the persisted membership, or found a cluster; True if joined."""
        node = self._node
        cluster = node.store.get_meta("cluster")
        records = node.store.get_meta("members")
        if isinstance(cluster, dict) and isinstance(records, list):
            self._restore_quorums(cluster)
            node.members.merge(self._decode_saved(records))
            me = node.members.get(node.id)
            if me is not None and me.tokens:
                # A restart: same place in the ring and status, fresh addresses and
                # incarnation, a newer version.
                status = me.status
                if status == LEFT:
                    status = JOINING
                    node.transfers.hold(Ring())
                    node.transfers.delay(now + node.config.join_settle)
                fresh = self.my_record(me.tokens, me.version + 1, status)
                node.members.merge_one(fresh)
                self.persist()
                return True
        if self._bootstraps():
            me = self.my_record(initial_tokens(node.id, node.config.vnodes), 1)
            node.members.merge_one(me)
            self.persist()
            return True
        return False

    def _decode_saved(self, records: list[object]) -> list[Member]:
        """The saved records that decode; the others are counted in `skipped_records`.

        A bad record on disk (saved before ids were checked where records are decoded)
        must not stop the node from starting or from learning the other members.
        """
        good = []
        for doc in records:
            try:
                if isinstance(doc, list) and len(doc) == 7:
                    good.append(self._unsigned(Member.from_wire([*doc, b"", "", b""])))
                else:
                    good.append(Member.from_wire(doc))
            except (ValueError, TypeError):
                self.skipped_records += 1
        return good

    def _unsigned(self, m: Member) -> Member:
        """A record saved before records were signed: ours keeps its version (`load`
        signs it anew, one past); another's drops to version 0, a placeholder that
        keeps its address and place in the ring until any signed record of it (its
        owner's, whose key it pins) replaces it."""
        return m if m.node_id == self._node.id else replace(m, version=0)

    def _own_rpc(self) -> str:
        return f"{self._node.config.advertise_host}:{self._node.config.rpc_port}"

    def _seeds(self) -> list[str]:
        """The seeds to join through, never this node itself."""
        return [s for s in self._node.config.seeds if s != self._own_rpc()]

    def _bootstraps(self) -> bool:
        """True when this node starts a new cluster rather than joining one.

        With no seeds, or when this node is the first of its seed list: one seed list
        can then be handed to every node (as in a compose file) and exactly one of
        them founds the cluster while the others join it.
        """
        seeds = self._node.config.seeds
        return not seeds or seeds[0] == self._own_rpc()

    def persist(self) -> None:
        node = self._node
        node.store.put_meta("cluster", {"n": node.n, "r": node.r, "w": node.w})
        node.store.put_meta("members", [m.to_wire() for m in node.members.members()])

    # --- rings --------------------------------------------------------------------------

    def rebuild_rings(self) -> bool:
        """Rebuild the current and pending rings from member statuses; True if changed."""
        node = self._node
        current = node.members.ring_tokens((UP, LEAVING))
        pending = node.members.ring_tokens((JOINING, UP))
        changed = False
        if current != node.ring.token_map():
            node.ring = Ring(current)
            changed = True
        if pending == current:
            changed |= node.pending is not node.ring
            node.pending = node.ring
        elif pending != node.pending.token_map() or node.pending is node.ring:
            node.pending = Ring(pending)
            changed = True
        return changed

    def _changed(self, now: float) -> list[Effect]:
        self._node.addresses_changed = True
        self.persist()
        if self.rebuild_rings():
            return self._node.transfers.ring_changed(now)
        return []

    def _learned(self, result: GossipResult, now: float) -> list[Effect]:
        effects: list[Effect] = [Send(dst, msg) for dst, msg in result.sends]
        if result.recovered:
            self._node.addresses_changed = True  # the runtime redials a member that is back
        if result.changed:
            effects.extend(self._changed(now))
        return effects

    def _on_gossip(self, src: str, msg: Any, now: float) -> list[Effect]:
        if not self._node.joined:
            return []  # our own record must come from a seed's join reply
        return self._learned(self._node.gossiper.receive(src, msg, now), now)

    # --- statuses: leave and removal --------------------------------------------------

    def set_own_status(self, status: str, now: float) -> list[Effect]:
        """Change this node's membership status and spread it."""
        node = self._node
        me = node.members.get(node.id)
        if me is None or me.status == status:
            return []
        node.gossiper.update_own(replace(me, status=status, version=me.version + 1), now)
        return self._changed(now)

    def start_leave(self, now: float) -> tuple[str | None, list[Effect]]:
        """Begin handing this node's ranges to their new owners; an error or effects."""
        node = self._node
        me = node.members.get(node.id)
        if not node.joined or me is None:
            return "node has not joined a cluster", []
        if me.status in (LEAVING, LEFT):
            return None, []
        if me.status != UP:
            return f"node is {me.status}; only an up node can leave", []
        others = [m for m in node.members.members()
                  if m.node_id != node.id and m.status in (UP, JOINING)]
        if not others:
            return "the last node of a cluster cannot leave it", []
        refusal = self._change_in_flight(node.id) or self._too_few_after(node.id)
        if refusal is not None:
            return refusal, []
        return None, self.set_own_status(LEAVING, now)

    def remove_member(self, node_id: str, now: float) -> tuple[str | None, list[Effect]]:
        """Remove a node that is dead for good; its ranges are re-replicated."""
        node = self._node
        member = node.members.get(node_id)
        if member is None:
            return f"no member named {node_id!r}", []
        if node_id == node.id:
            return "a node cannot remove itself; use leave", []
        if member.status == LEFT:
            return None, []
        if node.is_up(node_id, now):
            return (f"{node_id} is up (this node hears from it); stop it first, or ask it"
                    " to leave"), []
        refusal = (self._change_in_flight(node_id) or self._too_few_after(node_id)
                   or self._cut_off(node_id, now))
        if refusal is not None:
            return refusal, []
        # The one record a node writes for another: a newer version wins everywhere.
        removed = node.signer.sign(replace(member, status=LEFT, version=member.version + 1))
        return None, self._learned(node.gossiper.learn([removed], now), now)

    def _change_in_flight(self, changing: str) -> str | None:
        """Why a change of `changing` must wait for another one, or None.

        `changing` itself may be mid-change (a joiner or leaver that died: removing it
        is how an operator ends that change).
        """
        node = self._node
        for m in node.members.members():
            if m.node_id not in (node.id, changing) and m.status in (JOINING, LEAVING):
                return (f"a membership change is in flight: {m.node_id} is {m.status};"
                        " try again once it is done")
        if node.transfers.busy():
            return ("a membership change is in flight: this node still fetches ranges it"
                    " gained; try again once it is done")
        return None

    def _too_few_after(self, departing: str) -> str | None:
        """Why `departing` may not go because fewer than N members would stay, or None."""
        node = self._node
        staying = sum(1 for m in node.members.members()
                      if m.node_id != departing and m.status in (UP, JOINING))
        if staying < node.n:
            return (f"{departing} going would leave {staying} members, fewer than"
                    f" n={node.n}")
        return None

    def _cut_off(self, removed: str, now: float) -> str | None:
        """Why this node may not judge `removed` dead: it hears from too few others.

        A node cut off from the rest sees every other member down; only one that hears
        from a majority of the members that stay may evict the one it cannot hear.
        """
        node = self._node
        staying = [m.node_id for m in node.members.members()
                   if m.node_id != removed and m.status != LEFT]
        heard = sum(1 for m in staying if node.is_up(m, now))  # this node included
        if 2 * heard <= len(staying):
            return (f"this node hears from only {heard} of the {len(staying)} members that"
                    " would stay (itself included); it may be the one cut off")
        return None

    # --- joining ------------------------------------------------------------------------

    def join_attempts(self, now: float) -> list[Effect]:
        """Until joined: ask every seed to let this node in, once per `JOIN_RETRY`."""
        if now < self._next_join:
            return []
        self._next_join = now + JOIN_RETRY
        me = self.my_record((), 0)
        vnodes = self._node.config.vnodes
        return [Send(seed_destination(seed), JoinRequest(me, vnodes, self._nonce_for(seed)))
                for seed in self._seeds()]

    def _nonce_for(self, seed: str) -> int:
        """The nonce this life sends `seed` (a seed's id is unknown until it answers: the
        nonce is what ties the answer to the seed dialed), kept across retries so that a
        slow answer to an earlier attempt is still taken.

        A request id: those start at a random point of 48 bits in every life, and a node
        that has not joined sends nothing else, so no other node can guess it; and
        taking one draws nothing from the rng, whose sequence the rest of the node's
        life (and a simulation's trace) depends on.
        """
        nonce = self._nonces.get(seed)
        if nonce is None:
            nonce = self._nonces[seed] = self._node.new_id()
        return nonce

    def _on_join_request(self, src: str, msg: JoinRequest, now: float) -> list[Effect]:
        node = self._node
        record, vnodes = msg.record, msg.vnodes

        def refuse(error: str) -> list[Effect]:
            return [Send(src, JoinReply(False, error, (), node.n, node.r, node.w, msg.nonce))]

        if not node.joined:
            return refuse("seed has not joined a cluster yet")
        if record.node_id != src:
            return refuse("record does not name the sender")
        if not 1 <= vnodes <= MAX_VNODES:
            return refuse("vnodes out of range")
        if not verify(record, record.key):
            return refuse("record not signed by the key it carries")
        known = node.members.get(src)
        existing = {k: v for k, v in node.members.ring_tokens().items() if k != src}
        taken = {t for ts in existing.values() for t in ts}
        # The tokens the request names are never read: a joiner that chose its own could
        # take every primary of the ring. The cluster places it, like Riak's claimant.
        if known is not None and known.tokens and taken.isdisjoint(known.tokens):
            tokens = known.tokens  # the node lost its disk, or left: its place back
        else:
            # Fewer vnodes than this cluster's nodes take may be asked for (a smaller
            # machine), never more.
            count = min(vnodes, node.config.vnodes)
            tokens = allocate_tokens(existing, src, count, replicas=node.n)
        version = max(record.version, known.version if known else 0) + 1
        # Joining until it has fetched its ranges: it takes writes, not reads.
        joined = node.signer.sign(Member(src, record.http, record.rpc, tokens, JOINING,
                                         version, record.generation, record.key))
        result = node.gossiper.learn([joined], now)
        if node.members.get(src) != joined:  # refused: see gossip.signing
            return refuse("a member by that id is heard from here under another key")
        effects = self._learned(result, now)
        effects.append(Send(src, JoinReply(True, "", tuple(node.members.members()),
                                           node.n, node.r, node.w, msg.nonce)))
        return effects

    def _reply_problem(self, src: str, msg: JoinReply) -> str | None:
        """Why a join reply must not be taken, or None: it answers no request this node
        sent, or what it carries is not what a seed would send."""
        node = self._node
        if msg.nonce == 0 or msg.nonce not in self._nonces.values():
            return "not an answer to a request of this node"
        if not valid_quorums(msg.n, msg.r, msg.w):
            return "impossible n, r or w"
        by_id = {m.node_id: m for m in msg.records}
        me, seed = by_id.get(node.id), by_id.get(src)
        if me is None or not me.tokens or me.status != JOINING or me.rpc != self._own_rpc() \
                or me.generation != node.generation or len(me.tokens) > MAX_VNODES \
                or me.key != node.signer.public_key:
            return "this node's record is not the one it asked for"
        if seed is None or seed.status == LEFT or not seed.tokens:
            return "the answering seed is not a member of the ring it sent"
        owned = [t for m in msg.records if m.status != LEFT for t in m.tokens]
        if len(owned) != len(set(owned)):
            return "a token has two owners"
        return None

    def _on_join_reply(self, src: str, msg: JoinReply, now: float) -> list[Effect]:
        node = self._node
        if node.joined or not msg.ok:
            return []
        if self._reply_problem(src, msg) is not None:
            self.refused_replies += 1
            return []
        node.n, node.r, node.w = msg.n, msg.r, msg.w
        node.joined = True
        node.transfers.delay(now + node.config.join_settle)
        result = node.gossiper.learn(msg.records, now)
        return self._learned(result, now) if result.changed else self._changed(now)

    def _restore_quorums(self, saved: dict[Any, Any]) -> None:
        """Take the saved n, r and w when a cluster could have them; else keep the
        configured ones (a forged join reply may once have been saved)."""
        node = self._node
        n, r, w = saved.get("n"), saved.get("r"), saved.get("w")
        if type(n) is int and type(r) is int and type(w) is int and valid_quorums(n, r, w):
            node.n, node.r, node.w = n, r, w
