"""A world of real time and HTTP, for the simulation's workload against a real cluster.

Job: `HttpWorld` is what `sim.workload.Workload` needs of a world (`WorkloadWorld`), on
an asyncio event loop and a cluster reached over HTTP: `at` / `after` schedule on the
loop, `call` sends the request with `ringkv.client.protocol` through an
`httpx.AsyncClient` and translates the answer back into a `coordinator.requests`
response, as `sim.world.World.call` gets it from a simulated node. `HttpWorkload` is the
workload to run on it, and `final_reads` the final reads with r=N that the checkers of
`sim.checkers` judge, as `sim.scenario` does in the simulation. `scripts/compose-test`
runs them against Docker containers; `tests/sim/test_live.py` against processes.

HTTP reads do not say which dot each sibling carries: a sibling is matched to its write
by value (every value is unique: `sim.workload`) and given that write's acknowledged
dot; a value whose write was never acknowledged gets a placeholder dot (actor
`UNKNOWN_ACTOR`), which `HttpWorkload.saw_dot` skips and no context ever covers.

Invariants:
- a call's `then` runs exactly once: with the answer, or with None when none came in
  time or it was no answer of the API (a refused connection, a 5xx other than 503): the
  outcome of the write is unknown;
- an exception in a callback (a bug in the workload or here) never stops the loop: it is
  kept in `errors`, which the caller reports as a failure;
- only reads and writes with a value are sent: the workload's deletes and other
  requests have no translation here (a `ValueError`, kept in `errors`).
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Callable, Collection, Mapping
from typing import Any

import httpx

from coordinator.requests import (
    ClientRequest,
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
    WriteOk,
    WriteRequest,
)
from ringkv.client.protocol import (
    BadRequestError,
    HttpRequest,
    HttpResponse,
    QuorumError,
    ServerError,
    build_get,
    build_put,
    parse_get,
    parse_put,
)
from sim.checkers import FinalRead
from sim.workload import History, Workload, WorkloadConfig, Write
from storage.versions import Context, Dot, Sibling, decode_context, encode_context

UNKNOWN_ACTOR = "?unacknowledged"  # placeholder dots: see the module docstring

Callback = Callable[[ClientResponse | None], None]


class HttpWorld:
    """`WorkloadWorld` on real time and HTTP. `hosts` maps a node to its base URL;
    `stopped` is the caller's live view of the nodes it took down (a client cannot know
    a node is paused or cut off, but it does see a refused port)."""

    def __init__(self, hosts: Mapping[str, str], seed: int, http: httpx.AsyncClient,
                 stopped: Collection[str] = ()) -> None:
        self.rng = random.Random(seed)
        self.hosts = dict(hosts)
        self.http = http
        self.stopped = stopped
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.history = History()  # the workload's, once one runs here (`HttpWorkload`)
        self.inflight: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    @property
    def now(self) -> float:
        return self.loop.time()

    def elapsed(self) -> float:
        return self.now - self.started

    def at(self, when: float, fn: Callable[..., object], /, *args: Any) -> None:
        self.loop.call_at(when, self._guard, fn, args)

    def after(self, delay: float, fn: Callable[..., object], /, *args: Any) -> None:
        self.loop.call_later(delay, self._guard, fn, args)

    def running(self) -> list[str]:
        return [n for n in self.hosts if n not in self.stopped]

    def call(self, node: str, req: ClientRequest, then: Callback, timeout: float, /) -> None:
        task = self.loop.create_task(self._call(node, req, then, timeout))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def drain(self) -> None:
        """Wait until every call sent so far (and each one its callbacks sent) is done."""
        while self.inflight:
            await asyncio.wait(list(self.inflight))

    def _guard(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:  # a bug in the workload or this adapter: fail the run, loudly
            self.errors.append(traceback.format_exc())

    async def _call(self, node: str, req: ClientRequest, then: Callback,
                    timeout: float) -> None:
        resp: ClientResponse | None = None
        try:
            resp = await asyncio.wait_for(self.request(node, req), timeout)
        except (httpx.HTTPError, TimeoutError, OSError, ServerError):
            pass  # no (usable) answer: the outcome of a write is unknown
        except Exception:  # a request this adapter cannot send: a bug, reported
            self.errors.append(traceback.format_exc())
        self._guard(then, (resp,))

    async def request(self, node: str, req: ClientRequest) -> ClientResponse | None:
        """One request to `node`, its answer as a simulated node would give it."""
        if isinstance(req, ReadRequest):
            http_req = build_get(req.key, req.r)
        elif isinstance(req, WriteRequest) and req.value is not None:
            context = encode_context(req.context) if _nonempty(req.context) else None
            http_req = build_put(req.key, req.value, context, req.w, req.ttl, req.content_type)
        else:
            raise ValueError(f"an HTTP world sends only reads and writes, not {req!r}")
        answer = await self.send(node, http_req)
        try:
            if isinstance(req, ReadRequest):
                got = parse_get(answer)
                read_context = decode_context(got.context or "")
                if not got.values:
                    return NotFound(read_context if got.context else None)
                siblings = tuple(self._sibling(req.key, v, t)
                                 for v, t in zip(got.values, got.content_types, strict=True))
                return ReadOk(siblings, read_context)
            return WriteOk(decode_context(parse_put(answer)), 0)
        except QuorumError as exc:
            return QuorumFailed(exc.acks or 0, exc.required or 0, exc.message)
        except BadRequestError as exc:
            return Rejected(exc.message)

    async def send(self, node: str, req: HttpRequest) -> HttpResponse:
        resp = await self.http.request(req.method, self.hosts[node] + req.path,
                                       params=list(req.params), headers=list(req.headers),
                                       content=req.body)
        return HttpResponse(resp.status_code, resp.headers, resp.content)

    def _sibling(self, key: bytes, value: bytes, content_type: str) -> Sibling:
        w = self.history.write_with_value(key, value)
        dot: Dot = w.dot if w is not None and w.dot is not None else (
            (UNKNOWN_ACTOR, 0, w.id if w else 0), 1)
        return Sibling(dot[0], dot[1], value, content_type, 0)


def _nonempty(ctx: Context) -> bool:
    return bool(ctx.vector) or bool(ctx.cloud)


class HttpWorkload(Workload):
    """The simulation's workload on an `HttpWorld`; its dots are the world's guesses
    (see the module docstring), so the placeholders are not checked as dots."""

    def __init__(self, world: HttpWorld, config: WorkloadConfig) -> None:
        super().__init__(world, config)
        world.history = self.history

    def saw_dot(self, key: bytes, w: Write, dot: Dot, where: str) -> None:
        if dot[0][0] != UNKNOWN_ACTOR:  # a placeholder names no real version
            super().saw_dot(key, w, dot, where)


def cart_config(clients: int, think: float, carts: int, timeout: float,
                namespace: str) -> WorkloadConfig:
    """Cart adds only, on keys of their own: the workload of the compose fault test."""
    return WorkloadConfig(clients=clients, think=think, carts=carts, registers=0,
                          ttl_keys=0, timeout=timeout, weights=(("cart", 1),),
                          namespace=namespace)


async def final_reads(world: HttpWorld, workload: Workload, r: int,
                      attempts: int = 5) -> dict[bytes, FinalRead]:
    """Every key read with r=`r` (retried on other nodes: the cluster is healed), as
    the simulation's final reads; they double as a read-repair sweep."""
    nodes = list(world.hosts)
    finals: dict[bytes, FinalRead] = {}
    for key in sorted(workload.history.keys):
        resp: ClientResponse | None = None
        for attempt in range(attempts):
            node = nodes[(attempt + len(finals)) % len(nodes)]
            try:
                resp = await asyncio.wait_for(world.request(node, ReadRequest(key, r)), 10)
            except (httpx.HTTPError, TimeoutError, OSError, ServerError):
                resp = None
            if isinstance(resp, ReadOk | NotFound):
                break
            await asyncio.sleep(1.0)
        finals[key] = FinalRead(key, resp, world.now)
        if isinstance(resp, ReadOk):
            workload.observe_siblings(key, resp.siblings, "final read")
    return finals
