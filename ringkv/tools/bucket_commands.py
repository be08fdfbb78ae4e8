"""`ringkv keys | mget | bucket props | bucket set`: buckets, listing, multi-get.

Job: the commands of contract section 7, as thin shells over `ringkv.client.Client`:

    ringkv keys [--bucket B] [--limit L]        every live key, one a line
    ringkv mget KEY...                          several keys in one request
    ringkv bucket props B                       every property of bucket B
    ringkv bucket set B --r 1 --ttl 60 ...      set (or --unset) some of them

Each takes `--node` (one URL or a comma-separated list to fail over between) and
`--json` for a machine-readable document on stdout.

* `keys` follows the cursor to the end, printing as it goes. A key that is not
  printable UTF-8 text (not UTF-8, or holding a line break or another control
  character) is printed percent-encoded, as the API lists it; `--json` prints one JSON
  object a line with both forms, so nothing is ambiguous.
* `mget` prints each key's value under a ``--- KEY ---`` line (siblings each under
  their own), like `get`; it exits 1 when any key is not found and 3 when any key's
  read did not reach its quorum, after printing everything it got.

Exit codes are those of `ringkv.tools.exits`.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from ringkv.tools.client_options import (
    bucket_option,
    connect,
    json_option,
    node_option,
    r_option,
    timeout_option,
)
from ringkv.tools.exits import EXIT_NOT_FOUND, EXIT_QUORUM, JsonCommand, client_errors, fail

if TYPE_CHECKING:
    from ringkv.client import MGetResult

__all__ = ["bucket", "keys", "mget"]


def _bucket_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ringkv.client import bucket_name

    try:
        return bucket_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _key_text(key: str | bytes) -> str:
    """A listed key for a line of output: itself when printable text, else encoded."""
    if isinstance(key, str) and key.isprintable():
        return key
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return quote(raw, safe="")


# ------------------------------------------------------------------------------- keys


@click.command("keys", cls=JsonCommand)
@node_option
@click.option(
    "--bucket",
    default="default",
    show_default=True,
    metavar="BUCKET",
    callback=_bucket_argument,
    help="The bucket to list.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    metavar="L",
    help="Keys asked for in each request (a page); every key is listed.",
)
@r_option
@timeout_option
@json_option
def keys(
    node: str, bucket: str, limit: int, r: str | None, timeout: float | None, as_json: bool
) -> None:
    """List every live key of a bucket, once each, one a line."""
    with client_errors(), connect(node) as kv:
        for key in kv.keys(bucket, limit, r=r, timeout=timeout):
            raw = key.encode("utf-8") if isinstance(key, str) else key
            if as_json:
                text = key if isinstance(key, str) else None
                click.echo(json.dumps({"key": text, "encoded": quote(raw, safe="")},
                                      ensure_ascii=False))
            else:
                click.echo(_key_text(key))


# ------------------------------------------------------------------------------- mget


@click.command("mget", cls=JsonCommand)
@click.argument("keys_", metavar="KEY...", nargs=-1, required=True)
@node_option
@bucket_option
@r_option
@timeout_option
@json_option
def mget(
    keys_: tuple[str, ...],
    node: str,
    bucket: str | None,
    r: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Read up to 100 KEYs of one bucket in one request.

    Each value is printed raw under a '--- KEY ---' line (siblings under
    '--- KEY (sibling i of k) ---'). Exit 1 when a key is not found, 3 when a key's
    read did not reach its quorum.
    """
    from ringkv.client import key_bytes

    if len(keys_) > 100:
        raise click.UsageError(f"mget takes at most 100 keys, got {len(keys_)}")
    for k in keys_:
        try:
            key_bytes(k)
        except ValueError as exc:
            raise click.UsageError(f"bad key {k!r}: {exc}") from None
    with client_errors(), connect(node) as kv:
        results: list[MGetResult] = kv.mget(list(keys_), bucket, r, timeout)
    if as_json:
        click.echo(json.dumps({"bucket": bucket or "default",
                               "results": [_result_doc(res) for res in results]},
                              indent=2, ensure_ascii=False))
    else:
        _print_results(results)
    failed = [_key_text(res.key) for res in results if res.status == 503]
    missing = [_key_text(res.key) for res in results if res.status == 404]
    if failed:
        if as_json:  # the failures are in the document already: one document, not two
            click.echo("error: quorum not reached for " + ", ".join(failed), err=True)
            sys.exit(EXIT_QUORUM)
        fail("quorum not reached for " + ", ".join(failed), EXIT_QUORUM)
    if missing:
        click.echo("not found: " + ", ".join(missing), err=True)
        sys.exit(EXIT_NOT_FOUND)


def _result_doc(res: MGetResult) -> dict[str, Any]:
    return {
        "key": res.key if isinstance(res.key, str) else _key_text(res.key),
        "status": res.status,
        "found": res.status in (200, 300),
        "values": [base64.b64encode(v).decode("ascii") for v in res.values],
        "content_types": res.content_types,
        "context": res.context,
        "etag": res.etag,
        "error": res.error,
    }


def _print_results(results: list[MGetResult]) -> None:
    out = click.open_file("-", "wb")
    for res in results:
        name = _key_text(res.key)
        if res.status == 404:
            out.write(f"--- {name} (not found) ---\n".encode())
            continue
        if res.status == 503:
            out.write(f"--- {name} (quorum not reached) ---\n".encode())
            continue
        count = len(res.values)
        for i, value in enumerate(res.values, 1):
            label = f" (sibling {i} of {count})" if count > 1 else ""
            out.write(f"--- {name}{label} ---\n".encode())
            out.write(value)
            if not value.endswith(b"\n"):
                out.write(b"\n")
    out.flush()


# ----------------------------------------------------------------------------- bucket


@click.group("bucket")
def bucket() -> None:
    """Bucket properties: default quorums, TTL, conflict mode, sibling bound."""


@bucket.command("props", cls=JsonCommand)
@click.argument("name", metavar="BUCKET", callback=_bucket_argument)
@node_option
@json_option
def bucket_props(name: str, node: str, as_json: bool) -> None:
    """Print every property of BUCKET (the defaults for one never configured)."""
    with client_errors(), connect(node) as kv:
        props = kv.bucket_props(name)
    if as_json:
        click.echo(json.dumps(props, indent=2, sort_keys=True))
        return
    for prop, value in props.items():
        click.echo(f"{prop}: {'none' if value is None else value}")


_PROPS = ("r", "w", "ttl", "conflict", "max_siblings")


@bucket.command("set", cls=JsonCommand)
@click.argument("name", metavar="BUCKET", callback=_bucket_argument)
@node_option
@click.option("--r", "r", type=click.IntRange(min=1), default=None, metavar="R",
              help="Default read quorum of the bucket's requests (1..N).")
@click.option("--w", "w", type=click.IntRange(min=1), default=None, metavar="W",
              help="Default write quorum of the bucket's requests (1..N).")
@click.option("--ttl", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Default time to live of writes that give none.")
@click.option("--conflict", type=click.Choice(["siblings", "lww"]), default=None,
              help="Keep concurrent writes as siblings, or the last writer's only.")
@click.option("--max-siblings", type=click.IntRange(min=1), default=None, metavar="N",
              help="Most versions a key of the bucket may hold.")
@click.option("--unset", "unset", multiple=True, type=click.Choice(_PROPS),
              help="Clear a property back to the cluster's default (repeatable).")
@json_option
def bucket_set(
    name: str,
    node: str,
    r: int | None,
    w: int | None,
    ttl: int | None,
    conflict: str | None,
    max_siblings: int | None,
    unset: tuple[str, ...],
    as_json: bool,
) -> None:
    """Set some properties of BUCKET; the others keep their values. Every node has
    them within seconds; a request's own --r / --w still override them."""
    given = {"r": r, "w": w, "ttl": ttl, "conflict": conflict, "max_siblings": max_siblings}
    changes: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    both = sorted(set(changes) & set(unset))
    if both:
        raise click.UsageError(f"{', '.join(both)}: both set and --unset")
    changes.update(dict.fromkeys(unset))
    if not changes:
        raise click.UsageError("give at least one of --r, --w, --ttl, --conflict,"
                               " --max-siblings, --unset")
    with client_errors(), connect(node) as kv:
        kv.set_bucket_props(name, **changes)
    if as_json:
        click.echo(json.dumps({"bucket": name, "set": changes}, indent=2, sort_keys=True))

