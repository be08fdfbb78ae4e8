"""`ringkv dev-cluster --tls` and `--tokens-file`: the arguments every node is started
with, the certificates made for them, and the credential the probes use. No node runs
here (`tests/process/test_dev_cluster_tls_process.py` starts a real TLS cluster)."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rich.console import Console

from ringkv.core.config import ConfigError
from ringkv.core.config_loader import load_config
from ringkv.tools import devcluster
from ringkv.tools.devcluster import DevClusterSpec

TOKENS = "3f9c0d6e8a1b4c2d9e7f6a5b4c3d2e1f   write\n"


def _serve_options(args: list[str]) -> dict[str, str]:
    """`ringkv serve` arguments as load_config options (every flag takes a value here)."""
    assert len(args) % 2 == 0, args
    return {k[2:].replace("-", "_"): v for k, v in zip(args[::2], args[1::2], strict=True)}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_tls_node_arguments_are_valid_serve_arguments(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    spec = DevClusterSpec(nodes=3, base_http_port=8101, base_rpc_port=9101,
                          data_dir=str(tmp_path / "data"), storage="memory", tls=True,
                          tokens_file=str(tokens))
    spec.validate()
    tls = (tmp_path / "data" / "tls").resolve()
    for i in (1, 2, 3):
        config = load_config(_serve_options(spec.node_args(i)), {})
        assert config.tls_ca == str(tls / "ca.crt")
        assert (config.tls_cert, config.tls_key) == (str(tls / f"n{i}.crt"),
                                                     str(tls / f"n{i}.key"))
        assert config.http_tls == "on"
        assert config.tokens_file == str(tokens.resolve())
        assert spec.http_url(i) == f"https://127.0.0.1:{8100 + i}"
    assert spec.ca_path == tls / "ca.crt"


def test_without_tls_nothing_changes(tmp_path: Path) -> None:
    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path))
    args = spec.node_args(2)
    assert not any(a.startswith(("--tls", "--http-tls", "--tokens-file")) for a in args)
    assert spec.http_url(2) == "http://127.0.0.1:8002"
    assert spec.ca_path is None
    config = load_config(_serve_options(args), {})
    assert (config.tls_cert, config.http_tls, config.tokens_file) == (None, "off", None)


def test_certificates_are_made_once_per_node_under_the_data_dir(tmp_path: Path) -> None:
    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path), tls=True)
    made = spec.make_certificates()
    tls = tmp_path.resolve() / "tls"
    assert sorted(p.name for p in made) == ["ca.crt", "ca.key", "n1.crt", "n1.key",
                                            "n2.crt", "n2.key", "n3.crt", "n3.key"]
    assert (tls.stat().st_mode & 0o777) == 0o700
    ca = _cert(tls / "ca.crt")
    for i in (1, 2, 3):
        cert = _cert(tls / f"n{i}.crt")
        subject = {a.oid: a.value for a in cert.subject}
        assert subject[NameOID.COMMON_NAME] == f"n{i}"
        assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "ringkv node"
        assert cert.issuer == ca.subject
        key = ca.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        cert.verify_directly_issued_by(ca)  # raises if not signed by the CA
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert ((tls / f"n{i}.key").stat().st_mode & 0o777) == 0o600
    # a second run on the same data dir keeps them (the nodes' peers trust the same CA)
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    assert spec.make_certificates() == []
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before
    # a larger cluster on the same data dir gets certificates for its new nodes only
    bigger = DevClusterSpec(nodes=4, data_dir=str(tmp_path), tls=True)
    assert sorted(p.name for p in bigger.make_certificates()) == ["n4.crt", "n4.key"]
    _cert(tls / "n4.crt").verify_directly_issued_by(ca)


def test_half_a_pair_is_an_error_not_a_guess(tmp_path: Path) -> None:
    spec = DevClusterSpec(nodes=2, data_dir=str(tmp_path), tls=True)
    spec.make_certificates()
    (tmp_path / "tls" / "n2.key").unlink()
    with pytest.raises(ConfigError, match="bad setting --tls: .* n2.crt and n2.key"):
        spec.make_certificates()
    (tmp_path / "tls" / "ca.crt").unlink()
    with pytest.raises(ConfigError, match="ca.crt and ca.key"):
        spec.make_certificates()


def test_a_bad_tokens_file_is_refused_up_front_without_its_tokens(tmp_path: Path) -> None:
    bad = tmp_path / "tokens"
    bad.write_text(TOKENS + "short-secret-x read\n")
    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path), tokens_file=str(bad))
    with pytest.raises(ConfigError, match="bad setting --tokens-file: .*line 2") as info:
        spec.validate()
    assert "short-secret-x" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        DevClusterSpec(nodes=3, tokens_file=str(tmp_path / "absent")).validate()


def test_the_probe_token_exists_only_with_a_tokens_file(tmp_path: Path) -> None:
    bare = DevClusterSpec(nodes=3, data_dir=str(tmp_path))
    assert bare.with_probe_token({"RINGKV_ADMIN_TOKEN": "x" * 20}).probe_token is None
    env = bare.node_env({"PATH": "/bin"})
    assert "RINGKV_ADMIN_TOKEN" not in env
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path), tokens_file=str(tokens))
    assert spec.with_probe_token({"RINGKV_ADMIN_TOKEN": " mine-0123456789ab "}
                                 ).probe_token == "mine-0123456789ab"
    made = {spec.with_probe_token({}).probe_token for _ in range(3)}
    assert len(made) == 3 and all(t and len(t) >= 32 for t in made)
    ready = spec.with_probe_token({})
    token = ready.probe_token
    assert token is not None
    # to the nodes by their environment, never by their command line
    assert ready.node_env({"PATH": "/bin"})["RINGKV_ADMIN_TOKEN"] == token
    for i in (1, 2, 3):
        assert not any(token in arg for arg in ready.node_command(i))


def test_cli_passes_tls_and_tokens_file_to_the_spec(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    from ringkv.tools import cli

    seen: list[DevClusterSpec] = []

    def fake_run(spec: DevClusterSpec, startup_timeout: float) -> int:
        seen.append(spec)
        return 0

    monkeypatch.setattr(devcluster, "run_dev_cluster", fake_run)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    result = CliRunner().invoke(cli.main, ["dev-cluster", "--tls", "--tokens-file",
                                           str(tokens), "--nodes", "3"])
    assert result.exit_code == 0, result.output
    assert (seen[-1].tls, seen[-1].tokens_file, seen[-1].nodes) == (True, str(tokens), 3)
    result = CliRunner().invoke(cli.main, ["dev-cluster", "--tokens-file",
                                           str(tmp_path / "absent")])
    assert result.exit_code == 2 and "--tokens-file" in result.output
    result = CliRunner().invoke(cli.main, ["dev-cluster"])
    assert result.exit_code == 0 and not seen[-1].tls and seen[-1].tokens_file is None


def test_run_makes_the_certificates_before_starting_nodes_with_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []

    class ExitedAtOnce:  # a node that fails to start: dev-cluster gives up after one
        def __init__(self, command: list[str], **kwargs: Any) -> None:
            started.append((command, kwargs["env"]))
            assert (tmp_path / "tls" / "n1.crt").exists()  # made before any node starts

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(subprocess, "Popen", ExitedAtOnce)  # the module devcluster uses
    monkeypatch.setattr(devcluster, "_port_in_use", lambda port: False)
    monkeypatch.delenv("RINGKV_ADMIN_TOKEN", raising=False)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    out = io.StringIO()
    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path), storage="memory", tls=True,
                          tokens_file=str(tokens))
    code = devcluster.run_dev_cluster(spec, startup_timeout=5, console=Console(file=out))
    assert code == 1
    ((command, env),) = started
    tls = str(tmp_path.resolve() / "tls")
    assert command[command.index("--tls-ca") + 1] == os.path.join(tls, "ca.crt")
    assert command[command.index("--tls-cert") + 1] == os.path.join(tls, "n1.crt")
    assert command[command.index("--http-tls") + 1] == "on"
    probe = env["RINGKV_ADMIN_TOKEN"]
    assert len(probe) >= 32 and probe not in out.getvalue()
    assert probe not in (tmp_path / "n1" / "node.log").read_text()
    assert f"made 4 TLS certificate(s) in {tls}" in out.getvalue()
