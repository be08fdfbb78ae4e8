"""The siblings bound over HTTP (contract section 4): `TooManySiblings` is a 409.

The body is JSON `{"error", "siblings", "limit"}`, through `make_app`'s own routes, for
a PUT and for a DELETE. The runtime is a stub answering every request with the refusal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from coordinator.requests import ClientRequest, ClientResponse, TooManySiblings, WriteRequest
from ringkv.core.buckets import Buckets
from ringkv.core.config import fast_test_config
from ringkv.server.access import Access
from ringkv.server.http_api import make_app


class _Node:
    id = "n1"
    n = r = w = 1
    buckets = Buckets(lambda: (1, 1, 1), "dvv", 100)


class StubRuntime:
    def __init__(self) -> None:
        self.config = fast_test_config("n1")
        self.node = _Node()
        self.injector = None
        self.access = Access(self.config.admin_token, None)
        self.requests: list[ClientRequest] = []

    async def request(self, req: ClientRequest) -> ClientResponse:
        self.requests.append(req)
        return TooManySiblings(siblings=101, limit=100)


def _call(runtime: StubRuntime, method: str) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            resp = await client.request(method, "/kv/k", data=b"v")
            return resp.status, await resp.json()

    return asyncio.run(go())


def test_a_write_past_the_siblings_limit_is_409_with_the_counts() -> None:
    for method in ("PUT", "DELETE"):
        runtime = StubRuntime()
        status, body = _call(runtime, method)
        assert status == 409
        assert set(body) == {"error", "siblings", "limit"}
        assert body["siblings"] == 101 and body["limit"] == 100
        assert "limit 100" in body["error"]
        (req,) = runtime.requests
        assert isinstance(req, WriteRequest) and req.key == b"k"
