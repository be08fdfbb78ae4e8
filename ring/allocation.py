"""Choosing a joining node's vnode tokens, once, against the ring as it is.

Random tokens give each node a share with relative standard deviation
``1/sqrt(vnodes)`` (6% at 256), so some node of a 20-node cluster is routinely 15-20%
off its fair share. Like Cassandra's ``allocate_tokens_for_local_replication_factor``, a
node instead picks its tokens when it joins, looking at the ring it joins, then stores
them and gossips them in its member record. Tokens are never reassigned.

Invariants:

- Old nodes never change tokens, so a join moves keys only *to* the joiner (about
  ``1/(n+1)`` of them), never between two old nodes.
- Returned tokens are distinct from each other and from every token in ``existing``:
  each lands strictly inside a different existing arc.
- Deterministic: the result depends only on the arguments. Iteration is over sorted
  data; every tie-break and jitter is a hash of ``node_id``, never set order,
  ``PYTHONHASHSEED`` or a global RNG.

The greedy. An old node's *excess* is its primary share minus the new fair share
``1/(n+1)``; the excesses sum to the joiner's fair share. A token placed inside an arc
``(p, q]`` at ``p + a`` gives the joiner ``(p, p + a]``, where ``a`` is the joiner's
remaining need over its remaining tokens, capped by the owner's excess. Taking the
largest arc of the most overloaded owner each time balances primary shares to ~1% but
not *replica* shares (keys held as one of ``replicas`` copies): on small rings the order
in which nodes follow each other matters, and 4-5 node rings came out 9% off. So each
token is the best of a pool of candidates (the largest unsplit arcs of the most
overloaded owners) by the change it makes to the sum of squared relative deviations of
both shares. That change is local, because a token only alters the preference lists of
the arcs just before it, so it is cached per arc and recomputed only near new tokens.
Each arc is split at most once, so the joiner never gets two adjacent tokens (a wasted
vnode), unless it asks for more tokens than the ring has arcs.

Concurrent joins: two nodes allocating against the same (stale) ring should not pick
the same arcs, or one of each pair of tokens would own almost nothing. So an arc's rank
is its length scaled by a per-joiner factor in ``[1 - JITTER, 1]`` hashed from
``(node_id, arc)``, and each token is nudged by a hash of ``node_id`` far below its arc's
size so that equal choices still give distinct tokens. Two joiners against one 10-node
ring each end up with ~90% of a fair share: valid, less balanced. The membership layer
should still prefer one join at a time, as Cassandra does.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Mapping, Sequence

import mmh3

from ring.token import TOKEN_SPACE, check_token

__all__ = ["DEFAULT_REPLICAS", "JITTER", "MAX_COUNT", "allocate_tokens", "initial_tokens"]

# The replication factor whose replica shares are balanced by default (the cluster's
# default N). Other N still get balanced primary shares.
DEFAULT_REPLICAS = 3

MAX_COUNT = 1 << 16  # far above any sane vnode count

# How much a joiner's private view may shrink an arc when ranking it: small enough
# that only large arcs get split, large enough that two joiners rank them differently.
JITTER = 0.25
# Ranks are integers (fixed point) so arc order never depends on float rounding.
_JITTER_SCALE = 1 << 16
_JITTER_PRIME = 16381  # the largest prime <= _JITTER_SCALE * JITTER
# A token is nudged back by less than take / 2**_NUDGE_SHIFT (see _Allocator.insert).
_NUDGE_SHIFT = 16

# Candidates per token: the largest unsplit arcs of the _CANDIDATE_OWNERS most
# overloaded owners, at least _CANDIDATE_ARCS each and about _CANDIDATE_POOL in all.
# Small rings need the wide search (with 4-5 nodes, 4 x 4 candidates left replica
# shares 8-9% off; 512 keeps them within ~3%) and are cheap to search; on large rings
# the pool shrinks to 16, which still balances both shares to ~1%.
_CANDIDATE_OWNERS = 4
_CANDIDATE_ARCS = 4
_CANDIDATE_POOL = 512

# An unsplit arc in its owner's list: (-jittered length, end token, length).
_Arc = tuple[int, int, int]
# How placing a token in one arc changes replica shares; see _Allocator.effect.
_Effect = tuple[tuple[str, int, int], ...]

MAX_VNODES = 4096  # tokens per node: the configuration's ceiling, checked at every join


def _node_hash(node_id: str, salt: int) -> int:
    """A stable unsigned 64-bit hash of ``node_id`` (``salt`` picks independent streams)."""
    return int(mmh3.hash64(node_id.encode(), salt, True, False)[0])


def _check_count(count: int) -> None:
    if not 0 <= count <= MAX_COUNT:  # a huge count is a bug, not a slow success
        raise ValueError(f"token count must be in [0, {MAX_COUNT}], got {count}")


def initial_tokens(node_id: str, count: int) -> tuple[int, ...]:
    """Tokens for the first node of a cluster: ``count`` evenly spaced tokens, sorted.

    The offset is a hash of ``node_id``, so independent clusters do not share token
    positions; the spacing is ``TOKEN_SPACE // count`` (the wrapping arc is longer by
    fewer than ``count`` tokens).
    """
    _check_count(count)
    if count == 0:
        return ()
    step = TOKEN_SPACE // count
    offset = _node_hash(node_id, 0) % step
    return tuple(offset + i * step for i in range(count))


def allocate_tokens(
    existing: Mapping[str, Sequence[int]],
    node_id: str,
    count: int,
    *,
    replicas: int = DEFAULT_REPLICAS,
) -> tuple[int, ...]:
    """``count`` new sorted tokens for ``node_id`` joining the ring ``existing``.

    ``existing`` maps member ids to their tokens; an entry for ``node_id`` itself is
    ignored (the node allocates as if it were absent), as are members with no tokens.
    With no other members this is ``initial_tokens``. ``replicas`` is the cluster's N,
    whose replica shares are balanced.
    """
    _check_count(count)
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    try:
        entries = sorted({(t, n) for n, ts in existing.items() if n != node_id for t in ts})
    except TypeError as exc:  # a token that does not even compare with ints
        raise ValueError(f"tokens must be ints: {exc}") from exc
    # Validate in bulk (this runs over every vnode of the cluster): sorted, so only the
    # ends can be out of range; a non-int that sorted fine is caught by its type.
    if entries:
        check_token(entries[0][0])
        check_token(entries[-1][0])
        for t, _ in entries:
            if type(t) is not int:
                check_token(t)
    if not entries:
        return initial_tokens(node_id, count)
    if count == 0:
        return ()
    return _Allocator(entries, node_id, replicas).allocate(count)


class _Allocator:
    """Mutable working state of one ``allocate_tokens`` call (never escapes it)."""

    def __init__(self, entries: list[tuple[int, str]], node_id: str, replicas: int) -> None:
        self.me, self.rf = node_id, replicas
        # The ring as it grows: vnode i owns (tokens[i-1], tokens[i]]; on a shared
        # token the smaller node id comes first and owns the arc, as in Ring.
        self.tokens = tokens = [t for t, _ in entries]
        self.owners = owners = [n for _, n in entries]
        nodes = sorted(set(owners))
        self.old_count = len(nodes)
        total = len(nodes) + 1
        self.primary_goal = TOKEN_SPACE / total
        self.replica_goal = TOKEN_SPACE * min(replicas, total) / total
        self.primary = primary = dict.fromkeys([*nodes, node_id], 0)
        self.replica = replica = dict.fromkeys([*nodes, node_id], 0)
        # Unsplit arcs per owner, longest (jittered) first. An arc's length never changes
        # until we split it, so the order is fixed. An arc is named by its end token
        # because indices shift as tokens are inserted.
        self.arcs: dict[str, list[_Arc]] = {n: [] for n in nodes}
        salt = _node_hash(node_id, 1)
        starts = [tokens[-1], *tokens[:-1]]
        lengths = [(end - start) % TOKEN_SPACE for start, end in zip(starts, tokens, strict=True)]
        if tokens[0] == tokens[-1]:
            lengths[0] = TOKEN_SPACE  # one token, or all on one: the first owns everything
        arcs = self.arcs
        for owner, end, length in zip(owners, tokens, lengths, strict=True):
            primary[owner] += length
            if length >= 2:  # a token strictly inside the arc needs room
                # (end ^ salt) mod a prime: a cheap hash of (joiner, arc) as the jitter.
                weight = _JITTER_SCALE - (end ^ salt) % _JITTER_PRIME
                arcs[owner].append((-length * weight, end, length))
        for arc_list in arcs.values():
            arc_list.sort()
        if self.old_count >= replicas:  # else everyone holds everything: no replica term
            size = len(owners)
            for i, length in enumerate(lengths):  # a hot loop: walk() inlined
                if length:
                    found = [owners[i]]
                    replica[owners[i]] += length
                    j = i + 1
                    while len(found) < replicas:  # ends: there are >= replicas nodes
                        node = owners[j % size]
                        if node not in found:
                            found.append(node)
                            replica[node] += length
                        j += 1
        fair = TOKEN_SPACE // total
        self.excess = {n: primary[n] - fair for n in nodes}
        # Owner order on equal excess: a node_id-salted hash, so no joiner favours low ids.
        self.tiebreak = {n: _node_hash(n, salt & 0xFFFFFFFF) for n in nodes}
        self.nudge_seed = _node_hash(node_id, 2) & 0xFFFFFFFF
        self.effects: dict[int, _Effect] = {}  # arc end token -> effect(arc)

    def arc_length(self, i: int) -> int:
        tokens = self.tokens
        length = (tokens[i] - tokens[i - 1]) % TOKEN_SPACE
        if i == 0 and length == 0 and tokens[0] == tokens[-1]:
            return TOKEN_SPACE  # every vnode on one token: the first owns everything
        return length

    def walk(self, i: int, depth: int) -> list[str]:
        """Distinct owners from vnode ``i`` clockwise, up to ``depth`` *old* nodes; ours
        are listed but not counted, or early walks (few tokens of ours) would lap the ring.
        """
        owners, me, size = self.owners, self.me, len(self.owners)
        depth = min(depth, self.old_count)
        found: list[str] = []
        old = 0
        for step in range(size):
            node = owners[(i + step) % size]
            if node not in found:
                found.append(node)
                if node != me:
                    old += 1
                    if old == depth:
                        break
        return found

    def effect(self, i: int) -> _Effect:
        """How replica shares change if a token of ours goes into arc ``i``.

        ``(node, fixed, per_unit)`` triples: ``node``'s share changes by ``fixed +
        per_unit * take``. ``per_unit`` is for the piece of arc ``i`` we take (we enter
        its preference list, its last member leaves); ``fixed`` for the earlier arcs
        whose walk meets fewer than ``rf`` distinct nodes before vnode ``i`` and so now
        meets us. Nothing changes where we already were in the list. Cached per arc;
        ``insert`` drops the entries a new token can touch.
        """
        if self.old_count < self.rf:
            return ()  # every node holds every key, now and after we join
        end = self.tokens[i]
        cached = self.effects.get(end)
        if cached is not None:
            return cached
        rf, me, owners, size = self.rf, self.me, self.owners, len(self.owners)
        after = self.walk(i, 2 * rf)  # enough distinct nodes for any prefix below
        fixed: dict[str, int] = {}
        per_unit: dict[str, int] = {}

        def change(before: list[str], into: dict[str, int], length: int) -> None:
            rest = [n for n in after if n not in before]
            old = before + rest[: rf - len(before)]
            new = (before + [me] + [n for n in rest if n != me])[:rf]
            for n in new:
                if n not in old:
                    into[n] = into.get(n, 0) + length
            for n in old:
                if n not in new:
                    into[n] = into.get(n, 0) - length

        change([], per_unit, 1)
        prefix: list[str] = []  # distinct owners of vnodes k..i-1, in walk order
        for back in range(1, size):
            k = (i - back) % size
            node = owners[k]
            if node == me:
                break  # this arc and all before it that reach us already have us
            if node in prefix:
                prefix.remove(node)
            prefix.insert(0, node)
            if len(prefix) >= rf:
                break
            change(prefix, fixed, self.arc_length(k))
        nodes = sorted({*fixed, *per_unit})
        result = tuple((n, fixed.get(n, 0), per_unit.get(n, 0)) for n in nodes)
        self.effects[end] = result
        return result

    def insert(self, owner: str, i: int, take: int) -> int:
        """Place our token ``take`` into arc ``i`` and update every share; return it."""
        # Two joiners allocating against one ring may choose the same arc and take; a
        # per-joiner nudge, negligible next to the arc, keeps their tokens apart.
        nudge = mmh3.hash64(self.tokens[i].to_bytes(8, "big"), self.nudge_seed, True, False)[0]
        take -= nudge % ((take >> _NUDGE_SHIFT) or 1)
        for node, fixed, per_unit in self.effect(i):
            self.replica[node] += fixed + per_unit * take
        token = (self.tokens[i - 1] + take) % TOKEN_SPACE
        self.primary[owner] -= take
        self.primary[self.me] += take
        self.excess[owner] -= take
        # Insert before vnode i; at i == 0 the new token may wrap past the end.
        pos = i if token < self.tokens[i] else len(self.tokens)
        self.tokens.insert(pos, token)
        self.owners.insert(pos, self.me)
        self.forget_near(pos)
        return token

    def forget_near(self, pos: int) -> None:
        """Drop the cached effects that depend on the vnode just inserted at ``pos``.

        Arc ``k`` before it does if the forward walk from ``k`` (to ``2 * rf`` old
        nodes) gets that far; arc ``k`` after it does if fewer than ``rf`` distinct
        nodes lie between, so that its backward walk meets it (or the arc it split).
        """
        tokens, owners, me, size = self.tokens, self.owners, self.me, len(self.tokens)
        depth = min(2 * self.rf, self.old_count)
        seen: set[str] = set()
        for step in range(1, size):
            k = (pos - step) % size
            if owners[k] != me:
                seen.add(owners[k])
                if len(seen) >= depth:
                    break
            self.effects.pop(tokens[k], None)
        seen.clear()
        for step in range(1, size):
            k = (pos + step) % size
            self.effects.pop(tokens[k], None)
            if owners[k] == me:
                break  # backward walks from further on stop here
            seen.add(owners[k])
            if len(seen) >= self.rf:
                break

    def refill(self) -> bool:
        """Offer every old node's arc again, split or not; False if none has room. Needed
        only to place more tokens than the ring has arcs (then a vnode may be wasted)."""
        for arc_list in self.arcs.values():
            arc_list.clear()
        for i, owner in enumerate(self.owners):
            length = self.arc_length(i)
            if owner != self.me and length >= 2:
                self.arcs[owner].append((-length * _JITTER_SCALE, self.tokens[i], length))
        for arc_list in self.arcs.values():
            arc_list.sort()
        return any(self.arcs.values())

    def allocate(self, count: int) -> tuple[int, ...]:
        """Place ``count`` tokens, one at a time, each the best-scoring candidate.

        The score is the change in the sum of squared relative deviations of primary
        and replica shares. Our own goals are prorated by the tokens placed so far, so
        early tokens neither over- nor under-reach.
        """
        me, primary, replica, effects = self.me, self.primary, self.replica, self.effects
        pgoal, rgoal = self.primary_goal, self.replica_goal
        inv_p2, inv_r2 = 1 / pgoal**2, 1 / rgoal**2
        fair = TOKEN_SPACE // len(primary)
        per_owner = _CANDIDATE_ARCS
        if self.old_count >= self.rf:  # else only primary shares matter: any big arc will do
            per_owner = max(per_owner, _CANDIDATE_POOL // (self.old_count * _CANDIDATE_OWNERS))
        ranked: list[tuple[int, int, str]] = []
        chosen: list[int] = []
        started = False
        while len(chosen) < count:
            if not ranked:  # start, or every owner's unsplit arcs are used up
                if started and not self.refill():
                    raise ValueError(f"no room on the ring for {count} more tokens")
                started = True
                ranked = [(-self.excess[n], self.tiebreak[n], n) for n in sorted(self.excess)]
                heapq.heapify(ranked)
            need = (fair - primary[me]) // (count - len(chosen))
            fraction = (len(chosen) + 1) / count
            my_p, my_r = primary[me] - pgoal * fraction, replica[me] - rgoal * fraction
            my_p2, my_r2 = inv_p2 / fraction**2, inv_r2 / fraction**2
            popped: list[tuple[int, int, str]] = []
            best: tuple[float, str, int, int] | None = None
            while ranked and len(popped) < _CANDIDATE_OWNERS:
                entry = heapq.heappop(ranked)
                owner = entry[2]
                arc_list = self.arcs[owner]
                if not arc_list:
                    continue  # nothing left to split: drop the owner until a refill
                popped.append(entry)
                excess = self.excess[owner]
                amount = max(1, min(need, excess) if excess > 0 else need)
                owner_p = 2 * (primary[owner] - pgoal)
                for rank, arc in enumerate(arc_list[:per_owner]):
                    _, end, length = arc
                    take = amount if amount < length else length - 1
                    effect = effects.get(end)
                    if effect is None:
                        effect = self.effect(bisect_left(self.tokens, end))
                    mine, others = 0, 0.0
                    for node, fixed, per_unit in effect:
                        change = fixed + per_unit * take
                        if node == me:
                            mine = change
                        else:
                            others += change * (2 * (replica[node] - rgoal) + change)
                    value = (
                        take * (take - owner_p) * inv_p2
                        + others * inv_r2
                        + (my_p + take) ** 2 * my_p2
                        + (my_r + mine) ** 2 * my_r2
                    )
                    if best is None or value < best[0]:
                        best = (value, owner, rank, take)
            if best is not None:
                _, owner, rank, take = best
                end = self.arcs[owner].pop(rank)[1]
                chosen.append(self.insert(owner, bisect_left(self.tokens, end), take))
            for _, tiebreak, n in popped:
                heapq.heappush(ranked, (-self.excess[n], tiebreak, n))
        return tuple(sorted(chosen))
