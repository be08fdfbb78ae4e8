"""The web console's server side (`ringkv.server.console`) and the rules of its page.

- `ring_arcs`: exact arcs give every token the ring's own owner and every owner its
  exact share; a ring too large for `MAX_ARCS` is coarsened into at most that many arcs,
  each slice given the owner of most of it; the JSON stays small at 100 x 256 vnodes.
- The routes, through aiohttp's test client on a real (unstarted) `NodeRuntime`: the
  page and its files with a strict CSP and revalidation by ETag; ``ring.json`` built
  once per ring and answered 304 when unchanged; ``state.json`` reporting anti-entropy,
  hints by target and what the admin guard would answer this client.
- The page itself: no inline script or style for the CSP to refuse, nothing loaded from
  elsewhere, no markup built from data, the token stored nowhere.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from sortedcontainers import SortedSet

from ring.ring import Ring
from ring.token import MAX_TOKEN, TOKEN_SPACE
from ringkv.core.config import fast_test_config
from ringkv.server import console
from ringkv.server.admin_auth import AdminGuard
from ringkv.server.console import MAX_ARCS, RingArcs, admin_mode, ring_arcs
from ringkv.server.runtime import NodeRuntime

TOKEN = "console-test-token"


def _random_ring(nodes: int, vnodes: int, seed: int) -> Ring:
    rng = random.Random(seed)
    return Ring({f"node-{i:03d}": [rng.randrange(TOKEN_SPACE) for _ in range(vnodes)]
                 for i in range(nodes)})


def _owner_at(arcs: RingArcs, token: int) -> str:
    """The owner the arcs give `token`: that of the first arc ending at or after it."""
    for end, owner in zip(arcs.ends, arcs.owner_of, strict=True):
        if token <= end:
            return arcs.owners[owner]
    return arcs.owners[arcs.owner_of[0]]  # past the last end: the wrapping arc


def _shares(arcs: RingArcs) -> dict[str, int]:
    out = dict.fromkeys(arcs.owners, 0)
    ends = arcs.ends
    for i, (end, owner) in enumerate(zip(ends, arcs.owner_of, strict=True)):
        out[arcs.owners[owner]] += (end - ends[i - 1]) % TOKEN_SPACE or TOKEN_SPACE
    return out


# --- ring_arcs ------------------------------------------------------------------------------


def test_an_empty_ring_has_no_arcs_and_one_owner_is_the_whole_ring() -> None:
    empty = ring_arcs(Ring())
    assert (empty.owners, empty.ends, empty.vnodes, empty.exact) == ((), (), 0, True)
    whole = ring_arcs(Ring({"a": [5, 1 << 40, 1 << 62]}))
    assert whole.owners == ("a",) and len(whole.ends) == 1 and whole.vnodes == 3
    assert whole.to_json()["arcs"] == [[round((1 << 62) / TOKEN_SPACE, 7), 0]]


def test_neighbouring_vnodes_of_one_owner_are_one_arc_across_the_wrap() -> None:
    # a: (30, 10] wrapping (its vnodes at 10 and 30 are neighbours across 0), b: (10, 20].
    arcs = ring_arcs(Ring({"a": [10, 30], "b": [20]}))
    assert arcs.owners == ("a", "b")
    assert list(zip(arcs.ends, arcs.owner_of, strict=True)) == [(10, 0), (20, 1)]
    assert _owner_at(arcs, 25) == "a" and _owner_at(arcs, 15) == "b"
    assert _owner_at(arcs, 10) == "a" and _owner_at(arcs, 20) == "b"


def test_a_shared_token_belongs_to_the_smaller_node_id_like_the_ring() -> None:
    ring = Ring({"b": [100, 5000], "a": [100]})
    arcs = ring_arcs(ring)
    assert _owner_at(arcs, 100) == ring.owner(100) == "a"
    assert _owner_at(arcs, 4000) == ring.owner(4000) == "b"
    # The other vnode on a shared token owns an empty arc: none is drawn (the page
    # would take an arc ending where it starts for the whole circle).
    arcs = ring_arcs(Ring({"a": [100], "b": [100], "c": [200]}))
    assert list(zip(arcs.ends, arcs.owner_of, strict=True)) == [(100, 0), (200, 2)]


@pytest.mark.parametrize("seed", range(5))
def test_exact_arcs_give_every_token_the_rings_owner_and_every_owner_its_share(
        seed: int) -> None:
    ring = _random_ring(nodes=5, vnodes=40, seed=seed)
    arcs = ring_arcs(ring)
    assert arcs.exact and arcs.vnodes == 200
    assert len(arcs.ends) < 200  # neighbours of one owner merged
    # No two neighbouring arcs (the last and the first included) have one owner.
    assert all(arcs.owner_of[i] != arcs.owner_of[i - 1] for i in range(len(arcs.ends)))
    rng = random.Random(seed)
    probes = [rng.randrange(TOKEN_SPACE) for _ in range(2000)] + [0, MAX_TOKEN]
    probes += list(arcs.ends) + [e + 1 for e in arcs.ends if e < MAX_TOKEN]
    for token in probes:
        assert _owner_at(arcs, token) == ring.owner(token), token
    expected = {node: share * TOKEN_SPACE for node, share in ring.ownership().items()}
    for node, amount in _shares(arcs).items():
        assert amount == pytest.approx(expected[node], rel=1e-9)


def _majority(ring: Ring, lo: int, hi: int) -> set[str]:
    """The owners holding the most of [lo, hi), by brute force over the vnodes."""
    exact = ring_arcs(ring, max_arcs=10**9)
    held: dict[str, int] = {}
    ends = exact.ends
    for i, (end, owner) in enumerate(zip(ends, exact.owner_of, strict=True)):
        start = ends[i - 1]
        pieces = [(start, end)] if start < end else [(start, TOKEN_SPACE), (0, end)]
        for a, b in pieces:
            overlap = min(b, hi) - max(a, lo)
            if overlap > 0:
                held[exact.owners[owner]] = held.get(exact.owners[owner], 0) + overlap
    best = max(held.values())
    return {node for node, amount in held.items() if amount == best}


def test_a_ring_too_large_is_coarsened_into_slices_of_their_main_owner() -> None:
    ring = _random_ring(nodes=7, vnodes=64, seed=11)
    slices = 24
    arcs = ring_arcs(ring, max_arcs=slices)
    assert not arcs.exact and arcs.vnodes == 7 * 64
    assert 1 <= len(arcs.ends) <= slices
    for j in range(slices):
        lo, hi = j * TOKEN_SPACE // slices, (j + 1) * TOKEN_SPACE // slices
        assert _owner_at(arcs, lo + 1) in _majority(ring, lo, hi), j
    assert sum(_shares(arcs).values()) == TOKEN_SPACE


def test_a_hundred_nodes_of_256_vnodes_stay_within_bounds() -> None:
    ring = _random_ring(nodes=100, vnodes=256, seed=3)
    arcs = ring_arcs(ring)
    assert not arcs.exact and arcs.vnodes == 25_600
    assert len(arcs.ends) <= MAX_ARCS
    doc = arcs.to_json()
    body = json.dumps(doc, separators=(",", ":"))
    assert len(body) < 64 * 1024
    fractions = [end for end, _ in doc["arcs"]]
    assert fractions == sorted(set(fractions)) and fractions[0] >= 0.0 and fractions[-1] <= 1.0
    assert all(0 <= owner < 100 for _, owner in doc["arcs"])
    # Slices of ~12 vnodes each: every node still shows, near its share of the ring.
    shares = _shares(arcs)
    truth = ring.ownership()
    assert sum(1 for node in truth if shares[node] > 0) >= 95
    drift = sum(abs(shares[n] / TOKEN_SPACE - truth[n]) for n in truth)
    assert drift < 0.5  # of a total of 2 (every token counted once in each)


def test_arcs_thinner_than_the_precision_kept_are_left_out_of_the_json() -> None:
    # b's arc, (1000, 2000], is ~5e-17 of the ring: it would round to a zero-length arc.
    doc = ring_arcs(Ring({"a": [1000], "b": [2000], "c": [1 << 63]})).to_json()
    fractions = [end for end, _ in doc["arcs"]]
    assert fractions == sorted(set(fractions))
    assert doc["arcs"] == [[0.0, 0], [0.5, 2]]
    assert doc["owners"] == ["a", "b", "c"]


def test_max_arcs_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_arcs"):
        ring_arcs(Ring({"a": [1]}), max_arcs=0)


# --- the routes -------------------------------------------------------------------------------


@pytest.fixture
def runtime() -> Iterator[NodeRuntime]:
    rt = NodeRuntime(fast_test_config("n1", n=1, r=1, w=1))
    try:
        yield rt
    finally:
        rt.engine.close()
        rt._executor.shutdown()


def _app(runtime: NodeRuntime, token: str | None = None) -> web.Application:
    app = web.Application()
    console.register(app, runtime, AdminGuard(token))
    return app


async def _fetch(client: TestClient[Any, Any], path: str,
                 headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    resp = await client.get(path, headers=headers or {})
    return resp.status, resp.headers, await resp.read()


def _get(app: web.Application, *requests: tuple[str, dict[str, str]]) -> list[Any]:
    """Each (path, headers) GET over real loopback TCP: (status, headers, body bytes)."""

    async def go() -> list[Any]:
        async with TestClient(TestServer(app)) as client:
            return [await _fetch(client, path, headers) for path, headers in requests]

    return asyncio.run(go())


def test_every_answer_carries_a_strict_csp_and_no_sniffing(runtime: NodeRuntime) -> None:
    paths = [*console.ASSETS, "/ui/ring.json", "/ui/state.json"]
    for path, (status, headers, _) in zip(paths, _get(_app(runtime), *[(p, {}) for p in paths]),
                                          strict=True):
        assert status == 200, path
        csp = headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
        assert "unsafe" not in csp and "data:" not in csp and "http" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"


def test_the_page_and_its_files_are_served_and_revalidated(runtime: NodeRuntime) -> None:
    async def go() -> None:
        async with TestClient(TestServer(_app(runtime))) as client:
            for path, (name, ctype) in console.ASSETS.items():
                status, headers, body = await _fetch(client, path)
                assert status == 200 and headers["Content-Type"] == ctype, path
                stored = resources.files("ringkv.server").joinpath("console", name)
                assert body == stored.read_bytes()
                assert headers["Cache-Control"] == "no-cache"
                again = await _fetch(client, path, {"If-None-Match": headers["ETag"]})
                assert (again[0], again[2]) == (304, b""), path
                assert again[1]["ETag"] == headers["ETag"]
                stale = await _fetch(client, path, {"If-None-Match": '"not-it"'})
                assert stale[0] == 200 and stale[2] == body

    asyncio.run(go())


def test_ring_json_draws_this_nodes_ring_and_is_built_once_per_ring(
        runtime: NodeRuntime) -> None:
    async def go() -> None:
        async with TestClient(TestServer(_app(runtime))) as client:
            status, headers, body = await _fetch(client, "/ui/ring.json")
            assert status == 200 and headers["Content-Type"].startswith("application/json")
            assert headers["Cache-Control"] == "no-cache"
            doc = json.loads(body)
            assert doc["node_id"] == "n1" and doc["n"] == 1 and doc["owners"] == ["n1"]
            assert doc["vnodes"] == 32 and doc["exact"] is True and doc["pending"] is None
            assert len(doc["arcs"]) == 1  # one owner: the whole ring
            etag = headers["ETag"]
            for tag in (etag, "W/" + etag, f'"other", {etag}'):
                status, _, body = await _fetch(client, "/ui/ring.json", {"If-None-Match": tag})
                assert (status, body) == (304, b""), tag

            # A new ring (a membership change) is a new document, and while it is in
            # flight the ring it moves to comes with it.
            node = runtime.node
            node.ring = Ring({"n1": node.ring.tokens_of("n1"), "n2": [1 << 63, 1 << 62]})
            node.pending = Ring({"n2": [1 << 63]})
            status, headers, body = await _fetch(client, "/ui/ring.json",
                                                 {"If-None-Match": etag})
            assert status == 200 and headers["ETag"] != etag
            doc = json.loads(body)
            assert doc["owners"] == ["n1", "n2"] and doc["vnodes"] == 34
            assert {owner for _, owner in doc["arcs"]} == {0, 1}
            assert doc["pending"]["owners"] == ["n2"] and len(doc["pending"]["arcs"]) == 1

    asyncio.run(go())


def test_ring_json_is_computed_once_per_ring(runtime: NodeRuntime) -> None:
    with mock.patch.object(console, "ring_arcs", wraps=console.ring_arcs) as spy:
        _get(_app(runtime), ("/ui/ring.json", {}), ("/ui/ring.json", {}),
             ("/ui/ring.json", {}))
    assert spy.call_count == 1  # the ring only: pending is the same ring


def test_state_json_reports_what_the_page_shows(runtime: NodeRuntime) -> None:
    runtime.node.store.hint_index["n3"] = SortedSet([b"h1"])
    runtime.node.store.hint_index["n2"] = SortedSet([b"h1", b"h2"])
    [(status, headers, body)] = _get(_app(runtime), ("/ui/state.json", {}))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    doc = json.loads(body)
    assert doc["node_id"] == "n1" and doc["liveness"] == "up"
    assert doc["admin"] == "open"  # no token, and the test client is on loopback
    ae = doc["anti_entropy"]
    assert set(ae) == {"interval", "ranges", "built", "shared", "confirmed", "exchanges",
                       "keys_repaired", "keys_sent", "bytes_sent"}
    assert ae["interval"] == 1.0 and 0 <= ae["built"] <= ae["ranges"]
    assert 0 <= ae["confirmed"] <= ae["shared"] <= ae["ranges"]
    assert doc["hints"]["pending"] == 3 == runtime.node.store.hints_pending()
    assert doc["hints"]["by_target"] == [{"node_id": "n2", "pending": 2},
                                         {"node_id": "n3", "pending": 1}]
    assert {"stored", "delivered"} <= set(doc["hints"])
    for name in ("read_repairs", "requests_waiting", "http_connections", "faults"):
        assert isinstance(doc[name], int), name


def test_hints_by_target_are_bounded(runtime: NodeRuntime) -> None:
    for i in range(console.MAX_HINT_TARGETS + 10):
        runtime.node.store.hint_index[f"m{i:03d}"] = SortedSet([b"h", b"x%d" % i])
    [(_, _, body)] = _get(_app(runtime), ("/ui/state.json", {}))
    hints = json.loads(body)["hints"]
    assert len(hints["by_target"]) == console.MAX_HINT_TARGETS
    assert hints["pending"] == 2 * (console.MAX_HINT_TARGETS + 10)


def test_state_json_tells_a_node_with_a_token_wants_it(runtime: NodeRuntime) -> None:
    app = _app(runtime, TOKEN)
    answers = _get(app, ("/ui/state.json", {}),
                   ("/ui/state.json", {"Authorization": "Bearer wrong"}),
                   ("/ui/state.json", {"Authorization": f"Bearer {TOKEN}"}))
    assert [json.loads(body)["admin"] for _, _, body in answers] == ["token"] * 3


@pytest.mark.parametrize(("token", "peer", "mode"), [
    (None, ("127.0.0.1", 5000), "open"),
    (None, ("::1", 5000, 0, 0), "open"),
    (None, ("10.1.2.3", 5000), "loopback-only"),
    (TOKEN, ("10.1.2.3", 5000), "token"),
    (TOKEN, ("127.0.0.1", 5000), "token"),
])
def test_admin_mode_is_what_the_guard_answers(token: str | None, peer: tuple[Any, ...],
                                              mode: str) -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = (
        lambda name, default=None: peer if name == "peername" else default)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        request = make_mocked_request("GET", "/ui/state.json", headers=headers,
                                      transport=transport)
        assert admin_mode(AdminGuard(token), request) == mode


def test_a_missing_file_of_the_page_is_logged_and_named_but_the_rest_is_served(
        runtime: NodeRuntime, caplog: pytest.LogCaptureFixture) -> None:
    broken = dict(console.ASSETS)
    broken["/ui/console.js"] = ("no-such-file.js", "text/javascript")
    with mock.patch.object(console, "ASSETS", broken):
        app = _app(runtime)
        answers = _get(app, ("/ui/console.js", {}), ("/ui", {}), ("/ui/state.json", {}))
    assert "no-such-file.js missing" in caplog.text
    (status, headers, body), page, state = answers
    assert status == 500 and "no-such-file.js is missing" in json.loads(body)["error"]
    assert headers["Content-Security-Policy"] == console.CSP
    assert page[0] == 200 and state[0] == 200


def test_make_app_serves_the_console(runtime: NodeRuntime) -> None:
    from ringkv.server.http_api import make_app

    app = make_app(runtime)
    paths = [*console.ASSETS, "/ui/ring.json", "/ui/state.json"]
    answers = _get(app, *[(path, {}) for path in paths])
    assert [status for status, _, _ in answers] == [200] * len(paths), (
        "make_app must call ringkv.server.console.register(app, runtime, guard)")


def test_the_package_data_ships_the_files_of_the_page() -> None:
    # An install from a wheel (the image) holds only the package data pyproject.toml
    # names: every file of the page must be among it.
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    patterns = data.get(console.ASSET_PACKAGE, [])
    for name, _ in console.ASSETS.values():
        path = f"{console.ASSET_DIR}/{name}"
        assert any(fnmatch.fnmatch(path, p) for p in patterns), (path, patterns)


# --- the page ---------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("ringkv.server").joinpath("console", name).read_text("utf-8")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_page_has_nothing_inline_and_loads_only_its_own_files(
        runtime: NodeRuntime) -> None:
    parser = _Tags()
    parser.feed(_asset("index.html"))
    tags = parser.tags
    assert parser.script_text.strip() == ""  # the CSP would refuse inline script
    assert not [t for t, _ in tags if t == "style"]
    for tag, attrs in tags:
        assert "style" not in attrs, tag  # the CSP would refuse inline style
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
    scripts = [attrs.get("src") or "" for tag, attrs in tags if tag == "script"]
    links = [attrs.get("href") or "" for tag, attrs in tags if tag == "link"]
    assert scripts == ["/ui/console.js"]
    assert sorted(links) == ["/ui/console.css", "/ui/favicon.svg"]
    # Every file the page loads is one the console serves.
    answers = _get(_app(runtime), *[(path, {}) for path in scripts + links])
    assert [status for status, _, _ in answers] == [200] * len(answers)


def test_the_script_builds_no_markup_stores_nothing_and_fetches_only_this_node() -> None:
    js = _asset("console.js")
    code = re.sub(r"^\s*//.*$", "", js, flags=re.M)  # the rules are stated in comments
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                   "eval(", "new Function", "localStorage", "sessionStorage",
                   "document.cookie", "indexedDB", "setAttribute(\"style\"",
                   "setAttribute('style'", "javascript:"):
        assert banned not in code, banned
    # The token is read in one place, the admin request, and sent in one header.
    assert code.count('$("token").value') == 2  # read when sending, cleared by Forget
    assert code.count("Authorization") == 1
    # Every fetch goes to a path of this node.
    fetched = re.findall(r'get\("([^"]*)"', code)
    assert fetched and all(p.startswith("/") and not p.startswith("//") for p in fetched)
    # No address but the SVG namespace and the links to other members' consoles.
    others = code.replace('"http://www.w3.org/2000/svg"', "").replace('"http://" + http', "")
    assert "http://" not in others
    assert "https://" not in code
