"""`ringkv cluster status | leave | remove | lookup`: membership and the ring.

Job: show the members and their state as one node sees them (a table, or
``GET /cluster`` as JSON), ask a node to leave gracefully and follow its hand-over,
remove a node that is dead for good, and print a key's preference list. Every command
talks to one node through `ringkv.client.Client`; exit codes are those of
`ringkv.tools.exits`. `leave` and `remove` call admin endpoints: they send
`--admin-token` (`RINGKV_ADMIN_TOKEN`), and a refusal (401 / 403) is one line saying
what the node wants, exit 4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ringkv.tools.client_options import admin_token_option, connect, node_option
from ringkv.tools.exits import EXIT_ERROR, client_errors, fail

__all__ = ["cluster"]


@click.group("cluster")
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
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /cluster as JSON.")
def cluster_status(node: str, as_json: bool) -> None:
    """Show the members and their status, as one node sees them."""
    from rich.console import Console
    from rich.table import Table

    with client_errors(), connect(node) as kv:
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


@contextmanager
def admin_errors(node: str) -> Iterator[None]:
    """A 401 / 403 from an admin endpoint as one line saying what the node wants."""
    from ringkv.client import AuthError

    try:
        yield
    except AuthError as exc:
        if exc.status == 401:
            fail(f"{node} requires an admin token: give --admin-token or set"
                 f" RINGKV_ADMIN_TOKEN (401: {exc.message})", EXIT_ERROR)
        fail(f"{node} refused the admin request (403: {exc.message}); check --admin-token"
             " / RINGKV_ADMIN_TOKEN, or run the command on the node's own host", EXIT_ERROR)


@cluster.command("leave")
@node_option
@admin_token_option
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the node has handed over its ranges and left.")
@click.option("--timeout", default=600.0, show_default=True, metavar="SECONDS",
              help="How long --wait waits.")
def cluster_leave(node: str, admin_token: str | None, wait: bool, timeout: float) -> None:
    """Ask the node at --node to hand its ranges to their new owners, then leave."""
    from rich.console import Console

    with client_errors(), connect(node, admin_token) as kv:
        with admin_errors(node):
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
@node_option
@admin_token_option
def cluster_remove(node_id: str, node: str, admin_token: str | None) -> None:
    """Remove NODE_ID, a node that is dead for good; its ranges are re-replicated."""
    with client_errors(), connect(node, admin_token) as kv, admin_errors(node):
        kv.remove(node_id)
    click.echo(f"{node_id} removed; its ranges are being re-replicated from the survivors")


@cluster.command("lookup")
@click.argument("key")
@node_option
def cluster_lookup(key: str, node: str) -> None:
    """Print KEY's preference list (its N primary replicas, in ring order)."""
    with client_errors(), connect(node) as kv:
        nodes = kv.lookup(key)
    click.echo(" ".join(nodes))
