"""Counters, sets, buckets, key listing, multi-get and conditional writes (contract 5-7):
the requests the client sends and what it makes of the answers, first against scripted
answers (`httpx.MockTransport`), then end to end against a fake node over a socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ringkv.client import (
    AsyncClient,
    BadRequestError,
    Client,
    LimitExceededError,
    MGetResult,
    PreconditionFailedError,
    QuorumError,
    RecordTooLargeError,
    ServerError,
    SetResult,
    build_incr,
    build_keys_page,
    build_mget,
    build_put,
    build_set_bucket_props,
    build_set_update,
    error_for,
    key_path,
)
from ringkv.client.protocol import HttpResponse
from tests.unit.client.fake_node import MAX_SET_ELEMENTS, fake_nodes

URL = "http://node.test:8001"
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests from a list, in order, and remembers them."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        assert self.answers, f"unexpected {request.method} {request.url}"
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def body(self, i: int) -> Any:
        return json.loads(self.requests[i].content)


def kv_of(script: Script) -> Client:
    return Client(URL, transport=httpx.MockTransport(script))


# --------------------------------------------------------------------------- buckets


def test_bucket_paths() -> None:
    assert key_path("a/b") == "/kv/a%2Fb"
    assert key_path("a/b", bucket="users") == "/buckets/users/kv/a%2Fb"
    assert key_path("k", bucket="..") == "/buckets/%2E%2E/kv/k"
    for bad in ("", "a/b", "x" * 65, "é", "a b"):
        with pytest.raises(ValueError):
            key_path("k", bucket=bad)
    with pytest.raises(TypeError):
        key_path("k", bucket=b"users")  # type: ignore[arg-type]


def test_every_key_operation_takes_a_bucket() -> None:
    script = Script(
        httpx.Response(204, headers={"X-Context": "c"}),
        httpx.Response(200, content=b"v", headers={"X-Context": "c", "ETag": '"e1"'}),
        httpx.Response(204),
        httpx.Response(204),
        httpx.Response(200, json={"value": 1}),
        httpx.Response(204),
        httpx.Response(200, json={"value": ["x"], "context": "sc"}),
    )
    with kv_of(script) as kv:
        kv.put("k", b"v", bucket="b1")
        kv.get("k", bucket="b1")
        kv.delete("k", "c", bucket="b1")
        kv.incr("n", bucket="b1")
        kv.counter("n", bucket="b1")
        kv.sadd("s", "x", bucket="b1")
        kv.smembers("s", bucket="b1")
    assert [r.url.path for r in script.requests] == [
        "/buckets/b1/kv/k", "/buckets/b1/kv/k", "/buckets/b1/kv/k",
        "/buckets/b1/counters/n", "/buckets/b1/counters/n",
        "/buckets/b1/sets/s", "/buckets/b1/sets/s",
    ]


# -------------------------------------------------------------------------- counters


def test_incr_sends_the_amount_and_a_fresh_idempotency_key_per_call() -> None:
    script = Script(httpx.Response(204), httpx.Response(204), httpx.Response(204))
    with kv_of(script) as kv:
        kv.incr("hits")
        kv.incr("hits", -5, w="quorum", timeout=2)
        kv.incr("hits", 3, idempotency_key="order-17")
    first, second, third = script.requests
    assert first.method == "POST" and first.url.raw_path == b"/counters/hits"
    assert script.body(0) == {"increment": 1} and script.body(1) == {"increment": -5}
    assert second.url.raw_path == b"/counters/hits?w=quorum&timeout=2000"
    assert first.headers["Content-Type"] == "application/json"
    generated = [first.headers["Idempotency-Key"], second.headers["Idempotency-Key"]]
    assert generated[0] != generated[1] and all(len(k) == 32 for k in generated)
    assert third.headers["Idempotency-Key"] == "order-17"


@pytest.mark.parametrize("amount", [0, 2**53, -(2**53), True])
def test_bad_increments_are_refused_before_sending(amount: int) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_incr("k", amount, "key")


@pytest.mark.parametrize("key", ["", "x" * 129, "a\nb", "é", " lead", "\x7f"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        build_incr("k", 1, key)


def test_counter_reads_like_get_treats_a_missing_key() -> None:
    script = Script(
        httpx.Response(200, json={"value": -4}),
        httpx.Response(404, json={"error": "not found"}),
        httpx.Response(200, json={"value": True}),
        httpx.Response(200, json=[1]),
        httpx.Response(503, json={"error": "read quorum", "acks": 1, "required": 2}),
    )
    with kv_of(script) as kv:
        assert kv.counter("n", r="all") == -4
        assert kv.counter("n") is None  # as get: a 404 is an answer, not an error
        with pytest.raises(ServerError):
            kv.counter("n")
        with pytest.raises(ServerError):
            kv.counter("n")
        with pytest.raises(QuorumError):
            kv.counter("n")
    assert script.requests[0].url.raw_path == b"/counters/n?r=all"


# ------------------------------------------------------------------------------ sets


def test_sadd_smembers_and_set_update_shapes() -> None:
    script = Script(
        httpx.Response(204),
        httpx.Response(200, json={"value": ["a", "b"], "context": "ctx1"}),
        httpx.Response(404, json={"error": "not found"}),
        httpx.Response(204),
    )
    with kv_of(script) as kv:
        kv.sadd("s", "a", "b", w=2)
        got = kv.smembers("s", r=1)
        missing = kv.smembers("other")
        kv.set_update("s", add=["c"], remove=["a"], context=got.context)
    assert got == SetResult(["a", "b"], "ctx1", True)
    assert missing == SetResult([], None, False)
    assert script.body(0) == {"add": ["a", "b"]}
    assert script.requests[0].url.raw_path == b"/sets/s?w=2"
    assert script.requests[1].url.raw_path == b"/sets/s?r=1"
    assert script.body(3) == {"add": ["c"], "remove": ["a"], "context": "ctx1"}


def test_srem_without_a_context_removes_exactly_what_its_read_observed() -> None:
    script = Script(
        httpx.Response(200, json={"value": ["a", "b"], "context": "seen-ab"}),
        httpx.Response(204),
        httpx.Response(200, json={"value": ["b"], "context": "seen-b"}),
        httpx.Response(404, json={"error": "not found"}),
    )
    with kv_of(script) as kv:
        assert kv.srem("s", "a", "zz", "a") == ["a"]  # zz was not there: not sent
        assert kv.srem("s", "zz") == []  # nothing observed: nothing sent
        assert kv.srem("never", "a") == []
    assert [r.method for r in script.requests] == ["GET", "POST", "GET", "GET"]
    assert script.body(1) == {"remove": ["a"], "context": "seen-ab"}


def test_srem_with_a_context_sends_every_element() -> None:
    script = Script(httpx.Response(400, json={"error": "remove 'q': nothing observed"}))
    with kv_of(script) as kv, pytest.raises(BadRequestError, match="nothing observed"):
        kv.srem("s", "a", "q", context="ctx")
    assert script.body(0) == {"remove": ["a", "q"], "context": "ctx"}


@pytest.mark.parametrize(
    ("add", "remove", "context"),
    [
        ((), (), None),  # nothing to do
        ((), ("a",), None),  # a remove needs a context
        (("",), (), None),  # elements are 1..1024 bytes
        (("x" * 1025,), (), None),
        (("\ud800",), (), None),  # not UTF-8
        ("abc", (), None),  # one str is not a collection of elements
        ((1,), (), None),
    ],
)
def test_bad_set_updates_are_refused_before_sending(
    add: Any, remove: Any, context: str | None
) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_set_update("s", add, remove, context)


def test_a_413_to_a_data_type_update_is_a_limit_exceeded_error() -> None:
    script = Script(
        httpx.Response(413, json={"error": "set elements would be 10001; the limit is 10000",
                                  "size": 10001, "limit": 10000}),
        httpx.Response(413, json={"error": "too many elements in one request: 5000"}),
        httpx.Response(413, json={"error": "x", "size": 20, "limit": 16}),
    )
    with kv_of(script) as kv:
        with pytest.raises(LimitExceededError) as info:
            kv.sadd("s", "a")
        assert (info.value.status, info.value.size, info.value.limit) == (413, 10001, 10000)
        with pytest.raises(LimitExceededError) as bare:
            kv.sadd("s", "a")
        assert bare.value.size is None and "too many elements" in bare.value.message
        with pytest.raises(LimitExceededError):
            kv.incr("n")
    assert isinstance(info.value, BadRequestError)
    # A 413 naming the bound is one wherever it comes from; a plain size is a record's.
    named = error_for(HttpResponse(413, {}, b'{"error": "e", "what": "elements",'
                                            b' "size": 3, "limit": 2}'))
    assert isinstance(named, LimitExceededError) and named.what == "elements"
    record = error_for(HttpResponse(413, {}, b'{"error": "e", "size": 3, "limit": 2}'))
    assert type(record) is RecordTooLargeError


# ------------------------------------------------------------------ conditional writes


def test_get_carries_the_etag_and_put_delete_send_the_conditions() -> None:
    script = Script(
        httpx.Response(200, content=b"v", headers={"X-Context": "c", "ETag": '"e1"'}),
        httpx.Response(404, json={"error": "not found"}, headers={"ETag": '"t"',
                                                                  "X-Context": "tomb"}),
        httpx.Response(204, headers={"X-Context": "c2"}),
        httpx.Response(204, headers={"X-Context": "c3"}),
        httpx.Response(204),
    )
    with kv_of(script) as kv:
        got = kv.get("k")
        assert got.etag == '"e1"' and kv.get("gone").etag == '"t"'
        kv.put("k", b"new", if_match=got.etag)
        kv.put("fresh", b"v", if_none_match=True)
        kv.delete("k", if_match="e1")  # bare, as a shell leaves it: quoted again
    put, fresh, delete = script.requests[2:]
    assert put.headers["If-Match"] == '"e1"' and "X-Context" not in put.headers
    assert fresh.headers["If-None-Match"] == "*" and "If-Match" not in fresh.headers
    assert delete.headers["If-Match"] == '"e1"'


def test_a_json_300_carries_its_etag() -> None:
    doc = {"siblings": [{"value": base64.b64encode(v).decode(), "content_type": "t"}
                        for v in (b"a", b"b")], "context": "both"}
    script = Script(httpx.Response(300, json=doc, headers={"ETag": 'W/"s"'}))
    with kv_of(script) as kv:
        got = kv.get("k")
    assert got.values == [b"a", b"b"] and got.etag == 'W/"s"'


def test_a_412_is_a_precondition_failed_error_with_the_current_etag() -> None:
    script = Script(
        httpx.Response(412, json={"error": "ETag does not match", "etag": '"now"'},
                       headers={"ETag": '"now"'}),
        httpx.Response(412, text=""),
    )
    with kv_of(script) as kv:
        with pytest.raises(PreconditionFailedError) as info:
            kv.put("k", b"v", if_match='"then"')
        with pytest.raises(PreconditionFailedError) as bare:
            kv.delete("k", if_match='"then"')
    assert isinstance(info.value, BadRequestError)
    assert (info.value.status, info.value.etag) == (412, '"now"')
    assert "does not match" in str(info.value)
    assert bare.value.etag is None and bare.value.message == "precondition failed"


@pytest.mark.parametrize("etag", ["", 'a"b', "a,b", "two words", "a\r\nX: y"])
def test_bad_etags_and_conflicting_conditions_are_refused(etag: str) -> None:
    with pytest.raises(ValueError):
        build_put("k", b"v", if_match=etag)
    with pytest.raises(ValueError):
        build_put("k", b"v", if_match='"e"', if_none_match=True)


# --------------------------------------------------------------------- key listing


def test_keys_follow_the_cursor_and_decode_every_key() -> None:
    script = Script(
        httpx.Response(200, json={"keys": ["a%2Fb", "%C3%A9t%C3%A9"], "cursor": "c1"}),
        httpx.Response(200, json={"keys": [], "cursor": "c2"}),  # an empty range
        httpx.Response(200, json={"keys": ["%FF%00"], "cursor": None}),
    )
    with kv_of(script) as kv:
        assert list(kv.keys("users", limit=2)) == ["a/b", "été", b"\xff\x00"]
    assert [r.url.raw_path for r in script.requests] == [
        b"/buckets/users/keys?limit=2",
        b"/buckets/users/keys?limit=2&cursor=c1",
        b"/buckets/users/keys?limit=2&cursor=c2",
    ]


def test_keys_page_and_its_guards() -> None:
    script = Script(
        httpx.Response(200, json={"keys": ["k"], "cursor": "same"}),
        httpx.Response(200, json={"keys": ["k"], "cursor": "same"}),
        httpx.Response(200, json={"keys": [""], "cursor": None}),
        httpx.Response(200, json={"keys": "k", "cursor": None}),
    )
    with kv_of(script) as kv:
        assert kv.keys_page() == (["k"], "same")
        with pytest.raises(ServerError, match="its own cursor"):
            kv.keys_page(cursor="same")  # would never end
        with pytest.raises(ServerError):
            kv.keys_page()
        with pytest.raises(ServerError):
            kv.keys_page()
    assert script.requests[0].url.raw_path == b"/buckets/default/keys?limit=100"
    for limit in (0, 1001, True):
        with pytest.raises(ValueError):
            build_keys_page("default", limit)


def test_async_keys_is_an_async_iterator() -> None:
    script = Script(
        httpx.Response(200, json={"keys": ["a"], "cursor": "n"}),
        httpx.Response(200, json={"keys": ["b"], "cursor": None}),
    )

    async def scenario() -> list[str | bytes]:
        async with AsyncClient(URL, transport=httpx.MockTransport(script)) as kv:
            return [key async for key in kv.keys(limit=1, r=1)]

    assert asyncio.run(scenario()) == ["a", "b"]
    assert script.requests[1].url.raw_path == b"/buckets/default/keys?limit=1&cursor=n&r=1"


# ----------------------------------------------------------------------- multi-get


def test_mget_sends_encoded_keys_and_returns_results_in_order() -> None:
    results = [
        {"key": "a%2Fb", "status": 200, "values": [base64.b64encode(b"1").decode()],
         "content_types": ["text/plain"], "context": "c", "etag": '"e"'},
        {"key": "b", "status": 300, "values": ["eA==", "eQ"], "context": "cs"},
        {"key": "%FF", "status": 404, "values": [], "context": None},
        {"key": "d", "status": 503, "values": [], "error": "read quorum not reached"},
    ]
    script = Script(httpx.Response(200, json={"results": results}))
    with kv_of(script) as kv:
        got = kv.mget(["a/b", "b", b"\xff", "d"], bucket="users", r="one", timeout=1)
    (req,) = script.requests
    assert req.method == "POST"
    assert req.url.raw_path == b"/buckets/users/mget?r=one&timeout=1000"
    assert script.body(0) == {"keys": ["a%2Fb", "b", "%FF", "d"]}
    assert got[0] == MGetResult("a/b", 200, [b"1"], "c", ["text/plain"], '"e"')
    assert got[0].value == b"1" and got[1].conflict and got[1].values == [b"x", b"y"]
    assert got[1].content_types == ["application/octet-stream"] * 2
    assert not got[2].found and got[2].value is None and got[2].key == b"\xff"
    assert got[3].status == 503 and got[3].error == "read quorum not reached"
    with pytest.raises(QuorumError):
        _ = got[3].value  # a failed read is never taken for a miss


@pytest.mark.parametrize(
    "results",
    [
        [],  # too few
        [{"key": "other", "status": 200, "values": ["eA=="]}],  # another key
        [{"key": "k", "status": 201, "values": []}],
        [{"key": "k", "status": 200, "values": []}],  # 200 without its value
        [{"key": "k", "status": 404, "values": ["eA=="]}],
        [{"key": "k", "status": 200, "values": ["***"]}],  # not base64
        [{"key": "k", "status": 200, "values": ["eA=="], "content_types": ["a", "b"]}],
        ["k"],
    ],
)
def test_malformed_mget_answers_are_server_errors(results: list[Any]) -> None:
    script = Script(httpx.Response(200, json={"results": results}))
    with kv_of(script) as kv, pytest.raises(ServerError):
        kv.mget(["k"])


def test_mget_takes_1_to_100_keys() -> None:
    for keys in ([], ["k"] * 101, "key"):
        with pytest.raises((ValueError, TypeError)):
            build_mget(keys)
    assert json.loads(build_mget(["k"] * 100).body or b"")["keys"] == ["k"] * 100


# ---------------------------------------------------------------- bucket properties


def test_bucket_props_read_and_write() -> None:
    defaults = {"n": 3, "r": 2, "w": 2, "ttl": None, "conflict": "siblings",
                "max_siblings": 100}
    script = Script(httpx.Response(200, json=defaults), httpx.Response(204),
                    httpx.Response(200, json=["not", "an", "object"]))
    with kv_of(script) as kv:
        assert kv.bucket_props("users") == defaults
        kv.set_bucket_props("users", r=1, ttl=60, conflict="lww", max_siblings=None)
        with pytest.raises(ServerError):
            kv.bucket_props("users")
    put = script.requests[1]
    assert put.method == "PUT" and put.url.raw_path == b"/buckets/users/props"
    assert script.body(1) == {"r": 1, "ttl": 60, "conflict": "lww", "max_siblings": None}


@pytest.mark.parametrize(
    "props",
    [{}, {"n": 3}, {"r": "quorum"}, {"r": 0}, {"w": True}, {"ttl": -1},
     {"conflict": "merge"}, {"max_siblings": 1.5}],
)
def test_bad_bucket_props_are_refused(props: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_set_bucket_props("users", props)


# ------------------------------------------------------------ end to end, a real socket


def test_everything_end_to_end_against_a_fake_node() -> None:
    with fake_nodes(1) as (node,), Client(node.url, timeout=5) as kv:
        kv.incr("visits")
        kv.incr("visits", 10, "once")
        kv.incr("visits", 10, "once")  # the same key: applied once
        assert kv.counter("visits") == 11 and kv.counter("nobody") is None
        kv.sadd("cart", "apple", "pear", bucket="shop")
        assert kv.srem("cart", "pear", "plum", bucket="shop") == ["pear"]
        assert kv.smembers("cart", bucket="shop").elements == ["apple"]
        with pytest.raises(LimitExceededError):
            kv.sadd("cart", *[f"e{i}" for i in range(MAX_SET_ELEMENTS)], bucket="shop")
        first = kv.get("doc")
        kv.put("doc", b"v1", if_none_match=True)
        with pytest.raises(PreconditionFailedError):
            kv.put("doc", b"v1 again", if_none_match=True)
        read = kv.get("doc")
        kv.put("doc", b"v2", if_match=read.etag)
        with pytest.raises(PreconditionFailedError) as stale:
            kv.delete("doc", if_match=read.etag)
        assert stale.value.etag == kv.get("doc").etag != read.etag
        assert first.etag is None and kv.get("doc").value == b"v2"
        for name in ("a/b", "é", "z"):
            kv.put(name, b"x", bucket="listed")
        assert sorted(map(str, kv.keys("listed", limit=1))) == ["a/b", "z", "é"]
        got = kv.mget(["a/b", "missing"], bucket="listed")
        assert [g.status for g in got] == [200, 404] and got[0].value == b"x"
        kv.set_bucket_props("listed", r=1, ttl=30)
        assert kv.bucket_props("listed")["ttl"] == 30
        kv.set_bucket_props("listed", ttl=None)
        assert kv.bucket_props("listed")["ttl"] is None

        async def async_twin() -> None:
            async with AsyncClient(node.url, timeout=5) as akv:
                await akv.incr("visits", -1)
                assert await akv.counter("visits") == 10
                await akv.sadd("cart", "fig", bucket="shop")
                assert await akv.srem("cart", "apple", bucket="shop") == ["apple"]
                assert (await akv.smembers("cart", bucket="shop")).elements == ["fig"]
                assert [k async for k in akv.keys("listed", 2)] == list(kv.keys("listed"))
                assert (await akv.mget(["z"], "listed"))[0].value == b"x"
                assert (await akv.bucket_props("listed"))["r"] == 1
                await akv.set_bucket_props("listed", r=None)
                etag = (await akv.get("doc")).etag
                await akv.delete("doc", if_match=etag)
                assert not (await akv.get("doc")).found

        asyncio.run(async_twin())
        assert kv.bucket_props("listed")["r"] == 2
