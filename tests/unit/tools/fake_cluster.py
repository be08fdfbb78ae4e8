"""Fake members of a ringkv cluster for the `ringkv cluster ...` tests: aiohttp servers
on 127.0.0.1, each answering ``GET /cluster`` from a script of answers (one a request,
the last repeated), plus ``GET /ring/lookup``, ``POST /cluster/leave`` and
``POST /cluster/remove/{node_id}``.

A script is a list of (statuses, transfers) pairs: `FakeCluster.doc` turns one into the
answer of that member, listing every member with its real HTTP address, so a command
can find and poll the others as it would in a real cluster. Every request is recorded
per member.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Step = tuple[dict[str, str], dict[str, Any]]  # (statuses as this member sees them, transfers)


@dataclass
class FakeMember:
    node_id: str
    address: str = ""  # host:port, once started
    script: list[Step] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    leave_answer: tuple[int, dict[str, Any]] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def polls(self) -> int:
        return sum(1 for method, path in self.requests if (method, path) == ("GET", "/cluster"))


class FakeCluster:
    """Several fake members, served from one event loop in a thread."""

    def __init__(self, *node_ids: str) -> None:
        self.members = {n: FakeMember(n) for n in node_ids}
        # member -> the address every answer advertises for it instead of its own
        self.bad_address: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread: threading.Thread | None = None

    def __getitem__(self, node_id: str) -> FakeMember:
        return self.members[node_id]

    def start(self) -> FakeCluster:
        for member in self.members.values():
            app = web.Application(middlewares=[self._recorder(member)])
            app.router.add_get("/cluster", self._cluster(member))
            app.router.add_get("/ring/lookup", self._lookup(member))
            app.router.add_post("/cluster/leave", self._leave(member))
            app.router.add_post(r"/cluster/remove/{node_id}", self._remove(member))
            runner = web.AppRunner(app)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            member.address = f"127.0.0.1:{runner.addresses[0][1]}"
            self._runners.append(runner)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        for runner in self._runners:
            self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    # --- answers ------------------------------------------------------------------------

    def doc(self, member: FakeMember, step: Step) -> dict[str, Any]:
        statuses, transfers = step
        return {
            "node_id": member.node_id, "n": 3, "r": 2, "w": 2, "hints_pending": 0,
            "transfers": {"syncing": False, "keys_received": 0, "bytes_received": 0,
                          "keys_sent": 0, "bytes_sent": 0, **transfers},
            "members": [
                {"node_id": n, "http": self.bad_address.get(n, m.address),
                 "rpc": "127.0.0.1:1", "status": statuses.get(n, "up")}
                for n, m in self.members.items()
            ],
        }

    def _recorder(self, member: FakeMember) -> Any:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            member.requests.append((request.method, request.path))
            result: web.StreamResponse = await handler(request)
            return result

        return record

    def _cluster(self, member: FakeMember) -> Any:
        async def handler(request: web.Request) -> web.Response:
            step = member.script.pop(0) if len(member.script) > 1 else member.script[0]
            return web.json_response(self.doc(member, step))

        return handler

    def _lookup(self, member: FakeMember) -> Any:
        async def handler(request: web.Request) -> web.Response:
            key = request.query["key"]
            return web.json_response({"key": key, "token": "1",
                                      "preference_list": sorted(self.members)[:3]})

        return handler

    def _leave(self, member: FakeMember) -> Any:
        async def handler(request: web.Request) -> web.Response:
            status, body = member.leave_answer or (
                202, {"node_id": member.node_id, "status": "leaving"})
            return web.json_response(body, status=status)

        return handler

    def _remove(self, member: FakeMember) -> Any:
        async def handler(request: web.Request) -> web.Response:
            node_id = request.match_info["node_id"]
            if node_id not in self.members:
                return web.json_response({"error": f"no member named {node_id!r}"},
                                         status=404)
            return web.json_response({"node_id": node_id, "status": "left"}, status=202)

        return handler


def dead_address() -> str:
    """host:port of a port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@contextmanager
def fake_cluster(*node_ids: str) -> Iterator[FakeCluster]:
    cluster = FakeCluster(*node_ids).start()
    try:
        yield cluster
    finally:
        cluster.stop()
