"""A whole cluster restored from hot backups of its nodes, on real processes.

Three `ringkv serve` processes on loopback (LMDB, group commit) take 10,000 writes; each
node is backed up while running (`ringkv backup`, i.e. ``GET /admin/backup``); the
cluster is stopped, every data dir wiped and restored from its node's backup (`ringkv
restore`), and the cluster started again with the same ids: every member is back in its
place in the ring, and every acknowledged key reads back with its value.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.procs import Cluster, key_path, run_cli

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
KEYS = 10_000
CONCURRENCY = 64


def value_of(i: int) -> bytes:
    return f"value-{i}-".encode() * 4


async def _each(cluster: Cluster, count: int,
                op: Callable[[aiohttp.ClientSession, str, int], Awaitable[bool]]
                ) -> list[int]:
    """Run `op(session, node_url, i)` for i in 0..count-1, spread over the nodes,
    CONCURRENCY at a time; the i for which it returned True.

    aiohttp's client rather than httpx's: measured here, httpx.AsyncClient with 64
    requests in flight spent most of a 2-CPU machine itself (~150 writes/s against
    ~900-1300/s for aiohttp on the same cluster).
    """
    urls = [n.url for n in cluster]
    gate = asyncio.Semaphore(CONCURRENCY)
    done: list[int] = []

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with gate:
            if await op(session, urls[i % len(urls)], i):
                done.append(i)

    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            timeout=aiohttp.ClientTimeout(total=15)) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))
    return sorted(done)


async def _put(session: aiohttp.ClientSession, url: str, i: int) -> bool:
    async with session.put(url + key_path(f"key-{i}"), data=value_of(i)) as resp:
        await resp.read()
        return resp.status == 204


async def _read_back(session: aiohttp.ClientSession, url: str, i: int) -> bool:
    async with session.get(url + key_path(f"key-{i}")) as resp:
        return resp.status == 200 and await resp.read() == value_of(i)


def _ring(cluster: Cluster) -> dict[str, tuple[int, float]]:
    """Each member's tokens and ring ownership, as n1 sees them."""
    return {m["node_id"]: (m["tokens"], m["ownership"])
            for m in cluster.nodes[0].cluster_view()["members"]}


def test_a_cluster_restored_from_hot_backups_has_every_acknowledged_key(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(size=3)
    began = time.monotonic()
    acked = asyncio.run(_each(cluster, KEYS, _put))
    took = time.monotonic() - began
    print(f"\nwrote {len(acked)} of {KEYS} keys in {took:.2f} s"
          f" ({len(acked) / took:.0f} writes/s, {CONCURRENCY} at a time over 3 nodes)")
    assert len(acked) == KEYS, f"only {len(acked)} writes were acknowledged"
    ring = _ring(cluster)

    backups = tmp_path / "backups"
    for node in cluster:
        began = time.monotonic()
        done = run_cli("backup", "--node", node.url, "--out", str(backups / node.node_id),
                       "--json", timeout=300)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        print(f"backed up {node.node_id}: {doc['bytes']} bytes in"
              f" {time.monotonic() - began:.2f} s")
        assert doc["node_id"] == node.node_id and doc["verified"] is True
        assert doc["cluster"] == {"n": 3, "r": 2, "w": 2}
        assert doc["addresses"]["http"] == node.url
        assert doc["addresses"]["rpc"] == node.rpc_addr

    cluster.stop_all()
    for node in cluster:
        node.wipe()
        assert not node.data_dir.exists()
        done = run_cli("restore", "--from", str(backups / node.node_id), "--data-dir",
                       str(node.data_dir), "--json", timeout=300)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["node_id"] == node.node_id and doc["members"] == 3
        assert doc["tokens"] == ring[node.node_id][0]

    cluster.start()  # the same ids, ports and data dirs: n1 first, then the others
    assert _ring(cluster) == ring, "a restored node lost its place in the ring"
    began = time.monotonic()
    found = asyncio.run(_each(cluster, KEYS, _read_back))
    print(f"read back {len(found)} of {len(acked)} acknowledged keys in"
          f" {time.monotonic() - began:.2f} s")
    missing = sorted(set(acked) - set(found))
    assert not missing, f"{len(missing)} acknowledged keys lost, e.g. {missing[:10]}"
