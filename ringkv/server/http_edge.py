"""The client-facing HTTP server under the API: connection limits and refusals as JSON.

Job: serve an aiohttp application (`EdgeRunner`, in place of `web.AppRunner`) so that
no client can hold the node's connections or memory, and no refusal echoes its input.

Invariants:
- At most `max_connections` client connections are served at once; one more gets a
  503 JSON answer and is closed before anything of it is read.
- A request head must arrive whole within `header_timeout` of its first byte (of the
  connection's opening, for the first one) and within `max_head_bytes`: otherwise 408
  or 431 JSON, and the connection is closed (slowloris). Bytes after a head belong to
  its body until the body is whole (the API bounds a body's time and size, aiohttp's
  lingering read the rest of a refused one). A head pipelined behind a request still
  being handled, and an idle keep-alive connection, are bounded by the keep-alive
  timeout (aiohttp's).
- Every refusal aiohttp makes itself (a garbled request line, a header field too long,
  a handler that failed) is JSON `{"error": ...}` naming the kind of fault only: the
  input is never echoed back, nor logged, so a refusal cannot be used to reflect or
  to flood.

aiohttp has no hook for any of this: `EdgeServer` is its `web.Server` with a protocol
factory making `EdgeHandler`s, its `RequestHandler` with these bounds added. Both use
a few of aiohttp's private attributes (pinned in requirements; tests/unit/server
exercise every path on a real socket).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("ringkv")


@dataclass(frozen=True)
class EdgeLimits:
    max_connections: int
    header_timeout: float  # seconds for a whole request head
    max_head_bytes: int  # bytes of one request head (request line and headers)


class EdgeStats:
    """What the edge did, for /metrics."""

    def __init__(self) -> None:
        self.active = 0  # client connections open now
        self.refused = 0  # connections refused past the cap
        self.head_timeouts = 0  # connections cut for a request head not sent in time
        self.heads_too_large = 0  # connections cut for a request head too large


# The kind of each malformed-request fault aiohttp's parser raises: what a refusal says
# instead of the parser's message, which quotes the input.
_FAULTS: tuple[tuple[type[BaseException], str], ...] = (
    (LineTooLong, "request line or header field too long"),
    (BadHttpMethod, "malformed request method"),
    (InvalidURLError, "malformed request target"),
    (BadStatusLine, "malformed request line"),
    (InvalidHeader, "malformed header"),
    (BadHttpMessage, "malformed request"),
)


def _describe(status: int, exc: BaseException | None) -> str:
    for kind, text in _FAULTS:
        if isinstance(exc, kind):
            return text
    if status >= 500:
        return "internal error" if status == 500 else HTTPStatus(status).phrase.lower()
    return "malformed request"


def canned(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class EdgeHandler(RequestHandler):
    """aiohttp's protocol for one connection, with the edge's bounds."""

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = manager
        self._counted = False  # this connection is one of `stats.active`
        self._body: StreamReader | None = None  # the body of the last request parsed
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        if edge.stats.active >= edge.limits.max_connections:
            edge.stats.refused += 1
            tcp = cast(asyncio.Transport, transport)
            tcp.write(canned(503, f"too many connections (limit"
                                  f" {edge.limits.max_connections})"))
            tcp.close()  # after the answer is flushed; never reads the request
            return
        edge.stats.active += 1
        self._counted = True
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is cut too

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return  # refused: aiohttp never took it
        self._counted = False
        self._edge.stats.active -= 1
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _in_head(self) -> bool:
        """Bytes arriving now belong to a request head: the last body parsed is whole
        (a body still arriving is the API's to bound, and the lingering read's)."""
        return self._body is None or self._body.is_eof()

    def _idle(self) -> bool:
        """No request is queued or being handled: a head is all that may come."""
        return not self._request_in_progress and not self._messages and self._in_head()

    def data_received(self, data: bytes) -> None:
        if not self._counted or self._force_close or self._close:
            return  # refused, or closing: what is still coming is never read
        in_head = self._in_head()
        if in_head and data:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a whole head arrived (or a parse error)
            self._body = self._messages[-1][1] if self._messages else None
            self._head_bytes = 0
            self._cancel_head_timer()
        elif (in_head and self._idle()
              and self._head_bytes > self._edge.limits.max_head_bytes):
            self._edge.stats.heads_too_large += 1
            self._refuse(431, f"request head larger than {self._edge.limits.max_head_bytes}"
                              " bytes")

    async def _handle_request(
        self, request: BaseRequest, start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        self._cancel_head_timer()
        self._head_bytes = 0
        return await super()._handle_request(request, start_time, request_handler)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's own refusals as the API's JSON errors; `message` (which quotes the
        input) is neither sent nor logged."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer is already under way; cannot send an error")
        if status >= 500:
            log.error("request handler failed: %s", type(exc).__name__ if exc else status,
                      exc_info=exc)
        else:
            log.debug("refused a malformed request: %s", type(exc).__name__)
        response = web.json_response({"error": _describe(status, exc)}, status=status)
        response.force_close()
        return response

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(self._edge.limits.header_timeout,
                                                 self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Only a connection with nothing else going on: an answer may be under way
        # otherwise, and the keep-alive timeout still bounds a head left pending.
        if self._counted and not self._force_close and self._idle():
            self._edge.stats.head_timeouts += 1
            self._refuse(408, f"request head not received within"
                              f" {self._edge.limits.header_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_head_timer()
        if self.transport is not None:
            self.transport.write(canned(status, message))
        self.force_close()  # closes the transport once the answer is flushed


class EdgeServer(web.Server):
    """aiohttp's low-level server, making `EdgeHandler`s and keeping the edge's count."""

    def __init__(self, base: web.Server, limits: EdgeLimits, stats: EdgeStats) -> None:
        # Everything the application runner configured in `base`, kept as it is.
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation,
                         loop=base._loop, **base._kwargs)
        self.limits = limits
        self.stats = stats

    def __call__(self) -> EdgeHandler:
        return EdgeHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """`web.AppRunner` serving through an `EdgeServer`."""

    def __init__(self, app: web.Application, limits: EdgeLimits, stats: EdgeStats,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._edge = (limits, stats)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return EdgeServer(base, *self._edge)
