"""Mutual TLS between nodes: a certificate binds the node id; everything else is refused.

Each refusal must be visible: one log line naming the peer and the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from ringkv.net.tls import TlsContexts, TlsFiles
from ringkv.tools.certs import init_ca, issue
from tests.net.test_transport import HOST, LOOPS, Node, closed_by_peer, run, wait_until


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root)
    for name in ("a", "b", "n9"):
        issue(root, name)
    issue(root, "a", client=True, out=root / "client")
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    issue(root, "b", days=1, not_before=old, out=root / "expired")
    other = root / "other"
    init_ca(other)
    issue(other, "b")
    return root


def tls(ca_dir: Path, name: str, cert_dir: Path | None = None) -> TlsContexts:
    where = cert_dir or ca_dir
    return TlsContexts(TlsFiles(str(ca_dir / "ca.crt"), str(where / f"{name}.crt"),
                                str(where / f"{name}.key")))


async def tls_pair(a_tls: TlsContexts | None, b_tls: TlsContexts | None,
                   b_id: str = "b") -> tuple[Node, Node]:
    a = await Node("a", tls=a_tls, handshake_timeout=1.0).start()
    b = await Node(b_id, tls=b_tls, handshake_timeout=1.0).start()
    a.t.set_address("b", HOST, b.port)
    b.t.set_address("a", HOST, a.port)
    return a, b


async def close(*nodes: Node) -> None:
    for node in nodes:
        await node.t.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_nodes_with_certificates_of_the_cluster_ca_talk(pki: Path, loop_kind: str) -> None:
    async def main() -> None:
        a, b = await tls_pair(tls(pki, "a"), tls(pki, "b"))
        a.t.send("b", b"ping")
        b.t.send("a", b"pong")
        await wait_until(lambda: b.payloads("a") == [b"ping"] and a.payloads("b") == [b"pong"])
        await close(a, b)

    run(main(), loop_kind)


def _refused(caplog: pytest.LogCaptureFixture, *words: str) -> bool:
    text = caplog.text
    return all(w in text for w in words)


def test_a_certificate_for_n9_cannot_claim_to_be_b(pki: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        # "b" runs with n9's certificate: both directions must refuse it.
        a, b = await tls_pair(tls(pki, "a"), tls(pki, "n9"))
        b.t.send("a", b"as b, inbound to a")
        a.t.send("b", b"to b, outbound from a")
        await asyncio.sleep(1.0)
        assert a.payloads() == [] and b.payloads() == []
        assert a.t.stats.auth_failures >= 1
        await close(a, b)

    with caplog.at_level(logging.WARNING):
        run(main())
    assert _refused(caplog, "'b'", "certificate names 'n9'")


@pytest.mark.parametrize("case", ["plaintext", "other CA", "expired", "client certificate"])
def test_peers_without_a_valid_node_certificate_are_refused(
        pki: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    dialer: dict[str, Any] = {
        "plaintext": None,
        "other CA": tls(pki / "other", "b"),
        "expired": TlsContexts(TlsFiles(str(pki / "ca.crt"), str(pki / "expired" / "b.crt"),
                                        str(pki / "expired" / "b.key"))),
        "client certificate": TlsContexts(TlsFiles(
            str(pki / "ca.crt"), str(pki / "client" / "a.crt"), str(pki / "client" / "a.key"))),
    }

    async def main() -> None:
        a = await Node("a", tls=tls(pki, "a"), handshake_timeout=1.0).start()
        b = await Node("b", tls=dialer[case], handshake_timeout=1.0).start()
        b.t.set_address("a", HOST, a.port)
        b.t.send("a", b"let me in")
        await asyncio.sleep(1.5)
        assert a.payloads() == []
        assert a.t.stats.auth_failures + b.t.stats.connect_failures >= 1
        await close(a, b)

    with caplog.at_level(logging.WARNING, logger="ringkv.net.transport"):
        run(main())
    # One line naming the peer and the reason, on the side that refused: the listener
    # for a peer it cannot trust, the dialer for a listener it cannot trust.
    reasons = {
        "plaintext": ("127.0.0.1", "no TLS handshake in time"),
        "other CA": ("cannot reach a", "certificate verify failed"),
        "expired": ("127.0.0.1", "TLS handshake failed", "certificate"),
        "client certificate": ("127.0.0.1", "names no ringkv node"),
    }
    assert _refused(caplog, *reasons[case]), caplog.text


def test_a_tls_handshake_that_never_finishes_is_dropped(pki: Path) -> None:
    async def main() -> None:
        a = await Node("a", tls=tls(pki, "a"), handshake_timeout=0.5).start()
        reader, writer = await asyncio.open_connection(HOST, a.port)
        assert await closed_by_peer(reader, timeout=3.0)
        writer.close()
        await close(a)

    run(main())


def test_a_reload_swaps_in_a_rotated_ca(pki: Path, tmp_path: Path) -> None:
    rotated = tmp_path / "rotated"
    init_ca(rotated)
    issue(rotated, "a")
    issue(rotated, "b")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("ca.crt", "a.crt", "a.key"):
        shutil.copy(pki / name, live / name)

    async def main() -> None:
        a_tls = tls(live, "a")
        a, b = await tls_pair(a_tls, tls(pki, "b"))
        b.t.send("a", b"old ca")
        await wait_until(lambda: a.payloads("b") == [b"old ca"])
        for name in ("ca.crt", "a.crt", "a.key"):
            shutil.copy(rotated / name, live / name)
        a.t.tls.reload()  # type: ignore[union-attr]
        # A node still on the old CA is refused from now on; one on the new one is not.
        b.t.redial("a")
        b.t.send("a", b"still old")
        await asyncio.sleep(1.0)
        assert a.payloads("b") == [b"old ca"]
        c = await Node("b", tls=tls(rotated, "b"), handshake_timeout=1.0).start()
        c.t.set_address("a", HOST, a.port)
        c.t.send("a", b"new ca")
        await wait_until(lambda: a.payloads("b") == [b"old ca", b"new ca"])
        await close(a, b, c)

    run(main())
