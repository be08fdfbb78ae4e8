"""The OpenAPI 3 document of the HTTP API, served at ``GET /openapi.json``.

Job: load ``openapi.json`` (package data beside this module) once, on first use, and
serve it as it is stored.

Invariants: the document is the one kept in the repository, byte for byte; it names
every route ``ringkv.server.http_api.make_app`` registers and no other (a unit test
compares the two, so neither can drift), and the process tests drive the live cluster
with requests generated from it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from aiohttp import web

__all__ = ["DOCUMENT_NAME", "document", "document_bytes", "serve_openapi"]

DOCUMENT_NAME = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The stored document, read once per process."""
    return resources.files("ringkv.server").joinpath(DOCUMENT_NAME).read_bytes()


def document() -> dict[str, Any]:
    """The document parsed (a new copy each call: callers may change theirs)."""
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")
