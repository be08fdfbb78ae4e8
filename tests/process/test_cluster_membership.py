"""Multi-process membership tests: joins through one seed, failure detection in
numbers, a join that moves data with no read, a leave and a removal.

Real `ringkv serve` processes on loopback (`tests/support/procs.py`). Deadlines are generous
where the test asserts behaviour; the detection test asserts the contract's numbers
(down within 10 s, up again within 10 s, a 1 s pause never down) with the node's
default detector settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.procs import Cluster, NodeProc, run_cli, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
# The node's own defaults for failure detection (the fast test profile shortens them).
DEFAULT_DETECTION = ("--heartbeat-interval", "0.5", "--phi-convict-threshold", "8")


def write_keys(node: NodeProc, count: int, prefix: str) -> dict[str, bytes]:
    written = {}
    for i in range(count):
        key, value = f"{prefix}-{i}", f"value-{i}".encode()
        resp = node.put(key, value, params={"w": "all"})
        assert resp.status_code == 204, resp.text
        written[key] = value
    return written


def transfer_keys(node: NodeProc, direction: str) -> float:
    return node.metrics().get(f'ringkv_transfer_keys_total{{direction="{direction}"}}', 0.0)


def test_five_nodes_join_through_one_seed(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=5)  # n2..n5 name only n1 as their seed
    for node in cluster:
        view = node.cluster_view()
        assert {m["node_id"]: m["status"] for m in view["members"]} == dict.fromkeys(
            cluster.ids, "up")
        shares = [m["replica_share"] for m in view["members"]]
        assert sum(shares) == pytest.approx(3.0, abs=1e-3)  # N=3 replicas of every key
        assert all(0.5 < s < 0.7 for s in shares), shares  # about 3/5 each


def test_failure_detection_in_numbers(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=4, extra_args=DEFAULT_DETECTION)
    victim, watchers = cluster["n4"], cluster.others("n4")

    victim.kill()
    killed = time.monotonic()
    cluster.wait_status(victim, "down", observers=watchers, timeout=10.0)
    detected = time.monotonic() - killed
    assert detected < 10.0

    victim.restart(wait=False)
    restarted = time.monotonic()
    cluster.wait_status(victim, "up", observers=watchers, timeout=10.0)
    noticed = time.monotonic() - restarted
    assert noticed < 10.0
    print(f"\nkill detected everywhere in {detected:.2f} s; restart noticed in {noticed:.2f} s")

    # A 1 s stop-the-world pause (SIGSTOP, as a GC pause) is not a failure.
    cluster.wait_all_up()
    paused = cluster["n2"]
    seen: set[str] = set()
    paused.pause()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for w in cluster.others(paused):
            seen.add(w.statuses()[paused.node_id])
        time.sleep(0.05)
    paused.resume()
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # and not just after it either
        for w in cluster.others(paused):
            seen.add(w.statuses()[paused.node_id])
        time.sleep(0.1)
    assert seen == {"up"}, seen


def test_a_join_moves_data_without_any_read(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=4)
    written = write_keys(cluster["n1"], 300, "moved")
    # A long settle delay, so that the test sees the newcomer while it is joining.
    newcomer = cluster.add_node(start=True,
                                extra_args=[*cluster.extra_args, "--join-settle", "3"])
    wait_until(lambda: cluster["n1"].statuses().get(newcomer.node_id) == "joining", 15.0,
               "the newcomer to be joining")
    # Joining: it takes writes for its ranges, but is not healthy (ready) yet.
    health = newcomer.http.get("/health")
    assert (health.status_code, health.json()["status"]) == (503, "joining")
    newcomer.wait_healthy()
    cluster.settle()
    mine = [k for k in written if newcomer.node_id in cluster["n2"].lookup(k)]
    assert len(mine) > 100  # about 3/5 of the keys
    for key in mine:
        assert newcomer.local_values(key) == [written[key]], key
    assert transfer_keys(newcomer, "received") >= len(mine)
    assert sum(transfer_keys(n, "sent") for n in cluster.others(newcomer)) >= len(mine)
    assert newcomer.metrics().get("ringkv_read_repairs_total", 0.0) == 0.0


def test_a_leave_hands_everything_over(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=5)
    written = write_keys(cluster["n2"], 200, "kept")
    leaver = cluster["n3"]
    result = run_cli("cluster", "leave", "--node", leaver.url, "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has left" in result.stdout
    rest = cluster.others(leaver)
    wait_until(lambda: all(n.statuses()["n3"] == "left" for n in rest), 20.0,
               "n3 to be left everywhere")
    for key, value in written.items():
        assert "n3" not in rest[0].lookup(key)
        resp = rest[1].get(key, params={"r": "3"})
        assert (resp.status_code, resp.content) == (200, value), key
    # A left node can be stopped: nothing it held is needed any more.
    leaver.stop()
    for key, value in list(written.items())[:50]:
        resp = rest[2].get(key, params={"r": "3"})
        assert (resp.status_code, resp.content) == (200, value), key


def test_removing_a_dead_node_re_replicates_its_ranges(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=5)
    written = write_keys(cluster["n1"], 200, "saved")
    dead = cluster["n2"]
    dead.kill()
    rest = cluster.others(dead)
    cluster.wait_status(dead, "down", observers=rest)
    result = run_cli("cluster", "remove", "n2", "--node", rest[0].url)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: all(n.statuses()["n2"] == "left" for n in rest), 20.0,
               "n2 to be left everywhere")

    def replicated() -> bool:
        for key, value in written.items():
            for replica in rest[0].lookup(key):
                if cluster[replica].local_values(key) != [value]:
                    return False
        return True

    wait_until(replicated, 30.0, "every key on its three surviving replicas")
    refused = run_cli("cluster", "remove", "n4", "--node", rest[0].url)
    assert refused.returncode != 0 and "up" in (refused.stdout + refused.stderr)
