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
- Records merge by version, highest wins (`Membership.merge_one`), and only records
  that `gossip.signing.refusal` admits: signed by their owner under its pinned key, or
  a seed's record of a joiner or an operator's removal, written by a known member and
  taken only while the member is not heard from here. A refused record changes nothing
  and is counted in `refused`; it is asked for again while a peer holds it newer.
- A heartbeat `(generation, counter)` counts only if its generation is that of the record
  held for the member (records are signed, so only the member starts a life); a record
  with a new generation (a restart) resets the member's heartbeat and its detector
  history, and marks it up at once.
- Heartbeats are not signed (a signature per member per digest would be 64 bytes where a
  beat is ~22), so a relayed beat is held to what the member's own rounds could have
  done. Keeping the highest counter heard, as such, lets one forged beat near 2^62 make
  every node ignore the member's real beats and judge it down for good. So, per member:
  * a beat advances the counter held here at most by `2 * elapsed / interval +
    PLAUSIBLE_SLACK`, `elapsed` the time since it last advanced here (twice the rate of
    rounds, plus room for news that took a slow path before a fast one); a beat past
    that is dropped and counted in `dropped_beats`. Every node's rounds have the same
    `interval` (one cluster configuration).
  * the first beat heard of a life has nothing to be held to, and a relayed line can
    run ahead of the real one: when the held counter has not advanced for
    `STALL_ROUNDS` rounds while another line of beats (below it, or too far past it) has
    advanced plausibly `RIVAL_ADVANCES` times, that line replaces it. A forged counter
    does not move by itself; a live member's does, so its real line wins within a few
    rounds, before the detector's deadline.
  * a beat of ourselves ahead of our own counter moves ours just past it, at most
    `JUMP_BURST` at once and on average one a round on top of the round's own, so our
    real beats lead again and our counter never grows faster than observers accept
    (2 a round): a forgery cannot push it near COUNTER_LIMIT.
- What a hostile member can still do with beats, and why that is the line: while it
  keeps forging plausible advances it can keep a dead member looking alive (which
  delays its conviction and removal), and a beat line it keeps alive can hide the real
  one at a node; stale beats that reach a node in rising order just after a member died
  can bring it back there for a round or two. It cannot mute a live member for longer
  than `STALL_ROUNDS` plus a few rounds once it stops, nor push any counter near the
  limit. Only signed beats would close the rest.
- Every record of ourselves is ours to write: one that is newer than ours, or as new but
  different, whatever its status, author or signature, is answered by bumping our own
  version past it with our status unchanged (a node alive to read it is not `left`),
  unless it is at or over REFUTE_LIMIT (a forgery: our version stays where peers
  decode it). The one record of ourselves we take is the first, a seed's, and only
  when it carries our own key.
- Every record we write of ourselves is signed (`update_own`, refutations).
- `left` members are never gossiped to and not watched; their records still spread.
- Randomness only from the rng passed in; iteration over sorted members.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from gossip.membership import LEFT, REFUTE_LIMIT, Member, Membership
from gossip.messages import Beat, GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector
from gossip.signing import Signer, refusal

__all__ = ["JUMP_BURST", "PLAUSIBLE_SLACK", "RIVAL_ADVANCES", "STALL_ROUNDS", "GossipMessage",
           "GossipResult", "Gossiper"]

GossipMessage = GossipSyn | GossipAck | GossipAck2

# How far past `2 * elapsed / interval` a relayed beat may advance a member's counter.
# It covers our own catch-up burst (JUMP_BURST + 1) and news of an earlier counter that
# took up to ~11 rounds longer than news of a later one; a real beat dropped for it is
# taken a round or two later, the allowance growing twice as fast as the counter.
PLAUSIBLE_SLACK = 32
# The most our own counter jumps at once when we hear a beat of ourselves ahead of it.
JUMP_BURST = 8
# Rounds without an advance of the held counter before another line may replace it: far
# below the detector's deadline (~6 rounds or more), well above the usual gap (~1.5).
STALL_ROUNDS = 3
# Plausible advances a line must make before it replaces a stalled one: stale beats of
# a dead member seldom arrive three times in rising order after a stall.
RIVAL_ADVANCES = 3


@dataclass(slots=True)
class _Line:
    """A run of beats of one member: its counter and when it last advanced here."""

    counter: int
    at: float
    advances: int = 0


@dataclass(slots=True)
class _Beats:
    """What we hold of one member's heartbeat in one life: the line we count (`held`) and
    another that may replace it if `held` stalls (see the module docstring)."""

    generation: int
    held: _Line
    rival: _Line | None = None


@dataclass(slots=True)
class GossipResult:
    """What one input produced.

    `sends`: messages for the node to send. `changed`: records newer than what was held
    and now merged, our own refuted (or first) record included (rebuild the ring and
    persist). `recovered`: members judged down before this input and up now.
    """

    sends: list[tuple[str, GossipMessage]] = field(default_factory=list)
    changed: list[Member] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


class Gossiper:
    """The gossip state machine of one node. See the module docstring."""

    def __init__(self, self_id: str, membership: Membership, detector: PhiAccrualDetector,
                 rng: random.Random, now: float, signer: Signer, *, interval: float = 0.5,
                 fanout: int = 1, announce_for: float = 10.0) -> None:
        if interval <= 0 or fanout < 1:
            raise ValueError("gossip interval must be positive and fanout at least 1")
        if signer.node_id != self_id:
            raise ValueError("the signer must be this node's")
        self.self_id = self_id
        self.signer = signer
        self.refused = 0  # records learned and not admitted (gossip.signing)
        self.membership = membership
        self.detector = detector
        self.rng = rng
        self.interval = interval
        self.fanout = fanout
        self.announce_for = announce_for
        # Our record rides on our SYNs until then: set at start and on every change of it.
        self._announce_until = now + announce_for
        self._counter = 0
        # Our catch-up allowance (see JUMP_BURST), refilled one a round since `_jump_at`.
        self._jump_room = float(JUMP_BURST)
        self._jump_at = now
        self.dropped_beats = 0  # relayed beats too far ahead to be real (module docstring)
        # The heartbeat held of each other member, in the life its record shows.
        self._beats: dict[str, _Beats] = {}
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
        current one, signed; returns the record as stored. It spreads with the next
        rounds."""
        if record.node_id != self.self_id:
            raise ValueError("update_own takes this node's own record")
        mine = self.membership.get(self.self_id)
        if mine is not None and record.version == mine.version \
                and self.signer.sign(record) == mine:
            return mine
        version = record.version if mine is None else max(record.version, mine.version + 1)
        stored = self.signer.sign(replace(record, version=version))
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
        known = self._beats.get(node_id)
        return None if known is None else (known.generation, known.held.counter)

    # --- the exchange -------------------------------------------------------------------

    def _counter_of(self, m: Member) -> int:
        if m.node_id == self.self_id:
            return self._counter
        known = self._beats.get(m.node_id)
        return known.held.counter if known is not None and known.generation == m.generation \
            else 0

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
        if b.counter == 0:
            return
        if b.node_id == self.self_id:
            self._catch_up(b, now)
            return
        m = self.membership.get(b.node_id)
        if m is None or m.status == LEFT or m.generation != b.generation:
            return  # a life we hold no record of yet: its record comes with this exchange
        known = self._beats.get(b.node_id)
        if known is None or known.generation != b.generation:
            # The first beat of this life heard here: nothing to hold it to (a forged one
            # gives way to the real line when it stalls, below).
            self._beats[b.node_id] = _Beats(b.generation, _Line(b.counter, now))
            self._heard(b.node_id, b.generation, now, res)
            return
        held = known.held
        if b.counter == held.counter:
            return
        if b.counter > held.counter:
            if b.counter - held.counter <= self._allowance(now - held.at):
                held.counter, held.at = b.counter, now
                known.rival = None
                self._heard(b.node_id, b.generation, now, res)
                return
            self.dropped_beats += 1
        self._rival(b, known, now, res)

    def _rival(self, b: Beat, known: _Beats, now: float, res: GossipResult) -> None:
        """A beat off the held line (below it, or too far past it): it starts or extends
        a rival line, which replaces a stalled held one after RIVAL_ADVANCES advances."""
        stall = STALL_ROUNDS * self.interval
        rival = known.rival
        if rival is not None and b.counter > rival.counter \
                and b.counter - rival.counter <= self._allowance(now - rival.at):
            rival.counter, rival.at = b.counter, now
            rival.advances += 1
        elif rival is None or now - rival.at >= stall:
            # A rival that stopped advancing is given up (it was a replay or a forgery);
            # only a line that moves can take over.
            known.rival = _Line(b.counter, now)
            return
        else:
            return
        if rival.advances >= RIVAL_ADVANCES and now - known.held.at >= stall:
            known.held, known.rival = rival, None
            self._heard(b.node_id, b.generation, now, res)

    def _allowance(self, elapsed: float) -> int:
        """How far a member's counter can have advanced in `elapsed` seconds."""
        return int(2 * max(elapsed, 0.0) / self.interval) + PLAUSIBLE_SLACK

    def _heard(self, node_id: str, generation: int, now: float, res: GossipResult) -> None:
        if self.detector.heard(node_id, now, generation):
            res.recovered.append(node_id)

    def _catch_up(self, b: Beat, now: float) -> None:
        """A beat of ourselves ahead of our counter (a forgery, or an echo of one): move
        our counter past it so that our real beats lead again, within JUMP_BURST and
        one a round on average, so that observers still take our beats."""
        me = self.membership.get(self.self_id)
        if me is None or b.generation != me.generation or b.counter <= self._counter:
            return
        self._jump_room = min(float(JUMP_BURST),
                              self._jump_room + max(now - self._jump_at, 0.0) / self.interval)
        self._jump_at = now
        step = min(b.counter + 1 - self._counter, int(self._jump_room))
        if step > 0:
            self._counter += step
            self._jump_room -= step

    def _merge(self, records: tuple[Member, ...], now: float, res: GossipResult) -> None:
        # Records their owners wrote first: a join reply or an exchange may carry both a
        # member's own record and one it wrote for another (a joiner's, a removal), and
        # the author's key must be pinned before the latter can be checked.
        for rec in sorted(records, key=lambda r: r.author != ""):
            if rec.node_id == self.self_id:
                self._merge_self(rec, now, res)
                continue
            old = self.membership.get(rec.node_id)
            if old is not None and old.version >= rec.version:
                continue  # not newer: nothing to check
            author = self.membership.get(rec.author) if rec.author else None
            if refusal(rec, old, author, up=self.detector.is_up(rec.node_id, now)):
                self.refused += 1
                continue
            self.membership.merge_one(rec)
            res.changed.append(rec)
            self._track(old, rec, now, res)

    def _merge_self(self, rec: Member, now: float, res: GossipResult) -> None:
        mine = self.membership.get(self.self_id)
        if mine is None:
            # A seed wrote our first record (a join reply): it must carry our key and be
            # signed by a member we know (or by us, from an earlier life of this disk).
            author = self.membership.get(rec.author) if rec.author else None
            if rec.key != self.signer.public_key or refusal(rec, None, author, up=False):
                self.refused += 1
                return
            self.membership.merge_one(rec)
            res.changed.append(rec)
            return
        if rec.version < mine.version or rec == mine:
            return
        if rec.version >= REFUTE_LIMIT:
            # A forgery (see COUNTER_LIMIT): refuting it, or a status change after, could
            # take our version past what peers decode, and they would refuse all we send.
            return
        # Ours to write, whatever it says (`left` included) and whoever signed it: a
        # node alive to read a removal of itself was not dead for good, and an operator
        # who wants it gone asks it to leave. A removal of an earlier life of this id
        # (removed while dead, back with an empty disk) is refuted the same way.
        new = self.signer.sign(replace(mine, version=rec.version + 1))
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
