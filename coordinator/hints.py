"""Hinted handoff: writes kept for a replica that did not get them, and their delivery.

A node keeps a hint (in its store, keyed by target) when
- it is a fallback target that stands in for a down primary (`hint_for`),
- a primary is down and no fallback stands in for it (`hint_uncovered`),
- a pending owner of a range in transit is down when a write arrives,
- a target did not acknowledge a write it coordinated before its timer fired
  (`hint_unacked`).

`replay`, called every tick, hands hints to their targets that are up again: paced,
at most `hint_replay_batch` deliveries in flight per target. A delivery is a plain
ReplicaPut, acked like a write; its id is kept in this module's own in-flight table,
so the coordinator routes the ack here by its id. Hints for a target that is leaving
or has left are redirected to the key's replicas in the pending ring instead.

Invariants:
- A hint is deleted after its ack only if nothing new was hinted for the key while it
  was in flight (the stored state is still the one sent); otherwise it stays, and the
  newer state is delivered later.
- A delivery that is not acked within `HINT_TIMEOUT` is forgotten, and the hint, still
  stored, is sent again by a later tick.
"""

from __future__ import annotations

from coordinator.effects import Effect, Send
from coordinator.host import Host, Stats
from coordinator.messages import ReplicaPut
from coordinator.quorum import Target, WriteQuorum
from storage.keys import split_hint_key
from storage.versions import Versions

HINT_TIMEOUT = 5.0  # seconds before an unacknowledged hint delivery is retried


class HintDelivery:
    """One hint on its way to its target."""

    __slots__ = ("deadline", "hint_key", "sent", "target")

    def __init__(self, target: str, hint_key: bytes, sent: Versions, deadline: float) -> None:
        self.target = target
        self.hint_key = hint_key
        self.sent = sent
        self.deadline = deadline


class Hints:
    def __init__(self, host: Host, stats: Stats) -> None:
        self._host = host
        self._stats = stats
        self.in_flight: dict[int, HintDelivery] = {}

    def keep(self, token: int, key: bytes, owner: str, state: Versions) -> None:
        """Keep `state` as a hint for `owner`, to hand over when it is up."""
        self._host.store.merge_hint(token, key, owner, state, self._host.resolve)
        self._stats.hints_stored += 1

    def hint_uncovered(self, token: int, key: bytes, targets: list[Target],
                       state: Versions) -> None:
        """Keep a hint for every primary that no target stands in for.

        When a primary is down and no fallback is reachable, the write still succeeds
        with W acknowledgements; without this hint the primary would learn of it only
        from a read.
        """
        host = self._host
        if len(targets) >= host.n:
            return
        covered = {t.node for t in targets} | {t.hint_for for t in targets}
        for primary in host.ring.preference_list(token, host.n):
            if primary not in covered and primary != host.id:
                self.keep(token, key, primary, state)

    def hint_unacked(self, token: int, key: bytes, quorum: WriteQuorum,
                     state: Versions) -> None:
        """Keep a hint for every replica that did not acknowledge in time.

        As Cassandra does: a replica that is up but dropped or lost the write gets it
        by hinted handoff, so replicas converge without waiting for a read.
        """
        me = self._host.id
        for target in quorum.targets:
            if target.node in quorum.acked or target.node == me:
                continue
            owner = target.hint_for or target.node
            if owner == me:
                continue
            self.keep(token, key, owner, state)

    def replay(self, now: float) -> list[Effect]:
        """Hand hints to their targets that are back: paced, a bounded number in flight."""
        host, store = self._host, self._host.store
        in_flight: dict[str, set[bytes]] = {}
        for req_id, delivery in list(self.in_flight.items()):
            if now > delivery.deadline:
                del self.in_flight[req_id]
            else:
                in_flight.setdefault(delivery.target, set()).add(delivery.hint_key)
        effects: list[Effect] = []
        for target in store.hint_targets():
            if target == host.id:
                continue
            if host.is_departing(target):
                self._redirect(target, in_flight.get(target, set()))
                continue
            if not host.is_up(target, now):
                continue
            busy = in_flight.get(target, set())
            room = host.config.hint_replay_batch - len(busy)
            if room <= 0:
                continue
            for hkey in store.hints_for(target, room, busy):
                versions = store.get_hint(hkey)
                if versions is None:
                    continue
                _, key, _ = split_hint_key(hkey)
                req_id = host.new_id()
                self.in_flight[req_id] = HintDelivery(target, hkey, versions,
                                                      now + HINT_TIMEOUT)
                effects.append(Send(target, ReplicaPut(req_id, key, versions, None)))
        return effects

    def _redirect(self, target: str, busy: set[bytes]) -> None:
        """Turn hints for a node that is leaving or has left into hints for the key's
        replicas in the pending ring, which are its heirs.

        Handed to the departing node, a hint could land after its heirs fetched its
        ranges and be lost with it; and a node that has left never takes one again.
        Paced like replay: `hint_replay_batch` a tick.
        """
        host, store = self._host, self._host.store
        for hkey in store.hints_for(target, host.config.hint_replay_batch, busy):
            versions = store.get_hint(hkey)
            token, key, _ = split_hint_key(hkey)
            if versions is not None:
                for owner in host.pending.preference_list(token, host.n):
                    if owner == host.id:
                        store.merge_record(token, key, versions, host.resolve)
                    elif owner != target:
                        store.merge_hint(token, key, owner, versions, host.resolve)
            store.delete_hint(hkey)

    def acked(self, src: str, req_id: int) -> bool:
        """Take the ack of a delivery from its target; False if `req_id` names none in
        flight to `src` (an ack from anyone else must not drop a hint its target lacks)."""
        delivery = self.in_flight.get(req_id)
        if delivery is None or delivery.target != src:
            return False
        del self.in_flight[req_id]
        store = self._host.store
        current = store.get_hint(delivery.hint_key)
        # Drop the hint only if nothing new was hinted for the key while it was in flight.
        if current is not None and current.same_as(delivery.sent):
            store.delete_hint(delivery.hint_key)
            self._stats.hints_delivered += 1
        return True
