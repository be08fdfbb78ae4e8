"""What `Client` and `AsyncClient` share about httpx: node URLs, TLS, tokens, failures.

Job: the few httpx-specific pieces both clients need, written once -- checking the
node URLs a client is given, the TLS context of ``https://`` nodes (`tls_context`:
the cluster CA to verify them against, and the client certificate a node started
with ``--http-tls mutual`` asks for), checking a bearer token, turning an
`HttpRequest` into httpx's arguments (with the client token, see
``ringkv.client.protocol.authorized``) and httpx's answer into an `HttpResponse`,
telling how an attempt failed (``ringkv.client.failover.Failure``) and naming the
failure in a `TransportError` (`describe_failure`, which ``ringkv backup`` uses too).
The decision of what to do about a failure is ``ringkv.client.failover``'s, and the
loop that follows it ``ringkv.client.runner``'s.

Invariants: nothing of httpx leaks out of the clients: an httpx error becomes a
`TransportError` here (`gave_up`); a failure is `Failure.UNDELIVERED` only when no
connection carried the request (refused, unresolvable, connect or pool timeout, a TLS
handshake that failed), so a write is never sent twice on a guess. A TLS failure is
named for what the user can do about it (no CA given, a certificate not for this
address, a node asking for a client certificate, a node that speaks no TLS). A token
is never part of an error message: a bad one is described, not quoted.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from ringkv.client.errors import TransportError
from ringkv.client.failover import Failure, Walk
from ringkv.client.protocol import HttpRequest, HttpResponse, authorized

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "bearer_token",
    "describe_failure",
    "failure_of",
    "gave_up",
    "new_idempotency_key",
    "node_urls",
    "normalize_base_url",
    "request_args",
    "tls_context",
    "to_response",
]

DEFAULT_URL = "http://127.0.0.1:8001"
DEFAULT_TIMEOUT = 10.0  # seconds, for a whole HTTP exchange when no timeout is given


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"node URL must be http:// or https://, got {base_url!r}")
    return url


def node_urls(base_url: str | None, urls: Sequence[str] | None) -> list[str]:
    """The distinct, normalised node URLs of a client given `base_url` or `urls`."""
    if base_url is not None and urls is not None:
        raise ValueError("give base_url or urls, not both")
    if urls is None:
        return [normalize_base_url(base_url or DEFAULT_URL)]
    if isinstance(urls, str):
        raise TypeError("urls must be a list of URLs, not one str")
    out: list[str] = []
    for url in urls:
        normal = normalize_base_url(url)
        if normal not in out:
            out.append(normal)
    if not out:
        raise ValueError("urls must name at least one node")
    return out


PathArg = str | os.PathLike[str]
MAX_TOKEN_CHARS = 4096  # a bearer token longer than this is a mistake, not a token


def _path(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path (str or os.PathLike)")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be a non-empty path")
    return path


def tls_context(ca: PathArg | None = None, cert: PathArg | None = None,
                key: PathArg | None = None) -> ssl.SSLContext | None:
    """The context ``https://`` nodes are reached with, or None when no file is given
    (then httpx verifies nodes against its default roots, as before).

    `ca`: the PEM file of the cluster CA (``ringkv certs init``); nodes are verified
    against it alone, host name included (a node certificate names ``localhost``,
    127.0.0.1 and every ``--host`` it was issued for). Without it, the system's roots.
    `cert` and `key`: the client certificate and its key (``ringkv certs issue NAME
    --client``), which a node started with ``--http-tls mutual`` requires; `key` may
    be left out when `cert` holds both. A file that cannot be read or used is a
    ValueError naming it.
    """
    if ca is None and cert is None and key is None:
        return None
    if key is not None and cert is None:
        raise ValueError("key needs cert: give the client certificate too")
    ca_path = None if ca is None else _path("ca", ca)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use the CA file {ca_path}: {_reason(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        cert_path = _path("cert", cert)
        key_path = None if key is None else _path("key", key)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            what = cert_path if key_path is None else f"{cert_path} and {key_path}"
            raise ValueError(f"cannot use the client certificate {what}: {_reason(exc)}"
                             ) from None
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def bearer_token(token: str | None, name: str = "token") -> str | None:
    """`token` checked for an ``Authorization: Bearer`` header; None for none or blank.

    A client token is visible ASCII without spaces (RFC 6750's token68, and what a
    node's tokens file holds). An admin token (`name` ``admin_token``) is whatever the
    node was given, so only control characters, which would break the header, are
    refused. The error says what is wrong with a token, never what it is.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"{name} must be a str, not {type(token).__name__}")
    token = token.strip()
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"{name} is longer than {MAX_TOKEN_CHARS} characters")
    if any(c < " " or c == "\x7f" for c in token):
        raise ValueError(f"{name} must not contain line breaks or control characters")
    if name != "admin_token" and not all("\x21" <= c <= "\x7e" for c in token):
        raise ValueError(f"{name} must be visible ASCII characters, without spaces")
    return token


def request_args(req: HttpRequest, token: str | None = None) -> dict[str, Any]:
    """httpx's ``request`` arguments for `req` (sent to a client's own base URL),
    carrying `token` as ``Authorization: Bearer`` unless `req` has its own (an admin
    request's)."""
    req = authorized(req, token)
    return {
        "method": req.method,
        "url": req.path,
        "params": list(req.params) or None,
        "headers": list(req.headers),
        "content": req.body,
        "timeout": req.timeout if req.timeout is not None else httpx.USE_CLIENT_DEFAULT,
    }


def to_response(resp: httpx.Response) -> HttpResponse:
    return HttpResponse(resp.status_code, resp.headers, resp.content)


def failure_of(exc: httpx.HTTPError) -> Failure:
    """Whether the request may have reached the node before `exc`."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.UNDELIVERED
    return Failure.LOST


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an httpx error (httpx and httpcore chain it as the cause)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_hint(url: str, exc: httpx.HTTPError) -> str | None:
    """What went wrong with TLS, in terms of what to do about it; None if not TLS."""
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or cause.reason or "not trusted"
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            return (f"the TLS certificate of {url} is not for this address ({why}):"
                    " reach the node by a name its certificate holds, or issue it with"
                    " `ringkv certs issue --host`")
        return (f"cannot verify the TLS certificate of {url} ({why}): give the cluster's"
                " CA certificate (ca=..., --ca or RINGKV_CA)")
    text = f"{cause.reason if cause is not None else ''} {exc}".upper()
    if "CERTIFICATE_REQUIRED" in text or "CERTIFICATE REQUIRED" in text:
        return (f"{url} requires a client certificate of its CA: give cert= and key="
                " (--cert and --key, RINGKV_CERT and RINGKV_KEY)")
    if cause is not None and cause.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                              "PACKET_LENGTH_TOO_LONG"):
        return f"{url} does not speak TLS: is it an http:// node?"
    if cause is not None:
        return f"TLS with {url} failed: {cause.reason or cause}"
    return None


def describe_failure(url: str, exc: httpx.HTTPError) -> str:
    """One line saying why a request to `url` failed with `exc`, in terms of what to do
    about it (a TLS failure names the option that fixes it). Names no token."""
    hint = _tls_hint(url, exc) if url.startswith("https://") else None
    if hint is not None:
        return hint
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out waiting for {url} ({detail})"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        # A node hangs up unanswered on a plaintext request to its HTTPS port, and
        # (TLS 1.3 checks the client's certificate after the client has sent) on a
        # client with no certificate when it requires one.
        hint = ("if the node serves HTTPS, use an https:// URL" if url.startswith("http:")
                else "if the node requires a client certificate (--http-tls mutual),"
                " give cert= and key= (--cert and --key)")
        return f"cannot reach {url}: {detail} ({hint})"
    return f"cannot reach {url}: {detail}"


def gave_up(walk: Walk, exc: httpx.HTTPError) -> TransportError:
    """The error of the last attempt of `walk`, saying how many were made when several."""
    message = describe_failure(walk.url, exc)
    if walk.attempts > 1:
        message += f" (after {walk.attempts} attempts on {walk.nodes_tried} node"
        message += "s)" if walk.nodes_tried > 1 else ")"
    return TransportError(message)


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key`` for one counter increment (and its own resends)."""
    return uuid.uuid4().hex
