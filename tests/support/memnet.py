"""A small in-memory network that drives real `Node` objects with a virtual clock.

Not the full simulation (that is `sim/`, with its nemesis and checkers): just enough to
test the coordinator paths of the node with no sockets, no event loop and no wall
clock. Every message is encoded and decoded with the real wire codec. Effects pass the
runtime's durability gate (`ringkv.core.gate`); commits are instant, so every batch a
step starts lands, releasing what it held, before the next event.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.requests import ClientRequest, ClientResponse
from ringkv.core import wire
from ringkv.core.addresses import seed_hostport, split_hostport
from ringkv.core.config import fast_test_config
from ringkv.core.gate import DurabilityGate
from ringkv.core.node import Node
from storage.memory import MemoryEngine

LATENCY = 0.001


@dataclass
class MemNet:
    seed: int = 1
    now: float = 1_000_000.0
    nodes: dict[str, Node] = field(default_factory=dict)
    engines: dict[str, MemoryEngine] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    replies: dict[int, ClientResponse] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self._client_ids = itertools.count(1)
        self._gates: dict[str, DurabilityGate] = {}

    # --- building -------------------------------------------------------------------

    def start(self, count: int, **overrides: object) -> None:
        for i in range(1, count + 1):
            node_id = f"n{i}"
            seeds = () if i == 1 else ("127.0.0.1:9001",)
            self.add(node_id, seeds, **overrides)
            self.run_for(0.5)
        self.settle()

    def settled(self) -> bool:
        """Every live node sees every member `up` (or `left`) and fetches nothing."""
        live = [n for k, n in self.nodes.items() if k not in self.down]
        return all(
            n.joined and not n.transfers.view()["syncing"]
            and all(m.status in ("up", "left") for m in n.members.members())
            for n in live)

    def settle(self, limit: float = 10.0) -> None:
        """Run until `settled`, in 50 ms steps; AssertionError after `limit` seconds."""
        waited = 0.0
        while not self.settled():
            assert waited < limit, "cluster did not settle"
            self.run_for(0.05)
            waited += 0.05

    def add(self, node_id: str, seeds: tuple[str, ...], **overrides: object) -> Node:
        engine = self.engines.setdefault(node_id, MemoryEngine())
        cfg = fast_test_config(node_id, seeds=seeds, rpc_port=9000 + len(self.nodes) + 1,
                               http_port=8000 + len(self.nodes) + 1, **overrides)
        rng = random.Random(self.rng.getrandbits(64))
        node = Node(cfg, engine, self.now, rng, new_key=lambda: rng.randbytes(32))
        self.nodes[node_id] = node
        self._gates[node_id] = DurabilityGate(engine)  # a new life holds nothing yet
        self._commit(node_id)
        return node

    def crash(self, node_id: str, lose_disk: bool = False) -> None:
        engine = self.engines[node_id]
        self.engines[node_id] = MemoryEngine() if lose_disk else engine.crash_copy()
        del self.nodes[node_id]

    def restart(self, node_id: str, seeds: tuple[str, ...] = ("127.0.0.1:9001",)) -> Node:
        return self.add(node_id, seeds)

    # --- driving --------------------------------------------------------------------

    def _at(self, delay: float, kind: str, payload: object) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), kind, payload))

    def _gate(self, node_id: str) -> DurabilityGate:
        engine = self.engines[node_id]
        gate = self._gates.get(node_id)
        if gate is None or gate.engine is not engine:
            # The engine was swapped under the node (a test's crash): what the old
            # gate held is lost with the old engine's staged writes.
            gate = self._gates[node_id] = DurabilityGate(engine)
        return gate

    def _commit(self, node_id: str) -> None:
        """Commit everything staged, carrying out the effects each batch releases."""
        gate = self._gate(node_id)
        while (batch := gate.start()) is not None:
            gate.engine.commit(batch)
            for e in gate.committed():
                self._do(node_id, e)

    def _apply(self, node_id: str, effects: list[Effect]) -> None:
        gate = self._gate(node_id)
        encoded: dict[int, bytes] = {}
        for e in effects:
            if gate.admit(e):
                self._do(node_id, e, encoded)
        self._commit(node_id)  # durable effects go out once their writes commit

    def _do(self, node_id: str, e: Effect, encoded: dict[int, bytes] | None = None) -> None:
        if isinstance(e, Send):
            # Like the runtime: one message fanned out to several nodes is encoded once.
            cache = {} if encoded is None else encoded
            payload = cache.get(id(e.msg))
            if payload is None:
                payload = cache[id(e.msg)] = wire.encode(e.msg)
            self._at(LATENCY, "msg", (node_id, self._route(e.dst), payload))
        elif isinstance(e, Reply):
            self.replies[e.client_id] = e.response
        elif isinstance(e, SetTimer):
            self._at(max(0.0, e.at - self.now), "timer", (node_id, e.key))

    @staticmethod
    def _route(dst: str) -> str:
        """The node a destination names: node `n<i>` listens on port 9000 + i."""
        hostport = seed_hostport(dst)
        if hostport is None:
            return dst
        address = split_hostport(hostport)
        return "" if address is None else f"n{address[1] - 9000}"

    def step(self) -> bool:
        if not self._heap:
            return False
        at, _, kind, payload = heapq.heappop(self._heap)
        self.now = max(self.now, at)
        if kind == "msg":
            src, dst, frame = payload  # type: ignore[misc]
            node = self.nodes.get(dst)
            if node is None or src in self.down or dst in self.down:
                return True
            self._apply(dst, node.receive(src, wire.decode(frame), self.now))
        elif kind == "timer":
            node_id, key = payload  # type: ignore[misc]
            if node_id in self.nodes and node_id not in self.down:
                self._apply(node_id, self.nodes[node_id].timer(key, self.now))
        elif kind == "tick":
            for node_id in sorted(self.nodes):
                if node_id not in self.down:
                    self._apply(node_id, self.nodes[node_id].tick(self.now))
            self._at(0.05, "tick", None)
        return True

    def run_for(self, seconds: float) -> None:
        if not any(kind == "tick" for _, _, kind, _ in self._heap):
            self._at(0.0, "tick", None)
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            self.step()
        self.now = end

    def request(self, node_id: str, req: ClientRequest, budget: float = 3.0) -> ClientResponse:
        cid = next(self._client_ids)
        self._apply(node_id, self.nodes[node_id].client_request(cid, req, self.now))
        end = self.now + budget
        while cid not in self.replies and self._heap and self._heap[0][0] <= end:
            self.step()
        return self.replies.pop(cid)
