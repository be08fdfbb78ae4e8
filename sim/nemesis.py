"""The nemesis: fault episodes drawn from the seed, and the final heal.

Job: between `begin` and `end` of a scenario's chaos phase, start a fault episode every
few seconds (exponential gaps), of a kind drawn from the enabled mix, and end it after
a drawn duration. `heal_all` ends every episode at once: partitions and slow links
lifted, drop/duplicate/reorder off, paused nodes resumed, crashed nodes restarted (clock
skews stay: they are a property of the machines, not an episode).

Fault kinds (`FAULT_KINDS`):
  partition  symmetric split of the nodes into two sides (often one node alone)
  oneway     some directed links blocked (a node that can send but not hear, ...)
  pause      a node stops processing for a while (GC pause, SIGSTOP); events wait
  crash      a node crashes (at a random moment) and restarts later with what it had
             committed: staged and uncommitted writes are lost
  torn       the same, at the worst moment: right after the node coordinates a write,
             once its fan-out has left and before its own record is committed (this
             found a counter-reuse bug, fixed since: see docs/simulation.md)
  disk       a node crashes, loses its disk, and rejoins later with a fresh one
  skew       a node's clock is set to world time plus a new offset (+-`max_skew`)
  drop       every frame is dropped with some probability for a while
  dup        every frame is duplicated with some probability for a while
  reorder    frames draw independent latencies for a while, so they overtake
  slow       some links become 5-100x slower for a while
  leave      a node leaves the cluster (its ranges go to their new owners), and later
             rejoins with an empty data dir or its old one, fetching its ranges again
  remove     a node crashes and loses its disk for good; once the others judge it down,
             an operator removes it (its ranges are re-replicated from the survivors);
             later a new node with its name joins with an empty disk

Invariants (what keeps the checkers' promises meaningful):
- At most `max_down` nodes are crashed or paused at once, so a quorum usually exists.
- At most `max_disk_losses` disk losses per scenario (default 1): every acknowledged
  write is durable on W=2 nodes, and one lost disk still leaves a copy. Losing two
  disks can lose acknowledged writes in any Dynamo-style store: not a bug to report.
- Every episode's effect is undone by its own end or by `heal_all`; episodes may
  overlap (blocked links are counted per episode).
- One membership change (leave or remove) at a time, and a removal counts as a disk
  loss: a removed node's copies are gone exactly as if its disk had failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.effects import Effect
from ringkv.core.node import Node
from sim.world import World

FAULT_KINDS = ("partition", "oneway", "pause", "crash", "torn", "disk", "skew", "drop",
               "dup", "reorder", "slow", "leave", "remove")
# Faults that trigger a known, reported and not yet fixed core bug: they stay out of the
# default mix, so that a default sweep is a green gate for everything else, while strict
# xfail tests track the bug. Empty today: the one such fault ("torn") found a bug that
# has since been fixed.
KNOWN_BUG_FAULTS: tuple[str, ...] = ()
DEFAULT_FAULTS = tuple(k for k in FAULT_KINDS if k not in KNOWN_BUG_FAULTS)


@dataclass
class NemesisConfig:
    faults: tuple[str, ...] = DEFAULT_FAULTS
    mean_gap: float = 5.0  # seconds between episode starts
    max_down: int = 2
    max_disk_losses: int = 1
    max_skew: float = 0.5  # seconds
    episode: tuple[float, float] = (1.0, 20.0)  # seconds an episode lasts


@dataclass
class Nemesis:
    world: World
    config: NemesisConfig
    counts: dict[str, int] = field(default_factory=dict)
    disk_losses: int = 0

    def __post_init__(self) -> None:
        self.rng = self.world.rng
        self.nodes = list(self.world.hosts)
        self._end = 0.0
        self._drops: dict[int, float] = {}
        self._dups: dict[int, float] = {}
        self._reorders: set[int] = set()
        self._episode = 0
        self._todo: list[str] = []
        self._changing: str | None = None  # the node of the membership change under way
        self._actions: dict[str, Callable[[], bool]] = {
            "partition": self._partition, "oneway": self._oneway, "pause": self._pause,
            "crash": lambda: self._crash(False), "disk": lambda: self._crash(True),
            "torn": self._torn,
            "skew": self._skew, "drop": self._drop, "dup": self._dup,
            "reorder": self._reorder, "slow": self._slow,
            "leave": self._leave, "remove": self._remove,
        }

    # --- the schedule --------------------------------------------------------------------

    def initial_skews(self) -> None:
        if "skew" in self.config.faults:
            for node in self.nodes:
                self.world.set_skew(node, self.rng.uniform(-self.config.max_skew,
                                                           self.config.max_skew))

    def start(self, begin: float, end: float) -> None:
        self._end = end
        self._todo = list(self.config.faults)
        self.rng.shuffle(self._todo)
        if self.config.faults:
            self.world.at(begin + self.rng.expovariate(1.0 / self.config.mean_gap),
                          self._next)

    def _next(self) -> None:
        if self.world.now >= self._end:
            return
        # Every enabled kind once, in a shuffled order, then kinds drawn at random.
        kind = self._todo.pop() if self._todo else self.rng.choice(self.config.faults)
        if self._actions[kind]():
            self.counts[kind] = self.counts.get(kind, 0) + 1
        elif kind not in self._todo and not self.counts.get(kind):
            self._todo.insert(0, kind)  # could not start (too many nodes down): later
        self.world.after(self.rng.expovariate(1.0 / self.config.mean_gap), self._next)

    def _duration(self) -> float:
        return self.rng.uniform(*self.config.episode)

    def _later(self, fn: Callable[..., None], *args: object) -> None:
        """Schedule an episode's end, unless heal_all comes first (it undoes everything)."""
        at = self.world.now + self._duration()
        if at < self._end:
            self.world.at(at, fn, *args)

    def _say(self, text: str) -> None:
        self.world.log(f"nemesis {text}")

    def heal_all(self) -> None:
        self._say("heal all")
        self._end = self.world.now
        self.world.network.heal()
        self._drops.clear()
        self._dups.clear()
        self._reorders.clear()
        for node in self.nodes:
            self.world.resume(node)
            self.world.restart(node)
        if self._changing is not None:
            self._finish_change(self._changing)

    # --- episodes (each returns False when it could not start) ---------------------------

    def _links_between(self, a: list[str], b: list[str]) -> list[tuple[str, str]]:
        return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]

    def _partition(self) -> bool:
        nodes = list(self.nodes)
        self.rng.shuffle(nodes)
        cut = 1 if self.rng.random() < 0.4 else self.rng.randint(1, len(nodes) - 1)
        side_a, side_b = sorted(nodes[:cut]), sorted(nodes[cut:])
        links = self._links_between(side_a, side_b)
        self.world.network.block(links)
        self._say(f"partition {','.join(side_a)} | {','.join(side_b)}")
        self._later(self._unblock, links, "partition")
        return True

    def _oneway(self) -> bool:
        node = self.rng.choice(self.nodes)
        others = [n for n in self.nodes if n != node]
        style = self.rng.choice(("deaf", "mute", "links"))
        if style == "deaf":  # hears nothing, still talks
            links = [(o, node) for o in others]
        elif style == "mute":  # hears everything, nobody hears it
            links = [(node, o) for o in others]
        else:
            picked = self.rng.sample(others, self.rng.randint(1, len(others)))
            links = [(node, o) for o in picked]
        self.world.network.block(links)
        self._say(f"oneway {style} {' '.join(f'{s}>{d}' for s, d in links)}")
        self._later(self._unblock, links, "oneway")
        return True

    def _unblock(self, links: list[tuple[str, str]], what: str) -> None:
        self.world.network.unblock(links)
        self._say(f"end {what} {' '.join(f'{s}>{d}' for s, d in links)}")

    def _up_candidates(self) -> list[str]:
        if len(self.world.down()) >= self.config.max_down:
            return []
        return [n for n in self.nodes if n not in self.world.down()]

    def _pause(self) -> bool:
        candidates = self._up_candidates()
        if not candidates:
            return False
        node = self.rng.choice(candidates)
        # Mostly shorter than the failure timeout, sometimes far longer.
        seconds = self.rng.uniform(0.05, 2.0) if self.rng.random() < 0.5 else self._duration()
        self.world.pause(node, seconds)
        return True

    def _crash(self, lose_disk: bool) -> bool:
        if lose_disk and self.disk_losses >= self.config.max_disk_losses:
            return False
        candidates = self._up_candidates()
        if not candidates:
            return False
        node = self.rng.choice(candidates)
        self.disk_losses += lose_disk
        self.world.crash(node, lose_disk)
        self._later(self.world.restart, node)
        return True

    def _torn(self) -> bool:
        """Arm a crash for right after the node's next fan-out, before its commit."""
        candidates = self._up_candidates()
        if not candidates:
            return False
        node = self.rng.choice(candidates)

        def crash() -> None:
            if self.world.hosts[node].node is not None and self.world.now < self._end:
                self.world.crash(node, False)
                self._later(self.world.restart, node)

        self._say(f"arm torn crash {node}")
        self.world.hosts[node].crash_armed = crash
        return True

    def _skew(self) -> bool:
        node = self.rng.choice(self.nodes)
        self.world.set_skew(node, self.rng.uniform(-self.config.max_skew,
                                                   self.config.max_skew))
        return True

    def _rate_episode(self, rates: dict[int, float], name: str) -> bool:
        self._episode += 1
        rates[self._episode] = self.rng.uniform(0.01, 0.25)
        self._apply_rates()
        self._say(f"{name} {rates[self._episode]:.3f}")
        self._later(self._end_rate, rates, self._episode, name)
        return True

    def _end_rate(self, rates: dict[int, float], episode: int, name: str) -> None:
        rates.pop(episode, None)
        self._apply_rates()
        self._say(f"end {name}")

    def _apply_rates(self) -> None:
        net = self.world.network
        net.drop_rate = max(self._drops.values(), default=0.0)
        net.dup_rate = max(self._dups.values(), default=0.0)
        net.reorder = bool(self._reorders)

    def _drop(self) -> bool:
        return self._rate_episode(self._drops, "drop")

    def _dup(self) -> bool:
        return self._rate_episode(self._dups, "dup")

    def _reorder(self) -> bool:
        self._episode += 1
        self._reorders.add(self._episode)
        self._apply_rates()
        self._say("reorder")
        self._later(self._end_reorder, self._episode)
        return True

    def _end_reorder(self, episode: int) -> None:
        self._reorders.discard(episode)
        self._apply_rates()
        self._say("end reorder")

    def _slow(self) -> bool:
        node = self.rng.choice(self.nodes)
        others = [n for n in self.nodes if n != node]
        picked = self.rng.sample(others, self.rng.randint(1, len(others)))
        links = [(node, o) for o in picked] + [(o, node) for o in picked]
        factor = self.rng.uniform(5.0, 100.0)
        self.world.network.slow(links, factor)
        self._say(f"slow {node}<>{','.join(picked)} x{factor:.1f}")
        self._later(self._unslow, links)
        return True

    def _unslow(self, links: list[tuple[str, str]]) -> None:
        self.world.network.unslow(links)
        self._say("end slow")

    # --- membership changes ------------------------------------------------------------

    def _status(self, viewer: str, node: str) -> str | None:
        host = self.world.hosts[viewer]
        member = host.node.members.get(node) if host.node is not None else None
        return member.status if member is not None else None

    def _leave(self) -> bool:
        if self._changing is not None:
            return False
        candidates = [n for n in self._up_candidates() if self._status(n, n) == "up"]
        if not candidates:
            return False
        node = self.rng.choice(candidates)
        errors: list[str] = []

        def leave(nd: Node, now: float) -> list[Effect]:
            error, effects = nd.start_leave(now)
            if error:
                errors.append(error)
            return effects

        # A leave the node refuses (another change in flight, fewer than N would stay)
        # is no change at all: the nemesis tries something else.
        if not self.world.act(node, leave) or errors:
            return False
        self._changing = node
        self._say(f"leave {node}")
        self.world.after(self._duration(), self._after_leave, node)
        return True

    def _after_leave(self, node: str) -> None:
        """Rejoin once the node has left, with an empty data dir: a new node, in effect."""
        if self._changing != node:
            return
        status = self._status(node, node)
        if status == "up":  # it withdrew its leave (another leaver went first)
            self._say(f"{node} withdrew its leave")
            self._changing = None
            return
        if status != "left":
            self.world.after(1.0, self._after_leave, node)  # still handing over
            return
        # Half the time with an empty disk (a new machine), half with what it held when
        # it left (stale by now): either way it must fetch its ranges again.
        wipe = self.rng.random() < 0.5
        self._say(f"rejoin {node} with {'an empty' if wipe else 'its old'} disk")
        self.world.crash(node, lose_disk=wipe)
        self.world.restart(node)
        self._changing = None

    def _remove(self) -> bool:
        if self._changing is not None or self.disk_losses >= self.config.max_disk_losses:
            return False
        candidates = self._up_candidates()
        if len(candidates) < 2:
            return False
        node = self.rng.choice(candidates)
        self.disk_losses += 1
        self._changing = node
        self._say(f"remove {node}: crashed for good")
        self.world.crash(node, lose_disk=True)
        self.world.after(5.0, self._operator_removes, node)
        return True

    def _operator_removes(self, node: str) -> None:
        if self._changing != node:
            return
        others = [n for n in self.world.running() if n != node and n not in self.world.down()]
        if others:
            viewer = self.rng.choice(others)
            errors: list[str] = []

            def remove(nd: Node, now: float) -> list[Effect]:
                error, effects = nd.remove_member(node, now)
                if error:
                    errors.append(error)
                return effects

            if self.world.act(viewer, remove) and not errors:
                self._say(f"{viewer} removes {node}")
                self.world.after(self._duration(), self._finish_change, node)
                return
            if errors and "fewer than" in errors[0]:
                # Refused for good (the cluster would drop under N): the operator
                # replaces the machine under the same name instead, with an empty disk.
                self._say(f"{viewer} refuses to remove {node}: {errors[0]}; it is replaced")
                self.world.restart(node)
                self._changing = None
                return
        self.world.after(1.0, self._operator_removes, node)  # not judged down yet

    def _finish_change(self, node: str) -> None:
        """End a membership change: a removed node's name rejoins with an empty disk; a
        leaving node rejoins as soon as it has left."""
        if self._changing != node:
            return
        if self.world.hosts[node].node is None:
            self._say(f"a new {node} joins with an empty disk")
            self.world.restart(node)
            self._changing = None
        else:
            self._after_leave(node)
