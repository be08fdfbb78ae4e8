"""The ring: an immutable map from tokens to the physical nodes that hold them.

A ``Ring`` is built from ``{node_id: tokens}``, the tokens each member chose when it
joined (see ``ring.allocation``) and gossips in its member record. Members with no
tokens are simply absent. The ring never changes after construction; a membership
change makes a new ``Ring``.

Rules (Dynamo's consistent hashing with virtual nodes):

- The *owner* of a token ``t`` is the node holding the smallest vnode token ``>= t``,
  wrapping past ``2**64 - 1`` to the smallest vnode token. So vnode ``i`` owns the arc
  ``(token[i-1], token[i]]`` and a key whose token equals a vnode token belongs to it.
- The *preference list* of ``t`` for ``n`` is the first ``n`` distinct physical nodes
  met walking clockwise from the owner's vnode; with fewer than ``n`` nodes, all of
  them. The *extended list* keeps walking until every node appears once: primaries
  first, then the fallbacks a sloppy quorum tries in order.
- If two nodes hold the same token (possible only when two joins allocated against
  the same stale ring), the vnode of the smaller node id comes first and owns the arc;
  the other vnode owns an empty arc but still counts in walks. Every node computes the
  same answer, which is all that matters for placement.

Performance: ``preference_list`` runs on every request, so it is one ``bisect`` into
a sorted token list plus a slice of a per-vnode cache of the first distinct successors.
The cache is filled lazily (building a 200 x 256 ring only sorts its tokens); filling
it mutates no observable state, so the ring stays immutable and deterministic.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping

from ring.token import TOKEN_SPACE, TokenRange, check_token, key_token

__all__ = ["Ring"]

# Cache at least this many distinct successors per vnode, so the usual N=3 lookups and
# the first couple of sloppy-quorum fallbacks are all slices of one cached tuple.
_MIN_CACHE_DEPTH = 5


class Ring:
    """Immutable consistent-hash ring with virtual nodes. See the module docstring."""

    __slots__ = ("_members", "_nodes", "_tokens", "_owners", "_succ", "_arcs", "_hash")

    def __init__(self, members: Mapping[str, Iterable[int]] | None = None) -> None:
        members = members or {}
        clean: dict[str, tuple[int, ...]] = {}
        entries: list[tuple[int, str]] = []
        for node in sorted(members):
            tokens = tuple(sorted({check_token(t) for t in members[node]}))
            if tokens:
                clean[node] = tokens
                entries.extend((t, node) for t in tokens)
        # Sorting (token, node) puts the smaller node id first on a shared token,
        # which is the tie rule the module docstring promises.
        entries.sort()
        self._members = clean
        self._nodes = tuple(clean)  # already sorted: built in sorted(node) order
        self._tokens = [t for t, _ in entries]
        self._owners = [n for _, n in entries]
        self._succ: list[tuple[str, ...] | None] = [None] * len(entries)
        self._arcs: list[int] | None = None
        self._hash: int | None = None

    # -- identity -----------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Member node ids, sorted."""
        return self._nodes

    def tokens_of(self, node: str) -> tuple[int, ...]:
        """The sorted tokens of ``node`` (empty if it is not a member)."""
        return self._members.get(node, ())

    def token_map(self) -> dict[str, tuple[int, ...]]:
        """A fresh ``{node: tokens}`` copy, e.g. to pass to ``allocate_tokens``."""
        return dict(self._members)

    @property
    def vnode_count(self) -> int:
        return len(self._tokens)

    def with_node(self, node: str, tokens: Iterable[int]) -> Ring:
        """A new ring in which ``node`` holds exactly ``tokens`` (others unchanged)."""
        members: dict[str, Iterable[int]] = dict(self._members)
        members[node] = tuple(tokens)
        return Ring(members)

    def without_node(self, node: str) -> Ring:
        """A new ring without ``node``."""
        return Ring({n: t for n, t in self._members.items() if n != node})

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._members

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return self._members == other._members

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._members.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Ring(nodes={len(self._nodes)}, vnodes={len(self._tokens)})"

    # -- lookups ------------------------------------------------------------------

    def _index(self, token: int) -> int:
        """Index of the vnode owning ``token``: first vnode token ``>= token``, wrapped."""
        i = bisect_left(self._tokens, token)
        return 0 if i == len(self._tokens) else i

    def _successors_at(self, i: int, depth: int) -> tuple[str, ...]:
        """First ``depth`` distinct nodes from vnode ``i`` clockwise, cached per vnode."""
        cached = self._succ[i]
        if cached is not None and (len(cached) >= depth or len(cached) == len(self._nodes)):
            return cached
        depth = max(depth, _MIN_CACHE_DEPTH)
        owners = self._owners
        total = len(owners)
        want = min(depth, len(self._nodes))
        found: list[str] = []
        seen: set[str] = set()
        j = i
        # At most one lap: every member has a vnode, so a lap meets every node.
        for _ in range(total):
            node = owners[j]
            if node not in seen:
                seen.add(node)
                found.append(node)
                if len(found) == want:
                    break
            j += 1
            if j == total:
                j = 0
        result = tuple(found)
        self._succ[i] = result
        return result

    def owner(self, token: int) -> str:
        """The primary owner of ``token``. ``LookupError`` on an empty ring."""
        if not self._tokens:
            raise LookupError("empty ring has no owner")
        return self._owners[self._index(token)]

    def preference_list(self, token: int, n: int) -> list[str]:
        """The first ``n`` distinct nodes clockwise from ``token`` (all, if fewer)."""
        tokens = self._tokens
        if n <= 0 or not tokens:
            return []
        # The hot path, inlined: one bisect, one cache probe, one slice.
        i = bisect_left(tokens, token)
        if i == len(tokens):
            i = 0
        cached = self._succ[i]
        if cached is None or (len(cached) < n and len(cached) < len(self._nodes)):
            cached = self._successors_at(i, n)
        return list(cached[:n])

    def key_preference_list(self, key: bytes, n: int) -> list[str]:
        """``preference_list(key_token(key), n)``."""
        return self.preference_list(key_token(key), n)

    def successors(self, token: int) -> Iterator[str]:
        """Every node once, clockwise from ``token``'s owner, produced lazily.

        A sloppy quorum reads from this until it has enough live targets, so in the
        common case it never walks past the cached prefix.
        """
        if not self._tokens:
            return
        i = self._index(token)
        prefix = self._successors_at(i, _MIN_CACHE_DEPTH)
        yield from prefix
        if len(prefix) == len(self._nodes):
            return
        seen = set(prefix)
        owners = self._owners
        total = len(owners)
        for step in range(total):
            node = owners[(i + step) % total]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == len(self._nodes):
                    return

    def extended_list(self, token: int) -> list[str]:
        """All nodes in clockwise order from ``token``: the preference list, then fallbacks."""
        return list(self.successors(token))

    # -- ownership ----------------------------------------------------------------

    def _arc_lengths(self) -> list[int]:
        """``arcs[i]`` = number of tokens vnode ``i`` owns as primary (0 for a shadowed tie)."""
        if self._arcs is None:
            tokens = self._tokens
            if not tokens:
                self._arcs = []
            else:
                arcs = [tokens[i] - tokens[i - 1] for i in range(1, len(tokens))]
                # Vnode 0 owns the wrapping arc; if every vnode sits on one token, the
                # first of them owns the whole ring.
                arcs.insert(0, (tokens[0] - tokens[-1]) % TOKEN_SPACE or TOKEN_SPACE)
                self._arcs = arcs
        return self._arcs

    def ownership(self) -> dict[str, float]:
        """Each node's fraction of the token space as primary owner (sums to 1)."""
        owned = dict.fromkeys(self._nodes, 0)
        for node, arc in zip(self._owners, self._arc_lengths(), strict=True):
            owned[node] += arc
        return {node: amount / TOKEN_SPACE for node, amount in owned.items()}

    def replica_ownership(self, n: int) -> dict[str, float]:
        """Fraction of the token space for which each node is one of ``n`` replicas.

        Sums to ``min(n, len(self))``: every token has that many distinct replicas.
        """
        owned = dict.fromkeys(self._nodes, 0)
        if n > 0:
            for i, arc in enumerate(self._arc_lengths()):
                if arc:
                    for node in self._successors_at(i, n)[:n]:
                        owned[node] += arc
        return {node: amount / TOKEN_SPACE for node, amount in owned.items()}

    def ranges_of(self, node: str, n: int) -> list[TokenRange]:
        """The token ranges ``(start, end]`` for which ``node`` is one of ``n`` replicas.

        Adjacent ranges are merged, so the list is as short as it can be, in ring order
        from token 0, with the one range that wraps past ``2**64 - 1`` (if any) last. A node that
        replicates everything gets one whole-ring range ``(t, t]``; a non-member or
        ``n <= 0`` gets ``[]``.
        """
        if node not in self._members or n <= 0:
            return []
        tokens = self._tokens
        arcs = self._arc_lengths()
        mine: list[TokenRange] = []
        covered_all = True
        for i, arc in enumerate(arcs):
            if not arc:
                continue  # a shadowed tie owns nothing; it neither adds nor splits ranges
            if node not in self._successors_at(i, n)[:n]:
                covered_all = False
                continue
            start = tokens[i - 1] if i else tokens[-1]
            if mine and mine[-1].end == start:
                mine[-1] = TokenRange(mine[-1].start, tokens[i])
            else:
                mine.append(TokenRange(start, tokens[i]))
        if covered_all:
            return [TokenRange(tokens[-1], tokens[-1])]
        # Vnode 0's arc starts at the last token: join it to a range ending there, and
        # put the one range that wraps (if any) last.
        if len(mine) > 1 and mine[-1].end == mine[0].start:
            mine[0] = TokenRange(mine.pop().start, mine[0].end)
        if mine and mine[0].wraps:
            mine.append(mine.pop(0))
        return mine
