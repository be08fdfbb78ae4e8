"""`ringkv serve` and `ringkv dev-cluster`: the configuration reaches the node intact, and a
bad setting stops `serve` at once with one line, before the node runtime is imported."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ringkv.core.config import ConfigError, NodeConfig
from ringkv.core.config_loader import load_config

REPO = Path(__file__).resolve().parents[3]


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)



def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_serve_with_bad_r_exits_at_once_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ringkv", "serve", "--r", "5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_clean_env(),
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--r" in lines[0]
    assert proc.stdout == ""


def test_bad_config_never_imports_the_runtime() -> None:
    code = (
        "import sys, runpy\n"
        "sys.modules['ringkv.server.serve'] = None  # any import of it would fail loudly\n"
        "sys.modules['ringkv.server.runtime'] = None\n"
        "sys.argv = ['ringkv', 'serve', '--node-id', 'n1', '--http-port', 'abc']\n"
        "runpy.run_module('ringkv', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_clean_env(),
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "bad setting --http-port: not an integer: 'abc'"


def test_serve_passes_the_loaded_config_to_the_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ringkv.tools import cli

    seen: list[NodeConfig] = []

    def fake_serve(config: NodeConfig) -> int:
        seen.append(config)
        return 7

    fake = types.ModuleType("ringkv.server.serve")
    fake.serve = fake_serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ringkv.server.serve", fake)
    import ringkv.server

    monkeypatch.setattr(ringkv.server, "serve", fake, raising=False)
    path = _toml(tmp_path, "vnodes = 12\nhttp_port = 8500\n")
    result = CliRunner().invoke(
        cli.main,
        [
            "serve",
            "--node-id",
            "c1",
            "--config",
            path,
            "--http-port",
            "8600",
            "--seeds",
            "127.0.0.1:9001",
        ],
        env={"RINGKV_RPC_PORT": "9600", "RINGKV_NODE_ID": "ignored"},
    )
    assert result.exit_code == 7, result.output
    (config,) = seen
    assert config.node_id == "c1"
    assert config.http_port == 8600
    assert config.rpc_port == 9600
    assert config.vnodes == 12
    assert config.seeds == ("127.0.0.1:9001",)


def test_serve_bad_env_value_names_the_variable() -> None:
    from ringkv.tools import cli

    result = CliRunner().invoke(
        cli.main, ["serve", "--node-id", "n1"], env={"RINGKV_VNODES": "lots"}
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "bad setting RINGKV_VNODES: not an integer: 'lots'"


def test_dev_cluster_node_arguments_are_valid_serve_arguments(tmp_path: Path) -> None:
    from ringkv.tools.devcluster import DevClusterSpec

    spec = DevClusterSpec(
        nodes=3,
        base_http_port=8101,
        base_rpc_port=9101,
        data_dir=str(tmp_path),
        storage="memory",
        n=2,
        r=1,
        w=1,
        vnodes=16,
        sync="none",
    )
    spec.validate()
    configs = []
    for i in (1, 2, 3):
        args = spec.node_args(i)
        cli = {k[2:].replace("-", "_"): v for k, v in zip(args[::2], args[1::2], strict=True)}
        configs.append(load_config(cli, {"RINGKV_SEEDS": "elsewhere:1"}))
    assert [c.node_id for c in configs] == ["n1", "n2", "n3"]
    assert [c.http_port for c in configs] == [8101, 8102, 8103]
    assert [c.rpc_port for c in configs] == [9101, 9102, 9103]
    assert configs[0].seeds == ()  # n1 starts the cluster, whatever the environment says
    assert configs[1].seeds == configs[2].seeds == ("127.0.0.1:9101",)
    assert configs[2].data_path == str((tmp_path / "n3").resolve())
    assert (configs[0].n, configs[0].r, configs[0].w, configs[0].storage) == (2, 1, 1, "memory")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"base_http_port": 9000, "base_rpc_port": 9003}, "bad setting --base-rpc-port"),
        ({"base_http_port": 65534}, "bad setting --base-http-port"),
        ({"r": 4}, "bad setting --r: must be between 1 and n (3), got 4"),
    ],
)
def test_dev_cluster_spec_validation(overrides: dict[str, Any], expected: str) -> None:
    from ringkv.tools.devcluster import DevClusterSpec

    with pytest.raises(ConfigError, match=re.escape(expected)):
        DevClusterSpec(**overrides).validate()


# ------------------------------------------------------------- internode authentication


def test_serve_on_a_non_loopback_host_without_a_secret_exits_at_once() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ringkv", "serve", "--node-id", "n1", "--host", "0.0.0.0"],
        capture_output=True, text=True, cwd=REPO, env=_clean_env(), timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bad setting --cluster-secret: ")


def _invoke_serve(monkeypatch: pytest.MonkeyPatch, args: list[str],
                  env: dict[str, str]) -> tuple[Any, list[NodeConfig]]:
    from ringkv.tools import cli

    seen: list[NodeConfig] = []
    fake = types.ModuleType("ringkv.server.serve")
    fake.serve = lambda config: seen.append(config) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ringkv.server.serve", fake)
    base = {k: "" for k in os.environ if k.startswith("RINGKV_")}
    return CliRunner().invoke(cli.main, ["serve", *args], env={**base, **env}), seen


def test_serve_insecure_flag_and_secret_file(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    result, seen = _invoke_serve(monkeypatch, ["--node-id", "n1", "--host", "0.0.0.0",
                                               "--insecure"], {})
    assert result.exit_code == 0, result.output
    assert seen[-1].insecure and seen[-1].cluster_secret is None
    result, seen = _invoke_serve(monkeypatch, ["--node-id", "n1"],
                                 {"RINGKV_HOST": "0.0.0.0", "RINGKV_INSECURE": "1"})
    assert result.exit_code == 0, result.output
    assert seen[-1].insecure
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    result, seen = _invoke_serve(monkeypatch, ["--node-id", "n1", "--host", "0.0.0.0",
                                               "--cluster-secret-file", str(secret)], {})
    assert result.exit_code == 0, result.output
    assert seen[-1].cluster_secret == "from-a-file" and not seen[-1].insecure
    result, seen = _invoke_serve(monkeypatch, ["--node-id", "n1", "--host", "0.0.0.0"], {})
    assert result.exit_code == 2 and not seen
    assert result.stderr.startswith("bad setting --cluster-secret: ")


def test_dev_cluster_secret_goes_by_environment_never_argv(tmp_path: Path) -> None:
    from ringkv.tools.devcluster import DevClusterSpec

    spec = DevClusterSpec(nodes=3, data_dir=str(tmp_path), cluster_secret="given-secret")
    for i in (1, 2, 3):
        assert not any("given-secret" in arg for arg in spec.node_command(i))
        assert "--cluster-secret" not in spec.node_args(i)
    env = spec.node_env({"PATH": "/bin", "RINGKV_CLUSTER_SECRET_FILE": "/elsewhere"})
    assert env == {"PATH": "/bin", "RINGKV_CLUSTER_SECRET": "given-secret"}
    # chosen: the option, else RINGKV_CLUSTER_SECRET, else a new random one per run
    assert spec.with_secret({"RINGKV_CLUSTER_SECRET": "env"}).cluster_secret == "given-secret"
    bare = DevClusterSpec(nodes=3)
    assert bare.with_secret({"RINGKV_CLUSTER_SECRET": "env"}).cluster_secret == "env"
    made = {bare.with_secret({}).cluster_secret for _ in range(3)}
    assert len(made) == 3 and all(s and len(s) >= 32 for s in made)


def test_dev_cluster_starts_nodes_with_the_secret_in_their_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rich.console import Console

    from ringkv.tools import devcluster

    started: list[tuple[list[str], dict[str, str]]] = []

    class ExitedAtOnce:  # a node that fails to start: dev-cluster gives up after one
        def __init__(self, command: list[str], **kwargs: Any) -> None:
            started.append((command, kwargs["env"]))

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(devcluster.subprocess, "Popen", ExitedAtOnce)
    monkeypatch.setattr(devcluster, "_port_in_use", lambda port: False)
    monkeypatch.delenv("RINGKV_CLUSTER_SECRET", raising=False)
    monkeypatch.setenv("RINGKV_CLUSTER_SECRET_FILE", str(tmp_path / "not-this-one"))
    spec = devcluster.DevClusterSpec(nodes=3, data_dir=str(tmp_path), storage="memory")
    code = devcluster.run_dev_cluster(spec, startup_timeout=5,
                                      console=Console(file=io.StringIO()))
    assert code == 1
    ((command, env),) = started
    secret = env["RINGKV_CLUSTER_SECRET"]
    assert len(secret) >= 32
    assert "RINGKV_CLUSTER_SECRET_FILE" not in env
    assert not any(secret in arg for arg in command)
    assert "--cluster-secret" not in command
    assert secret not in (tmp_path / "n1" / "node.log").read_text()


def test_dev_cluster_refuses_fewer_nodes_than_the_default_quorum() -> None:
    from ringkv.tools.devcluster import DevClusterSpec

    with pytest.raises(ConfigError, match="bad setting --nodes: 1 node"):
        DevClusterSpec(nodes=1).validate()
    DevClusterSpec(nodes=1, n=1, r=1, w=1).validate()
    DevClusterSpec(nodes=2).validate()
