"""Mutual TLS between real node processes, HTTPS for clients, and rotation on SIGHUP.

Real `ringkv serve` processes on loopback (`tests/support/procs.py`), certificates made
in the test's directory with `ringkv.tools.certs`. Each node is started with files of
its own (`<base>/live/<node>/{ca.crt,node.crt,node.key}`), so a rotation is what an
operator does: new files copied over those, then SIGHUP.

What must hold:
- nodes holding certificates of the cluster CA form a cluster and serve clients over
  HTTPS (the client checks the node's certificate against the CA);
- a node that cannot prove the id it claims (a valid certificate for `n9` started as
  `n2`), a plaintext node, a node whose certificate comes from another CA, and one whose
  certificate has expired never join: the outsider's writes never reach the cluster and
  no view lists it. The side that refuses logs one line naming the peer and the reason:
  the seed for the impostor and the expired certificate, the outsider itself for a
  cluster certificate it cannot trust;
- rotating every node to a new CA under load, by copying the files and sending SIGHUP,
  fails no client request (the client trusts both CAs for the switch), and from then
  on a node still on the old CA is refused;
- a reload whose files do not match keeps serving with the old ones; mutual HTTPS
  takes client certificates of the cluster CA only.

A peer that abandons the TLS handshake (a plaintext dialer, one that does not trust
the seed's certificate) is logged by the seed too, and a rotated CA replaces the old one
in the trust of mutual HTTPS as it does between nodes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ringkv.tools.certs import init_ca, issue
from tests.support.procs import (
    HOST,
    HTTP_TIMEOUT,
    Cluster,
    NodeProc,
    free_ports,
    key_path,
    wait_until,
)

pytestmark = pytest.mark.slow

REFUSAL_WAIT = 25.0  # seconds for a refusal line: handshake timeout 5 s, log limit 5 s
OUTSIDER_WATCH = 4.0  # seconds an outsider keeps trying after its refusal was logged
RELOADED = "reloaded its certificates and tokens"
RELOAD_FAILED = "reload failed, keeping the certificates and tokens in use"


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    """The CAs of these tests: the cluster's, a second one for rotation, a stranger's."""

    root: Path
    ca: Path  # the cluster CA (ca.crt, ca.key and the certificates it issued)
    new_ca: Path  # the CA the rotation test moves to
    other: Path  # a CA the cluster never trusts


def make_pki(root: Path) -> Pki:
    pki = Pki(root, root / "ca", root / "new-ca", root / "other-ca")
    for where in (pki.ca, pki.new_ca, pki.other):
        init_ca(where)
    return pki


def issue_once(ca_dir: Path, name: str, *, client: bool = False, days: int = 30,
               not_before: datetime.datetime | None = None) -> tuple[Path, Path]:
    """NAME.crt and NAME.key from the CA in `ca_dir`, issued into a directory of their
    own (`issue` never overwrites, and one CA may issue several certificates for NAME)."""
    out = ca_dir / "issued" / f"{name}-{time.monotonic_ns()}"
    return issue(ca_dir, name, client=client, days=days, out=out, not_before=not_before)


def install(live: Path, ca_dir: Path, cert: Path, key: Path) -> None:
    """Copy a CA, a certificate and its key over (or into) the files a node reads."""
    live.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_dir / "ca.crt", live / "ca.crt")
    shutil.copyfile(cert, live / "node.crt")
    shutil.copyfile(key, live / "node.key")


def tls_args(live: Path, http_tls: str = "on") -> list[str]:
    return ["--tls-ca", str(live / "ca.crt"), "--tls-cert", str(live / "node.crt"),
            "--tls-key", str(live / "node.key"), "--http-tls", http_tls]


def trusting(*ca_dirs: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client context that trusts these CAs only (and presents `client`, if given)."""
    ctx = ssl.create_default_context(cafile=str(ca_dirs[0] / "ca.crt"))
    for ca_dir in ca_dirs[1:]:
        ctx.load_verify_locations(cafile=str(ca_dir / "ca.crt"))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


# ------------------------------------------------------------------------------- nodes


def tls_cluster(base: Path, pki: Pki, size: int, http_tls: str = "on",
                extra: Sequence[str] = (), client: tuple[Path, Path] | None = None) -> Cluster:
    """`size` HTTPS nodes n1.. with certificates of the cluster CA (not started)."""
    cluster = Cluster(base, size=0)
    verify = trusting(pki.ca, pki.new_ca, client=client)  # both: rotation keeps working
    ports = free_ports(2 * size)  # all at once: distinct
    for i in range(1, size + 1):
        node_id = f"n{i}"
        live = base / "live" / node_id
        install(live, pki.ca, *issue_once(pki.ca, node_id))
        seeds = [cluster.nodes[0].rpc_addr] if cluster.nodes else []
        node = NodeProc(node_id, ports[2 * i - 2], ports[2 * i - 1], base, seeds,
                        [*tls_args(live, http_tls), *extra])
        node.verify = verify  # HTTPS, the certificate checked
        cluster.nodes.append(node)
    return cluster


def sighup(node: NodeProc) -> None:
    os.kill(node.pid, signal.SIGHUP)


def log_after(node: NodeProc, offset: int) -> str:
    return node.log_text()[offset:]


def wait_log(node: NodeProc, offset: int, pattern: str, timeout: float = REFUSAL_WAIT) -> str:
    """The first line of `node`'s log past `offset` that matches `pattern`."""
    regex = re.compile(pattern)

    def found() -> str | None:
        for line in log_after(node, offset).splitlines():
            if regex.search(line):
                return line
        return None

    try:
        line = wait_until(found, timeout, f"a line matching {pattern!r} in {node.node_id}'s log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.tail()}") from None
    assert line is not None
    return line


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Cluster]:
    c = tls_cluster(tmp_path_factory.mktemp("tls-cluster"), pki, 3)
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    for node in cluster:
        assert node.alive, f"{node.node_id} died:\n{node.tail()}"
    cluster.wait_all_up(timeout=15)
    return cluster


@pytest.fixture
def outsiders(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes that try to join the shared cluster and must not: killed after the test."""
    c = Cluster(tmp_path / "outsiders", size=0)
    try:
        yield c
    finally:
        c.close()


# --------------------------------------------------------------------------- forming


def test_a_tls_cluster_forms_and_serves_clients_over_https(healthy: Cluster,
                                                           pki: Pki) -> None:
    n1, n2, n3 = healthy.nodes
    for node in healthy:
        members = {m["node_id"]: m["status"] for m in node.cluster_view()["members"]}
        assert members == {"n1": "up", "n2": "up", "n3": "up"}, (node.node_id, members)
    for i, (writer, reader) in enumerate([(n1, n2), (n2, n3), (n3, n1)]):
        key, value = f"https-{i}", f"over TLS {i}".encode()
        put = writer.put(key, value, content_type="text/plain")
        assert put.status_code == 204, put.text
        for node in healthy:  # r=3: every replica answered over internode TLS
            got = node.get(key, params={"r": "3"})
            assert (got.status_code, got.content) == (200, value), (node.node_id, got.text)
        assert reader.get(key).headers["Content-Type"] == "text/plain"

    # The client port speaks HTTPS only, with the node's certificate of the cluster CA.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{HOST}:{n1.http_port}/health", timeout=3)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
        httpx.get(f"{n1.url}/health", verify=trusting(pki.other), timeout=3)
    assert httpx.get(f"{n1.url}/health", verify=trusting(pki.ca), timeout=3).status_code == 200


# -------------------------------------------------------------------------- outsiders


def start_outsider(outsiders: Cluster, cluster: Cluster, node_id: str,
                   args: Sequence[str]) -> NodeProc:
    http_port, rpc_port = free_ports(2)
    node = NodeProc(node_id, http_port, rpc_port, outsiders.base_dir,
                    [cluster["n1"].rpc_addr], args)
    outsiders.nodes.append(node)
    node.start()
    return node


def assert_never_joined(cluster: Cluster, outsider: NodeProc, pattern: str | None,
                        offset: int) -> str:
    """The seed logs a refusal matching `pattern` (if given) past `offset` of its log;
    the outsider's writes never arrive and no member lists it. The refusal line is
    returned."""
    line = "" if pattern is None else wait_log(cluster["n1"], offset, pattern)
    # The outsider keeps trying meanwhile: a write through it must reach nobody.
    key = f"from-{outsider.node_id}-{outsider.rpc_port}"
    with contextlib.suppress(httpx.HTTPError):  # not serving at all is as good
        outsider.put(key, b"must not arrive", params={"timeout": "500"})
    time.sleep(OUTSIDER_WATCH)
    assert outsider.alive, outsider.tail()  # refused, not crashed
    for node in cluster:
        view = node.cluster_view()["members"]
        ids = {m["node_id"] for m in view}
        assert ids == {"n1", "n2", "n3"}, (node.node_id, view)
        assert all(m["status"] == "up" for m in view), (node.node_id, view)
        # Every member is where it was (an impostor of one changed nothing of it).
        rpc = {m["node_id"]: m["rpc"] for m in view}
        assert rpc == {n.node_id: n.rpc_addr for n in cluster}, (node.node_id, view)
        assert node.local(key) is None, (node.node_id, key)
        assert node.get(key, params={"r": "3"}).status_code == 404
    return line


def test_a_certificate_for_n9_cannot_join_as_n2(healthy: Cluster, pki: Pki,
                                                outsiders: Cluster, tmp_path: Path) -> None:
    live = tmp_path / "impostor"
    install(live, pki.ca, *issue_once(pki.ca, "n9"))
    n1 = healthy["n1"]
    offset = len(n1.log_text())
    impostor = start_outsider(outsiders, healthy, "n2", tls_args(live, "off"))
    line = assert_never_joined(
        healthy, impostor,
        r"peer claims to be 'n2' but its certificate names 'n9' from 127\.0\.0\.1:\d+",
        offset)
    assert "WARNING" in line, line
    # The real n2 is untouched: still serving, its writes reaching every replica.
    assert healthy["n2"].put("after-impostor", b"ok", params={"w": "3"}).status_code == 204


def test_a_node_with_an_expired_certificate_cannot_join(
        healthy: Cluster, pki: Pki, outsiders: Cluster, tmp_path: Path) -> None:
    live = tmp_path / "outsider"
    month_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    install(live, pki.ca, *issue_once(pki.ca, "n4", days=1, not_before=month_ago))
    n1 = healthy["n1"]
    offset = len(n1.log_text())
    outsider = start_outsider(outsiders, healthy, "n4", tls_args(live, "off"))
    # The seed refuses it: one line with the reason and where the peer came from.
    line = assert_never_joined(
        healthy, outsider,
        r"TLS handshake failed: CERTIFICATE_VERIFY_FAILED from 127\.0\.0\.1:\d+; closing",
        offset)
    assert "WARNING" in line, line


def test_a_node_with_a_certificate_of_another_ca_cannot_join(
        healthy: Cluster, pki: Pki, outsiders: Cluster, tmp_path: Path) -> None:
    live = tmp_path / "outsider"
    install(live, pki.other, *issue_once(pki.other, "n4"))
    outsider = start_outsider(outsiders, healthy, "n4", tls_args(live, "off"))
    # The dialer checks the listener's certificate first, so the outsider is the side
    # that refuses (it does not trust the cluster CA): one line naming the seed it
    # dialed and the reason.
    n1 = healthy["n1"]
    line = wait_log(outsider, 0, rf"cannot reach seed:{re.escape(n1.rpc_addr)} at"
                                 rf" {re.escape(n1.rpc_addr)}: .*certificate verify failed")
    assert "WARNING" in line, line
    assert_never_joined(healthy, outsider, None, 0)


def test_a_plaintext_node_cannot_join(healthy: Cluster, outsiders: Cluster) -> None:
    outsider = start_outsider(outsiders, healthy, "n5", [])
    wait_log(outsider, 0, r"cannot reach seed:\S+ at \S+: ", timeout=10)
    assert_never_joined(healthy, outsider, None, 0)


@pytest.mark.parametrize("case", ["plaintext", "another CA"])
def test_the_seed_logs_a_peer_that_abandons_the_tls_handshake(
        healthy: Cluster, pki: Pki, outsiders: Cluster, tmp_path: Path, case: str) -> None:
    args: list[str] = []
    if case == "another CA":
        live = tmp_path / "outsider"
        install(live, pki.other, *issue_once(pki.other, "n6"))
        args = tls_args(live, "off")
    n1 = healthy["n1"]
    offset = len(n1.log_text())
    start_outsider(outsiders, healthy, "n6", args)
    wait_log(n1, offset, r"transport: .*TLS.* from 127\.0\.0\.1:\d+", timeout=15)


# ---------------------------------------------------------------------------- rotation


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0


def run_load(nodes: Sequence[NodeProc], verify: ssl.SSLContext, stop: threading.Event,
             report: LoadReport, rate: float = 30.0) -> None:
    """Write a key through one node and read it back through the next, `rate` requests
    a second, every answer checked; each request on a new connection (a new TLS
    handshake), so a switch of certificates is seen by the very next request."""
    report.started = time.monotonic()
    interval = 2 / rate
    i = 0
    with httpx.Client(verify=verify, timeout=HTTP_TIMEOUT,
                      headers={"Connection": "close"}) as client:
        while not stop.is_set():
            due = time.monotonic() + interval
            writer, reader = nodes[i % len(nodes)], nodes[(i + 1) % len(nodes)]
            key, value = f"rotation-{i}", f"value {i}".encode()
            try:
                put = client.put(writer.url + key_path(key), content=value)
                report.requests += 1
                if put.status_code != 204:
                    report.failures.append(f"PUT {key} via {writer.node_id}:"
                                           f" {put.status_code} {put.text}")
                else:
                    got = client.get(reader.url + key_path(key))
                    report.requests += 1
                    if (got.status_code, got.content) != (200, value):
                        report.failures.append(f"GET {key} via {reader.node_id}:"
                                               f" {got.status_code} {got.text[:200]}")
            except httpx.HTTPError as exc:
                report.failures.append(f"request {i} ({writer.node_id}, {reader.node_id}):"
                                       f" {type(exc).__name__}: {exc}")
            i += 1
            time.sleep(max(0.0, due - time.monotonic()))
    report.stopped = time.monotonic()


def served_issuer_ok(node: NodeProc, ca_dir: Path) -> bool:
    """Whether a client trusting only `ca_dir` accepts the node's HTTPS certificate."""
    try:
        resp = httpx.get(f"https://{HOST}:{node.http_port}/health",
                         verify=trusting(ca_dir), timeout=3)
    except httpx.ConnectError:
        return False
    return resp.status_code == 200


def test_rotating_every_node_to_a_new_ca_under_load_fails_no_request(
        tmp_path: Path, pki: Pki) -> None:
    cluster = tls_cluster(tmp_path / "rotation", pki, 3)
    outsiders = Cluster(tmp_path / "outsiders", size=0)
    try:
        cluster.start()
        nodes = cluster.nodes
        stop, report = threading.Event(), LoadReport()
        load = threading.Thread(target=run_load, daemon=True,
                                args=(nodes, trusting(pki.ca, pki.new_ca), stop, report))
        offsets = {n.node_id: len(n.log_text()) for n in nodes}
        load.start()
        try:
            time.sleep(3.0)
            # The rotation: a certificate of the new CA for every node, copied over the
            # files each was started with, then SIGHUP to every node.
            for node in nodes:
                install(cluster.base_dir / "live" / node.node_id, pki.new_ca,
                        *issue_once(pki.new_ca, node.node_id))
            for node in nodes:
                sighup(node)
            for node in nodes:
                wait_log(node, offsets[node.node_id], RELOADED, timeout=10)
            time.sleep(7.0)
        finally:
            stop.set()
            load.join(timeout=30)
        assert not load.is_alive()
        assert report.failures == [], report.failures[:10]
        seconds = report.stopped - report.started
        assert report.requests >= 20 * 10, (report.requests, seconds)
        assert report.requests / seconds >= 20, (report.requests, seconds)

        # Clients now get certificates of the new CA only.
        for node in nodes:
            assert served_issuer_ok(node, pki.new_ca), node.node_id
            assert not served_issuer_ok(node, pki.ca), node.node_id
            assert node.alive, node.tail()
        # New internode connections use the new certificates: a restarted n3 (its
        # connections all new) is reached by and reaches both others.
        n1, n2, n3 = nodes
        n3.restart()
        cluster.wait_all_up(timeout=30)
        cluster.wait_connected(timeout=30)
        assert n1.put("after-rotation", b"new CA", params={"w": "3"}).status_code == 204
        got = n3.get("after-rotation", params={"r": "3"})
        assert (got.status_code, got.content) == (200, b"new CA")

        # A node still on the old CA is refused from now on.
        live = tmp_path / "old-ca-node"
        install(live, pki.ca, *issue_once(pki.ca, "n4"))
        stale = start_outsider(outsiders, cluster, "n4", tls_args(live, "off"))
        # Each side refuses the other's certificate; the dialer checks first, so the
        # stale node is the one that says why.
        wait_log(stale, 0, rf"cannot reach seed:{re.escape(n1.rpc_addr)} at \S+:"
                           r" .*certificate verify failed")
        key = "from-the-stale-node"
        with contextlib.suppress(httpx.HTTPError):
            stale.put(key, b"must not arrive", params={"timeout": "500"})
        time.sleep(OUTSIDER_WATCH)
        assert stale.alive, stale.tail()
        for node in nodes:
            assert node.statuses() == {"n1": "up", "n2": "up", "n3": "up"}, node.node_id
            assert node.local(key) is None, node.node_id
    finally:
        outsiders.close()
        cluster.close()


def test_a_reload_with_a_mismatched_key_keeps_the_certificates_in_use(
        tmp_path: Path, pki: Pki) -> None:
    """A rotation half done (new certificate, old key) fails to load: the node logs it
    and keeps serving HTTPS and internode TLS with the certificates it had."""
    cluster = tls_cluster(tmp_path / "mismatch", pki, 1, extra=("--n", "1", "--r", "1",
                                                                  "--w", "1"))
    try:
        cluster.start()
        (n1,) = cluster.nodes
        live = cluster.base_dir / "live" / "n1"
        cert, _ = issue_once(pki.new_ca, "n1")
        shutil.copyfile(cert, live / "node.crt")  # the new certificate, the old key
        offset = len(n1.log_text())
        sighup(n1)
        line = wait_log(n1, offset, RELOAD_FAILED, timeout=10)
        assert "ERROR" in line, line
        assert n1.alive, n1.tail()
        # New HTTPS connections still get the old certificate, of the old CA.
        with httpx.Client(verify=trusting(pki.ca), timeout=3,
                          headers={"Connection": "close"}) as client:
            for i in range(3):
                assert client.put(f"{n1.url}{key_path(f'kept-{i}')}",
                                  content=b"v").status_code == 204
        assert not served_issuer_ok(n1, pki.new_ca)
    finally:
        cluster.close()


def test_mutual_https_needs_a_client_certificate_of_the_cluster_ca(
        tmp_path: Path, pki: Pki) -> None:
    client = issue_once(pki.ca, "app", client=True)
    cluster = tls_cluster(tmp_path / "mutual", pki, 1, http_tls="mutual",
                          extra=("--n", "1", "--r", "1", "--w", "1"), client=client)
    try:
        cluster.start()
        (n1,) = cluster.nodes
        assert n1.put("mutual", b"with a client certificate").status_code == 204
        stranger = issue_once(pki.other, "app", client=True)
        for verify in (trusting(pki.ca), trusting(pki.ca, client=stranger)):
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(f"{n1.url}/health", verify=verify, timeout=3)
    finally:
        cluster.close()


def test_after_a_rotation_mutual_https_refuses_client_certificates_of_the_old_ca(
        tmp_path: Path, pki: Pki) -> None:
    old_client = issue_once(pki.ca, "app", client=True)
    cluster = tls_cluster(tmp_path / "mutual-rotation", pki, 1, http_tls="mutual",
                          extra=("--n", "1", "--r", "1", "--w", "1"), client=old_client)
    try:
        cluster.start()
        (n1,) = cluster.nodes
        offset = len(n1.log_text())
        install(cluster.base_dir / "live" / "n1", pki.new_ca, *issue_once(pki.new_ca, "n1"))
        sighup(n1)
        wait_log(n1, offset, RELOADED, timeout=10)
        new_client = issue_once(pki.new_ca, "app", client=True)
        verify = trusting(pki.new_ca, client=new_client)
        assert httpx.get(f"{n1.url}/health", verify=verify, timeout=3).status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{n1.url}/health", verify=trusting(pki.new_ca, client=old_client),
                      timeout=3)
    finally:
        cluster.close()
