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
- A saved record that does not decode is skipped (and counted), never fatal: the node
  still starts and learns the other members.
- Every record is persisted before the effects of its change leave, so a restart
  resumes with the membership it last acted on.
- A node that left (or was removed) and is started again joins again: it holds no ring
  and fetches every range it will replicate, since what it still holds may be stale.
- A node writes another's record only to remove it, with a newer version, which wins
  everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from coordinator.coordinator import Handler
from coordinator.effects import Effect, Send
from gossip.gossiper import Gossiper, GossipResult
from gossip.membership import JOINING, LEAVING, LEFT, UP, Member, Membership
from gossip.messages import GOSSIP_MESSAGES
from ring.allocation import MAX_VNODES, allocate_tokens, initial_tokens
from ring.ring import Ring
from ringkv.core.addresses import seed_destination
from ringkv.core.config import NodeConfig
from ringkv.core.join_wire import JoinReply, JoinRequest
from storage.store import KeyStore

JOIN_RETRY = 1.0  # seconds between join attempts while no seed has answered


class RingMoves(Protocol):
    """What membership asks of range transfers."""

    def hold(self, ring: Ring) -> None: ...

    def delay(self, until: float) -> None: ...

    def ring_changed(self, now: float) -> list[Effect]: ...


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


class Cluster:
    def __init__(self, node: ClusterNode, now: float) -> None:
        self._node = node
        self._next_join = now
        self.skipped_records = 0  # saved member records that no longer decode

    def handlers(self) -> dict[int, Handler]:
        """The handler of each gossip and join message, by type id."""
        table: dict[int, Handler] = {cls.TYPE: self._on_gossip for cls in GOSSIP_MESSAGES}
        table[JoinRequest.TYPE] = self._on_join_request
        table[JoinReply.TYPE] = self._on_join_reply
        return table

    # --- this node's record, persisted ------------------------------------------------

    def my_record(self, tokens: tuple[int, ...], version: int) -> Member:
        node, c = self._node, self._node.config
        return Member(node.id, f"{c.advertise_host}:{c.http_port}",
                      f"{c.advertise_host}:{c.rpc_port}", tokens, UP, version,
                      node.generation)

    def load(self, now: float) -> bool:
        """Load the persisted membership, or found a cluster; True if joined."""
        node = self._node
        cluster = node.store.get_meta("cluster")
        records = node.store.get_meta("members")
        if isinstance(cluster, dict) and isinstance(records, list):
            node.n, node.r, node.w = int(cluster["n"]), int(cluster["r"]), int(cluster["w"])
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
                fresh = replace(self.my_record(me.tokens, me.version + 1), status=status)
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
                good.append(Member.from_wire(doc))
            except (ValueError, TypeError):
                self.skipped_records += 1
        return good

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
            return f"{node_id} is up; stop it first, or ask it to leave", []
        # The one record a node writes for another: a newer version wins everywhere.
        removed = replace(member, status=LEFT, version=member.version + 1)
        return None, self._learned(node.gossiper.learn([removed], now), now)

    # --- joining ------------------------------------------------------------------------

    def join_attempts(self, now: float) -> list[Effect]:
        """Until joined: ask every seed to let this node in, once per `JOIN_RETRY`."""
        if now < self._next_join:
            return []
        self._next_join = now + JOIN_RETRY
        me = self.my_record((), 0)
        vnodes = self._node.config.vnodes
        return [Send(seed_destination(seed), JoinRequest(me, vnodes)) for seed in self._seeds()]

    def _on_join_request(self, src: str, msg: JoinRequest, now: float) -> list[Effect]:
        node = self._node
        record, vnodes = msg.record, msg.vnodes

        def refuse(error: str) -> list[Effect]:
            return [Send(src, JoinReply(False, error, (), node.n, node.r, node.w))]

        if not node.joined:
            return refuse("seed has not joined a cluster yet")
        if record.node_id != src:
            return refuse("record does not name the sender")
        if not 1 <= vnodes <= MAX_VNODES:
            return refuse("vnodes out of range")
        known = node.members.get(src)
        if record.tokens:
            tokens = record.tokens
        elif known is not None and known.tokens:
            tokens = known.tokens  # the node lost its disk: give it back its place
        else:
            existing = {k: v for k, v in node.members.ring_tokens().items() if k != src}
            tokens = allocate_tokens(existing, src, vnodes, replicas=node.n)
        version = max(record.version, known.version if known else 0) + 1
        # Joining until it has fetched its ranges: it takes writes, not reads.
        joined = Member(src, record.http, record.rpc, tokens, JOINING, version,
                        record.generation)
        effects = self._learned(node.gossiper.learn([joined], now), now)
        effects.append(Send(src, JoinReply(True, "", tuple(node.members.members()),
                                           node.n, node.r, node.w)))
        return effects

    def _on_join_reply(self, src: str, msg: JoinReply, now: float) -> list[Effect]:
        node = self._node
        if node.joined or not msg.ok:
            return []
        me = next((m for m in msg.records if m.node_id == node.id), None)
        if me is None or not me.tokens:
            return []
        node.n, node.r, node.w = msg.n, msg.r, msg.w
        node.joined = True
        node.transfers.delay(now + node.config.join_settle)
        result = node.gossiper.learn(msg.records, now)
        return self._learned(result, now) if result.changed else self._changed(now)
