"""The options every client command shares, and the client they open.

Job: one definition of each option and argument of the commands that talk to a
cluster (`put`, `get`, `delete`, the counter, set, bucket and listing commands,
`cluster ...`): `--node` (any node, it coordinates the request; or a comma-separated
list of nodes to fail over between), `--r` / `--w` (a quorum: 1..N, one, quorum or
all), `--timeout`, `--context`, `--bucket`, `--if-match`, `--json`, `-v`, the KEY
argument, and `--admin-token` (`RINGKV_ADMIN_TOKEN`) for the commands calling admin
endpoints. Values are checked by the client library's own rules
(`ringkv.client.quorum_param`, `normalize_base_url`, `bucket_name`, `key_bytes`,
`etag_header`, `bearer_token`, `tls_context`) while click parses or before the first
request, so a bad one is a usage error (exit 2) before any request is sent.

Security options come with `--node`, so every command that talks to a node has them:
`--ca FILE` (`RINGKV_CA`; the cluster CA that ``https://`` nodes are verified against),
`--cert FILE` and `--key FILE` (`RINGKV_CERT`, `RINGKV_KEY`; a client certificate, for
nodes started with ``--http-tls mutual``) and `--token` (`RINGKV_TOKEN`; a client token,
sent on every request). They are not parameters of the commands: their callbacks keep
them in the click context's `meta`, where `connect` finds them, so a command gets them
by using `node_option` and `connect` and names none of them. The token is never
echoed: not in `--help` (no default shown), not in an error.

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


_SECURITY_KEY = "ringkv.client_security"  # ctx.meta: what --ca/--cert/--key/--token gave


def security() -> dict[str, str]:
    """The client security options of the running command: any of ``ca``, ``cert``,
    ``key`` and ``token`` that were given (on the command line or in the environment)."""
    ctx = click.get_current_context(silent=True)
    found: dict[str, str] = {} if ctx is None else ctx.meta.get(_SECURITY_KEY, {})
    return dict(found)


def connect(node: str, admin_token: str | None = None) -> Client:
    """A client of the node at `node` (as checked by `--node`: one URL, or several
    separated by commas, which the client fails over between), with the command's
    `--ca`, `--cert`, `--key` and `--token`. A CA or certificate file that cannot be
    used is a usage error naming it."""
    from ringkv.client import Client

    urls = node.split(",")
    options: dict[str, Any] = {"admin_token": admin_token, **security()}
    try:
        if len(urls) == 1:
            return Client(node, **options)
        return Client(urls=urls, **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


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
    """One URL, or several separated by commas: normalised, each once, comma-joined."""
    from ringkv.client import normalize_base_url

    urls: list[str] = []
    try:
        for item in value.split(","):
            if item.strip():
                url = normalize_base_url(item)
                if url not in urls:
                    urls.append(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not urls:
        raise click.BadParameter("give a node URL")
    return ",".join(urls)


def node_option(fn: F) -> F:
    """`--node`, and the security options every command talking to a node takes."""
    fn = security_options(fn)
    return click.option(
        "--node",
        default=DEFAULT_NODE_URL,
        show_default=True,
        metavar="URL[,URL...]",
        callback=_node_url,
        help="Any node of the cluster (it coordinates the request); several, separated"
        " by commas, to fail over to the next when one is down.",
    )(fn)


def _keep(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep a security option's value in ctx.meta for `connect` (see the docstring)."""
    if value is None:
        return
    # The parameter names are not the client's: a command's KEY argument is `key`.
    name = (param.name or "").removeprefix("security_")
    if name == "token":
        from ringkv.client import bearer_token

        try:
            token = bearer_token(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if token is None:
            return  # an empty RINGKV_TOKEN means none, as an empty RINGKV_ADMIN_TOKEN does
        value = token
    elif not value.strip():
        return
    ctx.meta.setdefault(_SECURITY_KEY, {})[name] = value


_FILE = click.Path(exists=True, dir_okay=False, readable=True)


def security_options(fn: F) -> F:
    """`--ca`, `--cert`, `--key` and `--token` (RINGKV_CA, _CERT, _KEY, _TOKEN)."""
    options = [
        ("--ca", "security_ca", "RINGKV_CA", _FILE, "FILE",
         "The cluster CA certificate (`ringkv certs init`): https:// nodes are verified"
         " against it."),
        ("--cert", "security_cert", "RINGKV_CERT", _FILE, "FILE",
         "A client certificate (`ringkv certs issue NAME --client`), for nodes started"
         " with --http-tls mutual."),
        ("--key", "security_key", "RINGKV_KEY", _FILE, "FILE",
         "The private key of --cert (unless the --cert file holds it)."),
        ("--token", "security_token", "RINGKV_TOKEN", None, "TOKEN",
         "A client token of the nodes' tokens file, sent as Authorization: Bearer on"
         " every request; prefer the environment, which other users cannot see."),
    ]
    for flag, name, envvar, kind, metavar, text in reversed(options):
        fn = click.option(
            flag,
            name,
            default=None,
            envvar=envvar,
            show_envvar=True,
            type=kind,
            metavar=metavar,
            expose_value=False,
            callback=_keep,
            help=text,
        )(fn)
    return fn


def _checked(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback applying a client-library check; its ValueError is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            check(value)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


def _key_bytes(value: str) -> bytes:
    from ringkv.client import key_bytes

    return key_bytes(value)


def _bucket_name(value: str) -> str:
    from ringkv.client import bucket_name

    return bucket_name(value)


def _header(name: str) -> Callable[[str], object]:
    def check(value: str) -> object:
        from ringkv.client.protocol import header_value

        return header_value(name, value)

    return check


def _etag(value: str) -> str:
    from ringkv.client import etag_header

    return etag_header(value)


context_callback = _checked(_header("context"))


def key_argument(fn: F) -> F:
    return click.argument("key", callback=_checked(_key_bytes))(fn)


def bucket_option(fn: F) -> F:
    return click.option(
        "--bucket",
        default=None,
        metavar="BUCKET",
        callback=_checked(_bucket_name),
        help="The bucket of the key ([A-Za-z0-9_.-]{1,64}). [default]",
    )(fn)


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON document (machine-readable)."
    )(fn)


def if_match_option(fn: F) -> F:
    return click.option(
        "--if-match",
        default=None,
        metavar="ETAG",
        callback=_checked(_etag),
        help="Write only if the key is still as the read that printed ETAG (get -v)"
        " saw it; else exit 4 (412) and nothing changes.",
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
        callback=context_callback,
        help="Context from an earlier read (get -v): what this supersedes.",
    )(fn)


def verbose_option(fn: F) -> F:
    return click.option(
        "-v", "--verbose", is_flag=True, help="Print the context to stderr as 'context: ...'."
    )(fn)
