"""The OpenAPI document (`ringkv/server/openapi.json`) against the app that serves it.

Every route `make_app` registers is an operation of the document and every operation is
a route, so neither can change without the other; the document is valid OpenAPI 3 (the
meta-schema, as schemathesis checks it, and every operation loads); `GET /openapi.json`
serves the stored document byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from schemathesis.core.result import Ok

from coordinator.requests import ClientRequest, ClientResponse, Rejected
from ringkv.core.config import fast_test_config
from ringkv.server import openapi
from ringkv.server.access import Access
from ringkv.server.http_api import make_app

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class _Node:
    id = "n1"
    n = r = w = 1


class StubRuntime:
    """Enough of a runtime for `make_app`: no request reaches it in these tests."""

    def __init__(self) -> None:
        self.config = fast_test_config("n1")
        self.node = _Node()
        self.injector = None
        self.access = Access(self.config.admin_token, None)

    async def request(self, req: ClientRequest) -> ClientResponse:
        return Rejected("not served by this stub")


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route, templates without their regexes.

    aiohttp answers HEAD beside every GET on its own (`add_get(allow_head=True)`); the
    document says so once, in its description, rather than as an operation each.
    """
    routes = set()
    heads = set()
    for route in app.router.routes():
        info = route.get_info()
        template = info.get("formatter") or info.get("path")
        assert template, route
        template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", template)
        if route.method == "HEAD":
            heads.add(template)
        else:
            routes.add((route.method.lower(), template))
    assert heads == {path for method, path in routes if method == "get"}
    return routes


def _document_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items()
            for method in item if method in METHODS}


def test_every_route_is_documented_and_every_operation_is_a_route() -> None:
    app = make_app(StubRuntime())  # type: ignore[arg-type]
    served, documented = _app_routes(app), _document_routes(openapi.document())
    assert served - documented == set(), "routes missing from openapi.json"
    assert documented - served == set(), "operations in openapi.json that no route serves"
    assert ("get", "/openapi.json") in served


def test_the_document_is_valid_openapi_3() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # the OpenAPI 3 meta-schema
    labels = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation that does not load is Err
        labels.append(result.ok().label)
    assert len(labels) == len(_document_routes(doc))
    # Every operation says what its errors look like, and admin ones how to pass.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op.get("operationId") and op["responses"], (method, path)
            admin = path.startswith(("/debug/", "/cluster/", "/admin/"))
            assert ("security" in op) == admin, (method, path)
            if admin:
                assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_a_broken_document_is_refused_by_the_validation() -> None:
    doc = openapi.document()
    doc["paths"]["/health"]["get"]["responses"] = "none"
    with pytest.raises(Exception, match="not of type"):
        schemathesis.openapi.from_dict(doc).validate()


def test_get_openapi_json_serves_the_stored_document() -> None:
    async def go() -> tuple[int, str, bytes]:
        app = make_app(StubRuntime())  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/openapi.json")
            return resp.status, resp.headers["Content-Type"], await resp.read()

    status, ctype, body = asyncio.run(go())
    assert status == 200 and ctype.startswith("application/json")
    assert body == openapi.document_bytes()
    assert json.loads(body) == openapi.document()
    stored = (Path(openapi.__file__).with_name("openapi.json")).read_bytes()
    assert body == stored
