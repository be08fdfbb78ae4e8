"""`Client` and `AsyncClient` share one implementation of every operation.

Each public method of either client must be one line running a plan of
``ringkv.client.plans`` (or ``update_plan``), the very same call in both, with the same
signature: logic written into one client only (and so missing from, or different in,
the other) fails here. The plans and the failover loop they run through
(``ringkv.client.runner``) are then driven by hand, with no transport at all; and the
one operation the twins had drifted apart on, the admin token of a bucket-property
write, is checked on the async client.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import random
import textwrap
from collections.abc import Generator
from typing import Any

import httpx
import pytest

from ringkv.client import AsyncClient, Client, TransportError, plans
from ringkv.client.failover import Failover
from ringkv.client.plans import Plan, Sleep
from ringkv.client.protocol import HttpRequest, HttpResponse
from ringkv.client.runner import Attempt, Outcome, over_nodes

Method = ast.FunctionDef | ast.AsyncFunctionDef
URL = "http://node.test:8001"
TOKEN = "tok-1234"
ADMIN = "admin-5678"


# ------------------------------------------------------------- one implementation


def methods(cls: type) -> dict[str, Method]:
    """The public methods of `cls` (properties and closing aside), by name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    return {
        node.name: node for node in body.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and not node.name.startswith("_") and not node.decorator_list
        and node.name not in ("close", "aclose")
    }


def statements(fn: Method) -> list[ast.stmt]:
    """The body of `fn` without its docstring."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body


def plan_of(fn: Method) -> str:
    """The plan `fn` runs, as source, when its body is ``[return] [await]
    self._run(PLAN)`` and nothing else."""
    body = statements(fn)
    assert len(body) == 1, f"{fn.name} does more than run a plan"
    stmt = body[0]
    assert isinstance(stmt, ast.Return | ast.Expr) and stmt.value is not None, fn.name
    call = stmt.value.value if isinstance(stmt.value, ast.Await) else stmt.value
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "self._run", (
        f"{fn.name} does not run a plan")
    assert len(call.args) == 1 and not call.keywords, fn.name
    plan = call.args[0]
    assert isinstance(plan, ast.Call), fn.name
    assert ast.unparse(plan.func) in (f"plans.{fn.name}", "update_plan"), ast.unparse(plan)
    return ast.unparse(plan)


def test_both_clients_have_the_same_methods_with_the_same_signatures() -> None:
    sync, aio = methods(Client), methods(AsyncClient)
    assert set(sync) == set(aio)
    assert len(sync) == 21  # every operation, `keys` included
    for name in sync:
        assert isinstance(sync[name], ast.FunctionDef), name
        assert isinstance(aio[name], ast.AsyncFunctionDef), name
        a, b = inspect.signature(getattr(Client, name)), inspect.signature(
            getattr(AsyncClient, name))
        assert list(a.parameters.values()) == list(b.parameters.values()), name
        expected = a.return_annotation
        if name == "keys":
            assert (expected, b.return_annotation) == ("Iterator[Key]", "AsyncIterator[Key]")
        else:
            assert b.return_annotation == expected, name


def test_every_method_is_one_line_running_the_same_plan_in_both() -> None:
    sync, aio = methods(Client), methods(AsyncClient)
    for name in sorted(set(sync) - {"keys"}):
        assert plan_of(sync[name]) == plan_of(aio[name]), name
    for fn in (sync["update"], aio["update"]):
        assert plan_of(fn).startswith("update_plan(")


def test_keys_follows_the_one_listing_in_both() -> None:
    sync, aio = statements(methods(Client)["keys"]), statements(methods(AsyncClient)["keys"])
    assert len(sync) == len(aio) == 2
    assert ast.unparse(sync[0]) == ast.unparse(aio[0])
    assert ast.unparse(sync[0]) == "listing = plans.Listing(bucket, limit, r, timeout)"
    for loop in (sync[1], aio[1]):  # a page plan run per page, its keys handed on
        assert isinstance(loop, ast.While)
        assert "listing.next_page()" in ast.unparse(loop.test)
        assert "self._run(page)" in ast.unparse(loop)


# ------------------------------------------------------------------ plans by hand


def answer(status: int, doc: object = None, **headers: str) -> HttpResponse:
    body = b"" if doc is None else json.dumps(doc).encode()
    return HttpResponse(status, httpx.Headers(headers), body)


def finish(plan: Plan[Any], reply: HttpResponse) -> Any:
    with pytest.raises(StopIteration) as stop:
        plan.send(reply)
    return stop.value.value


def test_srem_without_a_context_reads_then_removes_what_the_read_saw() -> None:
    plan = plans.srem("cart", ("pear", "fig", "pear"), w=2)
    read = next(plan)
    assert isinstance(read, HttpRequest)
    assert (read.method, read.path) == ("GET", "/sets/cart")
    write = plan.send(answer(200, {"value": ["apple", "pear"], "context": "ctx-1"}))
    assert isinstance(write, HttpRequest) and write.method == "POST"
    assert json.loads(write.body or b"") == {"remove": ["pear"], "context": "ctx-1"}
    assert ("w", "2") in write.params
    assert finish(plan, answer(204)) == ["pear"]

    plan = plans.srem("cart", ("kiwi",))
    next(plan)
    assert finish(plan, answer(200, {"value": ["apple"], "context": "c"})) == []


def test_a_listing_follows_the_cursor_until_a_page_says_it_is_the_last() -> None:
    listing = plans.Listing("users", 2, None, None)
    sent: list[str] = []
    pages = [answer(200, {"keys": ["a", "b"], "cursor": "c1"}),
             answer(200, {"keys": ["%FF"], "cursor": None})]
    got: list[str | bytes] = []
    while (page := listing.next_page()) is not None:
        req = next(page)
        assert isinstance(req, HttpRequest)
        sent.append("&".join(f"{k}={v}" for k, v in req.params))
        got += finish(page, pages.pop(0))
    assert got == ["a", "b", b"\xff"]
    assert sent == ["limit=2", "limit=2&cursor=c1"]


def test_bad_arguments_are_refused_when_the_plan_starts() -> None:
    with pytest.raises(ValueError):
        next(plans.get("k", r=0))
    with pytest.raises(ValueError):
        next(plans.set_update("k", (), ("x",)))  # a remove needs a context
    with pytest.raises(TypeError):
        next(plans.set_bucket_props(None, {"colour": "red"}, None))


def test_an_increment_keeps_its_idempotency_key_across_resends() -> None:
    failover = Failover(["http://a:1", "http://b:1"], random.Random(1))
    steps = over_nodes(plans.incr("visits", 3), failover, None)
    first = next(steps)
    assert isinstance(first, Attempt) and first.url == "http://a:1"
    pause = steps.send(httpx.ReadTimeout("slow"))
    assert isinstance(pause, Sleep)
    second = steps.send(None)
    assert isinstance(second, Attempt) and second.url == "http://b:1"
    key = dict(first.args["headers"])["Idempotency-Key"]
    assert dict(second.args["headers"])["Idempotency-Key"] == key
    with pytest.raises(StopIteration):
        steps.send(httpx.Response(204))
    assert failover.preferred == "http://b:1"


def test_a_transport_failure_is_thrown_into_the_plan_at_its_request() -> None:
    closed: list[bool] = []

    def tolerant() -> Plan[str]:
        try:
            try:
                yield HttpRequest("GET", "/health")
            except TransportError as exc:
                return f"gave up: {exc}"
            return "answered"
        finally:
            closed.append(True)

    steps = over_nodes(tolerant(), Failover([URL], random.Random(1)), None)
    attempt = next(steps)
    assert isinstance(attempt, Attempt)
    refused = httpx.ConnectError("refused")
    with pytest.raises(StopIteration) as stop:
        steps.send(refused)
    assert stop.value.value.startswith(f"gave up: cannot reach {URL}")
    assert closed == [True]

    # Steps closed half-way (the caller stopped) close the plan too.
    closed.clear()
    steps = over_nodes(tolerant(), Failover([URL], random.Random(1)), None)
    next(steps)
    steps.close()
    assert closed == [True]


def test_a_plan_s_own_pause_is_slept_by_the_driver() -> None:
    def patient() -> Plan[int]:
        yield Sleep(0.25)
        reply = yield HttpRequest("GET", "/health")
        return reply.status

    steps: Generator[Attempt | Sleep, Outcome, int] = over_nodes(
        patient(), Failover([URL], random.Random(1)), None)
    assert next(steps) == Sleep(0.25)
    assert isinstance(steps.send(None), Attempt)
    with pytest.raises(StopIteration) as stop:
        steps.send(httpx.Response(200))
    assert stop.value.value == 200

    pauses: list[float] = []
    script = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    with Client(URL, transport=script, sleep=pauses.append) as kv:
        assert kv._run(patient()) == 200
    assert pauses == [0.25]


# ------------------------------------------------------- where the twins drifted


def test_the_async_client_sends_the_admin_token_on_bucket_property_writes() -> None:
    seen: list[httpx.Request] = []

    def node(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def go() -> None:
        async with AsyncClient(URL, transport=httpx.MockTransport(node), token=TOKEN,
                               admin_token=ADMIN) as kv:
            await kv.set_bucket_props("carts", r=1)
            await kv.set_update("cart", ["pear"])

    asyncio.run(go())
    with Client(URL, transport=httpx.MockTransport(node), token=TOKEN,
                admin_token=ADMIN) as kv:
        kv.set_bucket_props("carts", r=1)
    assert [(r.url.path, r.headers["Authorization"]) for r in seen] == [
        ("/buckets/carts/props", f"Bearer {ADMIN}"),
        ("/sets/cart", f"Bearer {TOKEN}"),
        ("/buckets/carts/props", f"Bearer {ADMIN}"),
    ]
