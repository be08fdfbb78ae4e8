"""Anti-entropy, deletes and TTL across real `ringkv serve` processes (slow).

No test here issues a client read of the keys it checks: every check is
GET /debug/local/kv/KEY on one node, which reads that node's own copy only, so read
repair cannot be what made replicas agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.procs import Cluster, NodeProc, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
AE_ARGS = ("--anti-entropy-interval", "1", "--tombstone-grace", "3")


def metric(node: NodeProc, name: str) -> float:
    return node.metrics().get(name, 0.0)


def test_a_wiped_node_gets_all_its_ranges_back_without_reads(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_args=AE_ARGS)  # N=3: every node holds every key
    n1, n2, n3 = cluster.nodes
    keys = {f"wiped-{i}": f"value-{i}".encode() for i in range(60)}
    for key, value in keys.items():
        assert n1.put(key, value, content_type="text/plain").status_code == 204
    wait_until(lambda: all(n3.local_values(k) == [v] for k, v in keys.items()), 20,
               "n3 to hold every key before it loses its disk")

    n3.stop()
    n3.wipe()
    n3.restart()
    cluster.settle()
    wait_until(lambda: all(n3.local_values(k) == [v] for k, v in keys.items()), 60,
               "n3 to get every key back with no client read")
    exchanges = sum(metric(n, "ringkv_anti_entropy_exchanges_total") for n in cluster)
    assert exchanges > 0
    assert all(metric(n, "ringkv_read_repairs_total") == 0 for n in cluster)


def test_a_replica_that_missed_a_delete_agrees_the_key_is_gone(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_args=AE_ARGS)
    n1, n2, n3 = cluster.nodes
    resp = n1.put("doomed", b"alive", content_type="text/plain")
    assert resp.status_code == 204
    context = resp.headers["X-Context"]
    wait_until(lambda: n3.local_values("doomed") == [b"alive"], 20, "n3 to hold the key")

    n3.stop()
    cluster.wait_status(n3, "down", observers=[n1, n2])
    assert n1.delete("doomed", context=context).status_code == 204
    n3.restart()
    cluster.settle()

    def gone_everywhere() -> bool:
        for node in cluster:
            doc = node.local("doomed")
            # Either the tombstone, or (after the grace) only the causal context.
            if doc is None or any(s["live"] for s in doc["siblings"]) or not doc["context"]:
                return False
        return True

    wait_until(gone_everywhere, 60, "every replica to hold the delete")
    assert all(metric(n, "ringkv_read_repairs_total") == 0 for n in cluster)

    # Past the grace, with every replica confirmed, the tombstone is compacted away and
    # the key still reads as gone everywhere: nothing brought the value back.
    # A replica compacts on its own once it has seen every other replica's range root
    # equal to its own; the others may instead receive the compacted form by merge.
    def compacted_everywhere() -> bool:
        docs = [node.local("doomed") for node in cluster]
        return all(d is not None and d["siblings"] == [] and d["context"] for d in docs)

    wait_until(compacted_everywhere, 60, "the tombstones to be compacted")
    assert sum(metric(n, "ringkv_tombstones_compacted_total") for n in cluster) >= 1
    assert n2.get("doomed").status_code == 404


def test_a_key_with_ttl_2_is_gone_everywhere_after_3_seconds(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_args=AE_ARGS)
    n1, _, _ = cluster.nodes
    start = time.monotonic()
    resp = n1.put("fleeting", b"soon gone", content_type="text/plain", params={"ttl": "2"})
    assert resp.status_code == 204
    wait_until(lambda: all(n.local_values("fleeting") == [b"soon gone"] for n in cluster),
               1.5, "every replica to hold the key while it lives")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))
    for node in cluster:
        assert node.local_values("fleeting") == [], node.node_id

    def tombstone_everywhere() -> bool:
        docs = [node.local("fleeting") for node in cluster]
        return all(d is not None and all(s["value"] is None for s in d["siblings"])
                   for d in docs)

    # Each replica rewrote the expired version into the same tombstone on its own.
    wait_until(tombstone_everywhere, 10, "the expired version to become a tombstone")
    assert sum(metric(n, "ringkv_expired_versions_total") for n in cluster) >= 1
