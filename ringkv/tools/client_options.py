"""The options every client command shares, and the client they open.

Job: one definition of each option of the commands that talk to a cluster (`put`,
`get`, `delete`, `cluster ...`): `--node` (any node; it coordinates the request),
`--r` / `--w` (a quorum: 1..N, one, quorum or all), `--timeout`, `--context`, `-v`,
and `--admin-token` (`RINGKV_ADMIN_TOKEN`) for the commands calling admin endpoints.
Values are checked by the client library's own rules (`ringkv.client.quorum_param`,
`normalize_base_url`) while click parses, so a bad one is a usage error (exit 2)
before any request is sent.

The client library is imported only when a client command runs, not when the command
line is built: `ringkv serve` and `ringkv --help` do not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ringkv.client import Client

DEFAULT_NODE_URL = "http://127.0.0.1:8001"

F = TypeVar("F", bound=Callable[..., Any])


def connect(node: str, admin_token: str | None = None) -> Client:
    """A client of the node at `node` (a URL already checked by `--node`)."""
    from ringkv.client import Client

    return Client(node, admin_token=admin_token)


def _admin_token(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    token = (value or "").strip()
    if any(c in token for c in "\r\n\0"):
        raise click.BadParameter("must not contain line breaks or NUL")
    return token or None  # an empty RINGKV_ADMIN_TOKEN means none, as on the node


def admin_token_option(fn: F) -> F:
    return click.option(
        "--admin-token",
        default=None,
        envvar="RINGKV_ADMIN_TOKEN",
        show_envvar=True,
        metavar="TOKEN",
        callback=_admin_token,
        help="The node's admin token (sent as Authorization: Bearer); prefer the"
        " environment, which other users cannot see. [none: loopback only]",
    )(fn)


def quorum_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check an `--r` / `--w` value as the HTTP API will, while click parses it."""
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


def node_option(fn: F) -> F:
    return click.option(
        "--node",
        default=DEFAULT_NODE_URL,
        show_default=True,
        metavar="URL",
        callback=_node_url,
        help="Any node of the cluster (it coordinates the request).",
    )(fn)


def timeout_option(fn: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.001),
        default=None,
        metavar="SECONDS",
        help="Coordinator timeout for this request. [node default]",
    )(fn)


def r_option(fn: F) -> F:
    return click.option(
        "--r",
        "r",
        default=None,
        metavar="R",
        callback=quorum_callback,
        help="Read quorum: 1..N, one, quorum or all.",
    )(fn)


def w_option(fn: F) -> F:
    return click.option(
        "--w",
        "w",
        default=None,
        metavar="W",
        callback=quorum_callback,
        help="Write quorum: 1..N, one, quorum or all.",
    )(fn)


def unused_option(flag: str, name: str) -> Callable[[F], F]:
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
            callback=quorum_callback if name in ("r", "w") else None,
        )(fn)

    return decorate


def context_option(fn: F) -> F:
    return click.option(
        "--context",
        default=None,
        metavar="CONTEXT",
        help="Context from an earlier read (get -v): what this supersedes.",
    )(fn)


def verbose_option(fn: F) -> F:
    return click.option(
        "-v", "--verbose", is_flag=True, help="Print the context to stderr as 'context: ...'."
    )(fn)
