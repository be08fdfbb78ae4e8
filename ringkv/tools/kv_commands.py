"""`ringkv put`, `ringkv get`, `ringkv delete`: one key at a time, through any node.

Job: the key-value commands of contract section 1, as thin shells over
`ringkv.client.Client`. Values are bytes: `put` takes them from its argument (UTF-8)
or from stdin, `get` writes them raw to stdout, siblings one after another under a
``--- sibling i of k (content-type) ---`` line. Contexts travel as text the user
copies from `get -v` into `--context`; without one, `put` supersedes nothing and
`delete` first reads the key to delete everything that read saw.

Exit codes are those of `ringkv.tools.exits` (1 when `get` finds nothing).
"""

from __future__ import annotations

import base64
import json
import sys

import click

from ringkv.tools.client_options import (
    connect,
    context_option,
    node_option,
    quorum_callback,
    r_option,
    timeout_option,
    unused_option,
    verbose_option,
    w_option,
)
from ringkv.tools.exits import EXIT_NOT_FOUND, client_errors

__all__ = ["delete", "get", "put"]


def _read_value(value: str | None) -> bytes:
    if value is None or value == "-":
        # open_file("-") is click's stream API: it honours CliRunner's isolation too.
        with click.open_file("-", "rb") as stdin:
            data: bytes = stdin.read()
        return data
    return value.encode("utf-8")


@click.command("put")
@click.argument("key")
@click.argument("value", required=False)
@node_option
@w_option
@context_option
@unused_option("--r", "r")
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
@timeout_option
@verbose_option
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
    body = _read_value(value)
    with client_errors(), connect(node) as kv:
        new_context = kv.put(key, body, context, w, ttl, content_type, timeout)
    if verbose:
        click.echo(f"context: {new_context}", err=True)


@click.command("get")
@click.argument("key")
@node_option
@r_option
@unused_option("--w", "w")
@unused_option("--context", "context")
@timeout_option
@verbose_option
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
    with client_errors(), connect(node) as kv:
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


@click.command("delete")
@click.argument("key")
@node_option
@w_option
@context_option
@click.option(
    "--r",
    "r",
    default=None,
    metavar="R",
    callback=quorum_callback,
    help="Read quorum of the read that finds the context (without --context).",
)
@timeout_option
@verbose_option
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
    with client_errors(), connect(node) as kv:
        if context is None:
            context = kv.get(key, r, timeout).context
            if verbose:
                click.echo(f"context: {context or ''}", err=True)
        kv.delete(key, context, w, timeout)
