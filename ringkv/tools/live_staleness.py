"""Staleness trials against a running cluster: write, wait t ms, read from elsewhere.

Job: the live counterpart of `sim.staleness`. Each trial PUTs a fresh key (value
unique to the trial) to one node, and once the node answers 204 -- the write has
committed, W replicas acknowledged -- sleeps t ms and GETs the key from a different
node; the read is consistent when it returns the written value. A k-staleness trial
writes k times back to back (each with the previous write's context) and reads at once.
Afterwards every node is asked for the WARS leg delays it injected
(`GET /debug/latency`, `ringkv.core.latency`), so the predictor can be fed the delays
actually applied.

The writer is always a replica of the key (looked up when the cluster has more nodes
than N), so the write is coordinated where it lands, without a forwarding hop: the
"replica" topology of `pbs.model`.

The client's own delays: the read reaches its coordinator later than t ms after the
write committed -- the 204 travels back, the client's timer fires late, the GET travels
out. Each trial records its lateness: the timer's overshoot, measured, plus one client
round trip (the median of `GET /health` round trips, measured before the trials: half
for the 204, half for the GET). `offsets[t]` lists them, and `ringkv experiment`
evaluates the prediction at each trial's own t + offset (`pbs.model.visibility_at`).

Invariants: trials run `concurrency` at a time (each on its own key); a trial whose
write or read failed (non-2xx, timeout) is counted as failed, neither stale nor
consistent.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from pbs.distributions import LEGS, Distribution, Legs

TIMEOUT = 30.0  # seconds for one HTTP request


@dataclass
class LiveResult:
    consistent: dict[float, int] = field(default_factory=dict)
    done: dict[float, int] = field(default_factory=dict)
    k_consistent: dict[int, int] = field(default_factory=dict)
    k_done: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    n: int = 0
    nodes: list[str] = field(default_factory=list)
    injected: dict[str, list[float]] = field(default_factory=dict)  # leg -> samples (ms)
    errors: list[str] = field(default_factory=list)
    rtt_ms: float = 0.0  # median client round trip (GET /health)
    offsets: dict[float, list[float]] = field(default_factory=dict)  # t -> lateness (ms)

    def measured(self) -> dict[float, float]:
        return {t: self.consistent[t] / d for t, d in self.done.items() if d}

    def k_measured(self) -> dict[int, float]:
        return {k: self.k_consistent[k] / d for k, d in self.k_done.items() if d}

    def recorded_legs(self) -> Legs | None:
        """The injected delays as empirical distributions (None if a leg has none)."""
        if any(not self.injected.get(leg) for leg in LEGS):
            return None
        dists = [Distribution("emp", (), tuple(self.injected[leg]), f"recorded {leg}")
                 for leg in LEGS]
        return Legs(*dists)


def _url(base: str) -> str:
    base = base.strip().rstrip("/")
    return base if "://" in base else f"http://{base}"


class LiveRun:
    def __init__(self, nodes: list[str], r: int, w: int, concurrency: int,
                 rng: random.Random) -> None:
        self.given = [_url(u) for u in nodes]
        self.r, self.w = r, w
        self.concurrency = concurrency
        self.rng = rng
        self.result = LiveResult()
        self.urls: dict[str, str] = {}  # node id -> base url
        self.tag = os.urandom(4).hex()  # keys of this run never collide with another's

    async def _discover(self, client: httpx.AsyncClient) -> None:
        resp = await client.get(f"{self.given[0]}/cluster")
        resp.raise_for_status()
        doc = resp.json()
        self.result.n = int(doc["n"])
        members = {m["node_id"]: f"http://{m['http']}" for m in doc["members"]
                   if m.get("status") == "up"}
        if len(self.given) > 1:  # the nodes named, by id
            for url in self.given:
                health = (await client.get(f"{url}/health")).json()
                self.urls[health["node_id"]] = url
        else:
            self.urls = members
        if len(self.urls) < 2:
            raise RuntimeError("a live experiment needs at least two nodes (the read comes "
                               "from another coordinator than the write)")
        if not 1 <= self.r <= self.result.n or not 1 <= self.w <= self.result.n:
            raise RuntimeError(f"R={self.r}, W={self.w} out of range for N={self.result.n}")
        self.result.nodes = sorted(self.urls)
        loop = asyncio.get_running_loop()
        rtts = []
        for _ in range(10):
            for url in self.urls.values():
                began = loop.time()
                await client.get(f"{url}/health")
                rtts.append((loop.time() - began) * 1000.0)
        rtts.sort()
        self.result.rtt_ms = rtts[len(rtts) // 2]

    async def _writer_of(self, client: httpx.AsyncClient, key: str) -> str:
        ids = sorted(self.urls)
        if len(ids) <= self.result.n:
            return self.rng.choice(ids)  # every node holds a replica of every key
        resp = await client.get(f"{self.urls[ids[0]]}/ring/lookup", params={"key": key})
        replicas: list[str] = [n for n in resp.json()["preference_list"] if n in self.urls]
        return self.rng.choice(replicas or ids)

    async def _trial(self, client: httpx.AsyncClient, index: int, writes: int, t: float,
                     is_k: bool) -> None:
        key = f"pbs-{self.tag}-{index}"
        writer = await self._writer_of(client, key)
        reader = self.rng.choice([n for n in sorted(self.urls) if n != writer])
        path = "/kv/" + quote(key, safe="")
        context = ""
        values: set[bytes] = set()
        for i in range(1, writes + 1):
            value = f"{self.tag}-{index}-{i}".encode()
            values.add(value)
            headers = {"X-Context": context} if context else {}
            resp = await client.put(f"{self.urls[writer]}{path}", content=value,
                                    params={"w": str(self.w)}, headers=headers)
            if resp.status_code != 204:
                self._fail(f"PUT {writer}: {resp.status_code} {resp.text[:100]}")
                return
            context = resp.headers.get("X-Context", "")
        loop = asyncio.get_running_loop()
        committed = loop.time()
        if t > 0:
            await asyncio.sleep(t / 1000.0)
        late = (loop.time() - committed) * 1000.0 - t + self.result.rtt_ms
        resp = await client.get(f"{self.urls[reader]}{path}", params={"r": str(self.r)})
        if resp.status_code == 200:
            ok = resp.content in values
        elif resp.status_code == 300:
            ok = any(v in resp.content for v in values)
        elif resp.status_code == 404:
            ok = False
        else:
            self._fail(f"GET {reader}: {resp.status_code} {resp.text[:100]}")
            return
        res = self.result
        if is_k:
            res.k_done[writes] += 1
            res.k_consistent[writes] += ok
        else:
            res.done[t] += 1
            res.consistent[t] += ok
            res.offsets.setdefault(t, []).append(late)

    def _fail(self, why: str) -> None:
        self.result.failed += 1
        if len(self.result.errors) < 10:
            self.result.errors.append(why)

    async def _collect_injected(self, client: httpx.AsyncClient) -> None:
        for node_id in sorted(self.urls):
            resp = await client.get(f"{self.urls[node_id]}/debug/latency")
            if resp.status_code != 200:
                continue
            for leg, entry in resp.json()["legs"].items():
                self.result.injected.setdefault(leg, []).extend(entry.get("samples_ms", []))

    async def run(self, ts: tuple[float, ...], trials: int, ks: tuple[int, ...],
                  progress: Callable[[int], None] | None) -> LiveResult:
        res = self.result
        for t in ts:
            res.consistent[t] = res.done[t] = 0
        for k in ks:
            res.k_consistent[k] = res.k_done[k] = 0
        jobs = [(1, t, False) for t in ts for _ in range(trials)]
        jobs += [(k, 0.0, True) for k in ks for _ in range(trials)]
        self.rng.shuffle(jobs)
        limits = httpx.Limits(max_connections=4 * self.concurrency)
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
            await self._discover(client)
            queue: asyncio.Queue[tuple[int, tuple[int, float, bool]]] = asyncio.Queue()
            for item in enumerate(jobs):
                queue.put_nowait(item)

            async def worker() -> None:
                while not queue.empty():
                    index, (writes, t, is_k) = queue.get_nowait()
                    try:
                        await self._trial(client, index, writes, t, is_k)
                    except httpx.HTTPError as exc:
                        self._fail(f"{type(exc).__name__}: {exc}")
                    if progress is not None:
                        progress(1)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            await self._collect_injected(client)
        return res


def run_live(nodes: list[str], r: int, w: int, ts: tuple[float, ...], trials: int,
             ks: tuple[int, ...] = (), concurrency: int = 8, seed: int | None = None,
             progress: Callable[[int], None] | None = None) -> LiveResult:
    rng = random.Random(seed)
    return asyncio.run(LiveRun(nodes, r, w, concurrency, rng).run(ts, trials, ks, progress))


def describe(result: LiveResult) -> dict[str, Any]:
    offsets = sorted(x for xs in result.offsets.values() for x in xs)
    return {"nodes": result.nodes, "n": result.n, "failed": result.failed,
            "errors": result.errors, "client_rtt_ms": round(result.rtt_ms, 3),
            "read_lateness_ms_median": round(offsets[len(offsets) // 2], 3) if offsets
            else None,
            "injected_mean_ms": {leg: (sum(s) / len(s) if s else None)
                                 for leg, s in sorted(result.injected.items())}}
