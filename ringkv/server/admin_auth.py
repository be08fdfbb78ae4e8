"""Who may call the admin endpoints (contract section 4).

Job: guard `POST /cluster/leave`, `POST /cluster/remove/{node_id}` and everything under
`/debug/`. With an admin token configured a request needs ``Authorization: Bearer
<token>``: none (or another scheme) is `401` with ``WWW-Authenticate: Bearer``, a wrong
token is `403`. With no token configured only a client whose connection comes from a
loopback address (127.0.0.0/8, ``::1``, or either mapped into IPv6) is answered; any
other gets `403`.

With client tokens configured (`ringkv.server.access`) the admin endpoints need a token
whose role is `admin`, the contract's admin token among them; this guard defers to it.

Invariants: the token is compared in constant time on bytes and never appears in a
response or a log line. The client's address is the peer of the TCP connection itself:
no header (``X-Forwarded-For``, ``Forwarded``) is trusted, since any client can send one.
Refusals are JSON ``{"error": ...}`` bodies like every other error of the API.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ringkv.server.access import Access

__all__ = ["AdminGuard", "is_loopback_peer"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REALM = 'Bearer realm="ringkv admin"'


def is_loopback_peer(request: web.Request) -> bool:
    """True when the request's connection comes from a loopback address."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple | list) or not peer or not isinstance(peer[0], str):
        return False  # closed, or not an IP socket: nothing proves it is local
    host = peer[0].split("%", 1)[0]  # an IPv6 zone id (fe80::1%eth0) is no part of it
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports 127.0.0.1 this way
    return address.is_loopback


def _token_bytes(text: str) -> bytes:
    # Header values arrive as str; "surrogatepass" maps every str to distinct bytes, so
    # no two different tokens compare equal and no header makes the encoding fail.
    return text.encode("utf-8", "surrogatepass")


class AdminGuard:
    """Checks one request against the node's admin policy; `protect` wraps a handler."""

    __slots__ = ("_token", "_access")

    def __init__(self, token: str | None, access: Access | None = None) -> None:
        self._token = _token_bytes(token) if token else None
        self._access = access

    def refusal(self, request: web.Request) -> web.Response | None:
        """The answer that refuses `request`, or None when it may proceed."""
        if self._access is not None and self._access.enabled:
            return self._access.refusal(request)  # client tokens: an admin token's role
        if self._token is None:
            if is_loopback_peer(request):
                return None
            return web.json_response(
                {"error": "admin endpoints answer loopback clients only when the node has"
                          " no admin token (--admin-token, RINGKV_ADMIN_TOKEN)"},
                status=403)
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return web.json_response(
                {"error": "admin token required: send Authorization: Bearer <token>"},
                status=401, headers={"WWW-Authenticate": _REALM})
        if not hmac.compare_digest(_token_bytes(given), self._token):
            return web.json_response({"error": "admin token rejected"}, status=403)
        return None

    def protect(self, handler: Handler) -> Handler:
        """`handler`, answered only for requests the policy admits."""

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = self.refusal(request)
            if refused is not None:
                return refused
            return await handler(request)

        return guarded
