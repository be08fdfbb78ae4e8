"""`ringkv incr | counter | sadd | srem | smembers`: counters and sets (contract 5).

Job: the data-type commands, as thin shells over `ringkv.client.Client`:

    ringkv incr KEY [N] [--idempotency-key K]   add N (default 1; negative subtracts)
    ringkv counter KEY                           print the counter's value
    ringkv sadd KEY ELEM...                      add elements to a set
    ringkv srem KEY ELEM... [--context C]        remove elements from a set
    ringkv smembers KEY                          print the set, one element a line

Each takes `--node` (one URL or a comma-separated list to fail over between),
`--bucket`, the quorum and `--timeout` options that apply, and `--json` for a
machine-readable document on stdout.

* `incr` always sends an idempotency key: the one given, else a fresh random one, which
  `-v` prints and which an error line repeats when the increment may have been applied,
  so that running the command again with ``--idempotency-key K`` cannot count twice.
* `srem` without `--context` reads the set first and removes exactly what that read
  observed; elements it did not find are reported as not members and not sent.

Exit codes are those of `ringkv.tools.exits`: 1 when `counter` or `smembers` finds
nothing, 2 on usage errors (checked before anything is sent), 3 when a quorum was not
reached, 4 on other errors.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ringkv.tools.client_options import (
    bucket_option,
    connect,
    context_callback,
    json_option,
    key_argument,
    node_option,
    r_option,
    timeout_option,
    verbose_option,
    w_option,
)
from ringkv.tools.exits import EXIT_NOT_FOUND, JsonCommand, client_errors

__all__ = ["counter", "incr", "sadd", "smembers", "srem"]


def _amount(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value == 0 or abs(value) >= 2**53:
        raise click.BadParameter("must be a non-zero integer of magnitude below 2^53")
    return value


def _idempotency_key(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ringkv.client import check_idempotency_key

    if value is None:
        return None
    try:
        return check_idempotency_key(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _elements(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    from ringkv.client import elements_of

    try:
        return elements_of("elements", value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None


def _print_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


@contextmanager
def _retry_hint(idempotency_key: str) -> Iterator[None]:
    """An increment whose outcome is unknown: say how to retry it without counting twice."""
    from ringkv.client import QuorumError, TransportError

    hint = (f"; the increment may have been applied: to retry it safely, run the same"
            f" command with --idempotency-key {idempotency_key}")
    try:
        yield
    except QuorumError as exc:
        raise QuorumError(exc.acks, exc.required, exc.message + hint) from None
    except TransportError as exc:
        raise TransportError(f"{exc}{hint}") from None


@click.command("incr", cls=JsonCommand, context_settings={"ignore_unknown_options": True})
@key_argument
@click.argument("amount", metavar="[N]", type=int, default=1, required=False,
                callback=_amount)
@click.option(
    "--idempotency-key",
    default=None,
    metavar="K",
    callback=_idempotency_key,
    help="Applied at most once per key (1-128 printable ASCII). [a fresh random one]",
)
@node_option
@bucket_option
@w_option
@timeout_option
@click.option("-v", "--verbose", is_flag=True,
              help="Print the idempotency key to stderr as 'idempotency-key: ...'.")
@json_option
def incr(
    key: str,
    amount: int,
    idempotency_key: str | None,
    node: str,
    bucket: str | None,
    w: str | None,
    timeout: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Add N (default 1; a negative N subtracts) to the counter KEY.

    The increment carries an idempotency key, so retries never count twice: give one
    with --idempotency-key to retry an increment whose outcome you do not know.
    """
    token = idempotency_key or uuid.uuid4().hex
    if verbose:
        click.echo(f"idempotency-key: {token}", err=True)
    with client_errors(), _retry_hint(token), connect(node) as kv:
        kv.incr(key, amount, token, w=w, timeout=timeout, bucket=bucket)
    if as_json:
        _print_json({"key": key, "bucket": bucket or "default", "increment": amount,
                     "idempotency_key": token})


@click.command("counter", cls=JsonCommand)
@key_argument
@node_option
@bucket_option
@r_option
@timeout_option
@json_option
def counter(
    key: str, node: str, bucket: str | None, r: str | None, timeout: float | None, as_json: bool
) -> None:
    """Print the value of the counter KEY. Exit 1 when it was never incremented."""
    with client_errors(), connect(node) as kv:
        value = kv.counter(key, r=r, timeout=timeout, bucket=bucket)
    if as_json:
        _print_json({"key": key, "bucket": bucket or "default", "found": value is not None,
                     "value": value})
    elif value is not None:
        click.echo(str(value))
    if value is None:
        click.echo("not found", err=True)
        sys.exit(EXIT_NOT_FOUND)


@click.command("sadd", cls=JsonCommand)
@key_argument
@click.argument("elements", nargs=-1, required=True, callback=_elements)
@node_option
@bucket_option
@w_option
@timeout_option
@json_option
def sadd(
    key: str,
    elements: list[str],
    node: str,
    bucket: str | None,
    w: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Add ELEMENTS (strings of 1-1024 UTF-8 bytes) to the set KEY."""
    with client_errors(), connect(node) as kv:
        kv.sadd(key, *elements, w=w, timeout=timeout, bucket=bucket)
    if as_json:
        _print_json({"key": key, "bucket": bucket or "default", "added": elements})


@click.command("srem", cls=JsonCommand)
@key_argument
@click.argument("elements", nargs=-1, required=True, callback=_elements)
@click.option(
    "--context",
    default=None,
    metavar="CONTEXT",
    callback=context_callback,
    help="Context of an earlier read (smembers -v): remove what it observed."
    " [read the set first]",
)
@node_option
@bucket_option
@r_option
@w_option
@timeout_option
@json_option
def srem(
    key: str,
    elements: list[str],
    context: str | None,
    node: str,
    bucket: str | None,
    r: str | None,
    w: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Remove ELEMENTS from the set KEY.

    Without --context the set is read first (with --r) and the remove covers exactly
    what that read observed: an add concurrent with it survives (add wins), and
    elements the read did not find are reported as not members.
    """
    with client_errors(), connect(node) as kv:
        removed = kv.srem(key, *elements, context=context, r=r, w=w, timeout=timeout,
                          bucket=bucket)
    gone = set(removed)
    absent = [e for e in dict.fromkeys(elements) if e not in gone]
    if as_json:
        _print_json({"key": key, "bucket": bucket or "default", "removed": removed,
                     "not_members": absent})
    elif absent:
        click.echo("not members (nothing to remove): " + ", ".join(absent), err=True)


@click.command("smembers", cls=JsonCommand)
@key_argument
@node_option
@bucket_option
@r_option
@timeout_option
@verbose_option
@json_option
def smembers(
    key: str,
    node: str,
    bucket: str | None,
    r: str | None,
    timeout: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Print the elements of the set KEY, sorted, one a line (--json for elements
    holding line breaks). -v prints the context to remove with. Exit 1 when the set
    was never written."""
    with client_errors(), connect(node) as kv:
        result = kv.smembers(key, r=r, timeout=timeout, bucket=bucket)
    if as_json:
        _print_json({"key": key, "bucket": bucket or "default", "found": result.found,
                     "elements": result.elements, "context": result.context})
    else:
        for element in result.elements:
            click.echo(element)
    if verbose:
        click.echo(f"context: {result.context or ''}", err=True)
    if not result.found:
        click.echo("not found", err=True)
        sys.exit(EXIT_NOT_FOUND)
