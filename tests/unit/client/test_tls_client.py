"""The client over TLS and with client tokens, against fake nodes serving HTTPS.

The certificates are real ones of a cluster CA made by `ringkv.tools.certs` (a node
certificate for the fake node, a client certificate for the client); the fake node
(`fake_node.FakeNode`) serves HTTPS with them from aiohttp, optionally requiring a
client certificate of the CA as `--http-tls mutual` does, and records every request
with the headers it carried and the certificate the client presented.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ringkv.client import AsyncClient, Client, TransportError, bearer_token, tls_context
from ringkv.tools.certs import init_ca, issue
from ringkv.tools.cli import main as cli_main
from tests.unit.client.fake_node import FakeNode, fake_nodes

TOKEN = "c1ient-t0ken-3f9a6b7c8d"
ADMIN = "adm1n-t0ken-0d1e2f3a4b"


class Pki:
    """A cluster CA, a node certificate, a client certificate, and an unrelated CA."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "tls"
        self.ca, _ = init_ca(self.dir)
        self.node_cert, self.node_key = issue(self.dir, "n1")
        self.cert, self.key = issue(self.dir, "alice", client=True)
        self.other_ca, _ = init_ca(root / "other")

    def server_context(self, mutual: bool) -> ssl.SSLContext:
        """What a node serves HTTPS with (`--http-tls on`, or `mutual`)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.node_cert, self.node_key)
        if mutual:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=self.ca)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_node(pki: Pki) -> Iterator[FakeNode]:
    node = FakeNode().start(pki.server_context(mutual=False))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def mutual_node(pki: Pki) -> Iterator[FakeNode]:
    node = FakeNode().start(pki.server_context(mutual=True))
    try:
        yield node
    finally:
        node.stop()


def _subject(cert: dict[str, object] | None) -> dict[str, str]:
    assert cert is not None
    return {k: v for rdn in cert["subject"] for k, v in rdn}  # type: ignore[attr-defined]


# ------------------------------------------------------------------ verification


def test_https_node_is_verified_against_the_ca(pki: Pki, https_node: FakeNode) -> None:
    assert https_node.url.startswith("https://")
    with Client(https_node.url, ca=pki.ca) as kv:
        kv.put("greeting", b"hello")
        assert kv.get("greeting").values == [b"hello"]
    # localhost is in every node certificate too: the host name is checked, and holds
    with Client(https_node.url.replace("127.0.0.1", "localhost"), ca=str(pki.ca)) as kv:
        assert kv.get("greeting").value == b"hello"

    async def go() -> list[bytes]:
        async with AsyncClient(https_node.url, ca=pki.ca) as akv:
            await akv.put("other", b"async")
            return (await akv.get("other")).values

    assert asyncio.run(go()) == [b"async"]


@pytest.mark.parametrize("which", ["no ca", "another ca"])
def test_https_without_the_ca_fails_cleanly_naming_the_node(
    pki: Pki, https_node: FakeNode, which: str
) -> None:
    ca = None if which == "no ca" else pki.other_ca
    with Client(https_node.url, ca=ca) as kv, pytest.raises(TransportError) as info:
        kv.get("k")
    message = str(info.value)
    assert https_node.url in message
    assert "cannot verify the TLS certificate" in message and "--ca" in message
    assert https_node.requests == []  # nothing was sent over an unverified connection

    async def go() -> None:
        async with AsyncClient(https_node.url, ca=ca) as akv:
            await akv.put("k", b"v")

    with pytest.raises(TransportError, match="cannot verify the TLS certificate"):
        asyncio.run(go())
    assert https_node.requests == []


def test_a_write_refused_by_verification_is_not_sent_to_another_node(
    pki: Pki, https_node: FakeNode
) -> None:
    """A failed handshake is `UNDELIVERED`: the request never left, so a plain write
    fails over (it would be safe), and every node refusing makes one clean error."""
    second = FakeNode().start(pki.server_context(mutual=False))
    try:
        with Client(urls=[https_node.url, second.url], ca=pki.other_ca,
                    sleep=lambda s: None) as kv, pytest.raises(TransportError) as info:
            kv.put("k", b"v")
        assert "attempts on 2 nodes" in str(info.value)
        assert https_node.requests == second.requests == []
    finally:
        second.stop()


def test_plaintext_and_tls_mixed_up_say_so(pki: Pki, https_node: FakeNode) -> None:
    with fake_nodes(1) as (plain,), \
            Client(plain.url.replace("http://", "https://"), ca=pki.ca) as kv, \
            pytest.raises(TransportError, match="does not speak TLS"):
        kv.get("k")
    with Client(https_node.url.replace("https://", "http://")) as kv, \
            pytest.raises(TransportError, match="use an https:// URL"):
        kv.get("k")
    assert https_node.requests == []


# ---------------------------------------------------------- client certificates


def test_client_certificate_is_presented_to_a_mutual_node(
    pki: Pki, mutual_node: FakeNode
) -> None:
    with Client(mutual_node.url, ca=pki.ca, cert=pki.cert, key=pki.key) as kv:
        kv.put("k", b"v")
        assert kv.get("k").value == b"v"
    seen = mutual_node.requests
    assert len(seen) == 2
    for request in seen:
        assert _subject(request.peercert) == {"organizationalUnitName": "ringkv client",
                                              "commonName": "alice"}

    async def go() -> bytes | None:
        async with AsyncClient(mutual_node.url, ca=pki.ca, cert=pki.cert,
                               key=pki.key) as akv:
            return (await akv.get("k")).value

    assert asyncio.run(go()) == b"v"
    assert _subject(mutual_node.requests[-1].peercert)["commonName"] == "alice"


def test_a_mutual_node_refuses_a_client_without_a_certificate(
    pki: Pki, mutual_node: FakeNode
) -> None:
    with Client(mutual_node.url, ca=pki.ca) as kv, pytest.raises(TransportError) as info:
        kv.get("k")
    assert mutual_node.url in str(info.value)
    assert "client certificate" in str(info.value)
    assert mutual_node.requests == []


def test_a_certificate_in_one_file_with_its_key(pki: Pki, mutual_node: FakeNode,
                                                tmp_path: Path) -> None:
    both = tmp_path / "alice.pem"
    both.write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    with Client(mutual_node.url, ca=pki.ca, cert=both) as kv:
        assert not kv.get("absent").found
    assert _subject(mutual_node.requests[-1].peercert)["commonName"] == "alice"


def test_unusable_files_are_value_errors_naming_them(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    with pytest.raises(ValueError, match=f"CA file {missing}"):
        Client("https://127.0.0.1:1", ca=missing)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="garbage.crt"):
        AsyncClient("https://127.0.0.1:1", ca=garbage)
    with pytest.raises(ValueError, match="key needs cert"):
        Client("https://127.0.0.1:1", ca=pki.ca, key=pki.key)
    # a key that is not the certificate's
    with pytest.raises(ValueError, match="client certificate"):
        Client("https://127.0.0.1:1", ca=pki.ca, cert=pki.cert, key=pki.node_key)
    with pytest.raises(TypeError):
        tls_context(ca=3)  # type: ignore[arg-type]
    assert tls_context() is None  # nothing given: httpx's own verification, as before


# ------------------------------------------------------------------------- tokens


def test_the_token_is_sent_on_every_request(pki: Pki, https_node: FakeNode) -> None:
    with Client(https_node.url, ca=pki.ca, token=TOKEN) as kv:
        kv.put("k", b"v")
        kv.get("k")
        kv.delete("k")
        kv.incr("visits")
        kv.counter("visits")
        kv.sadd("cart", "pear")
        kv.smembers("cart")
        list(kv.keys("default"))
        kv.mget(["k"])
        kv.bucket_props("default")
        kv.set_bucket_props("carts", r=1)
        kv.health()
        kv.leave()
        kv.remove("n2")
    assert len(https_node.requests) == 14
    for request in https_node.requests:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}", request.path

    async def go() -> None:
        async with AsyncClient(https_node.url, ca=pki.ca, token=TOKEN) as akv:
            await akv.get("k")
            await akv.sadd("cart", "fig")
            await akv.remove("n3")

    before = len(https_node.requests)
    asyncio.run(go())
    assert [r.headers.get("Authorization") for r in https_node.requests[before:]] == [
        f"Bearer {TOKEN}"] * 3


def test_the_admin_token_replaces_the_token_on_admin_requests_only(
    pki: Pki, https_node: FakeNode
) -> None:
    with Client(https_node.url, ca=pki.ca, token=TOKEN, admin_token=ADMIN) as kv:
        kv.get("k")
        kv.set_bucket_props("carts", r=1)
        kv.leave()
        kv.remove("n2")
        kv.put("k", b"v")
    auth = [(r.method, r.path, r.headers.get("Authorization")) for r in https_node.requests]
    assert auth == [
        ("GET", "/kv/k", f"Bearer {TOKEN}"),
        ("PUT", "/buckets/carts/props", f"Bearer {ADMIN}"),
        ("POST", "/cluster/leave", f"Bearer {ADMIN}"),
        ("POST", "/cluster/remove/n2", f"Bearer {ADMIN}"),
        ("PUT", "/kv/k", f"Bearer {TOKEN}"),
    ]
    # one Authorization header each, never two
    assert all(list(r.headers).count("Authorization") == 1 for r in https_node.requests)


def test_no_token_sends_no_authorization(https_node: FakeNode, pki: Pki) -> None:
    with Client(https_node.url, ca=pki.ca, token="  ") as kv:
        kv.get("k")
    assert "Authorization" not in https_node.requests[0].headers


@pytest.mark.parametrize("bad", ["has space-in-it-0123", "line\nbreak-0123456789",
                                 "\x00nul-0123456789abc", "é-not-ascii-0123456"])
def test_a_malformed_token_is_refused_without_being_echoed(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        Client("https://127.0.0.1:1", token=bad)
    assert bad.strip() not in str(info.value)
    with pytest.raises(ValueError):
        AsyncClient("https://127.0.0.1:1", token=bad)
    with pytest.raises(TypeError):
        bearer_token(b"bytes")  # type: ignore[arg-type]


def test_the_token_is_in_no_transport_error(pki: Pki, https_node: FakeNode) -> None:
    with Client(https_node.url, token=TOKEN) as kv, pytest.raises(TransportError) as info:
        kv.get("k")  # no CA: refused before anything is sent
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert TOKEN not in repr(kv)


# --------------------------------------------------------------------------- CLI


def _env(**values: str) -> dict[str, str | None]:
    names = ("RINGKV_CA", "RINGKV_CERT", "RINGKV_KEY", "RINGKV_TOKEN", "RINGKV_ADMIN_TOKEN")
    env: dict[str, str | None] = dict.fromkeys(names)
    env.update(values)
    return env


def test_cli_options_reach_a_mutual_https_node(pki: Pki, mutual_node: FakeNode) -> None:
    runner = CliRunner()
    flags = ["--node", mutual_node.url, "--ca", str(pki.ca), "--cert", str(pki.cert),
             "--key", str(pki.key), "--token", TOKEN]
    result = runner.invoke(cli_main, ["put", "cart", "apple", *flags], env=_env())
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli_main, ["get", "cart", *flags], env=_env())
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "apple"
    assert TOKEN not in result.output
    for request in mutual_node.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert _subject(request.peercert)["commonName"] == "alice"


def test_cli_takes_them_from_the_environment(pki: Pki, mutual_node: FakeNode) -> None:
    env = _env(RINGKV_CA=str(pki.ca), RINGKV_CERT=str(pki.cert), RINGKV_KEY=str(pki.key),
               RINGKV_TOKEN=TOKEN)
    runner = CliRunner()
    for command in (["incr", "visits"], ["sadd", "cart", "fig"], ["cluster", "remove", "n2"],
                    ["bucket", "props", "carts"]):
        result = runner.invoke(cli_main, [*command, "--node", mutual_node.url], env=env)
        assert result.exit_code == 0, (command, result.output)
    assert [r.path for r in mutual_node.requests] == [
        "/counters/visits", "/sets/cart", "/cluster/remove/n2", "/buckets/carts/props"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in mutual_node.requests)


def test_cli_without_the_ca_is_one_line_naming_the_node(https_node: FakeNode) -> None:
    result = CliRunner().invoke(cli_main, ["get", "k", "--node", https_node.url,
                                           "--token", TOKEN], env=_env())
    assert result.exit_code == 4  # a connection error (ringkv.tools.exits)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and https_node.url in lines[0] and "--ca" in lines[0]
    assert TOKEN not in result.output


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--token", "two words-0123456789"], {}, "Invalid value for '--token'"),
    ([], {"RINGKV_TOKEN": "line\nbreak-0123456"}, "Invalid value for '--token'"),
    (["--ca", "/nonexistent/ca.crt"], {}, "Invalid value for '--ca'"),
    (["--key", "{key}"], {}, "key needs cert"),
    (["--ca", "{garbage}"], {}, "cannot use the CA file"),
])
def test_cli_bad_security_options_are_usage_errors(
    pki: Pki, tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("junk\n")
    args = [a.format(key=pki.key, garbage=garbage) for a in args]
    result = CliRunner().invoke(cli_main, ["get", "k", "--node", "https://127.0.0.1:1",
                                           *args], env=_env(**env))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "two words" not in result.stderr and "break-0123456" not in result.stderr


def test_every_client_command_takes_the_security_options() -> None:
    runner = CliRunner()
    for command in (["put"], ["get"], ["delete"], ["incr"], ["counter"], ["sadd"],
                    ["smembers"], ["srem"], ["keys"], ["mget"], ["bucket", "props"],
                    ["cluster", "status"], ["cluster", "leave"], ["cluster", "remove"],
                    ["cluster", "lookup"]):
        result = runner.invoke(cli_main, [*command, "--help"], env=_env())
        assert result.exit_code == 0, (command, result.output)
        for flag in ("--ca FILE", "--cert FILE", "--key FILE", "--token TOKEN",
                     "RINGKV_CA", "RINGKV_CERT", "RINGKV_KEY", "RINGKV_TOKEN"):
            assert flag in result.output, (command, flag)
