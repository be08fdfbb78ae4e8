"""Multi-process fault tests: crashes, pauses, lost disks, quorum loss, hostile peers.

Each test starts a fresh cluster of real `ringkv serve` processes (`tests/support/procs.py`)
because it kills, pauses or wipes nodes. Waiting is always polling with a deadline;
the deadlines are generous because the tests assert behaviour, never speed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.procs import Cluster, NodeProc, free_ports, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]


def metric(node: NodeProc, name: str) -> float:
    return node.metrics().get(name, 0.0)


# ------------------------------------------------ guarantee 3: sloppy quorum, handoff


def test_sloppy_quorum_and_hinted_handoff(make_cluster: MakeCluster) -> None:
    """Two of a key's three primaries down (one crashed, one frozen): a write through a
    live node still gets W=2 acks from fallbacks, which hold hints and hand them to
    the primaries once they are back."""
    cluster = make_cluster(size=5)
    key, pref = cluster.key_with_preference(lambda p: True, prefix="hinted")
    crashed, frozen = cluster[pref[0]], cluster[pref[1]]
    live = cluster.others(crashed, frozen)
    crashed.kill()
    frozen.pause()
    for node in (crashed, frozen):
        cluster.wait_status(node, "down", observers=live)

    coordinator = next(n for n in live if n.node_id not in pref)  # not even a replica
    resp = coordinator.put(key, b"written while primaries were down",
                           content_type="text/plain")
    assert resp.status_code == 204, resp.text
    got = live[0].get(key)
    assert (got.status_code, got.content) == (200, b"written while primaries were down")

    hints = {n.node_id: metric(n, "ringkv_hints_pending") for n in live}
    assert sum(hints.values()) > 0, hints

    # Hints are durable: a fallback that crashes while holding one still has it.
    holder = next(n for n in live if hints[n.node_id] > 0)
    holder.kill()
    holder.restart()
    assert metric(holder, "ringkv_hints_pending") == hints[holder.node_id]
    for node in (crashed, frozen):
        cluster.wait_status(node, "down", observers=[holder])
    delivered_before = sum(metric(n, "ringkv_hints_delivered_total") for n in live)

    crashed.restart()
    frozen.resume()
    cluster.wait_all_up(timeout=30)

    def handed_off() -> bool:
        return all(metric(n, "ringkv_hints_pending") == 0 for n in live)

    wait_until(handed_off, 30, "every hint to be handed off")
    assert sum(metric(n, "ringkv_hints_delivered_total") for n in live) > delivered_before
    for primary in (crashed, frozen):
        assert primary.local_values(key) == [b"written while primaries were down"], \
            (primary.node_id, primary.local(key))
    assert cluster[pref[2]].local_values(key) == [b"written while primaries were down"]


# ------------------------------------------------ guarantee 5: read repair, lost disk


def test_a_replica_that_lost_its_disk_gets_every_key_back_without_reads(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)  # N=3: every node is a replica of every key
    n1, n2, n3 = cluster.nodes
    keys = {f"refill-{i}": f"value-{i}".encode() for i in range(20)}
    for key, value in keys.items():
        assert n1.put(key, value).status_code == 204
    wait_until(lambda: all(n3.local_values(k) == [v] for k, v in keys.items()), 10,
               "n3 to hold every key before it loses its disk")

    n3.stop()
    n3.wipe()
    n3.restart()
    # It rejoins holding nothing, as "joining": it takes writes but answers no reads
    # until it has fetched its ranges from the other replicas, then turns "up".
    cluster.settle()
    assert {n.node_id: n.lookup("refill-0") for n in cluster}["n3"] == n1.lookup("refill-0")
    assert all(n3.local_values(k) == [v] for k, v in keys.items())
    assert metric(n3, 'ringkv_transfer_keys_total{direction="received"}') >= len(keys)
    assert sum(metric(n, "ringkv_read_repairs_total") for n in cluster) == 0


# ------------------------------------------------------- guarantee 3: below quorum


def test_below_quorum_is_503_and_bad_quorums_are_400(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)
    n1, n2, n3 = cluster.nodes
    assert n1.put("quorum-key", b"before").status_code == 204

    for params in ({"w": "4"}, {"w": "0"}, {"w": "abc"}):
        resp = n1.put("quorum-key", b"x", params=params)
        assert resp.status_code == 400, (params, resp.text)
        assert "error" in resp.json()
    for params in ({"r": "0"}, {"r": "4"}):
        resp = n1.get("quorum-key", params=params)
        assert resp.status_code == 400, (params, resp.text)

    n2.pause()
    n3.pause()
    # Both while the others are still believed up (timeout) and once seen down.
    for phase in ("suspected", "down"):
        if phase == "down":
            cluster.wait_status(n2, "down", observers=[n1])
            cluster.wait_status(n3, "down", observers=[n1])
        resp = n1.put("quorum-key", b"under quorum", params={"w": "2"})
        assert resp.status_code == 503, (phase, resp.status_code, resp.text)
        doc = resp.json()
        assert doc["required"] == 2, doc
        assert isinstance(doc["acks"], int) and doc["acks"] < 2, doc
        assert doc["error"]
        resp = n1.get("quorum-key", params={"r": "2"})
        assert resp.status_code == 503, (phase, resp.status_code, resp.text)
        doc = resp.json()
        assert doc["required"] == 2 and doc["acks"] < 2, doc
        resp = n1.delete("quorum-key", params={"w": "2"})
        assert resp.status_code == 503, (phase, resp.status_code, resp.text)
        # One reachable replica is enough for w=1 / r=1.
        assert n1.put(f"quorum-one-{phase}", b"w1", params={"w": "1"}).status_code == 204
        got = n1.get(f"quorum-one-{phase}", params={"r": "1"})
        assert (got.status_code, got.content) == (200, b"w1")

    n2.resume()
    n3.resume()
    cluster.settle(timeout=30)
    for phase in ("suspected", "down"):
        got = n2.get(f"quorum-one-{phase}", params={"r": "3"})
        assert (got.status_code, got.content) == (200, b"w1")


# --------------------------------------------------- guarantee 4: durability, restarts


class Writers:
    """Threads PUTting distinct keys through every node; `acked` holds each key whose
    PUT was answered 204 (the only writes the store promises to keep)."""

    def __init__(self, nodes: list[NodeProc], per_node: int = 2) -> None:
        self.acked: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(node, i))
                        for i, node in enumerate(nodes * per_node)]

    def _run(self, node: NodeProc, wid: int) -> None:
        try:
            with httpx.Client(base_url=node.url, timeout=5) as http:
                i = 0
                while not self.stop_event.is_set():
                    key, value = f"w{wid}-{i}", f"value {wid} {i}".encode()
                    i += 1
                    try:
                        resp = http.put(f"/kv/{key}", content=value)
                    except httpx.HTTPError:
                        time.sleep(0.05)  # the node is gone: nothing was acknowledged
                        continue
                    if resp.status_code == 204:
                        with self.lock:
                            self.acked[key] = value
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.errors.append(exc)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def snapshot(self) -> dict[str, bytes]:
        assert not self.errors, self.errors
        assert not any(t.is_alive() for t in self.threads)
        with self.lock:
            return dict(self.acked)


def kill_all_at_once(cluster: Cluster) -> None:
    """SIGKILL every node, as close together as we can, then reap them."""
    for node in cluster:
        node._signal_group(signal.SIGKILL)
    for node in cluster:
        node.kill()


def restart_all(cluster: Cluster) -> None:
    """Start every node again and wait until the cluster has settled."""
    for node in cluster:
        node.start()
    for node in cluster:
        node.wait_healthy()
    cluster.settle()


def assert_all_readable(reader: NodeProc, acked: dict[str, bytes]) -> None:
    missing = {}
    for key, value in acked.items():
        got = reader.get(key)
        if got.status_code != 200 or got.content != value:
            missing[key] = (got.status_code, got.content[:80])
    assert not missing, (f"{len(missing)} of {len(acked)} acknowledged writes lost: "
                         f"{dict(list(missing.items())[:10])}")


def test_no_acknowledged_write_lost_when_every_node_is_killed(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)  # LMDB, --sync group (the defaults)
    with Writers(cluster.nodes) as writers:
        wait_until(lambda: writers.count() >= 150, 60, "150 acknowledged writes")
        kill_all_at_once(cluster)
    acked = writers.snapshot()

    restart_all(cluster)
    assert_all_readable(cluster["n2"], acked)


def test_no_acknowledged_write_lost_under_churn(make_cluster: MakeCluster) -> None:
    """Writers keep going while nodes are crashed, frozen and stopped one at a time
    (each write needs W=2 of 4 nodes: always available), then every node is killed at
    once. After restart and once hints are handed off, every acknowledged write reads
    back (guarantees 3 and 4)."""
    cluster = make_cluster(size=4)
    faults = [("kill", "n2"), ("pause", "n3"), ("stop", "n4"), ("kill", "n1")]
    with Writers(cluster.nodes, per_node=1) as writers:
        wait_until(lambda: writers.count() >= 50, 60, "50 acknowledged writes")
        for how, node_id in faults:
            victim = cluster[node_id]
            getattr(victim, how)()
            cluster.wait_status(victim, "down", timeout=15)
            target = writers.count() + 50  # writes keep being acknowledged meanwhile
            wait_until(lambda target=target: writers.count() >= target, 60,  # type: ignore[misc]
                       f"50 more acknowledged writes while {node_id} is down ({how})")
            if how == "pause":
                victim.resume()
            else:
                victim.restart()
            cluster.wait_all_up(timeout=30)
        kill_all_at_once(cluster)
    acked = writers.snapshot()

    restart_all(cluster)
    wait_until(lambda: all(metric(n, "ringkv_hints_pending") == 0 for n in cluster), 60,
               "every hint to be handed off")
    assert_all_readable(cluster["n3"], acked)


def test_clean_restart_keeps_data_and_place_in_ring(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=4)
    n1 = cluster["n1"]
    keys = {f"restart-{i}": f"v{i}".encode() for i in range(30)}
    for key, value in keys.items():
        assert n1.put(key, value).status_code == 204
    lists = {k: n1.lookup(k) for k in keys}
    ownership = {m["node_id"]: m["ownership"] for m in n1.cluster_view()["members"]}

    # One node stopped and restarted alone: the others see it down, then up. It gets
    # SIGTERM again and again (an impatient operator): a clean stop all the same.
    n3 = cluster["n3"]

    def hammered_until_exit() -> bool:
        n3._signal_group(signal.SIGTERM)
        return not n3.alive

    wait_until(hammered_until_exit, 15, "n3 to exit", interval=0.02)
    assert n3.stop() == 0, n3.tail()
    cluster.wait_status(n3, "down")
    n3.restart()
    cluster.settle()

    # The whole cluster stopped cleanly (SIGTERM to all at once) under load.
    with Writers(cluster.nodes, per_node=1) as writers:
        wait_until(lambda: writers.count() >= 100, 60, "100 acknowledged writes")
        cluster.stop_all()
    assert all(n.exit_code() == 0 for n in cluster), cluster.logs_report()
    acked = writers.snapshot()
    for node in cluster:
        node.start()
    for node in cluster:
        node.wait_healthy()
    cluster.settle()

    for node in cluster:
        assert {k: node.lookup(k) for k in keys} == lists, node.node_id
        view = {m["node_id"]: m["ownership"] for m in node.cluster_view()["members"]}
        assert view == ownership, node.node_id
    for key, value in keys.items():
        got = cluster["n4"].get(key, params={"r": "3"})
        assert (got.status_code, got.content) == (200, value), key
    assert_all_readable(cluster["n2"], acked)


# --------------------------------------------------------------- failure detection


def test_failure_detection(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)
    n1, n2, n3 = cluster.nodes

    n2.pause()
    cluster.wait_status(n2, "down", observers=[n1, n3], timeout=5)
    n2.resume()
    cluster.wait_status(n2, "up", observers=[n1, n3], timeout=5)

    n3.kill()
    cluster.wait_status(n3, "down", observers=[n1, n2], timeout=5)
    n3.restart()
    cluster.wait_all_up(timeout=15)
    assert n3.statuses() == {"n1": "up", "n2": "up", "n3": "up"}

    # Still a working cluster, once every node has reconnected to n3 (see the next test).
    cluster.wait_connected()
    assert n3.put("fd-key", b"after").status_code == 204
    got = n1.get("fd-key", params={"r": "3"})
    assert (got.status_code, got.content) == (200, b"after")


def test_restarted_node_coordinates_writes_at_once(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)
    n1, n2, n3 = cluster.nodes
    for trial in range(2):
        n3.kill()
        cluster.wait_status(n3, "down", observers=[n1, n2], timeout=10)
        n3.start()
        wait_until(n3.healthy, 30, "n3 to answer /health", interval=0.02)
        cluster.wait_all_up(timeout=15)  # every member up in every view
        # All three replicas up and reachable: W=3 must succeed (guarantee 3).
        resp = n3.put(f"first-after-restart-{trial}", b"v", params={"w": "3"})
        assert resp.status_code == 204, (trial, resp.status_code, resp.text)


def test_node_restarted_on_new_ports_is_reachable(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3)
    n1, _, n3 = cluster.nodes
    assert n3.stop() == 0
    n3.http_port, n3.rpc_port = free_ports(2)  # same id, same data dir, new address
    n3.start()
    n3.wait_healthy()

    def rpc_address_learned() -> bool:
        return all({m["node_id"]: m["rpc"] for m in n.cluster_view()["members"]}["n3"]
                   == n3.rpc_addr for n in cluster.others(n3))

    wait_until(rpc_address_learned, 10, "every peer to learn n3's new RPC address")
    cluster.settle(timeout=10)
    assert n3.put("moved", b"v").status_code == 204
    assert n1.get("moved", params={"r": "3"}).status_code == 200


# --------------------------------------------------- guarantee 6: unauthenticated peers


def test_cluster_secret_keeps_strangers_out(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=3, extra_args=("--cluster-secret", "s1"))
    n1, n2, n3 = cluster.nodes
    assert n1.put("secret-key", b"inside").status_code == 204
    got = n3.get("secret-key", params={"r": "3"})
    assert (got.status_code, got.content) == (200, b"inside")

    wrong = cluster.add_node(node_id="wrong", extra_args=("--cluster-secret", "s2"))
    none = cluster.add_node(node_id="nosecret", extra_args=())
    for stranger in (wrong, none):
        stranger.start()

    def serving() -> bool:  # both strangers run and answer HTTP (not joined: 503)
        return all(stranger.alive and stranger.http.get("/health").status_code == 503
                   for stranger in (wrong, none))

    wait_until(serving, 30, "the strangers to start")
    deadline = time.monotonic() + 3.0  # a few more join attempts (one a second)
    while time.monotonic() < deadline:
        for stranger in (wrong, none):
            assert stranger.alive, stranger.tail()
            assert stranger.http.get("/health").status_code == 503
        for member in (n1, n2, n3):
            assert set(member.statuses()) == {"n1", "n2", "n3"}
        time.sleep(0.2)

    for stranger in (wrong, none):
        resp = stranger.put("secret-key", b"from outside")
        assert resp.status_code == 503, resp.text
        assert stranger.get("secret-key").status_code == 503
        assert stranger.local("secret-key") is None
    for member in (n1, n2, n3):
        got = member.get("secret-key", params={"r": "3"})
        assert (got.status_code, got.content) == (200, b"inside")
        assert member.alive and member.healthy()
