"""The membership table: who is in the cluster, where, with which tokens.

Each member owns its record and is the only one to bump its `version` (the one
exception: a seed writes the first record of a node that joins through it). Records
merge by version, highest wins, so any exchange order converges: the same rule a
push-pull gossip protocol needs, which is why this table is the seam the full gossip
protocol (SWIM-style probing and dissemination) slots into later.

`status` is the membership status the cluster agreed on (`joining`, `up`, `leaving`,
`left`); whether a member is reachable right now is a separate, local judgement made by
`gossip.detector.FailureDetector`, and `view_status` combines the two into what
`GET /cluster` shows (`down` when an `up` member is not answering).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

JOINING = "joining"
UP = "up"
DOWN = "down"
LEAVING = "leaving"
LEFT = "left"
STATUSES = (JOINING, UP, LEAVING, LEFT)


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    http: str  # host:port clients use
    rpc: str  # host:port peers use
    tokens: tuple[int, ...]
    status: str
    version: int
    generation: int  # changes when the node's data dir is new

    def to_wire(self) -> list[object]:
        return [self.node_id, self.http, self.rpc, list(self.tokens), self.status,
                self.version, self.generation]

    @staticmethod
    def from_wire(doc: object) -> Member:
        if not (isinstance(doc, list) and len(doc) == 7):
            raise ValueError("malformed member record")
        node_id, http, rpc, tokens, status, version, generation = doc
        if not (isinstance(node_id, str) and isinstance(http, str) and isinstance(rpc, str)
                and isinstance(tokens, list) and status in STATUSES
                and isinstance(version, int) and isinstance(generation, int)):
            raise ValueError("malformed member record")
        if not all(isinstance(t, int) and 0 <= t < 1 << 64 for t in tokens):
            raise ValueError("malformed member tokens")
        return Member(node_id, http, rpc, tuple(tokens), status, version, generation)

    def bumped(self) -> Member:
        return replace(self, version=self.version + 1)


class Membership:
    """Member records by node id, merged by version."""

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._members: dict[str, Member] = {}
        for m in members:
            self.merge_one(m)

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members

    def members(self) -> list[Member]:
        return [self._members[k] for k in sorted(self._members)]

    def ids(self) -> list[str]:
        return sorted(self._members)

    def digest(self) -> dict[str, int]:
        return {k: m.version for k, m in self._members.items()}

    def newer_than(self, digest: Mapping[str, int]) -> list[Member]:
        """Records the holder of `digest` lacks or has older versions of."""
        return [m for k, m in sorted(self._members.items()) if m.version > digest.get(k, -1)]

    def wants(self, digest: Mapping[str, int]) -> bool:
        """True when `digest` names a record newer than ours."""
        return any(v > self._members[k].version if k in self._members else True
                   for k, v in digest.items())

    def merge_one(self, member: Member) -> bool:
        current = self._members.get(member.node_id)
        if current is not None and current.version >= member.version:
            return False
        self._members[member.node_id] = member
        return True

    def merge(self, members: Iterable[Member]) -> bool:
        changed = False
        for m in members:
            changed |= self.merge_one(m)
        return changed

    def ring_tokens(self) -> dict[str, tuple[int, ...]]:
        """Tokens of the members that own key ranges (all but `left`)."""
        return {k: m.tokens for k, m in sorted(self._members.items())
                if m.status != LEFT and m.tokens}
