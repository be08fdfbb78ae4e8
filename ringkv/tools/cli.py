"""The `ringkv` command line: run nodes, run a local cluster, and talk to a cluster.

Job: the user-facing edge of contract section 1.

    ringkv serve --node-id ID [...]           one node (blocks until SIGTERM/SIGINT)
    ringkv dev-cluster [--nodes K ...]        K local nodes as processes, until Ctrl-C
    ringkv put KEY [VALUE | -]                write (value from stdin when "-" or absent)
    ringkv get KEY                            read (siblings shown one after another)
    ringkv delete KEY                         delete what is currently visible
    ringkv cluster status | leave | remove | lookup    membership and ring
    ringkv sim --seed S | --seeds A:B         the deterministic simulation (sim/)

Client commands exit 0 on success, 1 when a key is not found, 2 on usage errors,
3 when a quorum was not reached (503), 4 on any other HTTP or connection error.
`serve` exits 2 on bad configuration, with one line naming the bad setting, before
anything else (the node runtime is imported only once the configuration is valid).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from ring.allocation import MAX_VNODES
from ringkv import __version__
from ringkv.core.config import ConfigError, cli_flag, env_var, load_config

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_QUORUM = 3
EXIT_ERROR = 4

DEFAULT_NODE_URL = "http://127.0.0.1:8001"

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ringkv")
def main() -> None:
    """ringkv: a Dynamo-style, eventually consistent, sharded key-value store."""


# ------------------------------------------------------------------------------- serve

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
    ("cluster_secret", "SECRET", "Refuse internode traffic without this secret. [none]"),
    ("anti_entropy_interval", "SECONDS", "Pause between Merkle exchanges per peer. [60]"),
    ("sync", "group|none", "fsync per group-commit batch, or leave it to the OS. [group]"),
    ("max_value_bytes", "BYTES", "Largest accepted value. [1048576]"),
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
]


def _serve_options(fn: F) -> F:
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


@main.command(context_settings={"max_content_width": 110})
@_serve_options
@click.option("--experimental", "experimental", is_flag=True, default=None,
              help="Allow experimental settings (--inject-latency)."
              f" Env: {env_var('experimental')}=1.")
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
        _fail("the node server (ringkv.server.serve) is not installed", EXIT_ERROR)
    sys.exit(serve_node(config))


# ------------------------------------------------------------------------- dev-cluster


@main.command("dev-cluster")
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
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for every node to be up and joined.",
)
def dev_cluster(**options: Any) -> None:
    """Start a whole local cluster (K processes on 127.0.0.1) until Ctrl-C.

    Restarting it on the same --data-dir brings the same cluster back.
    """
    from ringkv.tools.devcluster import DevClusterSpec, run_dev_cluster

    startup_timeout = options.pop("startup_timeout")
    spec = DevClusterSpec(**options)
    sys.exit(run_dev_cluster(spec, startup_timeout=startup_timeout))


# ------------------------------------------------------------------------- client side


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _quorum(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ringkv.client import quorum_param

    try:
        return quorum_param(param.name or "quorum", value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _node_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ringkv.client import normalize_base_url

    try:
        return normalize_base_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _node_option(fn: F) -> F:
    return click.option(
        "--node",
        default=DEFAULT_NODE_URL,
        show_default=True,
        metavar="URL",
        callback=_node_url,
        help="Any node of the cluster (it coordinates the request).",
    )(fn)


def _timeout_option(fn: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.001),
        default=None,
        metavar="SECONDS",
        help="Coordinator timeout for this request. [node default]",
    )(fn)


def _r_option(fn: F) -> F:
    return click.option(
        "--r",
        "r",
        default=None,
        metavar="R",
        callback=_quorum,
        help="Read quorum: 1..N, one, quorum or all.",
    )(fn)


def _w_option(fn: F) -> F:
    return click.option(
        "--w",
        "w",
        default=None,
        metavar="W",
        callback=_quorum,
        help="Write quorum: 1..N, one, quorum or all.",
    )(fn)


def _unused_option(flag: str, name: str) -> Callable[[F], F]:
    """An option the contract lists for every client command but this one has no use
    for (a read takes no --w or --context, a blind write no --r): accepted, hidden,
    validated, and ignored."""

    def decorate(fn: F) -> F:
        return click.option(
            flag,
            name,
            default=None,
            hidden=True,
            expose_value=False,
            callback=_quorum if name in ("r", "w") else None,
        )(fn)

    return decorate


def _context_option(fn: F) -> F:
    return click.option(
        "--context",
        default=None,
        metavar="CONTEXT",
        help="Context from an earlier read (get -v): what this supersedes.",
    )(fn)


def _verbose_option(fn: F) -> F:
    return click.option(
        "-v", "--verbose", is_flag=True, help="Print the context to stderr as 'context: ...'."
    )(fn)


@contextmanager
def _client_errors() -> Iterator[None]:
    """Turn client exceptions into one readable line and the documented exit code."""
    from ringkv.client import QuorumError, RingkvError

    try:
        yield
    except QuorumError as exc:
        if exc.acks is not None and exc.required is not None:
            _fail(
                f"quorum not reached: {exc.acks} of {exc.required} required replicas"
                f" answered ({exc.message})",
                EXIT_QUORUM,
            )
        _fail(f"service unavailable: {exc.message}", EXIT_QUORUM)
    except RingkvError as exc:
        _fail(str(exc), EXIT_ERROR)


def _read_value(value: str | None) -> bytes:
    if value is None or value == "-":
        # open_file("-") is click's stream API: it honours CliRunner's isolation too.
        with click.open_file("-", "rb") as stdin:
            data: bytes = stdin.read()
        return data
    return value.encode("utf-8")


@main.command()
@click.argument("key")
@click.argument("value", required=False)
@_node_option
@_w_option
@_context_option
@_unused_option("--r", "r")
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Expire the value after this many seconds.",
)
@click.option(
    "--content-type",
    default=None,
    metavar="TYPE",
    help="Stored with the value. [application/octet-stream]",
)
@_timeout_option
@_verbose_option
def put(
    key: str,
    value: str | None,
    node: str,
    w: str | None,
    context: str | None,
    ttl: int | None,
    content_type: str | None,
    timeout: float | None,
    verbose: bool,
) -> None:
    """Write VALUE (or stdin when VALUE is "-" or absent) under KEY.

    Without --context the write supersedes nothing: versions already stored stay as
    siblings. Pass the context printed by `ringkv get -v KEY` to replace them.
    """
    from ringkv.client import Client

    body = _read_value(value)
    with _client_errors(), Client(node) as kv:
        new_context = kv.put(key, body, context, w, ttl, content_type, timeout)
    if verbose:
        click.echo(f"context: {new_context}", err=True)


@main.command()
@click.argument("key")
@_node_option
@_r_option
@_unused_option("--w", "w")
@_unused_option("--context", "context")
@_timeout_option
@_verbose_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document: base64 values, content types, context.",
)
def get(
    key: str, node: str, r: str | None, timeout: float | None, verbose: bool, as_json: bool
) -> None:
    """Read KEY and print its value (raw bytes) to stdout.

    Concurrent versions (siblings) are printed one after another, each under a
    '--- sibling i of k (content-type) ---' line. Exit 1 when not found.
    """
    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        result = kv.get(key, r, timeout)
    out = click.open_file("-", "wb")
    if as_json:
        doc = {
            "found": result.found,
            "siblings": [
                {"value": base64.b64encode(v).decode("ascii"), "content_type": t}
                for v, t in zip(result.values, result.content_types, strict=True)
            ],
            "context": result.context,
        }
        out.write(json.dumps(doc, indent=2).encode("utf-8") + b"\n")
    elif len(result.values) == 1:
        out.write(result.values[0])
    else:
        count = len(result.values)
        for i, (v, t) in enumerate(zip(result.values, result.content_types, strict=True), 1):
            out.write(f"--- sibling {i} of {count} ({t}) ---\n".encode())
            out.write(v)
            if v and not v.endswith(b"\n"):
                out.write(b"\n")
    out.flush()
    if result.conflict and not as_json:
        click.echo(
            f"{len(result.values)} siblings: write with --context to replace them all",
            err=True,
        )
    if verbose:
        click.echo(f"context: {result.context or ''}", err=True)
    if not result.found:
        click.echo("not found", err=True)
        sys.exit(EXIT_NOT_FOUND)


@main.command()
@click.argument("key")
@_node_option
@_w_option
@_context_option
@click.option(
    "--r",
    "r",
    default=None,
    metavar="R",
    callback=_quorum,
    help="Read quorum of the read that finds the context (without --context).",
)
@_timeout_option
@_verbose_option
def delete(
    key: str,
    node: str,
    w: str | None,
    r: str | None,
    context: str | None,
    timeout: float | None,
    verbose: bool,
) -> None:
    """Delete KEY.

    Without --context, the key is read first and everything that read saw is
    deleted (a delete without a context would supersede nothing). Deleting a key
    that does not exist succeeds.
    """
    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        if context is None:
            context = kv.get(key, r, timeout).context
            if verbose:
                click.echo(f"context: {context or ''}", err=True)
        kv.delete(key, context, w, timeout)


# ----------------------------------------------------------------------------- cluster


@main.group()
def cluster() -> None:
    """Cluster membership and ring commands."""


_STATUS_STYLE = {
    "up": "green",
    "down": "red",
    "joining": "yellow",
    "leaving": "yellow",
    "left": "dim",
}


@cluster.command("status")
@_node_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /cluster as JSON.")
def cluster_status(node: str, as_json: bool) -> None:
    """Show the members and their status, as one node sees them."""
    from rich.console import Console
    from rich.table import Table

    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        doc = kv.cluster()
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    me = doc.get("node_id")
    table = Table(title=f"ringkv cluster, as seen by {me}")
    for column in ("node", "status", "share", "http", "rpc"):
        table.add_column(column, justify="right" if column == "share" else "left")
    members = sorted(doc.get("members") or [], key=lambda m: str(m.get("node_id")))
    for m in members:
        status = str(m.get("status", "?"))
        style = _STATUS_STYLE.get(status, "")
        name = str(m.get("node_id", "?")) + (" *" if m.get("node_id") == me else "")
        share = m.get("replica_share")
        table.add_row(
            name,
            f"[{style}]{status}[/{style}]" if style else status,
            f"{100 * float(share):.1f}%" if isinstance(share, (int, float)) and share else "-",
            str(m.get("http", "")),
            str(m.get("rpc", "")),
        )
    console = Console()
    console.print(table)
    counts: dict[str, int] = {}
    for m in members:
        counts[str(m.get("status"))] = counts.get(str(m.get("status")), 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    console.print(
        f"n={doc.get('n')} r={doc.get('r')} w={doc.get('w')}"
        f"  members: {len(members)} ({summary or 'none'})"
        "  share: fraction of keys each node replicates",
        highlight=False,
    )
    transfers = doc.get("transfers")
    if isinstance(transfers, dict):
        console.print(f"transfers on {me}: {_transfer_summary(transfers)}", highlight=False)


def _transfer_summary(t: dict[str, Any]) -> str:
    parts = []
    if t.get("syncing"):
        parts.append(f"fetching ranges from {', '.join(t.get('fetching_from') or []) or '-'}"
                     f" ({t.get('ranges_left')} of {t.get('ranges_total')} left)")
    if t.get("leave_waiting_for"):
        parts.append("leaving; waiting for " + ", ".join(t["leave_waiting_for"]))
    parts.append(f"received {t.get('keys_received', 0)} keys"
                 f" ({t.get('bytes_received', 0)} B),"
                 f" sent {t.get('keys_sent', 0)} keys ({t.get('bytes_sent', 0)} B)")
    return "; ".join(parts)


@cluster.command("leave")
@_node_option
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the node has handed over its ranges and left.")
@click.option("--timeout", default=600.0, show_default=True, metavar="SECONDS",
              help="How long --wait waits.")
def cluster_leave(node: str, wait: bool, timeout: float) -> None:
    """Ask the node at --node to hand its ranges to their new owners, then leave."""
    from rich.console import Console

    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        result = kv.leave()
        node_id = str(result.get("node_id"))
        if not wait:
            click.echo(f"{node_id} is {result.get('status')}")
            return
        console = Console(stderr=True)
        deadline = time.monotonic() + timeout
        with console.status(f"{node_id} is handing over its ranges") as progress:
            while True:
                doc = kv.cluster()
                me: dict[str, Any] = next((m for m in doc.get("members", [])
                           if m.get("node_id") == node_id), {})
                if me.get("status") == "left":
                    break
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"{node_id} has not left after {timeout:.0f} s: "
                        + _transfer_summary(doc.get("transfers") or {}))
                progress.update(f"{node_id} is {me.get('status')}: "
                                + _transfer_summary(doc.get("transfers") or {}))
                time.sleep(0.5)
    click.echo(f"{node_id} has left the cluster; it can be stopped")


@cluster.command("remove")
@click.argument("node_id")
@_node_option
def cluster_remove(node_id: str, node: str) -> None:
    """Remove NODE_ID, a node that is dead for good; its ranges are re-replicated."""
    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        kv.remove(node_id)
    click.echo(f"{node_id} removed; its ranges are being re-replicated from the survivors")


@cluster.command("lookup")
@click.argument("key")
@_node_option
def cluster_lookup(key: str, node: str) -> None:
    """Print KEY's preference list (its N primary replicas, in ring order)."""
    from ringkv.client import Client

    with _client_errors(), Client(node) as kv:
        nodes = kv.lookup(key)
    click.echo(" ".join(nodes))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="ringkv")


# --------------------------------------------------------------------------------- sim

from sim.cli import sim_command  # noqa: E402 - the simulation's command, added last

main.add_command(sim_command)

from ringkv.tools.experiment import experiment  # noqa: E402 - consistency experiments (PBS)

main.add_command(experiment)
