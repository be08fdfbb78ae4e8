"""Gossip alone in a seeded world: a harness for tests and the scale measurements.

Job: run n `gossip.Gossiper`s (no storage, no requests) over `sim.network.Network`
(its per-link latency model, drops and blocked links) on a virtual clock, with kills,
restarts and pauses, and measure what docs/membership.md reports: how long a record
change takes to reach every node, gossip bytes per node per second (every message is
encoded and decoded with `ringkv.core.wire`, as in the real node), how long until every
node judges a killed node down; and, from the ring alone, the share of keys whose
replicas change when one node joins.

Invariants: every random choice comes from the one seeded `random.Random` (the world's
network, phases and generations) or from per-node rngs seeded from it, and events are
ordered by (time, sequence), so a seed replays exactly. Each node's signing key is
derived from the seed and its id (no draw from the rng, so adding keys changed no run).
Nodes tick every `TICK` seconds like the runtime; the gossiper decides when a round is
due.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import statistics
from dataclasses import dataclass, field, replace

from gossip.gossiper import Gossiper, GossipMessage
from gossip.membership import UP, Member, Membership
from gossip.messages import GossipAck, GossipAck2, GossipSyn
from gossip.phi import PhiAccrualDetector, PhiSettings
from gossip.signing import Signer
from ring.allocation import allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import TOKEN_SPACE
from ringkv.core import wire
from sim.network import Network, NetworkProfile

TICK = 0.1  # the runtime's tick


@dataclass
class GossipNode:
    node_id: str
    membership: Membership
    detector: PhiAccrualDetector
    gossiper: Gossiper
    alive: bool = True
    paused_until: float = 0.0
    bytes_sent: int = 0
    sent_to: dict[str, int] = field(default_factory=dict)


class GossipWorld:
    """n gossiping nodes that all start knowing each other (a formed cluster)."""

    def __init__(self, n: int, seed: int, *, interval: float = 0.5, fanout: int = 1,
                 settings: PhiSettings | None = None, vnodes: int = 256,
                 profile: NetworkProfile | None = None) -> None:
        self.rng = random.Random(seed)
        self.interval, self.fanout = interval, fanout
        self.settings = settings or PhiSettings.for_interval(interval)
        self.now = 0.0
        ids = [f"n{i:03d}" for i in range(n)]
        self.net = Network(self.rng, ids, profile or NetworkProfile())
        self.signers = {i: Signer(i, hashlib.sha256(f"{seed}/{i}".encode()).digest())
                        for i in ids}
        records = [self.signers[i].sign(Member(
            i, f"{i}:8000", f"{i}:9000",
            tuple(sorted(self.rng.getrandbits(64) for _ in range(vnodes))),
            UP, 1, self.rng.getrandbits(62))) for i in ids]
        self._events: list[tuple[float, int, str, str, str, bytes]] = []
        self._seq = 0
        self.nodes: dict[str, GossipNode] = {}
        # Every transition out of "down": (time, observer, member).
        self.recoveries: list[tuple[float, str, str]] = []
        self.messages = 0
        for node_id in ids:
            self.nodes[node_id] = self._start(node_id, Membership(records))
            self._push(self.rng.uniform(0, TICK), "tick", node_id, "", b"")

    # --- the world's controls -------------------------------------------------------------

    def kill(self, node_id: str) -> None:
        self.nodes[node_id].alive = False

    def restart(self, node_id: str) -> None:
        """Start a new life: the persisted records, a new generation, a newer own record."""
        old = self.nodes[node_id]
        me = old.membership.get(node_id)
        assert me is not None
        members = Membership(old.membership.members())
        members.merge_one(self.signers[node_id].sign(
            replace(me, version=me.version + 1, generation=self.rng.getrandbits(62))))
        if not old.alive:
            self._push(self.now + self.rng.uniform(0, TICK), "tick", node_id, "", b"")
        self.nodes[node_id] = self._start(node_id, members)

    def pause(self, node_id: str, seconds: float) -> None:
        """Stop the world for one node: no ticks, nothing read, until it resumes."""
        self.nodes[node_id].paused_until = self.now + seconds

    def change_status(self, node_id: str, status: str) -> Member:
        node = self.nodes[node_id]
        me = node.membership.get(node_id)
        assert me is not None
        return node.gossiper.update_own(replace(me, status=status), self.now)

    def run_until(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            at, _, kind, a, b, frame = heapq.heappop(self._events)
            self.now = at
            if kind == "tick":
                self._tick(a)
            else:
                self._deliver(a, b, frame)
        self.now = max(self.now, t)

    def up_views(self, member: str) -> dict[str, bool]:
        """Each live observer's verdict on `member`."""
        return {k: n.gossiper.is_up(member, self.now) for k, n in sorted(self.nodes.items())
                if k != member and n.alive}

    def holders(self, member: str, version: int) -> int:
        """How many live nodes hold `member`'s record at `version` or newer."""
        count = 0
        for n in self.nodes.values():
            rec = n.membership.get(member)
            if n.alive and rec is not None and rec.version >= version:
                count += 1
        return count

    # --- internals --------------------------------------------------------------------------

    def _start(self, node_id: str, members: Membership) -> GossipNode:
        det = PhiAccrualDetector(self.settings)
        gossiper = Gossiper(node_id, members, det, random.Random(self.rng.getrandbits(64)),
                            self.now, self.signers[node_id], interval=self.interval,
                            fanout=self.fanout)
        return GossipNode(node_id, members, det, gossiper)

    def _push(self, at: float, kind: str, a: str, b: str, frame: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, a, b, frame))

    def _tick(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.alive:
            return
        if self.now < node.paused_until:
            self._push(node.paused_until, "tick", node_id, "", b"")
            return
        self._send(node, node.gossiper.tick(self.now))
        self._push(self.now + TICK, "tick", node_id, "", b"")

    def _send(self, node: GossipNode, sends: list[tuple[str, GossipMessage]]) -> None:
        for dst, msg in sends:
            frame = wire.encode(msg)
            node.bytes_sent += len(frame)
            node.sent_to[dst] = node.sent_to.get(dst, 0) + 1
            self.messages += 1
            for at in self.net.arrivals(node.node_id, dst, self.now, msg):
                self._push(at, "msg", node.node_id, dst, frame)

    def _deliver(self, src: str, dst: str, frame: bytes) -> None:
        node = self.nodes[dst]
        if not node.alive:
            return
        if self.now < node.paused_until:
            self._push(node.paused_until, "msg", src, dst, frame)  # read on resume
            return
        msg = wire.decode(frame)
        assert isinstance(msg, GossipSyn | GossipAck | GossipAck2)
        result = node.gossiper.receive(src, msg, self.now)
        for member in result.recovered:
            self.recoveries.append((self.now, dst, member))
        self._send(node, result.sends)


# --- measurements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScaleRow:
    nodes: int
    converge_median: float
    converge_max: float
    bytes_per_node_s: float
    detect_median: float
    detect_max: float
    restart_median: float  # until each other node judges a restarted node up again
    restart_max: float


def _until(world: GossipWorld, done: object, limit: float, step: float = 0.05) -> float:
    """Advance in `step`s until `done()` or `limit` seconds; the time it took."""
    start = world.now
    assert callable(done)
    while not done():
        if world.now - start > limit:
            return float("inf")
        world.run_until(world.now + step)
    return world.now - start


def measure(n: int, seed: int, trials: int = 3, warmup: float = 20.0) -> ScaleRow:
    """Convergence, bytes and detection for an n-node cluster (one world, `trials` each)."""
    world = GossipWorld(n, seed)
    world.run_until(warmup)
    before = sum(node.bytes_sent for node in world.nodes.values())
    world.run_until(warmup + 10.0)
    per_node_s = (sum(node.bytes_sent for node in world.nodes.values()) - before) / n / 10.0
    rng = random.Random(seed)
    ids = sorted(world.nodes)
    converge: list[float] = []
    for _ in range(trials):
        who = rng.choice(ids)
        current = world.nodes[who].membership.get(who)
        assert current is not None
        rec = world.change_status(who, "leaving" if current.status == UP else UP)
        converge.append(_until(world, lambda w=who, v=rec.version:
                               world.holders(w, v) == n, 60.0, step=0.01))
        world.run_until(world.now + 2.0)
    detect: list[float] = []
    back: list[float] = []
    for victim in rng.sample(ids, trials):
        world.kill(victim)
        killed_at = world.now
        down_at: dict[str, float] = {}

        def all_down(v: str = victim, seen: dict[str, float] = down_at) -> bool:
            for k, up in world.up_views(v).items():
                if not up:
                    seen.setdefault(k, world.now)
            return len(seen) == len(world.up_views(v))

        _until(world, all_down, 60.0)
        detect.extend(t - killed_at for t in down_at.values())
        world.restart(victim)
        restarted_at = world.now
        up_at: dict[str, float] = {}

        def all_up(v: str = victim, seen: dict[str, float] = up_at) -> bool:
            for k, up in world.up_views(v).items():
                if up:
                    seen.setdefault(k, world.now)
            return len(seen) == len(world.up_views(v))

        _until(world, all_up, 60.0)
        back.extend(t - restarted_at for t in up_at.values())
        world.run_until(world.now + 15.0)
    return ScaleRow(n, statistics.median(converge), max(converge), per_node_s,
                    statistics.median(detect), max(detect),
                    statistics.median(back), max(back))


@dataclass(frozen=True, slots=True)
class MovementRow:
    nodes: int  # before the join
    replica_set_changed: float  # share of keys whose N replicas change; ideal N/(n+1)
    primary_changed: float  # share of keys whose first replica changes; ideal 1/(n+1)
    copies_moved: float  # share of stored copies that move; ideal 1/(n+1)
    between_old: float  # share of keys that gain an *old* node: 0 by allocation's design


def join_movement(old: Ring, new: Ring, joiner: str, n: int) -> MovementRow:
    """Exact shares of the key space, arc by arc of the new ring (whose tokens include
    the old ring's, so each new arc lies within one old arc)."""
    tokens = sorted(t for node in new.nodes for t in new.tokens_of(node))
    changed = primary = copies = gained_old = 0
    prev = tokens[-1] - TOKEN_SPACE
    for q in tokens:
        arc = q - prev
        prev = q
        before, after = old.preference_list(q, n), new.preference_list(q, n)
        if set(before) != set(after):
            changed += arc
            copies += arc * len(set(after) - set(before))
            if set(after) - set(before) - {joiner}:
                gained_old += arc
        if before[0] != after[0]:
            primary += arc
    return MovementRow(len(old.nodes), changed / TOKEN_SPACE, primary / TOKEN_SPACE,
                       copies / TOKEN_SPACE / n, gained_old / TOKEN_SPACE)


def movement_table(sizes: range, vnodes: int = 256, replicas: int = 3) -> list[MovementRow]:
    """Grow a cluster one allocated join at a time; measure each join of `sizes`."""
    tokens: dict[str, tuple[int, ...]] = {"n00": initial_tokens("n00", vnodes)}
    rows = []
    for k in range(1, max(sizes) + 1):
        joiner = f"n{k:02d}"
        new_tokens = allocate_tokens(tokens, joiner, vnodes, replicas=replicas)
        if k in sizes:
            rows.append(join_movement(Ring(tokens), Ring({**tokens, joiner: new_tokens}),
                                      joiner, replicas))
        tokens[joiner] = new_tokens
    return rows


def pause_sweep(n: int, pause: float, seeds: range, per_seed: int = 5) -> tuple[int, int]:
    """(pauses judged down by at least one node, pauses) for `pause`-second stalls of
    random nodes, each after a random stretch of normal running."""
    judged = total = 0
    for seed in seeds:
        world = GossipWorld(n, seed, vnodes=8)
        rng = random.Random(seed)
        world.run_until(rng.uniform(5.0, 20.0))
        for _ in range(per_seed):
            victim = rng.choice(sorted(world.nodes))
            start = world.now
            world.pause(victim, pause)
            down = False
            while world.now < start + pause + 6.0:
                world.run_until(world.now + 0.05)
                down = down or not all(world.up_views(victim).values())
            total += 1
            judged += down
            world.run_until(world.now + rng.uniform(0.0, 10.0))
    return judged, total
