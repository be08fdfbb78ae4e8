"""Checkers of the data types and newer operations (contract sections 5-7).

Job: judge, after healing and the quiet period, what the `sim.datatypes` kinds recorded
(`DataHistory`) against the final reads (r=N) and every replica's own state. Each
checker returns plain failure lines, prefixed with its name; an empty list means the
guarantee held.

- `counters` (section 5): the final value of each counter is the sum of its
  acknowledged increments plus some subset of the unacknowledged ones, each logical
  increment counted at most once however often it was retried under its idempotency
  key: acked <= final - (unacked decrements) and final <= acked + (unacked increments),
  and final - acked is exactly the sum of some subset of the unacknowledged amounts.
  An increment applied twice (a retry counted again) lands outside with high
  probability (amounts are 1-1000), and always when the unacknowledged ones are few.
  Every replica holds the same value, the one the final read returned.
- `sets` (section 5, the Jepsen set test with removes): with D(e) every dot ever seen
  holding element e (reads, the final read, every replica's final state) and O(r) the
  dots of e a remove's context observed:
  * add wins: an acknowledged add of e whose element is absent at the end must have
    been covered by a remove: some remove (acknowledged or not: a 503'd one may have
    landed) observed a dot the add could have made, one first seen no earlier than the
    add was sent. An add no remove could have observed must survive.
  * removed stays removed: an acknowledged remove that observed every dot e ever had
    (D(e) is within O(r): so nothing re-added e later, or the re-add never landed)
    leaves e absent;
  * no element nobody added; every replica holds the same elements.
  Soundness: a dot first appears when its add is applied, after the add was sent; a
  dot that landed is either still in some replica's final state or was removed by a
  remove whose context observed it, so D(e) holds every dot that ever existed.
- `conditional` (section 6): two conditional creates (`If-None-Match: *`) that both
  succeeded and did not see each other stay siblings: no read (during the run, or the
  final one) covers one of them without returning it, unless a write sent before that
  read had a context covering it (it was superseded, not silently replaced). Their
  writes are also `Write`s of the `History`: the value checkers judge them too.
- `listings` (section 7): every completed listing holds every key of the bucket whose
  write was acknowledged before the listing started (and that no delete sent before
  the listing ended may have removed), each exactly once, in listing order ((token,
  stored key)); no key nobody wrote before it ended, and no key certainly deleted
  before it started: a delete acknowledged by then covered every write to the key
  sent before the listing ended. A listing promises what a read does: it asks R up
  primaries and no hints, so in the simulation (`replica_viewer`) a key is due, or
  certainly deleted, only if N - R + 1 primaries held that state both when the page
  covering it was sent and when it was answered; an acknowledged write that only
  fallbacks held then (a sloppy quorum during a partition) is excused, and counted.

Invariants: checkers never change the cluster and never draw from the rng.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

from coordinator.requests import NotFound, ReadOk
from ring.token import key_token
from sim.checkers import FinalRead, settled
from sim.datatypes import (
    LIST_BUCKET,
    DataHistory,
    Increment,
    Viewer,
    element_dots,
    listing_position,
    show_key,
)
from sim.workload import History, Write
from sim.world import EPOCH, World
from storage.crdt import counter_value
from storage.namespace import KV, internal_key
from storage.versions import Context, Dot, Sibling

Failure = str
INF = float("inf")


def replica_siblings(world: World, key: bytes,
                     max_skew: float = 0.0) -> dict[str, tuple[Sibling, ...]] | None:
    """Each primary replica's settled siblings of `key`; None unless every node runs."""
    nodes = world.running()
    if len(nodes) != len(world.hosts):
        return None
    now_ms = int((world.now + max_skew) * 1000) + 1
    token = key_token(key)
    out: dict[str, tuple[Sibling, ...]] = {}
    for p in world.node(nodes[0]).preference_list(key):
        state = settled(world.node(p).store.read_merged(token, key), now_ms)
        out[p] = state.siblings if state is not None else ()
    return out


def _final_siblings(final: FinalRead | None) -> tuple[Sibling, ...] | None:
    if final is None or not isinstance(final.response, ReadOk | NotFound):
        return None
    return final.response.siblings if isinstance(final.response, ReadOk) else ()


# --- counters -------------------------------------------------------------------------


def subset_sum(amounts: list[int], target: int) -> bool:
    """Whether some subset of `amounts` (decrements included) sums to `target`.

    A bitset of the reachable sums of the magnitudes: a subset sums to s exactly when
    a subset of the magnitudes sums to s + (the sum of the decrements' magnitudes)
    (take the increments chosen and the decrements left out).
    """
    shifted = target + sum(-a for a in amounts if a < 0)
    if shifted < 0:
        return False
    reachable = 1
    for a in amounts:
        reachable |= reachable << abs(a)
    return bool(reachable >> shifted & 1)


def counter_bounds(incs: list[Increment]) -> tuple[int, int, int, list[int]]:
    """(sum acknowledged, low, high, unacknowledged amounts) of one counter's increments.

    A logical increment is one `Increment` however many attempts it took: every attempt
    of it carried the same idempotency key, so it counts at most once.
    """
    acked = sum(i.amount for i in incs if i.outcome == "ok")
    unacked = [i.amount for i in incs if i.outcome != "ok"]
    low = acked + sum(a for a in unacked if a < 0)
    high = acked + sum(a for a in unacked if a > 0)
    return acked, low, high, unacked


def counters(data: DataHistory, finals: dict[bytes, FinalRead], world: World | None,
             max_skew: float = 0.0) -> list[Failure]:
    failures: list[Failure] = []
    for key in data.counters:
        name = show_key(key)
        incs = [i for i in data.increments if i.key == key]
        siblings = _final_siblings(finals.get(key))
        if siblings is None:
            if incs:
                failures.append(f"counters: final read of {name} with r=N failed")
            continue
        value = counter_value(siblings)
        acked, low, high, unacked = counter_bounds(incs)
        retried = sum(1 for i in incs if len(i.nodes) > 1)
        what = (f"{len([i for i in incs if i.outcome == 'ok'])} acknowledged increments "
                f"summing to {acked}, {len(unacked)} unacknowledged, {retried} retried")
        if not low <= value <= high:
            failures.append(f"counters: {name} ends at {value}, outside [{low}, {high}] "
                            f"({what}): an increment {'lost' if value < low else 'counted twice'}")
        elif not subset_sum(unacked, value - acked):
            failures.append(f"counters: {name} ends at {value}: not the acknowledged sum "
                            f"plus any subset of the unacknowledged increments ({what}): "
                            f"one counted twice, or in part")
        if world is not None:
            replicas = replica_siblings(world, key, max_skew)
            if replicas is not None:
                values = {p: counter_value(s) for p, s in replicas.items()}
                if len(set(values.values())) > 1 or value not in values.values():
                    failures.append(f"counters: replicas of {name} disagree: {values} "
                                    f"(final read {value})")
    return failures


# --- sets --------------------------------------------------------------------------------


def sets(data: DataHistory, finals: dict[bytes, FinalRead], world: World | None,
         max_skew: float = 0.0) -> list[Failure]:
    failures: list[Failure] = []
    for key in data.sets:
        name = show_key(key)
        adds = [a for a in data.set_adds if a.key == key]
        removes = [r for r in data.set_removes if r.key == key]
        siblings = _final_siblings(finals.get(key))
        if siblings is None:
            if adds:
                failures.append(f"sets: final read of {name} with r=N failed")
            continue
        final = element_dots(siblings)
        # Every dot ever seen holding each element, with when it was first seen.
        seen: dict[bytes, dict[Dot, float]] = {}
        for (k, element), dots in data.set_seen.items():
            if k == key:
                seen[element] = dict(dots)
        end = finals[key].at
        states = [siblings]
        replicas = replica_siblings(world, key, max_skew) if world is not None else None
        if replicas is not None:
            states.extend(replicas.values())
            by_replica = {p: sorted(element_dots(s)) for p, s in replicas.items()}
            if any(v != sorted(final) for v in by_replica.values()):
                failures.append(f"sets: replicas of {name} disagree: "
                                f"{ {p: len(v) for p, v in by_replica.items()} } elements, "
                                f"final read {len(final)}")
        for state in states:
            for element, held in element_dots(state).items():
                for dot in held:
                    seen.setdefault(element, {}).setdefault(dot, end)
        observed: dict[bytes, set[Dot]] = {}
        for r in removes:
            observed.setdefault(r.element, set()).update(r.observed)
        added = {a.element for a in adds}
        phantom = sorted(set(final) - added)
        if phantom:
            failures.append(f"sets: {name} holds elements nobody added: {phantom[:8]}")
        for a in adds:
            if a.outcome != "ok" or a.element in final:
                continue
            # A dot the add made is seen strictly after it was sent (latencies are > 0).
            possible = {d for d, t in seen.get(a.element, {}).items() if t > a.start}
            if not possible:
                failures.append(f"sets: acknowledged add #{a.id} of {a.element!r} to {name} "
                                f"is absent, and no read ever returned a dot it could have "
                                f"made, so no remove observed it: lost")
            elif not possible & observed.get(a.element, set()):
                failures.append(f"sets: acknowledged add #{a.id} of {a.element!r} to {name} "
                                f"is absent, but no remove observed a dot it could have "
                                f"made ({len(possible)} candidates): add-wins broken")
        for r in removes:
            if r.outcome != "ok" or r.element not in final:
                continue
            every = set(seen.get(r.element, {}))
            if every <= r.observed:
                failures.append(f"sets: {r.element!r} is in {name} at the end, although "
                                f"acknowledged remove #{r.id} observed every dot it ever "
                                f"had ({len(every)}) and nothing added it again")
    return failures


# --- conditional writes --------------------------------------------------------------------


def racing_creates(history: History, data: DataHistory,
                   finals: dict[bytes, FinalRead]) -> tuple[list[Failure], int]:
    """(failure lines, pairs of acknowledged creates that raced: neither saw the other).

    Each read of the key (during the run, and the final one) is judged: a read whose
    context covers one of the two creates but which does not return its value must
    come after some write whose context covered it (a write sent before the read was
    answered: nothing else makes a version vanish). Otherwise the other create
    replaced it silently, as last-write-wins would.
    """
    failures: list[Failure] = []
    racing = 0
    by_key: dict[bytes, list[Write]] = {}
    for w in history.writes:
        if data.cond.get(w.id) == "create" and w.outcome == "ok" and w.dot is not None:
            by_key.setdefault(w.key, []).append(w)
    reads: dict[bytes, list[tuple[float, Context, frozenset[bytes]]]] = {}
    for key, at, context, values in data.cond_reads:
        reads.setdefault(key, []).append((at, context, values))
    for key, final in finals.items():
        if key in by_key and isinstance(final.response, ReadOk | NotFound) \
                and final.response.context is not None:
            siblings = _final_siblings(final) or ()
            reads.setdefault(key, []).append(
                (final.at, final.response.context,
                 frozenset(s.value for s in siblings if s.value is not None)))
    for key in sorted(by_key):
        writes = history.writes_to(key)
        for a, b in combinations(by_key[key], 2):
            assert a.dot is not None and b.dot is not None
            if a.context.covers(b.dot) or b.context.covers(a.dot):
                continue
            racing += 1
            for x, other in ((a, b), (b, a)):
                dot = x.dot
                assert dot is not None
                # When the first write that superseded x was sent (inf: none did).
                superseded = min((o.start for o in writes
                                  if o is not x and o.context.covers(dot)), default=INF)
                for at, context, values in reads.get(key, []):
                    if at <= superseded and context.covers(dot) and x.value not in values:
                        failures.append(
                            f"conditional: creates #{a.id} and #{b.id} of {show_key(key)} "
                            f"raced and both succeeded, but a read answered at "
                            f"t={at - EPOCH:.3f} covers #{x.id} without returning it, and "
                            f"no write had superseded it: #{other.id} silently replaced it")
                        break
    return failures, racing


# --- key listing -----------------------------------------------------------------------------


def replica_viewer(world: World) -> Viewer:
    """`DataTypes.viewer` for a simulated world: what the primaries of keys hold in the
    ring of `node`, read from their stores (data only: listing does not scan hints).
    Nothing changes and no rng is drawn, so the trace is the same with or without it."""

    def view(node: str, keys: list[bytes]
             ) -> tuple[int, dict[bytes, tuple[int, tuple[Context, ...]]]]:
        host = world.hosts.get(node)
        if host is None or host.node is None:
            return 0, {}
        coordinator = host.node
        out: dict[bytes, tuple[int, tuple[Context, ...]]] = {}
        for key in keys:
            token = key_token(key)
            live = 0
            contexts: list[Context] = []
            for p in coordinator.preference_list(key):
                peer = world.hosts[p].node
                record = None if peer is None else peer.store.get_record(token, key)
                if record is None:
                    continue
                contexts.append(record.versions.context)
                live += any(s.value is not None for s in record.versions.siblings)
            out[key] = (live, tuple(contexts))
        return coordinator.n - coordinator.r + 1, out

    return view


def listings(data: DataHistory, history: History) -> tuple[list[Failure], int]:
    """(failure lines, keys acknowledged before a listing that were excused from it:
    not held by a read quorum of primaries while the listing walked their range)."""
    failures: list[Failure] = []
    excused = 0
    first_write: dict[bytes, float] = {}
    writes: dict[bytes, list[Write]] = {}
    for w in history.writes:
        user = data.list_keys.get(w.key)
        if user is not None:
            writes.setdefault(user, []).append(w)
            if w.value is not None and user not in first_write:
                first_write[user] = w.start
    for listing in data.listings:
        if listing.outcome != "complete":
            continue
        what = f"listing #{listing.id} (limit {listing.limit}, {listing.pages} pages)"
        keys = listing.keys
        positions = [listing_position(internal_key(LIST_BUCKET, KV, k)) for k in keys]
        twice = sorted(k for k, n in Counter(keys).items() if n > 1)
        if twice:
            failures.append(f"listing: {what} lists keys more than once: {twice[:8]}")
        disorder = [keys[i] for i in range(1, len(keys)) if positions[i] <= positions[i - 1]]
        if disorder and not twice:
            failures.append(f"listing: {what} is out of order at {disorder[:4]}")
        end = listing.end if listing.end is not None else float("inf")
        # A key deleted (a delete sent) before the listing ended may be gone from it.
        deleted = {k for k, ws in writes.items()
                   if any(w.value is None and w.start < end for w in ws)}
        due = set()
        for k in listing.expected - deleted:
            view = listing.views.get(k)
            if view is None or view.held():
                due.add(k)
            else:
                excused += 1
        missing = sorted(due - set(keys))
        if missing:
            failures.append(f"listing: {what} misses {len(missing)} of the "
                            f"{len(listing.expected)} keys acknowledged before it started, "
                            f"e.g. {missing[:8]}")
        phantom = sorted(k for k in set(keys) if first_write.get(k, end) >= end)
        if phantom:
            failures.append(f"listing: {what} lists keys nobody wrote before it ended: "
                            f"{phantom[:8]}")
        dead = []
        for k in sorted(set(keys)):
            delete = _dead(writes[k], listing.start, end)
            view = listing.views.get(k)
            if delete is not None and delete.dot is not None and (
                    view is None or view.covered(delete.dot)):
                dead.append(k)
        if dead:
            failures.append(f"listing: {what} lists keys deleted before it started: "
                            f"{dead[:8]}")
    return failures, excused


def _dead(writes: list[Write], start: float, end: float) -> Write | None:
    """The delete that certainly deleted the key from `start` to `end`, if one did: a
    delete acknowledged before `start` whose context covered every dot of every write
    to the key sent before `end`. A write whose dots are unknown (never acknowledged nor
    read) may have landed concurrently with the delete: such a key is never dead."""
    values = [w for w in writes if w.value is not None and w.start < end]
    for d in writes:
        if (d.value is None and d.outcome == "ok" and d.end is not None and d.end < start
                and all(w.dots and all(d.context.covers(dot) for dot in w.dots)
                        for w in values)):
            return d
    return None
