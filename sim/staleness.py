"""Staleness trials in the simulated world: write, wait t ms, read from elsewhere.

Job: measure t-visibility and k-staleness (`pbs.model` defines both) with the real
`ringkv.core.node.Node` objects, so that the WARS predictor can be checked against the code
that ships, not against a model of it.

How one batch runs: a small world of N nodes (so every node holds a replica of every
key and no write is forwarded) boots without faults; then each trial takes a key of its
own, sends the write to a node chosen at random -- which coordinates it as a replica,
applying it locally and fanning it out -- and, the instant that coordinator answers
(its W-th acknowledgement, which is when the write commits), schedules the read t ms
later at a different node. The read is consistent when it returns the written value.
A k-staleness trial writes k times back to back (each write starts when the previous
one commits, with its context) and reads at once; it is consistent when the read
returns any of the k values.

The network is made to match the WARS model: every frame's link latency is 1 us, on
top of which the latency injector (`ringkv.core.latency`) draws each leg's delay; frames
draw independently (no per-link FIFO, as with injection in the runtime, where the delay
is applied before a message leaves); the disk commits in 1 us; clients reach nodes at
once. That is the "replica" topology of `pbs.model`.

Invariants: deterministic for a seed (a batch's world seed and its rng for the picks
come from the seed and the batch number, so batches can run in any order or process);
trials in a batch overlap in time but share nothing but the nodes (a key each),
so they are independent; a trial whose client saw no answer is counted as failed, not
as stale or consistent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.requests import (
    ClientResponse,
    NotFound,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from pbs.distributions import Legs
from ringkv.core.config import NodeConfig
from ringkv.core.latency import LatencyInjector
from sim.network import NetworkProfile
from sim.world import World
from storage.versions import EMPTY_CONTEXT, Context

BOOT = 5.0  # simulated seconds for the nodes to join before trials start
SPACING = 0.0002  # simulated seconds between trial starts within a batch
TIMEOUT_MS = 120_000  # client and coordinator patience: heavy tails must not time out
SETTLE_STEP = 5.0  # run the world this much longer until every trial has finished
MAX_SETTLE = 600.0


@dataclass(frozen=True)
class StalenessSetup:
    n: int
    r: int
    w: int
    legs: Legs
    ts: tuple[float, ...] = (0.0,)
    trials: int = 1000  # per t (and per k)
    ks: tuple[int, ...] = ()
    seed: int = 1
    batch: int = 1500  # trials per world

    def __post_init__(self) -> None:
        if not (1 <= self.r <= self.n and 1 <= self.w <= self.n):
            raise ValueError(f"need 1 <= R, W <= N; got N={self.n}, R={self.r}, W={self.w}")
        if self.n < 2:
            raise ValueError("N must be at least 2: the read needs another coordinator")
        if any(t < 0 for t in self.ts) or any(k < 1 for k in self.ks):
            raise ValueError("t must be >= 0 and k >= 1")


@dataclass
class StalenessResult:
    consistent: dict[float, int] = field(default_factory=dict)  # t -> consistent reads
    done: dict[float, int] = field(default_factory=dict)  # t -> trials with an answer
    k_consistent: dict[int, int] = field(default_factory=dict)
    k_done: dict[int, int] = field(default_factory=dict)
    failed: int = 0  # trials whose write or read got no answer
    sim_seconds: float = 0.0
    injected: dict[str, list[float]] = field(default_factory=dict)  # leg -> samples (ms)

    def measured(self) -> dict[float, float]:
        return {t: self.consistent[t] / d for t, d in self.done.items() if d}

    def k_measured(self) -> dict[int, float]:
        return {k: self.k_consistent[k] / d for k, d in self.k_done.items() if d}


def _config(node_id: str, index: int, seeds: tuple[str, ...], n: int, r: int,
            w: int) -> NodeConfig:
    return NodeConfig(node_id=node_id, host="127.0.0.1", http_port=8000 + index,
                      rpc_port=9000 + index, seeds=seeds, storage="memory", sync="none",
                      vnodes=8, n=n, r=r, w=w, request_timeout_ms=TIMEOUT_MS,
                      log_level="warning")


def _world(setup: StalenessSetup, seed: int) -> World:
    names = [f"n{i}" for i in range(1, setup.n + 1)]
    index = {name: i for i, name in enumerate(names, start=1)}

    def make_config(node_id: str, seeds: tuple[str, ...]) -> NodeConfig:
        return _config(node_id, index[node_id], seeds, setup.n, setup.r, setup.w)

    profile = NetworkProfile(latency="uniform", floor=(1e-6, 1e-6), scale=(0.0, 0.0))
    world = World(seed, names, make_config, network=profile, disk_latency=(1e-6, 1e-6),
                  client_latency=(0.0, 0.0))
    world.network.reorder = True
    first, *rest = names
    world.start(first, seeds=())
    for i, name in enumerate(rest, start=1):
        world.at(world.now + 0.2 * i, world.start, name, (world.hosts[first].rpc,))
    world.run_until(world.now + BOOT)
    for name in names:
        node = world.node(name)
        if not node.joined or len(node.ring.nodes) != setup.n:
            raise RuntimeError(f"simulated node {name} did not join within {BOOT} s")
    return world


class _Batch:
    """The trials of one world: a write chain per trial, then one read."""

    def __init__(self, world: World, setup: StalenessSetup, picks: random.Random,
                 result: StalenessResult, tag: int) -> None:
        self.world, self.setup, self.picks, self.result = world, setup, picks, result
        self.tag = tag
        self.pending = 0

    def trial(self, index: int, writes: int, t: float, on_read: Callable[[bool], None]) -> None:
        names = sorted(self.world.hosts)
        writer = self.picks.choice(names)
        reader = self.picks.choice([n for n in names if n != writer])
        key = f"pbs-{self.tag}-{index}".encode()
        self.pending += 1
        self._write(writer, reader, key, writes, 1, EMPTY_CONTEXT, t, on_read)

    def _write(self, writer: str, reader: str, key: bytes, writes: int, i: int,
               context: Context, t: float, on_read: Callable[[bool], None]) -> None:
        value = b"%d" % i
        req = WriteRequest(key, value, "application/octet-stream", context, self.setup.w,
                           None, TIMEOUT_MS)

        def acked(resp: ClientResponse | None) -> None:
            if not isinstance(resp, WriteOk):
                self._fail()
            elif i < writes:
                self._write(writer, reader, key, writes, i + 1, resp.context, t, on_read)
            else:
                self.world.after(t / 1000.0, self._read, reader, key, writes, on_read)

        self.world.call(writer, req, acked, TIMEOUT_MS / 1000.0)

    def _read(self, reader: str, key: bytes, writes: int,
              on_read: Callable[[bool], None]) -> None:
        written = {b"%d" % i for i in range(1, writes + 1)}

        def answered(resp: ClientResponse | None) -> None:
            if not isinstance(resp, ReadOk | NotFound):
                self._fail()
                return
            self.pending -= 1
            ok = isinstance(resp, ReadOk) and any(s.value in written for s in resp.siblings)
            on_read(ok)

        self.world.call(reader, ReadRequest(key, self.setup.r, TIMEOUT_MS), answered,
                        TIMEOUT_MS / 1000.0)

    def _fail(self) -> None:
        self.pending -= 1
        self.result.failed += 1

    def run(self) -> None:
        world = self.world
        world.run_until(world.now + SETTLE_STEP)
        waited = SETTLE_STEP
        while self.pending and waited < MAX_SETTLE:
            world.run_until(world.now + SETTLE_STEP)
            waited += SETTLE_STEP


Job = tuple[int, float, bool]  # (writes, t, counts toward k-staleness)


def batches(setup: StalenessSetup) -> list[tuple[int, list[Job]]]:
    """Every trial of `setup`, shuffled (each world sees every kind) and cut into
    numbered batches; a batch's outcome depends only on `setup` and its number."""
    jobs: list[Job] = [(1, t, False) for t in setup.ts for _ in range(setup.trials)]
    jobs += [(k, 0.0, True) for k in setup.ks for _ in range(setup.trials)]
    random.Random(setup.seed).shuffle(jobs)
    return [(number, jobs[start:start + setup.batch])
            for number, start in enumerate(range(0, len(jobs), setup.batch))]


def run_batch(setup: StalenessSetup, number: int, chunk: list[Job]) -> StalenessResult:
    """The trials of one batch in a world of their own."""
    result = _empty(setup)
    world = _world(setup, setup.seed * 1_000_003 + number)
    injector = LatencyInjector(setup.legs, random.Random(world.rng.getrandbits(64)))
    world.network.inject = injector.delay
    batch = _Batch(world, setup, random.Random(setup.seed * 7919 + number), result, number)
    for i, (writes, t, is_k) in enumerate(chunk):
        world.at(world.now + SPACING * (i + 1), batch.trial, i, writes, t,
                 _recorder(result, writes, t, is_k))
    batch.run()
    result.sim_seconds = world.elapsed()
    result.injected = {leg: list(s) for leg, s in injector.samples.items()}
    return result


def _empty(setup: StalenessSetup) -> StalenessResult:
    result = StalenessResult()
    for t in setup.ts:
        result.consistent[t] = result.done[t] = 0
    for k in setup.ks:
        result.k_consistent[k] = result.k_done[k] = 0
    return result


def merge(setup: StalenessSetup, parts: list[StalenessResult]) -> StalenessResult:
    total = _empty(setup)
    for part in parts:
        for t in part.done:
            total.done[t] += part.done[t]
            total.consistent[t] += part.consistent[t]
        for k in part.k_done:
            total.k_done[k] += part.k_done[k]
            total.k_consistent[k] += part.k_consistent[k]
        total.failed += part.failed
        total.sim_seconds += part.sim_seconds
        for leg, samples in part.injected.items():
            total.injected.setdefault(leg, []).extend(samples)
    return total


def run_staleness(setup: StalenessSetup,
                  progress: Callable[[int], None] | None = None) -> StalenessResult:
    """Run every trial of `setup`, batch after batch; `progress(k)` as k trials finish.

    (`ringkv experiment` runs the batches over processes with `run_batch` and `merge`;
    the result is the same.)"""
    parts = []
    for number, chunk in batches(setup):
        parts.append(run_batch(setup, number, chunk))
        if progress is not None:
            progress(len(chunk))
    return merge(setup, parts)


def _recorder(result: StalenessResult, writes: int, t: float,
              is_k: bool) -> Callable[[bool], None]:
    def record(ok: bool) -> None:
        if is_k:
            result.k_done[writes] += 1
            result.k_consistent[writes] += ok
        else:
            result.done[t] += 1
            result.consistent[t] += ok
    return record
