#!/usr/bin/env python3
"""Benchmark: what Merkle anti-entropy costs, in bytes and keys, and in foreground latency.

Two measurements:

``cost`` (in process, deterministic): three real `Node`s on the in-memory network of
`tests/support/memnet.py` (N=3, so every node replicates every key; 256 vnodes each, as the
default), each holding the same 100,000 keys. Then one node loses D keys (D = 0, 10,
10,000 by default) and the nodes run until every tree agrees. Reported: anti-entropy
messages, bytes, (key, hash) pairs listed, key versions sent, keys repaired, and the
simulated seconds it took. Cost must follow D, not the 100,000 keys stored.

``latency`` (processes): a 3-node `ringkv serve` cluster on loopback (LMDB, group
commit), preloaded with K keys, under a closed-loop load of C concurrent clients (50%
GET, 50% blind PUT, uniform keys) for S seconds, once with anti-entropy every second
(60 times the default rate) and once with it effectively off; p50/p99 and throughput.

    python scripts/bench_anti_entropy.py cost
    python scripts/bench_anti_entropy.py cost --keys 20000 --diffs 0,10,1000
    python scripts/bench_anti_entropy.py latency --keys 20000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ring.token import key_token  # noqa: E402
from storage.record import Record  # noqa: E402
from storage.versions import Context, update  # noqa: E402


def _trees_agree(net) -> bool:  # type: ignore[no-untyped-def]
    nodes = list(net.nodes.values())
    roots = [{r: t.root for r, t in n.anti_entropy.trees.items() if t.ready} for n in nodes]
    ranges = set(roots[0])
    if any(set(r) != ranges for r in roots[1:]) or not ranges:
        return False
    return all(r == roots[0] for r in roots[1:])


def cost(keys: int, diffs: list[int], seed: int) -> list[dict[str, float]]:
    from tests.support.memnet import MemNet

    out = []
    for d in diffs:
        net = MemNet(seed=seed)
        net.start(3, vnodes=256)
        actor = ("bench", 1, 1)
        names = [f"key-{i:06d}".encode() for i in range(keys)]
        for i, key in enumerate(names):
            versions, _ = update(None, Context(), actor, b"v" * 100, "text/plain",
                                 1_000_000 + i)
            for node in net.nodes.values():
                node.store.put_record(key_token(key), key, Record(versions))
        for node_id in net.nodes:
            net._commit(node_id)
        # Let every node build its trees from the store, then agree.
        while not _trees_agree(net):
            net.run_for(0.5)
        before = {n: asdict(net.nodes[n].anti_entropy.stats) for n in net.nodes}
        lost = random.Random(seed).sample(names, d)
        victim = net.nodes["n2"]
        for key in lost:
            victim.store.delete_record(key_token(key), key)
        net._commit("n2")
        start = net.now
        # At least one full interval, so the cost of agreeing replicas is counted too.
        net.run_for(1.0)
        while not _trees_agree(net):
            net.run_for(0.1)
        took = net.now - start
        assert all(victim.store.get_record(key_token(k), k) is not None for k in lost)
        total: dict[str, float] = {"keys": keys, "differing": d, "seconds": round(took, 2)}
        for name in ("messages_sent", "bytes_sent", "keys_listed", "keys_sent",
                     "keys_repaired", "exchanges"):
            total[name] = sum(asdict(net.nodes[n].anti_entropy.stats)[name] - before[n][name]
                              for n in net.nodes)
        out.append(total)
        print(json.dumps(total), flush=True)
    return out


async def _load(urls: list[str], keys: int, seconds: float, clients: int,
                seed: int) -> dict[str, float]:
    import httpx

    rng = random.Random(seed)
    lat: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=10.0) as http:
            while time.monotonic() < stop:
                key = f"key-{rng.randrange(keys):06d}"
                t0 = time.perf_counter()
                if rng.random() < 0.5:
                    resp = await http.get(f"/kv/{key}")
                else:
                    resp = await http.put(f"/kv/{key}", content=b"w" * 100)
                lat.append(time.perf_counter() - t0)
                if resp.status_code >= 500:
                    errors += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    lat.sort()
    return {"ops": len(lat), "ops_per_s": round(len(lat) / seconds, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2), "errors": errors}


def latency(keys: int, seconds: float, clients: int, seed: int) -> list[dict[str, object]]:
    from tests.support.procs import Cluster

    results = []
    for label, interval in (("off", "1000000"), ("every 1 s", "1"), ("off", "1000000"),
                            ("every 1 s", "1")):
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(Path(tmp), 3, ("--anti-entropy-interval", interval,
                                             "--log-level", "warning"), None)
            try:
                cluster.start()
                n1 = cluster.nodes[0]
                for i in range(keys):
                    n1.put(f"key-{i:06d}", b"v" * 100)
                time.sleep(3.0)  # trees built, first exchanges done
                urls = [n.url for n in cluster.nodes]
                res = asyncio.run(_load(urls, keys, seconds, clients, seed))
                ae = {k: sum(n.metrics().get(k, 0.0) for n in cluster.nodes)
                      for k in ("ringkv_anti_entropy_exchanges_total",
                                "ringkv_anti_entropy_bytes_total",
                                "ringkv_anti_entropy_keys_repaired_total")}
            finally:
                cluster.close()
        row = {"anti_entropy": label, **res, **ae}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--keys", type=int, default=100_000)
    c.add_argument("--diffs", default="0,10,10000")
    c.add_argument("--seed", type=int, default=1)
    la = sub.add_parser("latency")
    la.add_argument("--keys", type=int, default=20_000)
    la.add_argument("--seconds", type=float, default=20.0)
    la.add_argument("--clients", type=int, default=8)
    la.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.what == "cost":
        cost(args.keys, [int(x) for x in args.diffs.split(",")], args.seed)
    else:
        latency(args.keys, args.seconds, args.clients, args.seed)


if __name__ == "__main__":
    main()
