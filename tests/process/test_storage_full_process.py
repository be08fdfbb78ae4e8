"""A full database map is a 507, not a dead node (issue 13, item 12), on a real process.

With `--map-size 1048576` (1 MiB of LMDB map), PUTs fill the map; then writes get `507`
with JSON `{"error": ...}` naming the full storage, reads of what was stored keep
working, the node stays up (it used to SIGTERM itself and crash-loop on restart), and a
restart with the same data directory comes back with its data.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.procs import Cluster, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
VALUE = b"x" * (64 << 10)


def test_a_full_map_is_507_reads_work_and_the_node_survives_a_restart(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=1, extra_args=("--n", "1", "--r", "1", "--w", "1",
                                               "--map-size", str(1 << 20)))
    node = cluster.nodes[0]
    stored: list[str] = []
    full = None
    for i in range(200):
        resp = node.put(f"k{i}", VALUE)
        if resp.status_code == 204:
            stored.append(f"k{i}")
            continue
        # The batch that found the map full fails its writes (no ack: 503); every
        # write after it is refused at once.
        assert resp.status_code in (503, 507), resp.text
        if resp.status_code == 507:
            full = resp
            break
    assert full is not None, "the map never filled"
    assert stored, "nothing fit in the map"
    doc = full.json()
    assert "full" in doc["error"]
    assert node.alive
    for key in stored:
        got = node.get(key)
        assert got.status_code == 200 and got.content == VALUE
    assert node.request("GET", "/health").status_code == 200
    assert node.put("another", VALUE).status_code in (503, 507)
    assert node.alive

    node.stop()
    node.restart()
    wait_until(lambda: node.request("GET", "/health").status_code == 200, 30,
               "the node answers /health after a restart")
    for key in stored:
        got = node.get(key)
        assert got.status_code == 200 and got.content == VALUE
