"""The admin endpoints' credentials (contract section 4), through `make_app`'s own routes.

With an admin token: no (or a non-Bearer) Authorization is 401 with WWW-Authenticate,
a wrong token 403, the right one reaches the handler. With none: a loopback client is
answered, any other gets 403, whatever X-Forwarded-For claims. The runtime is a stub
(the check sits in front of it), with a real `NodeConfig`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from ringkv.core.config import fast_test_config
from ringkv.server.access import Access
from ringkv.server.http_api import make_app

TOKEN = "s3cret-Token_value"

# Every admin route make_app serves, with a request that reaches its handler.
ADMIN_REQUESTS = [
    ("POST", "/cluster/leave"),
    ("POST", "/cluster/remove/n2"),
    ("GET", "/debug/local/kv/k"),
    ("GET", "/debug/latency"),
]


class _Members:
    def get(self, node_id: str) -> None:
        return None

    def __contains__(self, node_id: object) -> bool:
        return node_id == "n2"


class _Store:
    def read_merged(self, token: int, key: bytes) -> None:
        return None


class _Node:
    id = "n1"
    n = r = w = 1
    members = _Members()
    store = _Store()


class StubRuntime:
    """What the admin handlers touch; counts the membership changes asked for."""

    def __init__(self, admin_token: str | None) -> None:
        self.config = fast_test_config("n1", admin_token=admin_token)
        self.node = _Node()
        self.injector = None
        self.access = Access(self.config.admin_token, None)
        self.calls: list[str] = []

    def leave(self) -> str | None:
        self.calls.append("leave")
        return None

    def remove(self, node_id: str) -> str | None:
        self.calls.append(f"remove {node_id}")
        return None


def _over_loopback(runtime: StubRuntime, method: str, path: str,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """One request over real TCP from 127.0.0.1: status, JSON body, headers."""

    async def go() -> tuple[int, Any, Any]:
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            resp = await client.request(method, path, headers=headers or {})
            return resp.status, await resp.json(), resp.headers

    return asyncio.run(go())


def _from_peer(runtime: StubRuntime, method: str, path: str, peer: Any,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request through make_app's router, as if its connection came from `peer`."""

    async def go() -> tuple[int, Any]:
        app = make_app(runtime)  # type: ignore[arg-type]
        transport = mock.Mock()
        transport.get_extra_info.side_effect = (
            lambda name, default=None: peer if name == "peername" else default)
        request = make_mocked_request(method, path, headers=headers or {}, app=app,
                                      transport=transport)
        match = await app.router.resolve(request)
        request._match_info = match
        resp = await match.handler(request)
        assert isinstance(resp, web.Response)
        return resp.status, json.loads(resp.body) if resp.body else None  # type: ignore[arg-type]

    return asyncio.run(go())


# --------------------------------------------------------------- a token is configured


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
def test_token_missing_is_401_with_www_authenticate(method: str, path: str) -> None:
    runtime = StubRuntime(TOKEN)
    status, body, headers = _over_loopback(runtime, method, path)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "admin token required" in body["error"] and TOKEN not in body["error"]
    assert runtime.calls == []


@pytest.mark.parametrize("authorization", [f"Basic {TOKEN}", "Bearer", "Bearer  ", TOKEN])
def test_not_a_bearer_token_is_401(authorization: str) -> None:
    runtime = StubRuntime(TOKEN)
    status, _, _ = _over_loopback(runtime, "POST", "/cluster/leave",
                                  {"Authorization": authorization})
    assert status == 401 and runtime.calls == []


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
@pytest.mark.parametrize("wrong", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "é"])
def test_wrong_token_is_403(method: str, path: str, wrong: str) -> None:
    runtime = StubRuntime(TOKEN)
    status, body, _ = _over_loopback(runtime, method, path,
                                     {"Authorization": f"Bearer {wrong}"})
    assert status == 403 and body == {"error": "admin token rejected"}
    assert runtime.calls == []


def test_right_token_passes() -> None:
    runtime = StubRuntime(TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body, _ = _over_loopback(runtime, "POST", "/cluster/leave", auth)
    assert status == 202 and body["node_id"] == "n1"
    status, _, _ = _over_loopback(runtime, "POST", "/cluster/remove/n2",
                                  {"Authorization": f"bearer {TOKEN}"})  # scheme: any case
    assert status == 202
    status, body, _ = _over_loopback(runtime, "GET", "/debug/local/kv/k", auth)
    assert status == 404 and body == {"error": "no local record"}  # the handler answered
    assert runtime.calls == ["leave", "remove n2"]


def test_the_token_is_needed_from_any_address_and_from_loopback_too() -> None:
    runtime = StubRuntime(TOKEN)
    assert _from_peer(runtime, "POST", "/cluster/leave", ("10.1.2.3", 5000))[0] == 401
    assert _from_peer(runtime, "POST", "/cluster/leave", ("127.0.0.1", 5000))[0] == 401
    status, _ = _from_peer(runtime, "POST", "/cluster/leave", ("10.1.2.3", 5000),
                           {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202 and runtime.calls == ["leave"]


# --------------------------------------------------------------------- no token at all


def test_no_token_a_loopback_client_passes() -> None:
    runtime = StubRuntime(None)
    status, _, _ = _over_loopback(runtime, "POST", "/cluster/leave")
    assert status == 202 and runtime.calls == ["leave"]
    for peer in [("127.0.0.1", 1), ("127.9.8.7", 1), ("::1", 1, 0, 0),
                 ("::ffff:127.0.0.1", 1, 0, 0)]:
        assert _from_peer(runtime, "POST", "/cluster/remove/n2", peer)[0] == 202, peer


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
@pytest.mark.parametrize("peer", [("172.17.0.1", 40000), ("10.0.0.7", 1),
                                  ("fe80::1%eth0", 1, 0, 2), ("::ffff:10.0.0.1", 1, 0, 0),
                                  ("2001:db8::1", 1, 0, 0), None, "", ("not-an-ip", 1)])
def test_no_token_a_remote_client_gets_403(method: str, path: str, peer: Any) -> None:
    runtime = StubRuntime(None)
    status, body = _from_peer(runtime, method, path, peer,
                              {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1"})
    assert status == 403 and "loopback" in body["error"]
    assert runtime.calls == []


def test_every_debug_route_is_guarded() -> None:
    # A /debug/ route added later without the guard would answer a remote client.
    runtime = StubRuntime(None)
    debug = []
    for route in make_app(runtime).router.routes():  # type: ignore[arg-type]
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/debug/"):
            debug.append((route.method, re.sub(r"\{[^}]*\}", "k", path)))
    assert len(debug) >= 2
    for method, path in debug:
        status, _ = _from_peer(runtime, method, path, ("192.0.2.1", 1))
        assert status == 403, (method, path)
