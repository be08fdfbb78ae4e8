"""The simulated world: a virtual clock, one seeded rng, a heap of events, the nodes.

Job: host real `ringkv.core.node.Node` objects and carry out their effects exactly as the
asyncio runtime (`ringkv/server/runtime.py`) does, but in virtual time:

- every `Send` is encoded with the real codec (`ringkv.core.wire`), handed to the simulated
  network (`sim.network`), and decoded again on arrival;
- every `SetTimer` becomes a heap event; every node is ticked every `tick` seconds
  (with a per-node phase), as the runtime's tick loop does;
- group commit: writes a node stages in its engine are sealed into a batch whose commit
  completes after a simulated disk latency; an effect marked `durable` is held until
  the batch holding every write staged before it has committed (the runtime's gate,
  `ringkv.core.gate.DurabilityGate`, one to one). A crash loses staged and uncommitted
  writes (`MemoryEngine.crash`) and the effects held for them.

Faults the world carries out for the nemesis: `crash` (with or without disk loss),
`restart`, `pause` (events for a paused node wait until it resumes) and per-node clock
skew (a node's `now` is world time plus its skew; timers are scheduled in world time
from the skew in force when they were set, like `call_later` on a monotonic clock).

Invariants:
- Determinism: events are ordered by (time, sequence number); the only randomness is
  `self.rng` (nodes get their own `random.Random` seeded from it); nothing iterates a set
  or dict of str in hash order. The same seed gives the same trace, byte for byte.
- Events carry the incarnation of the node they belong to: a timer, tick or commit of a
  node that crashed since is dropped; so is a frame to a node that restarted since it
  was sent (its connection was reset).
- Node code exceptions propagate: a node that raises is a bug the run reports. The
  world catches nothing, so a handler that raises on a peer's message (a hostile
  member's included) ends the run with that exception, which `run_scenario` records as
  a failure with the seed: the runtime may log and drop it, the simulation never does.

Outsiders (`attach`, `inject`): peers that are not nodes, such as the hostile member of
`sim.hostile`. Frames to and from them cross the same simulated network and codec; they
hold no engine, take no part in crashes, and the checkers never look at them.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.messages import REPAIR_ID, ReplicaPut
from coordinator.requests import ClientRequest, ClientResponse, ListRequest, ReadRequest
from ringkv.core import wire
from ringkv.core.addresses import seed_hostport
from ringkv.core.config import NodeConfig
from ringkv.core.gate import DurabilityGate
from ringkv.core.node import Node
from sim.network import Network, NetworkProfile
from sim.trace import Trace
from storage.memory import MemoryEngine

EPOCH = 1_000_000.0  # world time at the start; traces print time relative to it

# Event kinds (small ints: the heap holds plain tuples).
DELIVER, TIMER, TICK, COMMIT, CALL, ACTION = range(6)

ClientCallback = Callable[[ClientResponse | None], None]
ConfigFactory = Callable[[str, tuple[str, ...]], NodeConfig]


@dataclass(eq=False)
class Host:
    """One node slot: the node (None while crashed), its engine and its fault state."""

    node_id: str
    rpc: str
    node: Node | None = None
    engine: MemoryEngine = field(default_factory=MemoryEngine)
    incarnation: int = 0
    skew: float = 0.0
    paused_until: float = 0.0
    gate: DurabilityGate = field(init=False)  # follows `engine`: a crash makes a new one
    clients: dict[int, None] = field(default_factory=dict)  # client ids awaiting a reply
    # Armed by the nemesis: crash right after this node next coordinates a write, once
    # its fan-out has left and before its own record is committed (the worst moment).
    crash_armed: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.gate = DurabilityGate(self.engine)


@dataclass(slots=True)
class WorldStats:
    commits: int = 0
    crashes: int = 0
    disk_losses: int = 0
    restarts: int = 0
    pauses: int = 0
    deferred: int = 0
    client_calls: int = 0
    client_timeouts: int = 0
    refused: int = 0
    refused_frames: int = 0  # outsiders' frames the codec refused


class World:
    def __init__(self, seed: int, nodes: list[str], make_config: ConfigFactory, *,
                 network: NetworkProfile | None = None, tick: float = 0.25,
                 disk_latency: tuple[float, float] = (0.0002, 0.003),
                 client_latency: tuple[float, float] = (0.0002, 0.002),
                 trace: Trace | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = EPOCH
        self.tick_interval = tick
        self.disk_latency = disk_latency
        self.client_latency = client_latency
        self.trace = trace or Trace()
        self.make_config = make_config
        self.stats = WorldStats()
        self._heap: list[tuple[float, int, int, Any, Any, Any, Any]] = []
        self._seq = 0
        self._next_client = 0
        self._callbacks: dict[int, ClientCallback] = {}
        self._decoded: dict[bytes, wire.Message] = {}
        self.hosts: dict[str, Host] = {}
        self._outsiders: dict[str, Callable[[str, wire.Message], None]] = {}
        self.by_rpc: dict[str, str] = {}
        for i, node_id in enumerate(nodes, start=1):
            rpc = f"127.0.0.1:{9000 + i}"
            self.hosts[node_id] = Host(node_id, rpc)
            self.by_rpc[rpc] = node_id
        self.network = Network(self.rng, list(nodes), network or NetworkProfile())

    # --- the clock and the heap ------------------------------------------------------------

    def _push(self, at: float, kind: int, a: Any = None, b: Any = None, c: Any = None,
              d: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b, c, d))

    def at(self, when: float, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` at world time `when` (not before now)."""
        self._push(max(when, self.now), ACTION, fn, args)

    def after(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def elapsed(self) -> float:
        return self.now - EPOCH

    def log(self, text: str) -> None:
        self.trace.line(f"{self.now - EPOCH:.6f} {text}")

    def run_until(self, end: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        step = self._step
        while heap and heap[0][0] <= end:
            step(pop(heap))
        self.now = max(self.now, end)

    def _decode(self, frame: bytes) -> wire.Message:
        """`wire.decode`, memoised per distinct frame.

        A fan-out sends the same bytes to several nodes (a ping to every peer, one
        ReplicaPut to two replicas): decoding is a pure function of the bytes and
        messages are immutable, so each distinct frame is decoded once. Every frame is
        still encoded by its sender and every distinct frame decoded by the real codec.
        """
        cache = self._decoded
        msg = cache.get(frame)
        if msg is None:
            if len(cache) >= 512:
                cache.clear()
            msg = cache[frame] = wire.decode(frame)
        return msg

    def _step(self, event: tuple[float, int, int, Any, Any, Any, Any]) -> None:
        at, _, kind, a, b, c, d = event
        self.now = at
        if kind == ACTION:
            a(*b)
            return
        host: Host = self.hosts[a]
        node = host.node
        if node is None:
            if kind == CALL:
                self._refuse(b)
            return
        if d != host.incarnation and kind != CALL:
            return  # an event of an earlier incarnation, or a frame on a reset connection
        if host.paused_until > at:
            self.stats.deferred += 1
            self._push(host.paused_until, kind, a, b, c, d)
            return
        now = at + host.skew
        trace = self.trace
        if kind == DELIVER:
            network = self.network
            if (b, a) in network._blocked:
                network.stats.blocked += 1
                return
            msg = self._decoded.get(c)
            if msg is None:
                msg = self._decode(c)
            network.stats.delivered += 1
            trace.line(f"{at - EPOCH:.6f} recv {b}>{a} {type(msg).__name__}")
            trace.frame(c)
            self._run(host, node.receive(b, msg, now))
        elif kind == TICK:
            trace.line(f"{at - EPOCH:.6f} tick {a}")
            self._push(at + self.tick_interval, TICK, a, None, None, d)
            self._run(host, node.tick(now))
        elif kind == TIMER:
            trace.line(f"{at - EPOCH:.6f} timer {a} {b}")
            self._run(host, node.timer(b, now))
        elif kind == COMMIT:
            self._commit_done(host)
        elif kind == CALL:
            cid, req = b, c
            if cid not in self._callbacks:
                return  # the client gave up before the request arrived
            host.clients[cid] = None
            trace.line(f"{at - EPOCH:.6f} call {a} c{cid} {describe_request(req)}")
            self._run(host, node.client_request(cid, req, now))

    # --- effects, as the runtime carries them out -----------------------------------------

    def _run(self, host: Host, effects: list[Effect]) -> None:
        admit = host.gate.admit
        for effect in effects:
            if not admit(effect):
                continue  # held by the gate until its batch commits
            if type(effect) is Send:
                self._send(host, effect)
            else:
                self._do(host, effect)
        self._start_commit(host)
        if host.crash_armed is not None and any(
                type(e) is Send and type(e.msg) is ReplicaPut and e.msg.req_id != REPAIR_ID
                and e.dst != host.node_id for e in effects):
            crash, host.crash_armed = host.crash_armed, None
            self.at(self.now + 1e-6, crash)  # before any commit: disk latency > 1 us

    def _start_commit(self, host: Host) -> None:
        """Seal a batch if the gate starts one; its commit completes after a disk latency."""
        if host.gate.start() is None:
            return  # one already in flight, or nothing staged
        latency = self.rng.uniform(*self.disk_latency)
        self._push(self.now + latency, COMMIT, host.node_id, None, None, host.incarnation)

    def _commit_done(self, host: Host) -> None:
        gate = host.gate
        batch = gate.batch
        assert batch is not None
        host.engine.commit(batch)
        self.stats.commits += 1
        self.log(f"commit {host.node_id} {batch.seq} {len(batch)}")
        for effect in gate.committed():
            self._do(host, effect)
        self._start_commit(host)

    def _send(self, host: Host, effect: Send) -> None:
        src, dst = host.node_id, effect.dst
        hostport = seed_hostport(dst)
        if hostport is not None:
            dst = self.by_rpc.get(hostport, "")
        target = self.hosts.get(dst)
        frame = wire.encode(effect.msg)
        if target is None and dst in self._outsiders:
            for at in self.network.arrivals(src, dst, self.now, effect.msg):
                self._push(at, ACTION, self._to_outsider, (src, dst, frame))
        elif target is None:
            self.log(f"unroutable {src}>{effect.dst}")
        elif dst == src:  # the runtime delivers to itself with call_soon: no network
            self._push(self.now + self.network.local_delay(effect.msg), DELIVER, dst, src,
                       frame, target.incarnation)
        else:
            arrivals = self.network.arrivals(src, dst, self.now, effect.msg)
            if not arrivals:
                self.log(f"lost {src}>{dst} {type(effect.msg).__name__}")
            for at in arrivals:
                self._push(at, DELIVER, dst, src, frame, target.incarnation)

    def _do(self, host: Host, effect: Effect) -> None:
        if isinstance(effect, Send):
            self._send(host, effect)
        elif isinstance(effect, Reply):
            host.clients.pop(effect.client_id, None)
            self._reply(effect.client_id, effect.response, host.node_id)
        elif isinstance(effect, SetTimer):
            self._push(effect.at - host.skew, TIMER, host.node_id, effect.key, None,
                       host.incarnation)

    # --- outsiders: peers that are not nodes -----------------------------------------------

    def attach(self, peer_id: str, rpc: str,
               on_frame: Callable[[str, wire.Message], None]) -> None:
        """Route frames addressed to `peer_id` (or its `rpc` address) to `on_frame`."""
        assert peer_id not in self.hosts, f"{peer_id} is a node"
        self._outsiders[peer_id] = on_frame
        self.by_rpc[rpc] = peer_id
        self.network.add_node(peer_id)

    def inject(self, src: str, dst: str, msg: wire.Message) -> None:
        """Send `msg` from the outsider `src` to the node `dst`, encoded like any frame.

        A frame the codec refuses is dropped here and counted (`refused_frames`), as the
        runtime's transport refuses it before any node sees it; frames of nodes are
        never checked so, since a node sending what its peers refuse is a bug.
        """
        frame = wire.encode(msg)
        target = self.hosts.get(dst)
        if target is None:
            return
        try:
            self._decode(frame)
        except wire.WireError as exc:
            self.stats.refused_frames += 1
            self.log(f"refused {src}>{dst} {type(msg).__name__}: {exc}")
            return
        for at in self.network.arrivals(src, dst, self.now, msg):
            self._push(at, DELIVER, dst, src, frame, target.incarnation)

    def _to_outsider(self, src: str, dst: str, frame: bytes) -> None:
        if self.network.blocked(src, dst):
            self.network.stats.blocked += 1
            return
        msg = self._decode(frame)
        self.network.stats.delivered += 1
        self.trace.line(f"{self.now - EPOCH:.6f} recv {src}>{dst} {type(msg).__name__}")
        self._outsiders[dst](src, msg)

    # --- clients -----------------------------------------------------------------------------

    def call(self, node_id: str, request: ClientRequest, callback: ClientCallback,
             timeout: float) -> int:
        """Send a client request to a node; `callback` gets the response, or None when
        the node crashed under the request, refused it (down) or `timeout` passed."""
        self._next_client += 1
        cid = self._next_client
        self._callbacks[cid] = callback
        self.stats.client_calls += 1
        self._push(self.now + self.rng.uniform(*self.client_latency), CALL, node_id, cid,
                   request)
        self.after(timeout, self._client_timeout, cid)
        return cid

    def _reply(self, cid: int, response: ClientResponse | None, node_id: str) -> None:
        callback = self._callbacks.pop(cid, None)
        if callback is None:
            return
        self.log(f"reply {node_id} c{cid} {describe_response(response)}")
        callback(response)

    def _refuse(self, cid: int) -> None:
        if cid in self._callbacks:
            self.stats.refused += 1
            self._reply(cid, None, "refused")

    def _client_timeout(self, cid: int) -> None:
        if cid in self._callbacks:
            self.stats.client_timeouts += 1
            self._reply(cid, None, "timeout")

    # --- the nodes' lives ----------------------------------------------------------------------

    def seeds_for(self, node_id: str) -> tuple[str, ...]:
        """Every other node's address, starting after this one (so restarts spread out)."""
        ids = list(self.hosts)
        i = ids.index(node_id)
        return tuple(self.hosts[n].rpc for n in ids[i + 1:] + ids[:i])

    def start(self, node_id: str, seeds: tuple[str, ...] | None = None) -> Node:
        host = self.hosts[node_id]
        assert host.node is None, f"{node_id} is already running"
        config = self.make_config(node_id, self.seeds_for(node_id) if seeds is None else seeds)
        host.incarnation += 1
        # The node's key, on a new disk, from the seed, its id and its life: a seed
        # replays exactly, and no rng is drawn from (runs stay as they were before keys).
        key = random.Random(f"{self.seed}/{node_id}/{host.incarnation}").randbytes(32)
        node = Node(config, host.engine, self.now + host.skew,
                    random.Random(self.rng.getrandbits(64)), new_key=lambda: key)
        host.node = node
        # The runtime flushes identity and membership before it serves: so do we.
        while (batch := host.gate.start()) is not None:
            host.engine.commit(batch)
            host.gate.committed()  # nothing is held: the node has returned no effects yet
        self.log(f"start {node_id} gen={node.generation} joined={node.joined}")
        phase = self.rng.uniform(0.0, self.tick_interval)
        self._push(self.now + phase, TICK, node_id, None, None, host.incarnation)
        return node

    def crash(self, node_id: str, lose_disk: bool) -> None:
        host = self.hosts[node_id]
        if host.node is None:
            return
        self.stats.crashes += 1
        self.stats.disk_losses += lose_disk
        host.node = None
        host.engine = host.engine.crash(lose_disk)
        host.gate = DurabilityGate(host.engine)  # what it held dies with the staged writes
        host.incarnation += 1
        host.paused_until = 0.0
        host.crash_armed = None
        self.log(f"crash {node_id} lose_disk={lose_disk}")
        for cid in list(host.clients):
            self._reply(cid, None, node_id)
        host.clients.clear()

    def restart(self, node_id: str) -> None:
        if self.hosts[node_id].node is None:
            self.stats.restarts += 1
            self.start(node_id)

    def act(self, node_id: str, fn: Callable[[Node, float], list[Effect]]) -> bool:
        """Call an operator entry point of a running node (leave, remove) and carry out
        its effects, as the runtime does for an HTTP call. False if it is not running."""
        host = self.hosts[node_id]
        if host.node is None or host.paused_until > self.now:
            return False
        self._run(host, fn(host.node, self.now + host.skew))
        return True

    def pause(self, node_id: str, seconds: float) -> None:
        host = self.hosts[node_id]
        if host.node is not None:
            self.stats.pauses += 1
            host.paused_until = max(host.paused_until, self.now + seconds)
            self.log(f"pause {node_id} {seconds:.3f}")

    def resume(self, node_id: str) -> None:
        host = self.hosts[node_id]
        if host.paused_until > self.now:
            host.paused_until = self.now
            self.log(f"resume {node_id}")

    def set_skew(self, node_id: str, skew: float) -> None:
        self.hosts[node_id].skew = skew
        self.log(f"skew {node_id} {skew:+.6f}")

    # --- views -----------------------------------------------------------------------------------

    def running(self) -> list[str]:
        return [n for n, h in self.hosts.items() if h.node is not None]

    def down(self) -> list[str]:
        """Nodes crashed or paused right now."""
        return [n for n, h in self.hosts.items()
                if h.node is None or h.paused_until > self.now]

    def node(self, node_id: str) -> Node:
        node = self.hosts[node_id].node
        assert node is not None, f"{node_id} is not running"
        return node

    def node_now(self, node_id: str) -> float:
        return self.now + self.hosts[node_id].skew


def describe_request(req: ClientRequest) -> str:
    if isinstance(req, ReadRequest):
        return f"get {req.key.decode(errors='replace')} r={req.r}"
    if isinstance(req, ListRequest):
        return f"list {req.bucket}/{req.kind} after={req.after!r} limit={req.limit} r={req.r}"
    if req.op is not None:
        return f"{type(req.op).__name__} {req.key!r} w={req.w}"
    what = "del" if req.value is None else "put"
    ttl = f" ttl={req.ttl}" if req.ttl else ""
    size = 0 if req.value is None else len(req.value)
    return f"{what} {req.key.decode(errors='replace')} {size}B w={req.w}{ttl}"


def describe_response(resp: ClientResponse | None) -> str:
    if resp is None:
        return "none"
    name = type(resp).__name__
    siblings = getattr(resp, "siblings", None)
    return name if siblings is None else f"{name} siblings={len(siblings)}"
