"""One simulated scenario, end to end: boot, chaos, heal, liveness window, checks.

Job: `run_scenario(Scenario(seed=S))` builds a world of `nodes` real nodes from the seed,
runs the workload under the nemesis, heals, and returns a `Result` whose `failures`
list is empty when every guarantee held. The timeline (world seconds from 0):

    0 .. 5            boot: n1 founds the cluster, the others join through it (calm)
    5 .. D-35         chaos: workload + nemesis episodes drawn from the seed
    D-35              heal: every episode ends, crashed nodes restart
    D-25 .. D-15      liveness window: every operation started here must succeed
    D-15 .. D         quiet: no new operations; hints drain, clients finish
    D                 convergence check 1, then the final reads (r=N, every key)
    D + 10            convergence check 2 (after the read repairs of the final reads),
                      then the checkers: the values' (`sim.checkers`), and the data
                      types' and newer operations' (`sim.datatype_checkers`); each
                      one's failures are counted by name in `Result.checks`

The repair sweep (`repair_sweep=True`, the default): the final r=N reads double as one
read-repair sweep, and a key that diverged at check 1 but converged at check 2 is
counted in `Result.repaired` rather than failed. This covers replicas that missed a
write no mechanism can deliver yet (a hint lost with its holder's disk, a coordinator
that crashed before its timeout stored its hints). It is a documented, removable step:
with `repair_sweep=False` check 1 alone decides, which is what Merkle anti-entropy
(a later issue) should make pass.

Invariant: a scenario is a pure function of its fields; `trace_hash` fingerprints the
whole run.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.requests import ClientResponse, NotFound, ReadOk, ReadRequest
from ringkv.core.config import NodeConfig
from sim import checkers, datatype_checkers
from sim.checkers import FinalRead
from sim.datatypes import show_key
from sim.hostile import Hostile, deploy
from sim.nemesis import DEFAULT_FAULTS, FAULT_KINDS, KNOWN_BUG_FAULTS, Nemesis, NemesisConfig
from sim.network import NetworkProfile
from sim.trace import Trace
from sim.workload import OP_KINDS, VALUE_WEIGHTS, Workload, WorkloadConfig
from sim.world import World
from storage.keys import split_hint_key
from storage.store import KeyStore
from storage.versions import merge

__all__ = ["DEFAULT_FAULTS", "FAULT_KINDS", "KNOWN_BUG_FAULTS", "Result", "Scenario",
           "run_scenario", "sim_config"]

BOOT = 5.0
COLD_WEIGHTS = (("cart", 10), ("put", 45), ("cput", 10), ("del", 20), ("ttl", 10),
                ("read", 5))
BOOT_LIMIT = 15.0
HEAL_BEFORE_END = 35.0  # heal at D - 35
SETTLE = 10.0  # then failure detection, restarts and rejoins catch up
LIVE_WINDOW = 10.0
MIN_DURATION = BOOT + HEAL_BEFORE_END


@dataclass(frozen=True)
class Scenario:
    seed: int = 1
    nodes: int = 5
    duration: float = 300.0  # simulated seconds until the checks (boot to quiet)
    faults: tuple[str, ...] = DEFAULT_FAULTS
    conflict: str = "dvv"  # "lww" is the negative control: it must lose cart adds
    repair_sweep: bool = False  # anti-entropy converges replicas without reads
    clients: int = 4
    think: float = 1.0  # mean seconds between one client's operations
    tick: float = 0.25  # the runtime ticks every 0.1 s; heartbeats are 0.5 s either way
    vnodes: int = 32
    latency: str = "mixed"
    max_skew: float = 0.5
    max_disk_losses: int = 1
    mean_fault_gap: float = 5.0
    # Anti-entropy runs in every node (the real Node); these are its sim timings: an
    # exchange per peer every 2 s (so it converges within the quiet period) and a grace
    # short enough that tombstones are compacted, and must stay dead, within a run.
    ae_interval: float = 2.0
    tombstone_grace: float = 20.0
    # Anti-entropy stress (off by default, so default traces do not change):
    lose_hints: float = 0.0  # mean seconds between losses of every hint a node holds
    long_partition: float = 0.0  # seconds one node is cut off from all others in chaos
    # > 0: that many registers and a write-heavy mix with few reads, so most keys are
    # never read after a fault and only anti-entropy can bring their replicas together.
    cold_keys: int = 0
    # Hostile members (`sim.hostile`): authenticated peers sending random well-formed
    # messages of every type during chaos. 0 (the default) changes no trace.
    hostile: int = 0
    # The data types and newer operations in the workload mix (`sim.datatypes`: counters,
    # sets, conditional writes, key listing), judged by `sim.datatype_checkers`. False
    # runs the value kinds alone, as the simulation did before them.
    datatypes: bool = True
    # The workload mix as (kind, weight) pairs of `sim.workload.OP_KINDS`, to focus a
    # run on some kinds; empty: the default mix (the value kinds alone without
    # `datatypes`).
    mix: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
        if self.duration < MIN_DURATION:
            raise ValueError(f"duration must be at least {MIN_DURATION:.0f} s")
        if self.nodes < 3:
            raise ValueError("at least 3 nodes (N=3 replicas)")
        for kind, weight in self.mix:
            if kind not in OP_KINDS or type(weight) is not int or weight < 1:
                raise ValueError(f"bad mix entry {kind}={weight}: kinds are "
                                 f"{', '.join(OP_KINDS)}, weights whole numbers >= 1")


@dataclass
class Result:
    seed: int
    failures: list[str]
    ops: int = 0
    acknowledged: int = 0
    writes: int = 0
    lost: int = 0
    siblings_max: int = 0
    sim_seconds: float = 0.0
    repaired: int = 0  # keys only the repair sweep brought together
    diverged: int = 0  # keys still apart at the end
    hints_left: int = 0
    reapplied: int = 0  # writes applied twice (each is also a failure)
    # Failure lines per checker (only checkers that failed), e.g. {"lost_writes": 2}.
    checks: dict[str, int] = field(default_factory=dict)
    datatypes: dict[str, int] = field(default_factory=dict)  # `DataHistory.stats`
    trace_hash: str = ""
    events: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    trace_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def sim_config(node_id: str, index: int, seeds: tuple[str, ...], scenario: Scenario) -> NodeConfig:
    """The node profile of the simulation: runtime defaults for every timing the node's
    logic reads (heartbeat 0.5 s, failure timeout 3 s, request timeout 3 s), the memory
    engine, fewer vnodes (ring building is the only cost that grows with them)."""
    return NodeConfig(node_id=node_id, host="127.0.0.1", http_port=8000 + index,
                      rpc_port=9000 + index, seeds=seeds, storage="memory", sync="none",
                      vnodes=scenario.vnodes, conflict=scenario.conflict,
                      anti_entropy_interval=scenario.ae_interval,
                      tombstone_grace=scenario.tombstone_grace, log_level="warning")


def run_scenario(scenario: Scenario, trace: Trace | None = None) -> Result:
    trace = trace or Trace(tail=40)
    names = [f"n{i}" for i in range(1, scenario.nodes + 1)]
    index = {n: i for i, n in enumerate(names, start=1)}

    def make_config(node_id: str, seeds: tuple[str, ...]) -> NodeConfig:
        return sim_config(node_id, index[node_id], seeds, scenario)

    world = World(scenario.seed, names, make_config, tick=scenario.tick, trace=trace,
                  network=NetworkProfile(latency=scenario.latency))
    result = Result(scenario.seed, [])
    hostiles: list[Hostile] = []
    try:
        _run(world, scenario, result, hostiles)
    except Exception as exc:  # a node (or the sim) raised: report it with the seed
        report(result, "exception", [f"exception at t={world.elapsed():.6f}: {exc!r}\n"
                                     + traceback.format_exc()])
    result.sim_seconds = round(world.elapsed(), 6)
    result.trace_hash = trace.digest()
    result.events = trace.events
    result.stats.update(asdict(world.stats))
    result.stats.update({f"net_{k}": v for k, v in asdict(world.network.stats).items()})
    for name in ("keys_repaired", "exchanges", "bytes_sent", "expired",
                 "tombstones_compacted"):
        result.stats[f"ae_{name}"] = sum(getattr(world.node(n).anti_entropy.stats, name)
                                         for n in world.running())
    if hostiles:
        result.stats["hostile_sent"] = sum(sum(h.stats.sent.values()) for h in hostiles)
        result.stats["hostile_received"] = sum(h.stats.received for h in hostiles)
        result.stats["hostile_types"] = len({k for h in hostiles for k in h.stats.sent})
    if result.failures:
        result.trace_tail = trace.tail(40)
    return result


def report(result: Result, check: str, lines: list[str]) -> None:
    """Add a checker's failure lines to `result`, counted under the checker's name."""
    if lines:
        result.failures.extend(lines)
        result.checks[check] = result.checks.get(check, 0) + len(lines)


def _run(world: World, sc: Scenario, result: Result, hostiles: list[Hostile]) -> None:
    start = world.now
    end = start + sc.duration
    heal_at = end - HEAL_BEFORE_END
    live_from = heal_at + SETTLE
    stop_ops = live_from + LIVE_WINDOW

    nemesis = Nemesis(world, NemesisConfig(faults=sc.faults, mean_gap=sc.mean_fault_gap,
                                           max_disk_losses=sc.max_disk_losses,
                                           max_skew=sc.max_skew))
    nemesis.initial_skews()
    first, *rest = list(world.hosts)
    world.start(first, seeds=())
    for i, node in enumerate(rest, start=1):
        world.at(start + 0.2 * i, world.start, node, (world.hosts[first].rpc,))
    # Joiners wait `join_settle` before fetching their (empty) ranges, then turn up:
    # boot ends once every node sees the full ring, or fails after BOOT_LIMIT.
    world.run_until(start + BOOT)

    def not_joined() -> list[str]:
        return [n for n in world.hosts if not world.node(n).joined
                or len(world.node(n).ring.nodes) != sc.nodes]

    while not_joined() and world.now < start + BOOT_LIMIT:
        world.run_until(world.now + 0.5)
    start = world.now - BOOT
    end = start + sc.duration
    heal_at = end - HEAL_BEFORE_END
    live_from = heal_at + SETTLE
    stop_ops = live_from + LIVE_WINDOW
    if not_joined():
        report(result, "boot", [f"boot: {not_joined()} not joined with a full ring after "
                                f"{BOOT_LIMIT} s"])
        return

    wcfg = WorkloadConfig(clients=sc.clients, think=sc.think)
    if sc.mix or not sc.datatypes:
        wcfg = WorkloadConfig(clients=sc.clients, think=sc.think,
                              weights=sc.mix or VALUE_WEIGHTS)
    if sc.cold_keys:
        wcfg = WorkloadConfig(clients=sc.clients, think=sc.think, registers=sc.cold_keys,
                              weights=COLD_WEIGHTS)
    workload = Workload(world, wcfg)
    workload.datatypes.viewer = datatype_checkers.replica_viewer(world)
    workload.start(start + BOOT, stop_ops, live_from)
    nemesis.start(start + BOOT, heal_at)
    if sc.hostile:
        hostiles.extend(deploy(world, sc.hostile, sc.seed, start + BOOT, heal_at, end,
                               tuple(sorted(workload.history.keys))))
    _stress(world, sc, start + BOOT, heal_at)
    world.run_until(heal_at)
    nemesis.heal_all()
    world.run_until(end)
    history = workload.history
    result.faults = dict(sorted(nemesis.counts.items()))

    # Convergence check 1: without any help from reads.
    keys = sorted(history.keys) + history.data.keys()
    diverged_1, ring_failures = checkers.diverged_keys(world, keys, sc.max_skew)
    report(result, "ring", ring_failures)
    hints = checkers.hints_pending(world)
    result.hints_left = sum(hints.values())
    if hints:
        report(result, "hints", [f"hints not drained after the quiet period: {hints}"])

    # The final reads, r=N, every key: the lost-write checks, and the repair sweep.
    finals = _final_reads(world, workload, keys)
    world.run_until(world.now + 10.0)
    diverged_2, _ = checkers.diverged_keys(world, keys, sc.max_skew)

    report(result, "violations", history.violations)
    report(result, "liveness", [f"liveness: {line}" for line in history.liveness_failures])
    lost_lines, lost = checkers.lost_writes(history, finals, sc.max_skew)
    report(result, "lost_writes", lost_lines)
    report(result, "superseded", checkers.superseded_stay_gone(history, finals))
    report(result, "expired", checkers.expired_stay_expired(history, finals, sc.max_skew))
    decisive = diverged_2 if sc.repair_sweep else diverged_1
    if decisive:
        report(result, "diverged", [
            f"replicas diverged on {len(decisive)} keys"
            f"{' even after the repair sweep' if sc.repair_sweep else ''}: "
            f"{[show_key(k) for k in decisive[:8]]}"])
    data = history.data
    report(result, "counters", datatype_checkers.counters(data, finals, world, sc.max_skew))
    report(result, "sets", datatype_checkers.sets(data, finals, world, sc.max_skew))
    races, racing = datatype_checkers.racing_creates(history, data, finals)
    report(result, "conditional", races)
    listing_lines, excused = datatype_checkers.listings(data, history)
    report(result, "listing", listing_lines)
    result.datatypes = data.stats() | {"cond_racing_creates": racing,
                                       "listing_keys_excused": excused}
    result.repaired = len(set(diverged_1) - set(diverged_2)) if sc.repair_sweep else 0
    result.diverged = len(decisive)
    result.ops = history.ops
    result.writes = len(history.writes)
    result.acknowledged = history.acknowledged
    result.lost = lost
    result.siblings_max = history.max_siblings
    result.reapplied = len(history.reapplied)


def _stress(world: World, sc: Scenario, begin: float, end: float) -> None:
    """The faults only anti-entropy can repair: lost hints, a long partition.

    Drawn from a generator of their own, so scenarios without them replay unchanged.
    """
    rng = random.Random(sc.seed * 7919 + 17)
    names = sorted(world.hosts)
    if sc.long_partition > 0:
        alone = rng.choice(names)
        at = begin + rng.uniform(0.0, 5.0)
        links = [(alone, o) for o in names if o != alone] + \
                [(o, alone) for o in names if o != alone]

        def cut() -> None:
            world.network.block(links)
            world.log(f"stress partition {alone} alone")

        def uncut() -> None:
            world.network.unblock(links)
            world.log(f"stress end partition {alone}")

        world.at(at, cut)
        world.at(min(at + sc.long_partition, end - 1.0), uncut)
    if sc.lose_hints > 0:
        def lose() -> None:
            if world.now >= end:
                return
            running = world.running()
            if running:
                node = world.node(rng.choice(running))
                lost = [h for t in node.store.hint_targets()
                        for h in list(node.store.hint_index.get(t, ()))
                        if _held_elsewhere(world, node.store, h)]
                for hkey in lost:
                    node.store.delete_hint(hkey)
                world.log(f"stress lose {len(lost)} hints of {node.id}")
            world.after(rng.expovariate(1.0 / sc.lose_hints), lose)

        world.at(begin + rng.expovariate(1.0 / sc.lose_hints), lose)


def _held_elsewhere(world: World, store: KeyStore, hkey: bytes) -> bool:
    """True when a replica other than the hint's target already holds what it carries.

    Only such hints are lost: a hint that is the last copy of a write is a lost disk,
    which the `disk` fault models (at most `max_disk_losses`), not a missed delivery.
    """
    token, key, target = split_hint_key(hkey)
    hinted = store.get_hint(hkey)
    ring = world.node(world.running()[0]).ring
    for replica in ring.preference_list(token, 3):
        if replica == target or replica not in world.running():
            continue
        record = world.node(replica).store.get_record(token, key)
        if record is not None and hinted is not None and \
                merge(record.versions, hinted).same_as(record.versions):
            return True
    return False


def _final_reads(world: World, workload: Workload, keys: list[bytes]) -> dict[bytes, FinalRead]:
    """Read every key with r=N from random nodes; the cluster is healthy, so a read that
    fails is a liveness failure (it is retried, to still check the key)."""
    finals: dict[bytes, FinalRead] = {}
    n = world.node(world.running()[0]).n
    history = workload.history

    def read(key: bytes, attempt: int) -> None:
        def on_reply(resp: ClientResponse | None) -> None:
            if not isinstance(resp, ReadOk | NotFound):
                history.liveness_failures.append(
                    f"t={world.elapsed():.3f} final read of {key.decode()} r={n} "
                    f"(attempt {attempt}): {resp!r}")
                if attempt < 3:
                    world.after(1.0, read, key, attempt + 1)
                    return
            finals[key] = FinalRead(key, resp, world.now)
            if key not in history.keys:  # a counter or a set: `sim.datatypes`
                workload.datatypes.observe(key, resp, "final read")
            elif isinstance(resp, ReadOk):
                workload.observe_siblings(key, resp.siblings, "final read")

        node = world.rng.choice(world.running())
        world.call(node, ReadRequest(key, n), on_reply, 5.0)

    for key in keys:
        read(key, 1)
    deadline = world.now + 20.0
    while len(finals) < len(keys) and world.now < deadline:
        world.run_until(world.now + 0.5)
    return finals
