"""Node configuration: defaults, precedence of its sources, validation messages, TOML.

The `serve` and `dev-cluster` commands built on it are checked in
tests/unit/tools/test_node_commands.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ringkv.core.config import (
    ConfigError,
    NodeConfig,
    cli_flag,
    env_var,
    fast_test_config,
    parse_hostport,
)
from ringkv.core.config_loader import load_config


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def _error(cli: dict[str, object], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cli, env or {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad setting ")
    return message


# ------------------------------------------------------------------------------ defaults


def test_defaults_match_the_contract() -> None:
    config = load_config({"node_id": "n1"}, {})
    assert config == NodeConfig(node_id="n1")
    assert (config.host, config.http_port, config.rpc_port) == ("127.0.0.1", 8080, 9080)
    assert (config.n, config.r, config.w) == (3, 2, 2)
    assert config.vnodes == 256
    assert config.storage == "lmdb"
    assert config.seeds == ()
    assert config.cluster_secret is None
    assert config.anti_entropy_interval == 60.0
    assert config.max_value_bytes == 1 << 20
    assert config.sync == "group"
    assert config.advertise_host == "127.0.0.1"
    assert config.data_path == "./data/n1"
    assert config.http_address == "http://127.0.0.1:8080"
    assert config.rpc_address == "127.0.0.1:9080"


def test_advertise_and_data_dir_properties() -> None:
    config = NodeConfig(node_id="a", host="0.0.0.0", advertise="10.0.0.5", data_dir="/srv/a",
                        cluster_secret="s")
    assert config.advertise_host == "10.0.0.5"
    assert config.data_path == "/srv/a"
    assert NodeConfig(node_id="b", host="::1").rpc_address == "[::1]:9080"


def test_every_field_has_an_env_var_and_a_flag() -> None:
    for field in dataclasses.fields(NodeConfig):
        assert env_var(field.name) == "RINGKV_" + field.name.upper()
        assert cli_flag(field.name) == "--" + field.name.replace("_", "-")
    assert env_var("anti_entropy_interval") == "RINGKV_ANTI_ENTROPY_INTERVAL"


# ---------------------------------------------------------------------------- precedence


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'node_id = "from-file"\nhttp_port = 7001\nrpc_port = 7002\nvnodes = 10\n'
        'storage = "memory"\n',
    )
    env = {"RINGKV_CONFIG": path, "RINGKV_HTTP_PORT": "7101", "RINGKV_RPC_PORT": "7102"}
    cli: dict[str, object] = {"http_port": "7201", "node_id": None, "rpc_port": None}
    config = load_config(cli, env)
    assert config.http_port == 7201  # command line
    assert config.rpc_port == 7102  # environment
    assert config.node_id == "from-file"  # file (CLI None means "not given")
    assert config.vnodes == 10 and config.storage == "memory"  # file
    assert config.n == 3  # default


def test_cli_config_flag_beats_env_config(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('node_id = "a"\n')
    b.write_text('node_id = "b"\n')
    assert load_config({"config": str(a)}, {"RINGKV_CONFIG": str(b)}).node_id == "a"
    assert load_config({}, {"RINGKV_CONFIG": str(b)}).node_id == "b"


def test_all_contract_env_names(tmp_path: Path) -> None:
    env = {
        "RINGKV_NODE_ID": "e1",
        "RINGKV_HOST": "127.0.0.2",
        "RINGKV_ADVERTISE": "node-e1.local",
        "RINGKV_HTTP_PORT": "8101",
        "RINGKV_RPC_PORT": "9101",
        "RINGKV_DATA_DIR": str(tmp_path),
        "RINGKV_SEEDS": "127.0.0.1:9001, 127.0.0.1:9002",
        "RINGKV_N": "5",
        "RINGKV_R": "3",
        "RINGKV_W": "4",
        "RINGKV_VNODES": "64",
        "RINGKV_STORAGE": "memory",
        "RINGKV_CLUSTER_SECRET": "s3cret",
        "RINGKV_ANTI_ENTROPY_INTERVAL": "2.5",
        "RINGKV_SYNC": "none",
        "RINGKV_MAX_VALUE_BYTES": "1000",
        "RINGKV_REQUEST_TIMEOUT_MS": "500",
        "RINGKV_LOG_LEVEL": "DEBUG",
    }
    config = load_config({}, env)
    assert config == NodeConfig(
        node_id="e1",
        host="127.0.0.2",
        advertise="node-e1.local",
        http_port=8101,
        rpc_port=9101,
        data_dir=str(tmp_path),
        seeds=("127.0.0.1:9001", "127.0.0.1:9002"),
        n=5,
        r=3,
        w=4,
        vnodes=64,
        storage="memory",
        cluster_secret="s3cret",
        anti_entropy_interval=2.5,
        sync="none",
        max_value_bytes=1000,
        request_timeout_ms=500,
        log_level="debug",
    )


def test_empty_env_var_counts_as_unset() -> None:
    config = load_config({"node_id": "n1"}, {"RINGKV_HTTP_PORT": "", "RINGKV_SEEDS": ""})
    assert config.http_port == 8080 and config.seeds == ()


def test_empty_seeds_on_the_command_line_override_env() -> None:
    config = load_config({"node_id": "n1", "seeds": ""}, {"RINGKV_SEEDS": "h:1"})
    assert config.seeds == ()


def test_env_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGKV_NODE_ID", "from-os-env")
    assert load_config({}).node_id == "from-os-env"


def test_toml_file_with_typed_values(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'node_id = "t1"\nseeds = ["a:1", "b:2"]\nanti_entropy_interval = 5\n'
        "max_value_bytes = 2048\ncluster_secret = 'x'\n",
    )
    config = load_config({"config": path}, {})
    assert config.seeds == ("a:1", "b:2")
    assert config.anti_entropy_interval == 5.0
    assert config.max_value_bytes == 2048
    assert config.cluster_secret == "x"


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("cli", "env", "expected"),
    [
        ({"r": "5"}, {}, "bad setting --r: must be between 1 and n (3), got 5"),
        ({"w": "0"}, {}, "bad setting --w: must be between 1 and n (3), got 0"),
        ({"node_id": "n1", "n": "1"}, {}, "bad setting --n: must be at least r (2)"),
        ({"n": "1", "r": "2"}, {}, "bad setting --r: must be between 1 and n (1), got 2"),
        (
            {},
            {"RINGKV_NODE_ID": "n1", "RINGKV_HTTP_PORT": "abc"},
            "bad setting RINGKV_HTTP_PORT: not an integer: 'abc'",
        ),
        ({"rpc_port": "70000"}, {}, "bad setting --rpc-port: must be between 1 and 65535"),
        ({"http_port": "0"}, {}, "bad setting --http-port: must be between 1 and 65535"),
        (
            {"node_id": "n1", "rpc_port": "8080"},
            {},
            "bad setting --rpc-port: must differ from the http port (8080)",
        ),
        (
            {"node_id": "n1", "http_port": "9080"},
            {},
            "bad setting --http-port: must differ from the rpc port (9080)",
        ),
        ({"node_id": "bad id!"}, {}, "bad setting --node-id: must match"),
        ({"node_id": "x" * 65}, {}, "bad setting --node-id: must match"),
        ({}, {}, "bad setting --node-id: required"),
        ({"seeds": "a:1,nocolon"}, {}, "bad setting --seeds: not host:port: 'nocolon'"),
        ({"seeds": "a:99999"}, {}, "bad setting --seeds: port out of range"),
        ({}, {"RINGKV_SEEDS": "a:x"}, "bad setting RINGKV_SEEDS: not host:port"),
        ({"vnodes": "0"}, {}, "bad setting --vnodes: must be between 1 and 4096, got 0"),
        ({"vnodes": "4097"}, {}, "bad setting --vnodes: must be between 1 and 4096"),
        ({"storage": "rocks"}, {}, "bad setting --storage: must be one of lmdb, memory"),
        ({}, {"RINGKV_STORAGE": "x"}, "bad setting RINGKV_STORAGE: must be one of"),
        ({"sync": "always"}, {}, "bad setting --sync: must be one of group, none"),
        ({"log_level": "loud"}, {}, "bad setting --log-level: must be one of"),
        (
            {"anti_entropy_interval": "0"},
            {},
            "bad setting --anti-entropy-interval: must be greater than 0",
        ),
        (
            {},
            {"RINGKV_ANTI_ENTROPY_INTERVAL": "soon"},
            "bad setting RINGKV_ANTI_ENTROPY_INTERVAL: not a number: 'soon'",
        ),
        (
            {"anti_entropy_interval": "nan"},
            {},
            "bad setting --anti-entropy-interval: not a finite number",
        ),
        ({"max_value_bytes": "0"}, {}, "bad setting --max-value-bytes: must be at least 1"),
        ({"request_timeout_ms": "-5"}, {}, "bad setting --request-timeout-ms: must be at least"),
        (
            {"phi_convict_threshold": "0"},
            {},
            "bad setting --phi-convict-threshold: must be greater than 0",
        ),
        (
            {"heartbeat_interval": "-1"},
            {},
            "bad setting --heartbeat-interval: must be greater than 0",
        ),
        ({"hint_replay_batch": "0"}, {}, "bad setting --hint-replay-batch: must be at least 1"),
        ({"max_siblings": "0"}, {}, "bad setting --max-siblings: must be between 1 and 10000"),
        (
            {},
            {"RINGKV_MAX_SIBLINGS": "10001"},
            "bad setting RINGKV_MAX_SIBLINGS: must be between 1 and 10000, got 10001",
        ),
        ({"max_siblings": "many"}, {}, "bad setting --max-siblings: not an integer"),
        ({"host": "a b"}, {}, "bad setting --host: not a host name or address"),
        ({"bogus": "1"}, {}, "bad setting --bogus: unknown setting"),
    ],
)
def test_validation_names_the_setting_in_one_line(
    cli: dict[str, object], env: dict[str, str], expected: str
) -> None:
    assert _error(cli, env).startswith(expected)


def test_max_siblings_defaults_to_100_and_comes_from_flag_env_or_file(tmp_path: Path) -> None:
    assert load_config({"node_id": "n1"}, {}).max_siblings == 100
    assert load_config({"node_id": "n1", "max_siblings": "7"}, {}).max_siblings == 7
    env = {"RINGKV_MAX_SIBLINGS": "10000"}
    assert load_config({"node_id": "n1"}, env).max_siblings == 10000
    assert load_config({"node_id": "n1", "max_siblings": "1"}, env).max_siblings == 1
    path = _toml(tmp_path, 'node_id = "n1"\nmax_siblings = 42\n')
    assert load_config({"config": path}, {}).max_siblings == 42
    path = _toml(tmp_path, 'node_id = "n1"\nmax_siblings = 0\n')
    assert _error({"config": path}).startswith(f"bad setting max_siblings in {path}: must be")


def test_config_file_errors_name_key_and_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'node_id = "n1"\nhttp_port = "abc"\n')
    assert _error({"config": path}) == (f"bad setting http_port in {path}: not an integer: 'abc'")
    path = _toml(tmp_path, 'node_id = "n1"\nr = 7\n')
    assert _error({"config": path}).startswith(f"bad setting r in {path}: must be between 1")


def test_toml_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'node_id = "n1"\nhttp_prot = 8000\n')
    message = _error({"config": path})
    assert message.startswith(f"bad setting http_prot in {path}: unknown setting")
    assert "http_port" in message  # the suggestion


def test_toml_table_is_an_unknown_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'node_id = "n1"\n[storage_options]\nx = 1\n')
    assert "storage_options" in _error({"config": path})


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "node_id = \n")
    assert _error({"config": path}).startswith("bad setting --config: invalid TOML")
    missing = str(tmp_path / "missing.toml")
    assert _error({}, {"RINGKV_CONFIG": missing}).startswith(
        "bad setting RINGKV_CONFIG: cannot read"
    )


def test_cli_value_beats_bad_env_value() -> None:
    # The environment's bad value is never used, so it is not an error.
    config = load_config({"node_id": "n1", "http_port": "8001"}, {"RINGKV_HTTP_PORT": "x"})
    assert config.http_port == 8001


def test_bools_are_not_integers() -> None:
    assert "not an integer" in _error({"node_id": "n1", "n": True})


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="bad setting r: must be between 1 and n"):
        NodeConfig(node_id="n1", r=4)
    with pytest.raises(ConfigError, match="bad setting vnodes"):
        NodeConfig(node_id="n1", vnodes=5000)
    assert NodeConfig(node_id="n1", seeds=["a:1"]).seeds == ("a:1",)  # type: ignore[arg-type]


def test_to_args_round_trips() -> None:
    config = NodeConfig(
        node_id="n7", http_port=8007, rpc_port=9007, seeds=("h:1", "h:2"), cluster_secret="s"
    )
    parsed = dict(zip(config.to_args()[::2], config.to_args()[1::2], strict=True))
    cli = {k[2:].replace("-", "_"): v for k, v in parsed.items()}
    assert load_config(cli, {}) == config


def test_fast_test_config() -> None:
    config = fast_test_config("t1", http_port=18001, rpc_port=19001)
    assert config.node_id == "t1"
    assert config.storage == "memory"
    assert config.heartbeat_interval < 0.5
    assert config.http_port == 18001
    assert fast_test_config(storage="lmdb", data_dir="/tmp/x").storage == "lmdb"


def test_parse_hostport() -> None:
    assert parse_hostport("example.com:9001") == ("example.com", 9001)
    assert parse_hostport("[::1]:9001") == ("::1", 9001)
    for bad in ("", "host", ":1", "h:", "h:0", "[::1]9001"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


# ------------------------------------------------------------- internode authentication


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "node-a.example", "fe80::1"])
def test_a_non_loopback_host_without_a_secret_is_refused(host: str) -> None:
    message = _error({"node_id": "n1", "host": host})
    assert message.startswith("bad setting --cluster-secret: ")
    assert "--insecure" in message
    assert _error({"node_id": "n1"}, {"RINGKV_HOST": host}).startswith(
        "bad setting --cluster-secret: ")
    with pytest.raises(ConfigError, match="bad setting --cluster-secret"):
        NodeConfig(node_id="n1", host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LocalHost",
                                  "::ffff:127.0.0.1"])
def test_a_loopback_host_needs_no_secret(host: str) -> None:
    assert load_config({"node_id": "n1", "host": host}, {}).cluster_secret is None


def test_a_secret_or_insecure_allows_a_non_loopback_host() -> None:
    assert load_config({"node_id": "n1", "host": "0.0.0.0", "cluster_secret": "s"},
                       {}).cluster_secret == "s"
    assert load_config({"node_id": "n1"},
                       {"RINGKV_HOST": "0.0.0.0", "RINGKV_CLUSTER_SECRET": "s"}).host == "0.0.0.0"
    insecure = load_config({"node_id": "n1", "host": "0.0.0.0", "insecure": True}, {})
    assert insecure.insecure and insecure.cluster_secret is None
    assert load_config({"node_id": "n1"},
                       {"RINGKV_HOST": "0.0.0.0", "RINGKV_INSECURE": "1"}).insecure
    assert not load_config({"node_id": "n1"}, {}).insecure  # off by default
    assert NodeConfig(node_id="n1", host="0.0.0.0", insecure=True).insecure
    # an explicit "no" is not --insecure
    assert _error({"node_id": "n1"}, {"RINGKV_HOST": "0.0.0.0", "RINGKV_INSECURE": "0"}
                  ).startswith("bad setting --cluster-secret: ")


def test_the_secret_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  s3cret-from-file \n\n")
    by_flag = load_config({"node_id": "n1", "host": "0.0.0.0",
                           "cluster_secret_file": str(path)}, {})
    assert by_flag.cluster_secret == "s3cret-from-file"
    by_env = load_config({"node_id": "n1"}, {"RINGKV_HOST": "0.0.0.0",
                                             "RINGKV_CLUSTER_SECRET_FILE": str(path)})
    assert by_env.cluster_secret == "s3cret-from-file"
    toml = _toml(tmp_path, f'node_id = "n1"\ncluster_secret_file = "{path}"\n')
    assert load_config({"config": toml}, {}).cluster_secret == "s3cret-from-file"


def test_an_empty_unreadable_or_huge_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n\t\n")
    huge = tmp_path / "huge"
    huge.write_text("x" * 100_000)
    missing = tmp_path / "missing"
    for path, problem in ((empty, "is empty"), (missing, "cannot read"),
                          (huge, "larger than"), (tmp_path, "cannot read")):
        message = _error({"node_id": "n1", "cluster_secret_file": str(path)})
        assert message.startswith("bad setting --cluster-secret-file: "), message
        assert problem in message
        message = _error({"node_id": "n1"}, {"RINGKV_CLUSTER_SECRET_FILE": str(path)})
        assert message.startswith("bad setting RINGKV_CLUSTER_SECRET_FILE: "), message


def test_a_secret_and_a_secret_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    message = _error({"node_id": "n1", "cluster_secret": "s",
                      "cluster_secret_file": str(path)})
    assert message == ("bad setting --cluster-secret-file: give either --cluster-secret or"
                       " --cluster-secret-file, not both")
    message = _error({"node_id": "n1"}, {"RINGKV_CLUSTER_SECRET": "s",
                                         "RINGKV_CLUSTER_SECRET_FILE": str(path)})
    assert "RINGKV_CLUSTER_SECRET or RINGKV_CLUSTER_SECRET_FILE, not both" in message
    # an empty variable counts as unset, as everywhere
    assert load_config({"node_id": "n1"}, {"RINGKV_CLUSTER_SECRET": "",
                                           "RINGKV_CLUSTER_SECRET_FILE": str(path)}
                       ).cluster_secret == "from-file"
