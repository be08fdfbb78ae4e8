"""Push-pull anti-entropy gossip of membership records and heartbeats (pure).

Job: keep every node's `Membership` converging on the newest record of every member,
and feed the failure detector with heartbeat news from whichever peer carries it.

Why push-pull digests (Cassandra's SYN / ACK / ACK2) rather than SWIM. The detector
is phi-accrual over heartbeat *counters*: each node increments its own counter every
round and the counter spreads like any other state, so a node's liveness is judged from
news relayed by everyone, and one dead link between two healthy nodes changes nothing
(SWIM needs indirect probes to get the same). A digest names every member with its
heartbeat and record version, so a record (with its 256 tokens, ~2.5 KB) crosses the
wire only when the two sides differ, and a full-state exchange heals any divergence,
including after a partition, in one round; SWIM's piggybacked updates are sent a bounded
number of times and a node that missed them needs a separate full sync. The price is
a digest of ~22 bytes per member each round, fine up to a few hundred nodes.

One round, every `interval` seconds at each node:

    A: counter += 1; to `fanout` random live peers that answered our last SYN (and,
       with probability (down + unanswering) / (live + 1), to one member believed down
       or not answering, so partitions heal and a dead link only costs a probe):
       SYN(digest of A: id, generation, counter, version for every member; and A's
           own record for `announce_for` seconds after it changed, so that peers learn
           a new address without having to reach A first)
    B: takes the newer heartbeats of the digest; answers
       ACK(heartbeats B knows newer, records whose version is newer at B, ids wanted)
    A: merges the records and heartbeats; sends ACK2(the records B wanted)

Invariants:
- Records merge by version, highest wins (`Membership.merge_one`); only the owner bumps
  its record, except a seed writing a joiner's first record and an operator writing
  `left` for a removed node (both through `learn`).
- A heartbeat `(generation, counter)` counts only if its generation is that of the record
  held for the member; a record with a new generation (a restart) resets the member's
  heartbeat and its detector history, and marks it up at once.
- Refutation: a record of ourselves that is newer than ours, or as new but different,
  is answered by bumping our own version past it, unless it is at or over REFUTE_LIMIT
  (a forgery: our version stays where peers decode it). A `left` record of ourselves is
  adopted instead: a removal is final, and the node learns it through `changed`;
  unless we are joining under another generation: a new life, which the removal of an
  earlier one does not touch.
- `left` members are never gossiped to and not watched; their records still spread.
- Randomness only from the rng passed in; iteration over sorted members.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from gossip.membership import JOINING, LEFT, REFUTE_LIMIT, Member, Membership
from gossip.messages import Beat, GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector

__all__ = ["GossipMessage", "GossipResult", "Gossiper"]

GossipMessage = GossipSyn | GossipAck | GossipAck2


@dataclass(slots=True)
class GossipResult:
    """What one input produced.

    `sends`: messages for the node to send. `changed`: records newer than what was held
    and now merged, our own refuted or adopted record included (rebuild the ring and
    persist). `recovered`: members judged down before this input and up now.
    """

    sends: list[tuple[str, GossipMessage]] = field(default_factory=list)
    changed: list[Member] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


class Gossiper:
    """The gossip state machine of one node. See the module docstring."""

    def __init__(self, self_id: str, membership: Membership, detector: PhiAccrualDetector,
                 rng: random.Random, now: float, *, interval: float = 0.5,
                 fanout: int = 1, announce_for: float = 10.0) -> None:
        if interval <= 0 or fanout < 1:
            raise ValueError("gossip interval must be positive and fanout at least 1")
        self.self_id = self_id
        self.membership = membership
        self.detector = detector
        self.rng = rng
        self.interval = interval
        self.fanout = fanout
        self.announce_for = announce_for
        # Our record rides on our SYNs until then: set at start and on every change of it.
        self._announce_until = now + announce_for
        self._counter = 0
        # Highest heartbeat heard of each other member: (generation, counter).
        self._beats: dict[str, tuple[int, int]] = {}
        self._next_round: float | None = None
        # Peers our last SYN went to, until they ACK; and how many rounds in a row each
        # peer left a SYN unanswered. A peer that does not answer (a dead link) is only
        # probed now and then, so our rounds go where they carry news.
        self._awaiting: set[str] = set()
        self._unanswered: dict[str, int] = {}
        for m in membership.members():
            if m.node_id != self_id and m.status != LEFT:
                detector.watch(m.node_id, now, m.generation)

    # --- the node's calls ---------------------------------------------------------------

    def tick(self, now: float) -> list[tuple[str, GossipMessage]]:
        """Start a round if one is due: bump our heartbeat, SYN a few peers."""
        me = self.membership.get(self.self_id)
        if me is None:
            return []  # not joined: nothing of ours to spread yet
        if self._next_round is not None and now < self._next_round:
            return []
        due = (self._next_round if self._next_round is not None else now) + self.interval
        # Keep the cadence, but after a stall (a pause) start afresh rather than catch up.
        self._next_round = due if due > now else now + self.interval
        self._counter += 1
        syn = GossipSyn(self._digest(), me if now < self._announce_until else None)
        for peer in self._awaiting:
            self._unanswered[peer] = self._unanswered.get(peer, 0) + 1
        targets = self._targets(now)
        self._awaiting = set(targets)
        return [(dst, syn) for dst in targets]

    def receive(self, src: str, msg: GossipMessage, now: float) -> GossipResult:
        res = GossipResult()
        match msg:
            case GossipSyn(digest, sender):
                if sender is not None and sender.node_id == src:
                    self._merge((sender,), now, res)
                for b in digest:
                    self._apply_beat(b, now, res)
                res.sends.append((src, self._ack(src, digest)))
            case GossipAck(beats, records, wanted):
                self._awaiting.discard(src)
                self._unanswered.pop(src, None)
                self._merge(records, now, res)
                for b in beats:
                    self._apply_beat(b, now, res)
                found = (self.membership.get(w) for w in sorted(set(wanted)))
                recs = tuple(m for m in found if m is not None)
                if recs:
                    res.sends.append((src, GossipAck2(recs)))
            case GossipAck2(records):
                self._merge(records, now, res)
        return res

    def update_own(self, record: Member, now: float) -> Member:
        """Store a change of our own record (a status change), at a version past the
        current one; returns the record as stored. It spreads with the next rounds."""
        if record.node_id != self.self_id:
            raise ValueError("update_own takes this node's own record")
        mine = self.membership.get(self.self_id)
        if mine == record:
            return record
        version = record.version if mine is None else max(record.version, mine.version + 1)
        stored = replace(record, version=version)
        self.membership.merge_one(stored)
        self._announce_until = now + self.announce_for
        return stored

    def learn(self, records: Iterable[Member], now: float) -> GossipResult:
        """Merge records that did not come by gossip (a join reply, a seed's record of
        a joiner, an operator's removal), exactly as gossiped ones are merged."""
        res = GossipResult()
        self._merge(tuple(records), now, res)
        return res

    def is_up(self, node_id: str, now: float) -> bool:
        return node_id == self.self_id or self.detector.is_up(node_id, now)

    def heartbeat(self, node_id: str) -> tuple[int, int] | None:
        """The newest (generation, counter) known of `node_id`."""
        if node_id == self.self_id:
            me = self.membership.get(node_id)
            return None if me is None else (me.generation, self._counter)
        return self._beats.get(node_id)

    # --- the exchange -------------------------------------------------------------------

    def _counter_of(self, m: Member) -> int:
        if m.node_id == self.self_id:
            return self._counter
        known = self._beats.get(m.node_id)
        return known[1] if known is not None and known[0] == m.generation else 0

    def _digest(self) -> tuple[Beat, ...]:
        return tuple(Beat(m.node_id, m.generation,
                          0 if m.status == LEFT else self._counter_of(m), m.version)
                     for m in self.membership.members())

    def _targets(self, now: float) -> list[str]:
        live: list[str] = []
        quiet: list[str] = []  # up, but our last SYN to them went unanswered
        down: list[str] = []
        for m in self.membership.members():
            if m.node_id == self.self_id or m.status == LEFT:
                continue
            if not self.detector.is_up(m.node_id, now):
                down.append(m.node_id)
            elif m.node_id in self._unanswered:
                quiet.append(m.node_id)
            else:
                live.append(m.node_id)
        if not live:
            live, quiet = quiet, []
        targets = self.rng.sample(live, min(self.fanout, len(live)))
        # Cassandra's rule: the more of the cluster looks down (or deaf to us), the
        # likelier a probe of it, and always when nothing else is left (a partition
        # heals from either side).
        others = down + quiet
        if others and self.rng.random() < len(others) / (len(live) + 1):
            targets.append(self.rng.choice(others))
        return targets

    def _ack(self, src: str, digest: tuple[Beat, ...]) -> GossipAck:
        theirs = {b.node_id: b for b in digest}
        wanted: list[str] = []
        for entry in digest:
            mine = self.membership.get(entry.node_id)
            if mine is None or entry.version > mine.version or (
                    entry.node_id == self.self_id and entry.version == mine.version
                    and entry.generation != mine.generation):
                wanted.append(entry.node_id)
        records: list[Member] = []
        beats: list[Beat] = []
        for m in self.membership.members():
            b = theirs.get(m.node_id)
            # The initiator's own record at the same version but another generation is a
            # stale copy of it somewhere: send ours so that it refutes it.
            if b is None or m.version > b.version or (
                    m.node_id == src and m.version == b.version
                    and m.generation != b.generation):
                records.append(m)
            counter = 0 if m.status == LEFT else self._counter_of(m)
            if counter and (b is None or b.generation != m.generation or b.counter < counter):
                beats.append(Beat(m.node_id, m.generation, counter, m.version))
        return GossipAck(tuple(beats), tuple(records), tuple(wanted))

    def _apply_beat(self, b: Beat, now: float, res: GossipResult) -> None:
        if b.node_id == self.self_id or b.counter == 0:
            return
        m = self.membership.get(b.node_id)
        if m is None or m.status == LEFT or m.generation != b.generation:
            return  # a life we hold no record of yet: its record comes with this exchange
        known = self._beats.get(b.node_id)
        if known is not None and known[0] == b.generation and known[1] >= b.counter:
            return
        self._beats[b.node_id] = (b.generation, b.counter)
        if self.detector.heard(b.node_id, now, b.generation):
            res.recovered.append(b.node_id)

    def _merge(self, records: tuple[Member, ...], now: float, res: GossipResult) -> None:
        for rec in records:
            if rec.node_id == self.self_id:
                self._merge_self(rec, now, res)
                continue
            old = self.membership.get(rec.node_id)
            if not self.membership.merge_one(rec):
                continue
            res.changed.append(rec)
            self._track(old, rec, now, res)

    def _merge_self(self, rec: Member, now: float, res: GossipResult) -> None:
        mine = self.membership.get(self.self_id)
        if mine is None:
            self.membership.merge_one(rec)  # a seed wrote our first record
            res.changed.append(rec)
            return
        if rec.version < mine.version or rec == mine:
            return
        if rec.version >= REFUTE_LIMIT:
            # A forgery (see COUNTER_LIMIT): refuting it, or a status change after, could
            # take our version past what peers decode, and they would refuse all we send.
            return
        # A joiner with a new generation is a new life of this node id (a removed node
        # rejoining with an empty disk): the removal of an earlier life is not about it,
        # even when its seed wrote our record at the removal's version.
        new_life = mine.status == JOINING and rec.generation != mine.generation
        if rec.status == LEFT and mine.status != LEFT and not new_life:
            # Removed by an operator (or our own leave, echoed): adopt, never refute.
            new = rec if rec.version > mine.version else replace(rec, version=mine.version + 1)
        else:
            new = replace(mine, version=rec.version + 1)
        self.membership.merge_one(new)
        self._announce_until = now + self.announce_for
        res.changed.append(new)

    def _track(self, old: Member | None, rec: Member, now: float, res: GossipResult) -> None:
        node_id = rec.node_id
        if rec.status == LEFT:
            self.detector.forget(node_id)
            self._beats.pop(node_id, None)
            return
        if old is None or old.status == LEFT or old.generation != rec.generation:
            # A new member, or a new life of one: fresh heartbeat, fresh history, up now.
            was_up = self.detector.is_up(node_id, now)
            self._beats.pop(node_id, None)
            self.detector.watch(node_id, now, rec.generation)
            if old is not None and not was_up:
                res.recovered.append(node_id)
