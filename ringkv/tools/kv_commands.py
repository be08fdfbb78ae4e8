"""`ringkv put`, `ringkv get`, `ringkv delete`: one key at a time, through any node.

Job: the key-value commands of contract section 1, as thin shells over
`ringkv.client.Client`. Values are bytes: `put` takes them from its argument (UTF-8)
or from stdin, `get` writes them raw to stdout, siblings one after another under a
``--- sibling i of k (content-type) ---`` line. Contexts travel as text the user
copies from `get -v` into `--context`; without one, `put` supersedes nothing and
`delete` first reads the key to delete everything that read saw. `--bucket` addresses
a key of another bucket; `--if-match ETAG` (the ETag `get -v` prints) and
`--if-none-match` make a write conditional (contract 6).

`--json` prints one JSON document on stdout instead (failures too: see
`ringkv.tools.exits`). `get`'s holds every sibling as ``{"value": <base64>, "text":
<the value as text, or null>, "content_type": ...}``: ``value`` is always the exact
bytes in base64 (as before, and as the HTTP API's JSON has them); ``text`` is the same
value decoded, when it is valid UTF-8, so a script reading text needs no decoding.
Then ``found``, ``conflict`` (more than one sibling), ``context`` and ``etag``. `put`'s
holds the new context, `delete`'s the context or ETag the delete covered.

Exit codes are those of `ringkv.tools.exits` (1 when `get` finds nothing; a failed
precondition, 412, is an HTTP error: 4, with a line saying nothing was written).
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ringkv.tools.client_options import (
    bucket_option,
    connect,
    context_option,
    if_match_option,
    json_option,
    key_argument,
    node_option,
    quorum_callback,
    r_option,
    timeout_option,
    unused_option,
    verbose_option,
    w_option,
)
from ringkv.tools.exits import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    JsonCommand,
    client_errors,
    fail,
    print_json,
)

__all__ = ["delete", "get", "put"]


def _read_value(value: str | None) -> bytes:
    if value is None or value == "-":
        # open_file("-") is click's stream API: it honours CliRunner's isolation too.
        with click.open_file("-", "rb") as stdin:
            data: bytes = stdin.read()
        return data
    return value.encode("utf-8")


@contextmanager
def precondition_errors(key: str) -> Iterator[None]:
    """A 412 as one line saying that the key changed and nothing was written."""
    from ringkv.client import PreconditionFailedError

    try:
        yield
    except PreconditionFailedError as exc:
        now = f" (its ETag is now {exc.etag})" if exc.etag else ""
        fail(f"precondition failed: {key!r} is not as expected{now}; nothing was written"
             f" (412: {exc.message})", EXIT_ERROR, "precondition_failed", status=412,
             etag=exc.etag)


def _text(value: bytes) -> str | None:
    """The value as text when it is valid UTF-8, else None."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


@click.command("put", cls=JsonCommand)
@key_argument
@click.argument("value", required=False)
@node_option
@bucket_option
@w_option
@context_option
@if_match_option
@click.option(
    "--if-none-match",
    is_flag=True,
    help="Write only if the key has no live value; else exit 4 (412), nothing changes.",
)
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
@json_option
def put(
    key: str,
    value: str | None,
    node: str,
    bucket: str | None,
    w: str | None,
    context: str | None,
    if_match: str | None,
    if_none_match: bool,
    ttl: int | None,
    content_type: str | None,
    timeout: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Write VALUE (or stdin when VALUE is "-" or absent) under KEY.

    Without --context the write supersedes nothing: versions already stored stay as
    siblings. Pass the context printed by `ringkv get -v KEY` to replace them, or its
    ETag as --if-match to replace them only if nothing changed since (best effort).
    """
    if if_match is not None and if_none_match:
        raise click.UsageError("give --if-match or --if-none-match, not both")
    body = _read_value(value)
    with client_errors(), precondition_errors(key), connect(node) as kv:
        new_context = kv.put(key, body, context, w, ttl, content_type, timeout,
                             bucket=bucket, if_match=if_match, if_none_match=if_none_match)
    if verbose:
        click.echo(f"context: {new_context}", err=True)
    if as_json:
        print_json({"key": key, "bucket": bucket or "default", "written": True,
                    "bytes": len(body), "content_type": content_type,
                    "context": new_context or None})


def _write_values(values: list[bytes], content_types: list[str]) -> None:
    """One value raw; several each under a ``--- sibling i of k (type) ---`` line."""
    out = click.open_file("-", "wb")
    if len(values) == 1:
        out.write(values[0])
    else:
        count = len(values)
        for i, (v, t) in enumerate(zip(values, content_types, strict=True), 1):
            out.write(f"--- sibling {i} of {count} ({t}) ---\n".encode())
            out.write(v)
            if v and not v.endswith(b"\n"):
                out.write(b"\n")
    out.flush()


@click.command("get", cls=JsonCommand)
@key_argument
@node_option
@bucket_option
@r_option
@unused_option("--w", "w")
@unused_option("--context", "context")
@timeout_option
@verbose_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document: each sibling's value (base64, and as text when it is"
    " UTF-8) and content type, the context and the ETag.",
)
def get(
    key: str,
    node: str,
    bucket: str | None,
    r: str | None,
    timeout: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Read KEY and print its value (raw bytes) to stdout.

    Concurrent versions (siblings) are printed one after another, each under a
    '--- sibling i of k (content-type) ---' line. -v prints the context and the
    ETag (for put/delete --if-match) to stderr. Exit 1 when not found.
    """
    with client_errors(), connect(node) as kv:
        result = kv.get(key, r, timeout, bucket=bucket)
    if as_json:
        print_json({
            "key": key,
            "bucket": bucket or "default",
            "found": result.found,
            "conflict": result.conflict,
            "siblings": [
                {"value": base64.b64encode(v).decode("ascii"), "text": _text(v),
                 "content_type": t}
                for v, t in zip(result.values, result.content_types, strict=True)
            ],
            "context": result.context,
            "etag": result.etag,
        })
    else:
        _write_values(result.values, result.content_types)
    if result.conflict and not as_json:
        click.echo(
            f"{len(result.values)} siblings: write with --context to replace them all",
            err=True,
        )
    if verbose:
        click.echo(f"context: {result.context or ''}", err=True)
        if result.etag:
            click.echo(f"etag: {result.etag}", err=True)
    if not result.found:
        click.echo("not found", err=True)
        sys.exit(EXIT_NOT_FOUND)


@click.command("delete", cls=JsonCommand)
@key_argument
@node_option
@bucket_option
@w_option
@context_option
@if_match_option
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
@json_option
def delete(
    key: str,
    node: str,
    bucket: str | None,
    w: str | None,
    r: str | None,
    context: str | None,
    if_match: str | None,
    timeout: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Delete KEY.

    Without --context, the key is read first and everything that read saw is
    deleted (a delete without a context would supersede nothing). With --if-match
    ETAG, nothing is read first: the delete covers exactly the versions ETAG named,
    if the key is still as they were (else exit 4, 412). Deleting a key that does
    not exist succeeds.
    """
    with client_errors(), precondition_errors(key), connect(node) as kv:
        if context is None and if_match is None:
            context = kv.get(key, r, timeout, bucket=bucket).context
            if verbose:
                click.echo(f"context: {context or ''}", err=True)
        kv.delete(key, context, w, timeout, bucket=bucket, if_match=if_match)
    if as_json:
        print_json({"key": key, "bucket": bucket or "default", "deleted": True,
                    "context": context, "if_match": if_match})
