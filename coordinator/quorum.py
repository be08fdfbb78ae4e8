"""Quorum bookkeeping for one request, and the choice of replicas it goes to.

`choose_targets` implements the sloppy quorum: the first N *reachable* nodes of a key's
extended preference list. A primary that is down is stood in for by the next reachable
node past the primaries, and that fallback is told whom it stands in for (`hint_for`),
so it keeps the write as a hint and hands it over when the primary is back.

`WriteQuorum` and `ReadQuorum` are the per-request bookkeeping: they are fed replica
answers and say when the client can be answered and with what. They hold no clock:
the coordinator sets a timer at the request's deadline, and when it fires reads what
they collected (`acks`, `acked`, `replies`, `answered`) to answer or fail the request
(`coordinator.write`, `coordinator.read`).

A read's answers arrive packed (`storage.store.pack_versions`, the bytes a replica
stores). `ReadQuorum` decodes each distinct answer once, validating it (an answer that
fails is no answer), and while every answer is the same bytes it skips the merge and the
staleness check: the merged state is then the one answer (in merge order), and nobody is
stale. This fast path gives exactly what merging the decoded answers gives; any
difference between answers takes the merge path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from storage.store import unpack_versions
from storage.versions import EMPTY, Versions, merge, merge_all

# What a replica answered: packed (the usual), already decoded, or None (nothing).
Answer = bytes | Versions | None
_NOTHING_YET = object()  # `_first` before any answer (None is an answer: "nothing")


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    hint_for: str | None = None  # the down primary this fallback stands in for


def choose_targets(
    preference: Sequence[str],
    extended: Callable[[], Sequence[str]],
    is_up: Callable[[str], bool],
) -> list[Target]:
    """The first len(preference) reachable nodes, fallbacks paired with down primaries."""
    down = [p for p in preference if not is_up(p)]
    targets = [Target(p) for p in preference if p not in down]
    if not down:
        return targets
    primaries = set(preference)
    fallbacks = [x for x in extended() if x not in primaries and is_up(x)]
    targets.extend(Target(f, d) for f, d in zip(fallbacks, down, strict=False))
    return targets


@dataclass(slots=True)
class WriteQuorum:
    """Counts durable acknowledgements of one write."""

    required: int
    targets: tuple[Target, ...]
    acked: set[str] = field(default_factory=set)
    answered: bool = False
    _nodes: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._nodes = frozenset(t.node for t in self.targets)

    def ack(self, node: str) -> bool:
        """Record an ack; True exactly once, when the quorum is first reached."""
        if node not in self._nodes:
            return False
        self.acked.add(node)
        if not self.answered and len(self.acked) >= self.required:
            self.answered = True
            return True
        return False

    @property
    def acks(self) -> int:
        return len(self.acked)

    def done(self) -> bool:
        return len(self.acked) == len(self.targets)


@dataclass(slots=True)
class ReadQuorum:
    """Collects replica answers to one read; decides the answer and the repairs."""

    required: int
    targets: tuple[Target, ...]
    replies: dict[str, Versions | None] = field(default_factory=dict)
    answered: bool = False
    _nodes: frozenset[str] = field(init=False, repr=False)
    # merged() is asked for by the answer, the staleness receipt and read repair;
    # replies only ever grow, so one merge per reply count serves them all.
    _merged: Versions | None = field(default=None, init=False, repr=False)
    _merged_count: int = field(default=-1, init=False, repr=False)
    # The first answer as it came, and whether every answer since was the same bytes.
    _first: object = field(default=_NOTHING_YET, init=False, repr=False)
    _uniform: bool = field(default=True, init=False, repr=False)
    # Each distinct packed answer decoded once: a replica that differs from the first
    # is usually one of two states, not one per replica.
    _decoded: dict[bytes, Versions] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._nodes = frozenset(t.node for t in self.targets)

    def reply(self, node: str, answer: Answer) -> bool:
        """Record an answer; True exactly once, when R answers are in.

        A packed answer that does not decode to valid versions is dropped, as the wire
        codec drops a malformed frame: it counts as no answer from that node.
        """
        if node not in self._nodes or node in self.replies:
            return False
        versions: Versions | None
        if isinstance(answer, bytes):
            if self._uniform and answer == self._first:
                versions = next(iter(self.replies.values()))  # the one state so far
            else:
                versions = self._decoded.get(answer)
                if versions is None:
                    try:
                        versions = unpack_versions(answer)
                    except ValueError:
                        return False
                    self._decoded[answer] = versions
        else:
            versions = answer
        self._compare(answer)
        self.replies[node] = versions
        if not self.answered and len(self.replies) >= self.required:
            self.answered = True
            return True
        return False

    def _compare(self, answer: Answer) -> None:
        """Keep `_uniform` while every answer is the same bytes (or every one nothing).

        Decoded answers are merged, never compared: equality of the decoded form costs
        about what the merge does.
        """
        first = self._first
        if first is _NOTHING_YET:
            self._first = answer
            self._uniform = answer is None or type(answer) is bytes
        elif self._uniform:
            self._uniform = (answer == first if type(answer) is bytes
                             else answer is None and first is None)

    def merged(self) -> Versions:
        if self._merged is None or self._merged_count != len(self.replies):
            self._merged = self._merge()
            self._merged_count = len(self.replies)
        return self._merged

    def _merge(self) -> Versions:
        if not self._uniform:
            return merge_all(self.replies[n] for n in sorted(self.replies))
        # Every answer is the same state S. merge_all gives S for one answer and
        # merge(S, S) for more: S itself, but with its siblings in merge order, which
        # a replica's record need not be in; one sibling or none is in order already.
        state = next(iter(self.replies.values()), None)
        if state is None:
            return EMPTY
        if len(self.replies) > 1 and len(state.siblings) > 1:
            return merge(state, state)
        return state

    def stale(self, merged: Versions) -> list[str]:
        """Replicas whose answer lacks something the merged state has."""
        if self._uniform and merged is self.merged():
            return []  # every answer is the merged state (a resolved one may differ)
        out = []
        for node in sorted(self.replies):
            answer = self.replies[node]
            if answer is None:
                if merged.context:
                    out.append(node)
            elif not answer.same_as(merged):
                out.append(node)
        return out

    def complete(self) -> bool:
        return len(self.replies) == len(self.targets)

    def repairs(self) -> list[Target]:
        """Targets to send the merged state to: those that answered with less."""
        merged = self.merged()
        if not merged.context:
            return []
        stale = set(self.stale(merged))
        return [t for t in self.targets if t.node in stale]
