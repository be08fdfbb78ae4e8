"""`ringkv serve` and `ringkv dev-cluster`: the commands that run nodes.

Job: `serve` runs one node in this process; its settings come from the command line,
the environment and a TOML file (`ringkv.core.config_loader`), one option per setting
of `NodeConfig`, each taken as text so that a bad value is reported as one line naming
the option (exit 2) instead of a click usage dump. The node server is imported only
once the configuration is valid. `dev-cluster` starts K such nodes as processes on
127.0.0.1 (`ringkv.tools.devcluster`) until Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ring.allocation import MAX_VNODES
from ringkv.core.config import ConfigError, cli_flag, env_var
from ringkv.core.config_loader import load_config
from ringkv.tools.exits import EXIT_ERROR, EXIT_USAGE, fail

__all__ = ["dev_cluster", "serve"]

F = TypeVar("F", bound=Callable[..., Any])

# (setting, metavar, help). Every value is taken as text and parsed by load_config, so
# a bad one is reported as one line naming the option instead of a click usage dump.
_SERVE_OPTIONS: list[tuple[str, str, str]] = [
    ("node_id", "ID", "Stable node identity, [A-Za-z0-9_.-]{1,64} (required)."),
    ("host", "HOST", "Address to bind both ports on. [127.0.0.1]"),
    ("advertise", "HOST", "Address peers and clients are told to use. [the bind host]"),
    ("http_port", "PORT", "Client HTTP API port. [8080]"),
    ("rpc_port", "PORT", "Internode RPC port. [9080]"),
    ("data_dir", "DIR", "Where the node persists everything. [./data/<node-id>]"),
    ("seeds", "HOST:PORT,...", "RPC addresses of nodes to join through; empty starts a cluster."),
    ("n", "N", "Replicas per key (a new cluster's setting). [3]"),
    ("r", "R", "Default read quorum. [2]"),
    ("w", "W", "Default write quorum. [2]"),
    ("vnodes", "V", "Virtual nodes (tokens) per node. [256]"),
    ("storage", "lmdb|memory", "Storage engine. [lmdb]"),
    ("cluster_secret", "SECRET", "Refuse internode traffic without this secret; prefer"
     " the environment or --cluster-secret-file, which other users cannot see. [none]"),
    ("admin_token", "TOKEN", "Bearer token the admin endpoints (leave, remove, /debug/)"
     " require; without one they answer loopback clients only. [none]"),
    ("anti_entropy_interval", "SECONDS", "Pause between Merkle exchanges per peer. [60]"),
    ("sync", "group|none", "fsync per group-commit batch, or leave it to the OS. [group]"),
    ("max_value_bytes", "BYTES", "Largest accepted value. [1048576]"),
    ("max_siblings", "COUNT", "Most versions one key may hold; a write past it gets 409. [100]"),
    ("map_size", "BYTES", "Most the LMDB map may grow to; writes past it get 507."
     " [17179869184]"),
    ("request_timeout_ms", "MS", "Coordinator timeout when a request gives none. [3000]"),
    ("heartbeat_interval", "SECONDS", "Seconds between gossip rounds. [0.5]"),
    ("phi_convict_threshold", "PHI", "Phi-accrual suspicion level that marks a peer down. [8]"),
    ("hint_replay_batch", "COUNT", "Hints sent per replay tick. [64]"),
    ("join_settle", "SECONDS", "A joiner's pause before fetching its ranges. [3]"),
    ("tombstone_grace", "SECONDS", "Age before a confirmed tombstone is compacted. [86400]"),
    ("log_level", "LEVEL", "debug, info, warning, error or critical. [info]"),
    ("conflict", "dvv|lww", "Keep concurrent writes as siblings, or last write wins. [dvv]"),
    ("inject_latency", "SPEC", "Experiments only (needs --experimental): delay each WARS leg,"
     " e.g. W=exp:10,A=exp:1,R=exp:1,S=exp:1 (ms). [off]"),
    ("max_http_connections", "COUNT", "Client connections served at once; more get 503."
     " [1024]"),
    ("http_header_timeout", "SECONDS", "Time a client has to send a request head. [10]"),
    ("http_body_timeout", "SECONDS", "Time a client has to send a request body. [30]"),
    ("http_keepalive_timeout", "SECONDS", "Idle keep-alive connections close after it. [75]"),
    ("tls_ca", "FILE", "Cluster CA certificate: with --tls-cert and --tls-key, mutual TLS"
     " between nodes (plaintext peers refused). [none]"),
    ("tls_cert", "FILE", "This node's certificate (`ringkv certs issue`). [none]"),
    ("tls_key", "FILE", "This node's private key. [none]"),
    ("http_tls", "off|on|mutual", "HTTPS on the client port with the same certificate;"
     " mutual also requires client certificates. [off]"),
    ("tokens_file", "FILE", "Client tokens with roles, one `token role [bucket,...]` per"
     " line; reloaded on SIGHUP. [none: no client authentication]"),
    ("max_memory", "BYTES", "Memory engine only: evict least recently used keys past it."
     " [0: no bound]"),
]


def _serve_options(fn: F) -> F:
    fn = click.option(
        "--cluster-secret-file",
        "cluster_secret_file",
        metavar="FILE",
        default=None,
        help="Read the cluster secret from FILE (surrounding whitespace stripped)."
        f" Env: {env_var('cluster_secret_file')}.",
    )(fn)
    fn = click.option(
        "--config",
        "config",
        metavar="FILE",
        default=None,
        help="TOML file with the same settings (node_id, http_port, ...)."
        f" Env: {env_var('config')}.",
    )(fn)
    for name, metavar, text in reversed(_SERVE_OPTIONS):
        fn = click.option(
            cli_flag(name),
            name,
            metavar=metavar,
            default=None,
            type=str,
            help=f"{text} Env: {env_var(name)}.",
        )(fn)
    return fn


@click.command("serve", context_settings={"max_content_width": 110})
@_serve_options
@click.option("--experimental", "experimental", is_flag=True, default=None,
              help="Allow experimental settings (--inject-latency)."
              f" Env: {env_var('experimental')}=1.")
@click.option("--insecure", "insecure", is_flag=True, default=None,
              help="Allow binding a non-loopback --host with no --cluster-secret."
              f" Env: {env_var('insecure')}=1.")
def serve(**options: str | None) -> None:
    """Run one node until SIGTERM or SIGINT.

    Precedence: command line, then environment (RINGKV_*), then the --config file,
    then defaults. Stopping is not leaving: a node restarted with the same --node-id
    and --data-dir comes back with its data and its place in the ring.
    """
    try:
        config = load_config(options)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    try:
        from ringkv.server.serve import serve as serve_node
    except ModuleNotFoundError as exc:
        if exc.name != "ringkv.server.serve":
            raise
        fail("the node server (ringkv.server.serve) is not installed", EXIT_ERROR)
    sys.exit(serve_node(config))


@click.command("dev-cluster")
@click.option(
    "--nodes",
    type=click.IntRange(1, 64),
    default=5,
    show_default=True,
    help="Number of nodes (n1..nK).",
)
@click.option(
    "--base-http-port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="HTTP port of n1; nI uses P+I-1.",
)
@click.option(
    "--base-rpc-port",
    type=click.IntRange(1, 65535),
    default=9001,
    show_default=True,
    help="RPC port of n1; nI uses Q+I-1.",
)
@click.option(
    "--data-dir",
    default="./data",
    show_default=True,
    help="Parent directory; node nI keeps its data and node.log in DIR/nI.",
)
@click.option(
    "--storage",
    type=click.Choice(["lmdb", "memory"]),
    default=None,
    help="Storage engine of every node. [node default]",
)
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Replicas per key.")
@click.option("--r", "r", type=click.IntRange(min=1), default=None, help="Default read quorum.")
@click.option("--w", "w", type=click.IntRange(min=1), default=None, help="Default write quorum.")
@click.option("--vnodes", type=click.IntRange(1, MAX_VNODES), default=None, help="Tokens per node.")
@click.option(
    "--sync", type=click.Choice(["group", "none"]), default=None, help="fsync policy of every node."
)
@click.option("--cluster-secret", default=None, metavar="SECRET", help="Shared internode secret.")
@click.option("--inject-latency", "inject_latency", default=None, metavar="SPEC",
              help="Experiments only: every node delays each WARS leg (needs --experimental).")
@click.option("--experimental", "experimental", is_flag=True, default=None,
              help="Pass --experimental to every node.")
@click.option("--tls", "tls", is_flag=True, default=None,
              help="Mutual TLS between the nodes and HTTPS for clients, with a CA and node"
              " certificates made in DATA-DIR/tls (kept for the next run); prints the CA"
              " that clients verify the nodes against (--ca).")
@click.option("--tokens-file", "tokens_file", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Client tokens every node requires (`token role [bucket,...]` a line;"
              " see ringkv serve --tokens-file).")
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for every node to be up and joined.",
)
def dev_cluster(**options: Any) -> None:
    """Start a whole local cluster (K processes on 127.0.0.1) until Ctrl-C.

    Restarting it on the same --data-dir brings the same cluster back. With --tls,
    clients reach it at https:// addresses with the printed CA (ringkv ... --ca FILE).
    """
    from ringkv.tools.devcluster import DevClusterSpec, run_dev_cluster

    startup_timeout = options.pop("startup_timeout")
    spec = DevClusterSpec(**options)
    sys.exit(run_dev_cluster(spec, startup_timeout=startup_timeout))
