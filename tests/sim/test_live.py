"""The simulation's workload and checkers over HTTP (`sim.live`), without Docker.

The translation between `coordinator.requests` and the HTTP API is table-tested against
canned answers (`httpx.MockTransport`); the whole path (workload, adapter, final reads,
convergence, checkers: what `scripts/compose-test` runs) against a real three-node
cluster on loopback, marked slow and bounded to a few seconds of workload. The boundary
between the deterministic simulation and this package is checked too.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import pathlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from coordinator.requests import (
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
    WriteOk,
    WriteRequest,
)
from sim.live.checks import Verdict, judge, local_versions
from sim.live.world import UNKNOWN_ACTOR, HttpWorkload, HttpWorld, cart_config
from sim.workload import WorkloadConfig, Write
from storage.versions import EMPTY_CONTEXT, Context, encode_context
from tests.support.procs import Cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACTOR = ("n1", 1, 1)

Handler = Callable[[httpx.Request], httpx.Response]
T = TypeVar("T")


def test_nothing_deterministic_imports_the_live_package() -> None:
    for path in sorted((ROOT / "sim").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("sim.live"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("sim.live") for a in node.names), path.name


# --- the translation, against canned answers -------------------------------------------------


def _run(handler: Handler, body: Callable[[HttpWorld], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            world = HttpWorld({"n1": "http://n1.test", "n2": "http://n2.test"}, 7, http,
                              stopped={"n2"})
            result = await body(world)
            await world.drain()
            assert not world.errors, world.errors
            return result

    return asyncio.run(main())


def test_a_write_is_a_put_with_the_context_and_its_answer_the_new_context() -> None:
    sent = Context({ACTOR: 2})
    back = Context({ACTOR: 3})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, headers={"X-Context": encode_context(back)})

    req = WriteRequest(b"cart-1", b"[1]", "application/json", sent, 3, None)
    resp = _run(handler, lambda world: world.request("n1", req))
    assert resp == WriteOk(back, 0)
    (put,) = seen
    assert (put.method, put.url.path, put.content) == ("PUT", "/kv/cart-1", b"[1]")
    assert put.url.params["w"] == "3"
    assert put.headers["X-Context"] == encode_context(sent)
    assert put.headers["Content-Type"] == "application/json"


def test_a_blind_write_sends_no_context() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, headers={"X-Context": encode_context(Context({ACTOR: 1}))})

    req = WriteRequest(b"k", b"v1", "text/plain", EMPTY_CONTEXT)
    _run(handler, lambda world: world.request("n1", req))
    assert "X-Context" not in seen[0].headers and "w" not in seen[0].url.params


def test_read_siblings_get_the_dots_of_their_acknowledged_writes() -> None:
    """HTTP reads carry no dots: a value is matched to its write; an unacknowledged
    write's value gets a placeholder that the workload does not check as a dot."""
    context = Context({ACTOR: 5})

    def handler(request: httpx.Request) -> httpx.Response:
        doc = {"context": encode_context(context), "siblings": [
            {"value": "WzFd", "content_type": "application/json"},  # [1]
            {"value": "WzJd", "content_type": "application/json"},  # [2]
        ]}
        return httpx.Response(300, json=doc)

    async def body(world: HttpWorld) -> tuple[ClientResponse | None, HttpWorkload]:
        workload = HttpWorkload(world, WorkloadConfig(carts=1, registers=0, ttl_keys=0))
        acked = _sent(workload, 1, b"[1]")
        acked.outcome, acked.dot = "ok", (ACTOR, 4)
        _sent(workload, 2, b"[2]")  # no answer yet
        resp = await world.request("n1", ReadRequest(b"cart-0", None))
        assert isinstance(resp, ReadOk)
        workload.observe_siblings(b"cart-0", resp.siblings, "read")
        return resp, workload

    resp, workload = _run(handler, body)
    assert isinstance(resp, ReadOk) and resp.context == context
    first, second = resp.siblings
    assert (first.dot, first.value) == ((ACTOR, 4), b"[1]")
    assert second.actor[0] == UNKNOWN_ACTOR
    assert not workload.history.violations
    assert workload.history.writes[1].dots == set()  # a placeholder is no dot


def _sent(workload: HttpWorkload, wid: int, value: bytes) -> Write:
    """A cart write as the workload records it when it sends one."""
    w = Write(wid, 1, b"cart-0", value, EMPTY_CONTEXT, None, 0.0, False, element=wid)
    workload.history.writes.append(w)
    workload.history.by_value[(w.key, value)] = w
    return w


def test_a_value_nobody_wrote_is_a_violation() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[99]",
                              headers={"Content-Type": "application/json"})

    async def body(world: HttpWorld) -> list[str]:
        workload = HttpWorkload(world, WorkloadConfig(carts=1, registers=0, ttl_keys=0))
        resp = await world.request("n1", ReadRequest(b"cart-0", 3))
        assert isinstance(resp, ReadOk)
        workload.observe_siblings(b"cart-0", resp.siblings, "read")
        return workload.history.violations

    violations = _run(handler, body)
    assert len(violations) == 1
    assert "nobody wrote" in violations[0]


@pytest.mark.parametrize(("status", "doc", "expected"), [
    (404, {"error": "not found"}, NotFound(None)),
    (503, {"error": "quorum not reached", "acks": 1, "required": 2},
     QuorumFailed(1, 2, "quorum not reached")),
    (400, {"error": "bad r"}, Rejected("bad r")),
])
def test_answers_become_coordinator_responses(status: int, doc: dict[str, object],
                                               expected: ClientResponse) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=doc)

    resp = _run(handler, lambda world: world.request("n1", ReadRequest(b"k", 2)))
    assert resp == expected


@pytest.mark.parametrize("fail", ["refused", "500", "slow"])
def test_a_call_without_an_answer_calls_back_once_with_none(fail: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if fail == "refused":
            raise httpx.ConnectError("refused", request=request)
        if fail == "slow":
            await asyncio.sleep(5)
        return httpx.Response(500, text="boom")

    got: list[ClientResponse | None] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            world = HttpWorld({"n1": "http://n1.test"}, 7, http)
            world.call("n1", ReadRequest(b"k"), got.append, 0.2)
            await world.drain()
            assert not world.errors

    asyncio.run(main())
    assert got == [None]


def _broken(resp: ClientResponse | None) -> None:
    raise ZeroDivisionError("a bug in a callback")


def test_a_bug_in_a_callback_is_kept_not_lost() -> None:
    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(
                lambda r: httpx.Response(404))) as http:
            world = HttpWorld({"n1": "http://n1.test"}, 7, http)
            world.call("n1", ReadRequest(b"k"), _broken, 1.0)
            world.after(0.0, lambda: [][0])
            await world.drain()
            await asyncio.sleep(0.01)
            return world.errors

    errors = asyncio.run(main())
    assert len(errors) == 2
    assert {"ZeroDivisionError", "IndexError"} == {e.strip().rsplit("\n", 1)[-1].split(":")[0]
                                                  for e in errors}


def test_running_leaves_out_the_nodes_the_caller_stopped() -> None:
    async def running(world: HttpWorld) -> list[str]:
        return world.running()

    assert _run(lambda r: httpx.Response(404), running) == ["n1"]


def test_a_local_record_document_becomes_versions() -> None:
    doc = {"context": encode_context(Context({ACTOR: 2})), "siblings": [
        {"value": "WzFd", "content_type": "application/json", "live": True,
         "actor": list(ACTOR), "counter": 2, "timestamp_ms": 5, "expires_at_ms": None},
        {"value": None, "content_type": "text/plain", "live": False,
         "actor": list(ACTOR), "counter": 1, "timestamp_ms": 4, "expires_at_ms": None}]}
    versions = local_versions(json.loads(json.dumps(doc)))
    assert versions is not None and versions.context == Context({ACTOR: 2})
    assert [(s.dot, s.value) for s in versions.siblings] == [((ACTOR, 2), b"[1]"),
                                                             ((ACTOR, 1), None)]
    assert local_versions(None) is None


class OneCopyStore:
    """A store of one replica that answers the HTTP API, correct for one client at a
    time: enough to run the whole path in-process, checks included. With an
    `admin_token` its debug reads want it, as a node's do (contract section 4)."""

    def __init__(self, admin_token: str | None = None) -> None:
        self.records: dict[str, tuple[int, bytes]] = {}  # key -> (counter, value)
        self.admin_token = admin_token
        self.debug_reads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, key = request.url.path, request.url.path.rpartition("/")[2]
        if path.startswith("/debug/") and self.admin_token is not None:
            auth = request.headers.get("Authorization")
            if auth is None:
                return httpx.Response(401, json={"error": "admin token required"})
            if auth != f"Bearer {self.admin_token}":
                return httpx.Response(403, json={"error": "admin token rejected"})
        if path.startswith("/debug/"):
            self.debug_reads += 1
        if path == "/cluster":
            return httpx.Response(200, json={"members": [], "hints_pending": 0})
        if path == "/ring/lookup":
            return httpx.Response(200, json={"preference_list": ["n1"]})
        counter, value = self.records.get(key, (0, b""))
        if request.method == "PUT":
            counter, value = counter + 1, request.content
            self.records[key] = (counter, value)
            return httpx.Response(204, headers={"X-Context": self._context(counter)})
        if key not in self.records:
            return httpx.Response(404)
        if path.startswith("/debug/local/"):
            return httpx.Response(200, json={"context": self._context(counter), "siblings": [
                {"value": base64.b64encode(value).decode(), "content_type": "a/b",
                 "actor": list(ACTOR), "counter": counter, "timestamp_ms": 0,
                 "expires_at_ms": None}]})
        return httpx.Response(200, content=value, headers={
            "Content-Type": "application/json", "X-Context": self._context(counter)})

    @staticmethod
    def _context(counter: int) -> str:
        return encode_context(Context({ACTOR: counter}))


def test_the_whole_path_in_process_against_a_one_copy_store() -> None:
    """The cart workload as the compose test runs it, judged as it judges, against
    `OneCopyStore`: every answer of the API goes through the adapter and the checks."""
    async def body(world: HttpWorld) -> tuple[HttpWorkload, Verdict]:
        world.hosts = {"n1": world.hosts["n1"]}
        workload = HttpWorkload(world, cart_config(1, 0.005, 2, 1.0, "fake"))
        workload.start(world.now, world.now + 0.4, float("inf"))
        await asyncio.sleep(0.5)
        await world.drain()
        return workload, await judge(world, workload, 3, 2.0)

    workload, verdict = _run(OneCopyStore(), body)
    history = workload.history
    assert sorted(history.keys) == [b"cart-fake-0", b"cart-fake-1"]
    assert history.acknowledged >= 5 and history.acknowledged == len(history.writes)
    assert all(w.dots == {w.dot} for w in history.writes)
    assert verdict.failures == [] and verdict.lost == 0
    assert verdict.converged_without_reads
    final = verdict.finals[b"cart-fake-0"].response
    assert isinstance(final, ReadOk)
    acked = {w.element for w in history.writes if w.key == b"cart-fake-0"}
    assert set(json.loads(final.siblings[0].value or b"")) == acked


def test_the_checks_send_the_admin_token_on_their_debug_reads() -> None:
    """A cluster with an admin token answers debug reads only with it: the checks pass
    it on, and without it they stop with the refusal instead of reporting divergence."""
    def run_with(store: OneCopyStore, token: str | None) -> Verdict:
        async def body(world: HttpWorld) -> Verdict:
            world.hosts = {"n1": world.hosts["n1"]}
            workload = HttpWorkload(world, cart_config(1, 0.005, 1, 1.0, "tok"))
            workload.start(world.now, world.now + 0.2, float("inf"))
            await asyncio.sleep(0.3)
            await world.drain()
            return await judge(world, workload, 3, 2.0, admin_token=token)

        return _run(store, body)

    store = OneCopyStore(admin_token="t0ken")
    verdict = run_with(store, "t0ken")
    assert verdict.failures == [] and verdict.converged_without_reads
    assert store.debug_reads > 0
    for token, status in ((None, 401), ("wrong", 403)):
        with pytest.raises(RuntimeError, match=f"refused the debug read \\({status}\\)"):
            run_with(OneCopyStore(admin_token="t0ken"), token)


# --- the whole path, against real nodes ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_cart_workload_over_http_loses_no_acknowledged_add(
        make_cluster: Callable[..., Cluster]) -> None:
    """A few seconds of the compose test's workload against three processes, one of
    them frozen for a while, judged by the compose test's checks."""
    cluster = make_cluster(size=3)
    frozen = cluster["n3"]

    async def main() -> tuple[HttpWorkload, Verdict]:
        async with httpx.AsyncClient(timeout=3.0) as http:
            world = HttpWorld({n.node_id: n.url for n in cluster}, 11, http)
            workload = HttpWorkload(world, cart_config(4, 0.05, 3, 3.0, "live"))
            workload.start(world.now, world.now + 4.0, float("inf"))
            await asyncio.sleep(1.0)
            frozen.pause()
            await asyncio.sleep(1.5)
            frozen.resume()
            await asyncio.sleep(2.0)
            await world.drain()
            return workload, await judge(world, workload, 3, 30.0)

    workload, verdict = asyncio.run(main())
    history = workload.history
    assert sorted(history.keys) == [b"cart-live-0", b"cart-live-1", b"cart-live-2"]
    assert history.acknowledged >= 10, [w.outcome for w in history.writes]
    assert history.reads_ok >= 10
    assert verdict.failures == [] and verdict.lost == 0
    assert sorted(verdict.finals) == sorted(history.keys)
    assert all(isinstance(f.response, ReadOk) for f in verdict.finals.values())
