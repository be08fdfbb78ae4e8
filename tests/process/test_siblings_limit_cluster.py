"""The siblings bound as a user sees it (contract section 4), on real processes.

With `--max-siblings 3`, three blind PUTs to one key succeed and a fourth gets `409`
with JSON `{"error", "siblings", "limit"}` and changes nothing, whether it reaches a
replica or a node that forwards it; a PUT with the context of a read always works.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.procs import Cluster

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]


def test_a_blind_write_past_max_siblings_is_409_and_a_covering_write_works(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_args=("--n", "2", "--max-siblings", "3"))
    n1 = cluster.nodes[0]
    key = "crowded"
    replicas = n1.lookup(key)
    primary = cluster[replicas[0]]
    (outsider,) = cluster.others(*replicas)
    for i in range(3):
        assert primary.put(key, f"v{i}").status_code == 204
    for node in (primary, outsider):  # coordinated here, or forwarded to the replica
        resp = node.put(key, "one too many")
        assert resp.status_code == 409, resp.text
        doc = resp.json()
        assert set(doc) == {"error", "siblings", "limit"}
        assert (doc["siblings"], doc["limit"]) == (4, 3)
    read = primary.get(key, headers={"Accept": "application/json"})
    assert read.status_code == 300, read.text
    values = sorted(s["value"] for s in read.json()["siblings"])
    assert len(values) == 3  # nothing of the refused writes was stored
    resp = outsider.put(key, "resolved", context=read.headers["X-Context"])
    assert resp.status_code == 204, resp.text
    after = primary.get(key)
    assert after.status_code == 200 and after.content == b"resolved"
