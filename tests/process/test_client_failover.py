"""The Python client fails over: kill the node it is using, and it carries on.

A real three-node cluster on loopback. The client is given every node's URL; after it
has settled on one, that node is killed (SIGKILL: no goodbye), and every later
operation must still succeed through the others: reads, listing, counters (their
idempotency key makes the retried increment count once) and writes.
"""

from __future__ import annotations

import pytest

from ringkv.client import Client, RetryPolicy
from tests.support.procs import Cluster

pytestmark = pytest.mark.slow


def test_killing_the_node_the_client_uses_costs_no_operation(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = make_cluster(size=3)
    cluster.wait_all_up(timeout=30)
    urls = [node.url for node in cluster]
    with Client(urls=urls, timeout=5, retry=RetryPolicy()) as kv:
        for i in range(20):
            kv.put(f"k{i}", f"v{i}".encode())
        kv.incr("hits", 5)
        used = kv.node
        victim = next(node for node in cluster if node.url == used)
        victim.kill()

        # Every operation below goes first to the dead node, then elsewhere.
        for i in range(20):
            assert kv.get(f"k{i}").value == f"v{i}".encode()
        kv.incr("hits", 2)
        assert kv.counter("hits") == 7
        kv.put("after", b"the kill")
        assert kv.get("after").value == b"the kill"
        listed = set(kv.keys("default"))
        assert {f"k{i}" for i in range(20)} | {"after"} <= listed
        assert kv.node != used
