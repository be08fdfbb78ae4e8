"""Counters, sets, conditional writes, buckets, key listing and multi-get over HTTP
(contract sections 5-7), on one real in-process node (N=R=W=1, in memory).

Every refusal is checked to be the contract's 4xx with a JSON error, and to change
nothing: the state it would have touched reads the same afterwards. The precedence of
a request's parameters over its bucket's properties over the cluster's defaults is
checked on a stub runtime with N=3, where the three can differ.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.requests import (
    ClientRequest,
    ClientResponse,
    ListOk,
    ListRequest,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from ring.token import key_token
from ringkv.core.buckets import BucketProps, Buckets
from ringkv.core.config import fast_test_config
from ringkv.server.access import Access
from ringkv.server.http_api import make_app
from ringkv.server.http_buckets import decode_cursor, encode_cursor
from ringkv.server.runtime import NodeRuntime
from storage.crdt import CounterAdd, SetEdit, set_context
from storage.namespace import COUNTER, KV, internal_key
from storage.versions import EMPTY_CONTEXT, Context, Sibling
from tests.support.procs import key_path
from tests.unit.server.live import base_url, live_node

# ------------------------------------------------------------------- one live node


class LiveNode:
    """A node serving in a thread of its own, driven with a plain HTTP client; every
    request the API hands the node is recorded."""

    def __init__(self) -> None:
        self.url = ""
        self.runtime: NodeRuntime | None = None
        self.sent: list[ClientRequest] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async with live_node() as runtime:
            real = runtime.request

            async def recording(req: ClientRequest) -> ClientResponse:
                self.sent.append(req)
                return await real(req)

            runtime.request = recording  # type: ignore[method-assign]
            self.runtime, self.url = runtime, base_url(runtime)
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> LiveNode:
        self._thread.start()
        assert self._ready.wait(30), "node did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def node() -> Iterator[LiveNode]:
    with LiveNode() as live:
        yield live


@pytest.fixture
def http(node: LiveNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=10) as client:
        yield client


def refused(resp: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    doc: dict[str, Any] = resp.json()
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    for word in words:
        assert word in doc["error"], doc
    return doc


def counter(http: httpx.Client, path: str) -> int | None:
    resp = http.get(path)
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    value: int = resp.json()["value"]
    return value


def incr(http: httpx.Client, path: str, n: int, token: str | None = None) -> None:
    headers = {"Idempotency-Key": token} if token is not None else {}
    resp = http.post(path, json={"increment": n}, headers=headers)
    assert resp.status_code == 204, resp.text


def read_set(http: httpx.Client, path: str) -> tuple[list[str], str] | None:
    resp = http.get(path)
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    return doc["value"], doc["context"]


def edit(http: httpx.Client, path: str, **body: Any) -> httpx.Response:
    return http.post(path, json=body)


# -------------------------------------------------------------------------- counters


def test_counters_add_up_and_a_retried_token_counts_once(http: httpx.Client) -> None:
    assert counter(http, "/counters/sum") is None
    incr(http, "/counters/sum", 5)
    incr(http, "/counters/sum", -2)
    incr(http, "/counters/sum", 10, token="retry-1")
    incr(http, "/counters/sum", 10, token="retry-1")
    assert counter(http, "/counters/sum") == 13
    # The extremes: |n| = 2^53 - 1 is allowed both ways.
    incr(http, "/counters/big", 2**53 - 1)
    incr(http, "/counters/big", -(2**53 - 1))
    assert counter(http, "/counters/big") == 0


def test_counters_sets_and_values_of_one_name_are_distinct_keys(http: httpx.Client) -> None:
    assert http.put("/kv/same", content=b"v").status_code == 204
    incr(http, "/counters/same", 1)
    assert edit(http, "/sets/same", add=["e"]).status_code == 204
    assert http.get("/kv/same").content == b"v"
    assert counter(http, "/counters/same") == 1
    assert read_set(http, "/sets/same") is not None
    # The default bucket's paths are the same keys as under /buckets/default/.
    assert counter(http, "/buckets/default/counters/same") == 1
    assert http.get("/buckets/default/kv/same").content == b"v"
    assert counter(http, "/buckets/other/counters/same") is None


BAD_INCREMENTS = [
    b"{", b"not json", b"", b"[]", b"1", b'{"increment": 0}', b'{"increment": 1.0}',
    b'{"increment": 1.5}', b'{"increment": "1"}', b'{"increment": true}',
    b'{"increment": false}', b'{"increment": null}', b'{"increment": 9007199254740992}',
    b'{"increment": -9007199254740992}', b'{"increment": 1e400}', b'{"increment": NaN}',
    b'{"increment": Infinity}', b'{"incr": 1}', b'{"increment": 1, "extra": 2}',
    b"[" * 60_000, b'{"increment": 1' + b"0" * 5000 + b"}", b'\xff{"increment": 1}',
]


@pytest.mark.parametrize("body", BAD_INCREMENTS, ids=lambda b: repr(b[:30]))
def test_a_bad_increment_is_400_and_changes_nothing(http: httpx.Client, body: bytes) -> None:
    if counter(http, "/counters/steady") is None:
        incr(http, "/counters/steady", 7)
    refused(http.post("/counters/steady", content=body), 400)
    assert counter(http, "/counters/steady") == 7


@pytest.mark.parametrize("token", [b"", b"a" * 129, b"a\tb", "caf\u00e9".encode()])
def test_a_bad_idempotency_key_is_400_and_changes_nothing(http: httpx.Client,
                                                          token: bytes) -> None:
    if counter(http, "/counters/tokens") is None:
        incr(http, "/counters/tokens", 3)
    resp = http.post("/counters/tokens", json={"increment": 1},
                     headers={b"Idempotency-Key": token})
    refused(resp, 400, "Idempotency-Key")
    assert counter(http, "/counters/tokens") == 3


def test_the_longest_idempotency_key_is_accepted(http: httpx.Client) -> None:
    token = "!~ " + "x" * 125  # 128 printable ASCII characters
    incr(http, "/counters/long-token", 1, token=token)
    incr(http, "/counters/long-token", -1, token=token)  # the same token: not applied
    assert counter(http, "/counters/long-token") == 1


def test_a_counter_body_over_64_kib_is_413_and_changes_nothing(http: httpx.Client) -> None:
    incr(http, "/counters/large-body", 2)
    body = b'{"increment": 1' + b" " * (64 * 1024) + b"}"
    refused(http.post("/counters/large-body", content=body), 413)
    assert counter(http, "/counters/large-body") == 2


def test_counter_keys_are_parsed_like_value_keys(http: httpx.Client) -> None:
    refused(http.get("/counters/" + "k" * 1025), 414)
    refused(http.post("/counters/" + "k" * 1025, json={"increment": 1}), 414)
    key = quote(b"\xff/ %", safe="")
    incr(http, f"/counters/{key}", 4)
    assert counter(http, f"/counters/{key}") == 4


# ------------------------------------------------------------------------------ sets


def test_sets_add_remove_and_the_add_wins(http: httpx.Client) -> None:
    assert read_set(http, "/sets/flow") is None
    assert edit(http, "/sets/flow", add=["b", "a", "\u00e9", "Z", "a"]).status_code == 204
    got = read_set(http, "/sets/flow")
    assert got is not None and got[0] == ["Z", "a", "b", "\u00e9"]  # sorted, each once
    elements, seen = got
    assert edit(http, "/sets/flow", remove=["a"], context=seen).status_code == 204
    # "b" is added again after that read: a remove with the old context leaves it.
    assert edit(http, "/sets/flow", add=["b"]).status_code == 204
    assert edit(http, "/sets/flow", remove=["b", "Z"], context=seen).status_code == 204
    got = read_set(http, "/sets/flow")
    assert got is not None and got[0] == ["b", "\u00e9"]
    # Add and remove in one edit; then everything removed is the empty set, not a 404.
    assert edit(http, "/sets/flow", add=["new"], remove=["b", "\u00e9"],
                context=got[1]).status_code == 204
    got = read_set(http, "/sets/flow")
    assert got is not None and got[0] == ["new"]
    assert edit(http, "/sets/flow", remove=["new"], context=got[1]).status_code == 204
    got = read_set(http, "/sets/flow")
    assert got is not None and got[0] == []


def _value_context(http: httpx.Client) -> str:
    resp = http.put("/kv/for-a-context", content=b"x")
    return resp.headers["X-Context"]


BAD_EDITS: list[tuple[Any, int, str]] = [
    ({}, 400, "at least one"),
    ({"add": []}, 400, "at least one"),
    ({"add": [], "remove": []}, 400, "at least one"),
    ({"add": "a"}, 400, "list"),
    ({"add": [1]}, 400, "strings"),
    ({"add": [None]}, 400, "strings"),
    ({"add": [""]}, 400, "1 to 1024"),
    ({"add": ["x" * 1025]}, 400, "1 to 1024"),
    ({"add": ["\u00e9" * 513]}, 400, "1 to 1024"),  # 1026 bytes of UTF-8
    ({"add": ["c"], "unknown": 1}, 400, "unknown"),
    ({"add": ["c"], "context": 5}, 400, "context"),
    ({"add": [str(i) for i in range(1001)]}, 413, "too many elements"),
    ({"add": [str(i) for i in range(600)], "remove": [str(i) for i in range(401)]}, 413,
     "too many elements"),
    ({"remove": ["a"]}, 400, "nothing observed"),
    ({"remove": ["a"], "context": ""}, 400, "nothing observed"),
    ({"remove": ["zzz"], "context": "SEEN"}, 400, "nothing observed"),
    ({"remove": ["a", "zzz"], "context": "SEEN"}, 400, "nothing observed"),
    ({"remove": ["a"], "context": "not a context!"}, 400, "context"),
    ({"remove": ["a"], "context": "VALUE"}, 400, "context"),
    ([], 400, "JSON object"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_EDITS,
                         ids=[f"{i}-{w}" for i, (_, _, w) in enumerate(BAD_EDITS)])
def test_a_bad_set_edit_is_refused_and_changes_nothing(http: httpx.Client, body: Any,
                                                       status: int, words: str) -> None:
    if read_set(http, "/sets/steady") is None:
        assert edit(http, "/sets/steady", add=["a", "b"]).status_code == 204
    before = read_set(http, "/sets/steady")
    assert before is not None and before[0] == ["a", "b"]
    if isinstance(body, dict) and body.get("context") == "SEEN":
        body = {**body, "context": before[1]}
    if isinstance(body, dict) and body.get("context") == "VALUE":
        body = {**body, "context": _value_context(http)}
    refused(http.post("/sets/steady", json=body), status, words)
    assert read_set(http, "/sets/steady") == before


@pytest.mark.parametrize("body", [b"{", b'{"add": ["\\ud800"]}', b'{"add": ["a"],}', b"",
                                  b"[" * 200_000])
def test_a_malformed_set_body_is_400_and_changes_nothing(http: httpx.Client,
                                                         body: bytes) -> None:
    if read_set(http, "/sets/steady-raw") is None:
        assert edit(http, "/sets/steady-raw", add=["a"]).status_code == 204
    before = read_set(http, "/sets/steady-raw")
    refused(http.post("/sets/steady-raw", content=body), 400)
    assert read_set(http, "/sets/steady-raw") == before


def test_the_longest_element_is_accepted(http: httpx.Client) -> None:
    longest = "\u00e9" * 512  # 1024 bytes
    assert edit(http, "/sets/longest", add=[longest, "x" * 1024]).status_code == 204
    got = read_set(http, "/sets/longest")
    assert got is not None and got[0] == ["x" * 1024, longest]


# -------------------------------------------------------------- conditional writes


def test_every_read_of_a_value_carries_an_etag(http: httpx.Client) -> None:
    assert "ETag" not in http.get("/kv/tagged").headers  # never written: no context
    assert http.put("/kv/tagged", content=b"1").status_code == 204
    one = http.get("/kv/tagged")
    assert one.status_code == 200 and one.headers["ETag"].startswith('"')
    assert http.put("/kv/tagged", content=b"2").status_code == 204  # a sibling
    two = http.get("/kv/tagged")
    assert two.status_code == 300 and two.headers["ETag"] not in (one.headers["ETag"], "")
    as_json = http.get("/kv/tagged", headers={"Accept": "application/json"})
    assert as_json.headers["ETag"] == two.headers["ETag"]
    assert http.delete("/kv/tagged",
                       headers={"X-Context": two.headers["X-Context"]}).status_code == 204
    gone = http.get("/kv/tagged")
    assert gone.status_code == 404 and gone.headers["X-Context"]
    assert gone.headers["ETag"] not in (one.headers["ETag"], two.headers["ETag"])


def test_create_only_once_with_if_none_match(http: httpx.Client) -> None:
    first = http.put("/kv/create-once", content=b"first", headers={"If-None-Match": "*"})
    assert first.status_code == 204
    second = http.put("/kv/create-once", content=b"second", headers={"If-None-Match": "*"})
    doc = refused(second, 412, "live value")
    current = http.get("/kv/create-once")
    assert current.content == b"first" and doc["etag"] == current.headers["ETag"]
    assert second.headers["ETag"] == current.headers["ETag"]


def test_if_match_writes_only_over_the_version_it_names(http: httpx.Client) -> None:
    assert http.put("/kv/cas", content=b"a").status_code == 204
    assert http.put("/kv/cas", content=b"b").status_code == 204  # siblings a and b
    read = http.get("/kv/cas")
    assert read.status_code == 300
    tag = read.headers["ETag"]
    # No X-Context: the write supersedes exactly what the tag named (both siblings).
    assert http.put("/kv/cas", content=b"c", headers={"If-Match": tag}).status_code == 204
    now = http.get("/kv/cas")
    assert (now.status_code, now.content) == (200, b"c")
    # The same tag again is stale: 412 and nothing changes, for PUT and DELETE.
    refused(http.put("/kv/cas", content=b"d", headers={"If-Match": tag}), 412)
    refused(http.delete("/kv/cas", headers={"If-Match": tag}), 412)
    again = http.get("/kv/cas")
    assert (again.content, again.headers["ETag"]) == (b"c", now.headers["ETag"])
    # The current tag, in a list, deletes.
    listed = f'"nope", {now.headers["ETag"]}'
    assert http.delete("/kv/cas", headers={"If-Match": listed}).status_code == 204
    assert http.get("/kv/cas").status_code == 404


def test_if_match_any_needs_a_live_value(http: httpx.Client) -> None:
    refused(http.put("/kv/any-match", content=b"x", headers={"If-Match": "*"}), 412)
    assert http.get("/kv/any-match").status_code == 404
    assert http.put("/kv/any-match", content=b"x").status_code == 204
    assert http.put("/kv/any-match", content=b"y", headers={"If-Match": "*"}).status_code == 204
    assert http.get("/kv/any-match").content == b"y"


@pytest.mark.parametrize(("header", "value"), [
    ("If-Match", "not-a-tag"), ("If-Match", '"unterminated'), ("If-Match", ""),
    ("If-None-Match", '*, "x"'), ("If-None-Match", '"a" "b"'),
])
def test_a_malformed_precondition_is_400_and_changes_nothing(http: httpx.Client,
                                                             header: str, value: str) -> None:
    if http.get("/kv/guarded").status_code == 404:
        assert http.put("/kv/guarded", content=b"kept").status_code == 204
    before = http.get("/kv/guarded")
    refused(http.put("/kv/guarded", content=b"lost", headers={header: value}), 400, header)
    refused(http.delete("/kv/guarded", headers={header: value}), 400, header)
    after = http.get("/kv/guarded")
    assert (after.content, after.headers["ETag"]) == (b"kept", before.headers["ETag"])


# --------------------------------------------------------------------------- buckets


@pytest.mark.parametrize("bucket", ["bad!name", "a" * 65, "a%2Fb", "%FF", "sp%20ace"])
def test_a_bad_bucket_name_is_400_on_every_route_and_changes_nothing(
        http: httpx.Client, bucket: str) -> None:
    base = f"/buckets/{bucket}"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"{base}/kv/k", {"content": b"v"}),
        ("GET", f"{base}/kv/k", {}),
        ("DELETE", f"{base}/kv/k", {}),
        ("POST", f"{base}/counters/k", {"json": {"increment": 1}}),
        ("GET", f"{base}/counters/k", {}),
        ("POST", f"{base}/sets/k", {"json": {"add": ["e"]}}),
        ("GET", f"{base}/sets/k", {}),
        ("PUT", f"{base}/props", {"json": {"r": 1}}),
        ("GET", f"{base}/props", {}),
        ("GET", f"{base}/keys", {}),
        ("POST", f"{base}/mget", {"json": {"keys": ["k"]}}),
    ]
    for method, path, body in calls:
        refused(http.request(method, path, **body), 400, "bucket")
    # Nothing reached the store: no bucket has a key "k" of any kind, and the default
    # bucket (which a broken parse might fall back on) has none either.
    assert http.get("/kv/k").status_code == 404
    assert counter(http, "/counters/k") is None
    assert read_set(http, "/sets/k") is None


def test_keys_of_different_buckets_are_distinct(http: httpx.Client) -> None:
    assert http.put("/buckets/one/kv/shared", content=b"1").status_code == 204
    assert http.put("/buckets/two/kv/shared", content=b"2").status_code == 204
    assert http.get("/buckets/one/kv/shared").content == b"1"
    assert http.get("/buckets/two/kv/shared").content == b"2"
    assert http.get("/kv/shared").status_code == 404
    # A bucket name may be percent-encoded in the path like anything else.
    assert http.get("/buckets/%6Fne/kv/shared").content == b"1"


def test_bucket_props_round_trip_and_validate(http: httpx.Client) -> None:
    defaults = http.get("/buckets/fresh/props").json()
    assert defaults == {"n": 1, "r": 1, "w": 1, "ttl": None,
                        "conflict": defaults["conflict"], "max_siblings": 100}
    resp = http.put("/buckets/propped/props", json={"ttl": 3600, "max_siblings": 7})
    assert resp.status_code == 204, resp.text
    props = http.get("/buckets/propped/props").json()
    assert (props["ttl"], props["max_siblings"], props["r"]) == (3600, 7, 1)
    # null clears one property back to the default; the others stay.
    assert http.put("/buckets/propped/props", json={"ttl": None}).status_code == 204
    props = http.get("/buckets/propped/props").json()
    assert (props["ttl"], props["max_siblings"]) == (None, 7)


@pytest.mark.parametrize(("body", "words"), [
    ({"nope": 1}, "nope"), ({"r": 0}, "r must"), ({"r": 2}, "r must"), ({"w": True}, "w must"),
    ({"ttl": -1}, "ttl"), ({"ttl": 1.5}, "ttl"), ({"conflict": "merge"}, "conflict"),
    ({"max_siblings": 0}, "max_siblings"), ({}, "JSON object"), ([], "JSON object"),
    ({"r": 1, "bogus": 2}, "bogus"),
])
def test_a_bad_bucket_property_is_400_naming_it_and_changes_nothing(
        http: httpx.Client, body: Any, words: str) -> None:
    if http.get("/buckets/strict/props").json()["max_siblings"] != 9:
        assert http.put("/buckets/strict/props", json={"max_siblings": 9}).status_code == 204
    before = http.get("/buckets/strict/props").json()
    refused(http.put("/buckets/strict/props", json=body), 400, words)
    refused(http.put("/buckets/strict/props", content=b"{"), 400, "JSON")
    assert http.get("/buckets/strict/props").json() == before


def test_a_bucket_ttl_applies_to_its_value_writes_unless_the_request_gives_one(
        node: LiveNode, http: httpx.Client) -> None:
    assert http.put("/buckets/expiring/props", json={"ttl": 600}).status_code == 204

    def last_write() -> WriteRequest:
        req = node.sent[-1]
        assert isinstance(req, WriteRequest)
        return req

    assert http.put("/buckets/expiring/kv/k", content=b"v").status_code == 204
    assert last_write().ttl == 600
    assert http.put("/buckets/expiring/kv/k?ttl=5", content=b"v").status_code == 204
    assert last_write().ttl == 5
    assert http.delete("/buckets/expiring/kv/k").status_code == 204
    assert last_write().ttl is None  # a tombstone does not expire
    incr(http, "/buckets/expiring/counters/k", 1)
    assert last_write().ttl is None  # values only
    assert http.put("/kv/k-no-ttl", content=b"v").status_code == 204
    assert last_write().ttl is None


# ---------------------------------------------------------------------- key listing


def test_listing_pages_through_every_live_key_once(http: httpx.Client) -> None:
    keys = {b"k-%03d" % i for i in range(40)} | {b"\xff/ %+", b"\x00zero", b"."}
    for key in keys:
        path = "/buckets/listed" + key_path(key)  # "." is sent as %2E
        assert http.put(path, content=b"v").status_code == 204
    seen_000 = http.get("/buckets/listed/kv/k-000").headers["X-Context"]
    assert http.delete("/buckets/listed/kv/k-000",
                       headers={"X-Context": seen_000}).status_code == 204
    assert http.put("/buckets/other-list/kv/not-this", content=b"v").status_code == 204
    incr(http, "/buckets/listed/counters/not-a-value", 1)
    seen: list[bytes] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor is not None:
            params["cursor"] = cursor
        resp = http.get("/buckets/listed/keys", params=params)
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert len(doc["keys"]) <= 7
        seen += [unquote_to_bytes(k) for k in doc["keys"]]
        pages += 1
        cursor = doc["cursor"]
        if cursor is None:
            break
        assert pages < 50
    assert sorted(seen) == sorted(keys - {b"k-000"})  # each live key, once
    assert pages >= 6


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-1"},
    {"cursor": "!!!"}, {"cursor": "AAAA"}, {"cursor": ""}, {"cursor": "A" * 2000},
    {"cursor": "OTHER"}, {"r": "2"},
])
def test_a_bad_listing_request_is_400(http: httpx.Client, params: dict[str, str]) -> None:
    if params.get("cursor") == "OTHER":  # a real cursor, of another bucket
        params = {"cursor": encode_cursor((5, internal_key("elsewhere", KV, b"k")))}
    refused(http.get("/buckets/listed/keys", params=params), 400)


def test_cursors_round_trip_and_refuse_positions_of_other_buckets() -> None:
    for position in [(0, b""), (2**64 - 1, b""), (12345, internal_key("b", KV, b"key"))]:
        assert decode_cursor(encode_cursor(position), "b") == position
    with pytest.raises(ValueError, match="bucket"):
        decode_cursor(encode_cursor((1, internal_key("b", KV, b"k"))), "c")
    with pytest.raises(ValueError, match="bucket"):
        decode_cursor(encode_cursor((1, internal_key("b", COUNTER, b"k"))), "b")
    with pytest.raises(ValueError):
        decode_cursor(base64.urlsafe_b64encode(b"\x02" + bytes(8)).decode(), "b")


# ------------------------------------------------------------------------ multi-get


def test_mget_answers_every_key_in_the_order_asked(http: httpx.Client) -> None:
    assert http.put("/buckets/many/kv/one", content=b"1").status_code == 204
    assert http.put("/buckets/many/kv/two", content=b"2a").status_code == 204
    assert http.put("/buckets/many/kv/two", content=b"2b").status_code == 204
    assert http.put("/buckets/many/kv/gone", content=b"x").status_code == 204
    gone_ctx = http.get("/buckets/many/kv/gone").headers["X-Context"]
    assert http.delete("/buckets/many/kv/gone",
                       headers={"X-Context": gone_ctx}).status_code == 204
    weird = quote(b"\xff/ %", safe="")
    assert http.put(f"/buckets/many/kv/{weird}", content=b"w").status_code == 204
    asked = ["two", "missing", "one", "gone", weird, "%6Fne", "one"]
    resp = http.post("/buckets/many/mget", json={"keys": asked})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["key"] for r in results] == asked
    by = {i: r for i, r in enumerate(results)}
    assert by[0]["status"] == 300
    assert sorted(base64.b64decode(v) for v in by[0]["values"]) == [b"2a", b"2b"]
    assert by[1] == {"key": "missing", "status": 404, "values": [], "content_types": [],
                     "context": None, "etag": None}
    assert by[2]["status"] == 200 and by[2]["values"] == [base64.b64encode(b"1").decode()]
    assert by[2]["etag"] == http.get("/buckets/many/kv/one").headers["ETag"]
    assert by[3]["status"] == 404 and by[3]["context"] and by[3]["etag"]
    assert by[4]["status"] == 200 and base64.b64decode(by[4]["values"][0]) == b"w"
    assert by[5]["values"] == by[6]["values"] == by[2]["values"]


@pytest.mark.parametrize("body", [
    {"keys": []}, {"keys": ["k"] * 101}, {"keys": "k"}, {"keys": [1]}, {"keys": [""]},
    {"keys": ["x" * 1025]}, {"keys": ["%41" * 1025]}, {}, {"keys": ["k"], "more": 1}, [],
])
def test_a_bad_mget_is_400(http: httpx.Client, body: Any) -> None:
    refused(http.post("/buckets/many/mget", json=body), 400)


def test_a_malformed_mget_body_is_400(http: httpx.Client) -> None:
    refused(http.post("/buckets/many/mget", content=b'{"keys": ['), 400, "JSON")


# -------------------------------------------------------------------------- metrics


def test_each_new_operation_is_counted_under_its_own_label(http: httpx.Client) -> None:
    incr(http, "/counters/metered", 1)
    http.get("/counters/metered")
    edit(http, "/sets/metered", add=["x"])
    http.get("/sets/metered")
    http.get("/buckets/metered/keys")
    http.post("/buckets/metered/mget", json={"keys": ["a"]})
    http.get("/buckets/metered/props")
    http.put("/buckets/metered/props", json={"max_siblings": 5})
    text = http.get("/metrics").text
    for op in ("incr", "counter", "sets_update", "sets_get", "keys", "mget", "props_get",
               "props_put"):
        assert 'ringkv_requests_total{code="2' in text
        assert f'op="{op}"' in text, op


# ---------------------------------------------- precedence, on a stub runtime with N=3


class _StubNode:
    id = "n1"
    n, r, w = 3, 2, 2

    def __init__(self) -> None:
        self.buckets = Buckets(lambda: (3, 2, 2), "siblings", 100)

    def set_bucket_props(self, bucket: str, props: BucketProps) -> None:
        self.buckets.set(bucket, props)


class StubRuntime:
    """Records each request and answers it as a healthy cluster would."""

    def __init__(self) -> None:
        self.config = fast_test_config("n1")
        self.node = _StubNode()
        self.injector = None
        self.access = Access(self.config.admin_token, None)
        self.sent: list[ClientRequest] = []

    async def request(self, req: ClientRequest) -> ClientResponse:
        self.sent.append(req)
        if isinstance(req, ListRequest):
            return ListOk((), None)
        if isinstance(req, ReadRequest):
            sib = Sibling(("n1", 1, 0), 1, b"v", "text/plain", 1)
            return ReadOk((sib,), Context({("n1", 1, 0): 1}))
        return WriteOk(EMPTY_CONTEXT, 2)


def _exchange(runtime: StubRuntime, calls: list[tuple[str, str, Any]]) -> list[int]:
    async def go() -> list[int]:
        statuses = []
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            for method, path, body in calls:
                resp = await client.request(method, path, json=body)
                statuses.append(resp.status)
        return statuses

    return asyncio.run(go())


def test_query_parameters_win_over_bucket_props_over_cluster_defaults() -> None:
    runtime = StubRuntime()
    statuses = _exchange(runtime, [
        ("PUT", "/buckets/b/props", {"r": 1, "w": 3, "ttl": 60}),
        ("PUT", "/buckets/b/kv/k", None),
        ("PUT", "/buckets/b/kv/k?w=2&ttl=9", None),
        ("GET", "/buckets/b/kv/k", None),
        ("GET", "/buckets/b/kv/k?r=all", None),
        ("POST", "/buckets/b/counters/k", {"increment": 2}),
        ("POST", "/buckets/b/counters/k?w=one", {"increment": 2}),
        ("GET", "/buckets/b/sets/k?r=quorum", None),
        ("GET", "/buckets/b/keys", None),
        ("POST", "/buckets/b/mget", {"keys": ["k"]}),
        ("PUT", "/kv/k", None),
        ("GET", "/kv/k", None),
    ])
    assert statuses == [204, 204, 204, 200, 200, 204, 204, 200, 200, 200, 204, 200]
    props_write, *rest = runtime.sent
    assert isinstance(props_write, WriteRequest) and props_write.op is not None
    quorums = []
    for req in rest:
        if isinstance(req, WriteRequest):
            quorums.append(("w", req.w, req.ttl))
        elif isinstance(req, (ReadRequest, ListRequest)):
            quorums.append(("r", req.r, None))
    assert quorums == [
        ("w", 3, 60), ("w", 2, 9),  # the bucket's, then the query's
        ("r", 1, None), ("r", 3, None),
        ("w", 3, None), ("w", 1, None),  # counters: the bucket's w, no ttl
        ("r", 2, None),
        ("r", 1, None), ("r", 1, None),  # listing and multi-get take the bucket's r
        ("w", None, None), ("r", None, None),  # bucket default: the cluster's (None)
    ]
    counter_write = rest[4]
    assert isinstance(counter_write, WriteRequest)
    assert counter_write.key == internal_key("b", COUNTER, b"k")
    assert counter_write.op == CounterAdd(2, None)


def test_a_conditional_write_reads_with_the_requests_r_then_writes_with_its_context() -> None:
    runtime = StubRuntime()
    tag = '"' + "0" * 32 + '"'

    async def go() -> tuple[int, int]:
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            read = await client.get("/kv/c")
            ok = await client.put("/kv/c?r=3", data=b"new",
                                  headers={"If-Match": read.headers["ETag"]})
            stale = await client.put("/kv/c", data=b"new", headers={"If-Match": tag})
            return ok.status, stale.status

    assert asyncio.run(go()) == (204, 412)
    get, check_read, write, check_again = runtime.sent
    assert isinstance(check_read, ReadRequest) and check_read.r == 3
    assert isinstance(write, WriteRequest) and write.value == b"new"
    assert write.context == Context({("n1", 1, 0): 1})  # the read's, naming its version
    assert isinstance(check_again, ReadRequest)  # and the 412 wrote nothing


def test_a_set_edit_names_the_dots_its_context_observed() -> None:
    runtime = StubRuntime()

    async def go() -> None:
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            sib = Sibling(("n1", 1, 0), 4, b"a", "application/x-ringkv-set-element", 1)
            ctx = set_context([sib])
            resp = await client.post("/sets/s", json={"remove": ["a"], "context": ctx,
                                                      "add": ["b"]})
            assert resp.status == 204

    asyncio.run(go())
    (req,) = runtime.sent
    assert isinstance(req, WriteRequest)
    assert req.op == SetEdit((b"b",), ((b"a", frozenset({(("n1", 1, 0), 4)})),))


def test_nothing_found_answers_stay_404(http: httpx.Client) -> None:
    refused(http.get("/counters/never"), 404)
    refused(http.get("/sets/never"), 404)
    refused(http.get("/buckets/never/kv/k"), 404)


def test_ring_lookup_places_the_key_as_stored() -> None:
    # A plain key starting with 0x00, and keys of other buckets and kinds, are stored
    # under their long form: the lookup must name that key's replicas, not the raw one's.
    from ring.ring import Ring
    from storage.namespace import COUNTER, internal_key

    async def go() -> None:
        runtime = StubRuntime()
        ring = Ring({f"n{i}": tuple(range(i, 2**64 - 1, 2**61 + 7 * i)) for i in range(1, 6)})
        runtime.node.ring = ring  # type: ignore[attr-defined]
        runtime.node.preference_list = lambda k: ring.preference_list(  # type: ignore[attr-defined]
            key_token(k), 3)
        async with TestClient(TestServer(make_app(runtime))) as client:  # type: ignore[arg-type]
            for query, stored in [
                ("key=%00x", internal_key("default", "kv", b"\x00x")),
                ("key=x&bucket=b&kind=counter", internal_key("b", COUNTER, b"x")),
                ("key=x", b"x"),
            ]:
                resp = await client.get(f"/ring/lookup?{query}")
                doc = await resp.json()
                assert resp.status == 200, doc
                assert doc["token"] == str(key_token(stored))
                assert doc["preference_list"] == ring.preference_list(key_token(stored), 3)
            bad = await client.get("/ring/lookup?key=x&kind=table")
            assert bad.status == 400

    asyncio.run(go())
