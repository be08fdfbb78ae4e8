"""The simulation's checks of a run, on a real cluster read over HTTP.

Job: what `sim.scenario` does once the nemesis has healed the simulated cluster, done
to a running one instead (`scripts/compose-test`, `tests/sim/test_live.py`):

- `cluster_settled` / `wait_settled`: every node healthy, and every node's view
  (GET /cluster) lists the same members, all up, all with a share of the ring;
- `diverged_keys`: `sim.checkers.diverged_keys` over HTTP: each replica's own copy of a
  key (GET /debug/local/kv/{key}, no quorum), compared across the key's preference list
  (GET /ring/lookup) with `sim.checkers.same_versions`, and the hints still pending;
- `wait_converged`: polls `diverged_keys` until nothing diverges and no hint is left;
- `judge`: the end of a run, in `sim.scenario`'s order: convergence without reads, the
  final reads with r=N (`sim.live.world.final_reads`, a read-repair sweep too),
  convergence again, then the checkers of `sim.checkers` on the workload's history.

The debug reads go to an admin endpoint (contract section 4): a cluster with an admin
token needs it passed in (`admin_token`), and one without answers them only from its
own loopback, so a check run from another host must give the token.

Invariants: apart from the final reads, only GETs of state, so checking never changes
the cluster; a node that does not answer counts as "not settled" or "diverged", never
as an error. A debug read refused for want of credentials (401 / 403) is an error
(`RuntimeError`): no amount of waiting would cure it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sim import checkers
from sim.checkers import FinalRead, same_versions
from sim.live.world import HttpWorld, final_reads
from sim.workload import Workload
from storage.versions import Sibling, Versions, decode_context


def admin_headers(admin_token: str | None) -> dict[str, str]:
    """The headers an admin endpoint wants: the bearer token, when there is one."""
    return {"Authorization": f"Bearer {admin_token}"} if admin_token else {}


async def get_json(http: httpx.AsyncClient, url: str,
                   headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON document); status 0 and None when nothing answered."""
    try:
        resp = await http.get(url, timeout=5.0, headers=headers)
    except httpx.HTTPError:
        return 0, None
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, None


async def cluster_settled(http: httpx.AsyncClient, urls: Mapping[str, str]) -> tuple[bool, str]:
    """(settled, why not). `urls` maps every node id to its base URL."""
    views = {}
    expected = sorted(urls)
    for node, url in urls.items():
        status, doc = await get_json(http, url + "/health")
        if status != 200:
            return False, f"{node} not healthy ({status})"
        status, doc = await get_json(http, url + "/cluster")
        if status != 200 or not isinstance(doc, dict):
            return False, f"{node} /cluster answered {status}"
        members = sorted((m["node_id"], m["status"], m.get("tokens"))
                         for m in doc["members"])
        views[node] = members
        if [m[0] for m in members] != expected or any(m[1] != "up" for m in members):
            return False, f"{node} sees {[(m[0], m[1]) for m in members]}"
        if any(m.get("ownership", 1) == 0 for m in doc["members"]):
            return False, f"{node} sees members without a share of the ring"
    if len({json.dumps(v) for v in views.values()}) != 1:
        return False, "nodes disagree on the members"
    return True, "settled"


async def wait_settled(http: httpx.AsyncClient, urls: Mapping[str, str], timeout: float,
                       hopeless: Callable[[str], str | None] = lambda why: None) -> float:
    """Seconds until `cluster_settled`, polling every second; raises `RuntimeError`
    after `timeout`, or as soon as `hopeless(why not)` names a reason to give up."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    why = ""
    while loop.time() - started < timeout:
        ok, why = await cluster_settled(http, urls)
        if ok:
            return loop.time() - started
        reason = hopeless(why)
        if reason:
            raise RuntimeError(reason)
        await asyncio.sleep(1.0)
    raise RuntimeError(f"cluster did not settle in {timeout:.0f} s: {why}")


def local_versions(doc: Any) -> Versions | None:
    """A replica's own copy of a key, from its GET /debug/local/kv document."""
    if doc is None:
        return None
    siblings = tuple(
        Sibling(tuple(s["actor"]), s["counter"],
                None if s["value"] is None else base64.b64decode(s["value"]),
                s["content_type"], s["timestamp_ms"], s["expires_at_ms"])
        for s in doc["siblings"])
    return Versions(decode_context(doc["context"]), siblings)


async def diverged_keys(http: httpx.AsyncClient, urls: Mapping[str, str],
                        keys: list[bytes], admin_token: str | None = None,
                        ) -> tuple[list[bytes], int]:
    """(keys whose replicas disagree, hints still pending on all nodes)."""
    debug = admin_headers(admin_token)
    hints = 0
    for url in urls.values():
        _, doc = await get_json(http, url + "/cluster")
        hints += int((doc or {}).get("hints_pending", 0))
    first = next(iter(urls.values()))
    diverged = []
    for key in keys:
        path = quote(key, safe="")
        status, doc = await get_json(http, f"{first}/ring/lookup?key={path}")
        if status != 200:
            diverged.append(key)
            continue
        states = []
        for node in doc["preference_list"]:
            status, local = await get_json(http, f"{urls[node]}/debug/local/kv/{path}",
                                           debug)
            if status in (401, 403):  # a misconfigured check, not a divergence
                raise RuntimeError(f"{node} refused the debug read ({status}): "
                                   f"{(local or {}).get('error')}; pass its admin token")
            states.append(local_versions(local if status == 200 else None))
        if any(not same_versions(states[0], s) for s in states[1:]):
            diverged.append(key)
    return diverged, hints


async def wait_converged(http: httpx.AsyncClient, urls: Mapping[str, str],
                         keys: list[bytes], timeout: float, admin_token: str | None = None,
                         ) -> tuple[bool, list[bytes], int]:
    """(converged, keys still diverged, hints still pending) once converged or after
    `timeout` seconds, polling every second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        diverged, hints = await diverged_keys(http, urls, keys, admin_token)
        if not diverged and not hints:
            return True, [], 0
        if loop.time() > deadline:
            return False, diverged, hints
        await asyncio.sleep(1.0)


@dataclass
class Verdict:
    """How a run ended: `failures` empty means every guarantee held."""

    failures: list[str]
    lost: int  # acknowledged writes missing from the final reads
    finals: dict[bytes, FinalRead]
    converged_without_reads: bool
    diverged_before_sweep: int
    hints_before_sweep: int
    # From the call (the workload stopped) until the replicas agreed, with or without
    # the help of the final reads.
    converge_s: float


async def judge(world: HttpWorld, workload: Workload, r: int, converge_timeout: float,
                max_skew: float = 1.0, admin_token: str | None = None) -> Verdict:
    """Judge a run whose workload has stopped (`HttpWorld.drain` done); `admin_token`
    is the cluster's, for the debug reads of each replica's copy."""
    http, urls, history = world.http, world.hosts, workload.history
    keys = sorted(history.keys)
    loop = asyncio.get_running_loop()
    quiet = loop.time()
    ok1, diverged1, hints1 = await wait_converged(http, urls, keys, converge_timeout,
                                                  admin_token)
    converged = loop.time()
    finals = await final_reads(world, workload, r)
    ok2, diverged2, hints2 = await wait_converged(http, urls, keys, converge_timeout,
                                                  admin_token)
    if not ok1:
        converged = loop.time()

    lost_lines, lost = checkers.lost_writes(history, finals, max_skew)
    failures = list(world.errors)
    failures += history.violations
    failures += lost_lines
    failures += checkers.superseded_stay_gone(history, finals)
    if not ok2:
        failures.append(f"replicas still diverge after the repair sweep on "
                        f"{len(diverged2)} keys ({[k.decode() for k in diverged2]}), "
                        f"{hints2} hints pending")
    return Verdict(failures, lost, finals, ok1, len(diverged1), hints1, converged - quiet)
