"""Checkers: what a scenario's history and the healed cluster must satisfy.

Job: judge one run after healing and a quiet period. Each checker returns plain
failure lines (`Failure`); an empty list means the guarantee held. The guarantees are
contract section 3:

- `lost_writes` (guarantee 4): every acknowledged cart add is in the union of the
  final value read with r=N; every acknowledged register write is returned, or was
  superseded: some write issued on the key (acknowledged or not: a 503'd write may
  still have landed, Dynamo semantics) sent a context covering its dot. TTL writes are
  exempt once they may have expired (allowing for clock skew).
- `superseded_stay_gone` (no deleted key comes back, and more generally no superseded
  version comes back): no final sibling's dot is covered by the context of an
  acknowledged write, nor of a write whose value is itself in the final read. A key
  whose acknowledged delete covered every write to it therefore stays deleted. Together
  with the per-read check in `sim.workload` this is the sibling bound: the siblings of a
  key are always an antichain of truly concurrent writes, so their number never exceeds
  the number of writers that did not see each other.
- `expired_stay_expired`: a TTL write that has certainly expired (its start plus its TTL
  plus twice the largest clock skew, plus a second) is never read as live.
- `diverged_keys` (guarantee 5): every replica in a key's preference list holds the same
  versions (`KeyStore.read_merged` compared with `Versions.same_as`, and the same value
  under each dot: see `same_versions`); all nodes agree on the ring.
- liveness (guarantee 3) is recorded by the workload as it runs (`History`).

Invariants: checkers never change the cluster and never draw from the rng, so running
them does not perturb the trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.requests import ClientResponse, NotFound, ReadOk
from ring.token import key_token
from sim.datatypes import show_key
from sim.workload import History, Write, cart_items
from sim.world import World
from storage.versions import Versions, compact, expire, is_dead

Failure = str


@dataclass
class FinalRead:
    key: bytes
    response: ClientResponse | None
    at: float  # world time of the answer


def lost_writes(history: History, finals: dict[bytes, FinalRead],
                max_skew: float) -> tuple[list[Failure], int]:
    """(failure lines, number of acknowledged writes lost)."""
    failures: list[Failure] = []
    lost = 0
    for key in sorted(finals):
        final = finals[key]
        resp = final.response
        writes = history.writes_to(key)
        if not isinstance(resp, ReadOk | NotFound):
            if writes:
                failures.append(f"final read of {key!r} with r=N failed: {resp!r}")
            continue
        siblings = resp.siblings if isinstance(resp, ReadOk) else ()
        if history.keys.get(key) == "cart":
            have = cart_items(siblings)
            acked = {w.element for w in writes if w.outcome == "ok"}
            missing = sorted(e for e in acked if e is not None and e not in have)
            attempted = {w.element for w in writes}
            phantom = sorted(have - attempted)
            if missing:
                lost += len(missing)
                failures.append(f"lost cart adds on {show_key(key)}: {len(missing)} of "
                                f"{len(acked)} acknowledged elements missing, e.g. "
                                f"{missing[:8]}")
            if phantom:
                failures.append(f"cart {show_key(key)} holds elements never added: "
                                f"{phantom[:8]}")
            continue
        values = {s.value for s in siblings}
        for w in writes:
            if w.outcome != "ok" or w.value is None or w.value in values:
                continue
            if w.ttl is not None and _may_have_expired(w, final.at, max_skew):
                continue
            if w.dot is not None and any(o is not w and o.context.covers(w.dot)
                                         for o in writes):
                continue
            lost += 1
            failures.append(f"lost write #{w.id} to {show_key(key)} (dot {w.dot}, "
                            f"acknowledged at t={w.end}): neither read back nor "
                            f"superseded by any write's context")
    return failures, lost


def _may_have_expired(w: Write, at: float, max_skew: float) -> bool:
    assert w.ttl is not None
    return (w.end or w.start) + w.ttl - 2 * max_skew - 1.0 <= at


def superseded_stay_gone(history: History, finals: dict[bytes, FinalRead]) -> list[Failure]:
    failures: list[Failure] = []
    for key in sorted(finals):
        resp = finals[key].response
        if not isinstance(resp, ReadOk):
            continue
        writes = history.writes_to(key)
        present = {history.write_of(key, s) for s in resp.siblings}
        for s in resp.siblings:
            for w in writes:
                if s.dot in w.dots or not w.context.covers(s.dot):
                    continue
                if w.outcome == "ok" or w in present:
                    what = "delete" if w.value is None else "write"
                    failures.append(
                        f"{show_key(key)}: version {s.dot} ({s.value[:40]!r}) came back "  # type: ignore[index]
                        f"after {what} #{w.id} ({w.outcome}) superseded it")
                    break
    return failures


def expired_stay_expired(history: History, finals: dict[bytes, FinalRead],
                         max_skew: float) -> list[Failure]:
    failures: list[Failure] = []
    for key in sorted(finals):
        resp = finals[key].response
        if not isinstance(resp, ReadOk):
            continue
        for s in resp.siblings:
            w = history.write_of(key, s)
            if w is None or w.ttl is None:
                continue
            if w.start + w.ttl + 2 * max_skew + 1.0 < finals[key].at:
                failures.append(f"{show_key(key)}: write #{w.id} with ttl={w.ttl}s read as "
                                f"live {finals[key].at - w.start:.1f}s after it was sent")
    return failures


def diverged_keys(world: World, keys: list[bytes],
                  max_skew: float = 0.0) -> tuple[list[bytes], list[Failure]]:
    """Keys whose replicas disagree, and failures for rings that disagree.

    States are compared as reads see them (`settled`): a sibling that any node's clock
    may already have expired in its tombstone form, and a record of tombstones alone
    like its compacted form (same context, nothing live). Both rewrites are made by
    each replica on its own clock and spread by anti-entropy; a check at an arbitrary
    instant may fall between two replicas' rewrites.
    """
    now_ms = int((world.now + max_skew) * 1000) + 1
    failures: list[Failure] = []
    nodes = world.running()
    if len(nodes) != len(world.hosts):
        failures.append(f"nodes not running at the end: "
                        f"{sorted(set(world.hosts) - set(nodes))}")
        return [], failures
    rings = {n: world.node(n).ring.token_map() for n in nodes}
    reference = rings[nodes[0]]
    for n in nodes[1:]:
        if rings[n] != reference:
            failures.append(f"ring of {n} differs from the ring of {nodes[0]}")
    for n in nodes:
        if not world.node(n).joined:
            failures.append(f"{n} has not (re)joined the cluster")
    if failures:
        return [], failures
    ring = world.node(nodes[0])
    diverged: list[bytes] = []
    for key in keys:
        token = key_token(key)
        states: list[Versions | None] = [settled(world.node(p).store.read_merged(token, key),
                                                 now_ms)
                                         for p in ring.preference_list(key)]
        first = states[0]
        if any(not same_versions(first, other) for other in states[1:]):
            diverged.append(key)
    return diverged, failures


def settled(v: Versions | None, now_ms: int) -> Versions | None:
    if v is None:
        return None
    v = expire(v, now_ms)
    return compact(v) if is_dead(v) else v


def same_versions(a: Versions | None, b: Versions | None) -> bool:
    """`Versions.same_as`, and the same value under every dot.

    `same_as` compares contexts and dots only, which is all a correct store needs: a
    dot names one write. Comparing the values too catches a dot that names two
    different writes on two replicas (a reused counter), which `same_as` would call
    converged and which no read repair would ever fix.
    """
    if a is None or b is None:
        return a is b
    return a.same_as(b) and _contents(a) == _contents(b)


def _contents(v: Versions) -> list[tuple[object, ...]]:
    return sorted((s.dot, s.value or b"", s.value is None, s.expires_at_ms or 0)
                  for s in v.siblings)


def hints_pending(world: World) -> dict[str, int]:
    return {n: world.node(n).store.hints_pending() for n in world.running()
            if world.node(n).store.hints_pending()}
