"""The client library's encoding and parsing, against scripted HTTP answers.

Most tests use `httpx.MockTransport` (no sockets); one round trip goes through a real
aiohttp server on an ephemeral port to check that arbitrary key bytes survive the wire.
The client commands of the CLI are checked here too, with the same mock transport.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest
from click.testing import CliRunner

import ringkv.client as client_mod
import ringkv.client.update_plan as update_plan_mod
from ringkv.client import (
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    GetResult,
    QuorumError,
    ServerError,
    TransportError,
    build_get,
    key_path,
    parse_multipart,
    quorum_param,
)
from ringkv.tools.cli import main as cli_main

URL = "http://node.test:8001"
Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests from a list, in order, and remembers the requests."""

    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        assert self.responses, f"unexpected request {request.method} {request.url}"
        answer = self.responses.pop(0)
        return answer(request) if callable(answer) else answer


def sync_client(script: Script) -> Client:
    return Client(URL, transport=httpx.MockTransport(script))


def async_client(script: Script) -> AsyncClient:
    return AsyncClient(URL, transport=httpx.MockTransport(script))


def siblings_json(*values: bytes, context: str = "ctx-sib") -> httpx.Response:
    doc = {
        "siblings": [
            {"value": base64.b64encode(v).decode(), "content_type": "application/json"}
            for v in values
        ],
        "context": context,
    }
    return httpx.Response(300, json=doc, headers={"X-Context": context})


def quorum_failed(acks: int = 1, required: int = 2) -> httpx.Response:
    return httpx.Response(
        503, json={"error": "write quorum not reached", "acks": acks, "required": required}
    )


# ----------------------------------------------------------------------------- get


def test_get_200_returns_value_type_and_context() -> None:
    script = Script(
        httpx.Response(
            200, content=b"hello", headers={"Content-Type": "text/plain", "X-Context": "c1"}
        )
    )
    with sync_client(script) as kv:
        result = kv.get("greeting", r="quorum", timeout=0.5)
    assert result == GetResult([b"hello"], ["text/plain"], "c1")
    assert result.found and not result.conflict and result.value == b"hello"
    (req,) = script.requests
    assert req.method == "GET"
    assert req.url.raw_path == b"/kv/greeting?r=quorum&timeout=500"
    assert req.headers["Accept"] == "application/json"


def test_get_300_json_siblings() -> None:
    script = Script(siblings_json(b'["a"]', b'["b"]', context="both"))
    with sync_client(script) as kv:
        result = kv.get(b"cart")
    assert result.values == [b'["a"]', b'["b"]']
    assert result.content_types == ["application/json", "application/json"]
    assert result.context == "both"
    assert result.found and result.conflict
    with pytest.raises(ConflictError):
        _ = result.value


def test_get_300_multipart_fallback() -> None:
    body = (
        b"--XyZ\r\nContent-Type: text/plain\r\n\r\none\r\n"
        b"--XyZ\r\nContent-Type: application/octet-stream\r\n\r\n\x00\r\n--\r\n"
        b"--XyZ--\r\n"
    )
    script = Script(
        httpx.Response(
            300,
            content=body,
            headers={"Content-Type": "multipart/mixed; boundary=XyZ", "X-Context": "m"},
        )
    )
    with sync_client(script) as kv:
        result = kv.get("k")
    assert result.values == [b"one", b"\x00\r\n--"]
    assert result.content_types == ["text/plain", "application/octet-stream"]
    assert result.context == "m"


def test_parse_multipart_without_part_headers() -> None:
    body = b"--b\r\n\r\nraw\r\n--b\r\n\r\n\r\n--b--\r\n"
    assert parse_multipart(body, 'multipart/mixed; boundary="b"') == [
        (b"raw", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ]


def test_get_404_without_and_with_context() -> None:
    script = Script(
        httpx.Response(404, json={"error": "not found"}),
        httpx.Response(404, json={"error": "not found"}, headers={"X-Context": "tomb"}),
    )
    with sync_client(script) as kv:
        never = kv.get("k")
        deleted = kv.get("k")
    assert not never.found and never.context is None and never.values == []
    assert never.value is None
    assert not deleted.found and deleted.context == "tomb"


def test_get_503_is_a_quorum_error_with_acks() -> None:
    script = Script(quorum_failed(acks=1, required=3))
    with sync_client(script) as kv, pytest.raises(QuorumError) as info:
        kv.get("k", r="all")
    assert (info.value.acks, info.value.required) == (1, 3)
    assert "1 of 3" in str(info.value)


def test_503_without_json_body() -> None:
    script = Script(httpx.Response(503, text="node is joining"))
    with sync_client(script) as kv, pytest.raises(QuorumError) as info:
        kv.get("k")
    assert info.value.acks is None and info.value.message == "node is joining"


def test_4xx_and_5xx_errors() -> None:
    script = Script(
        httpx.Response(400, json={"error": "bad r"}),
        httpx.Response(413, text=""),
        httpx.Response(500, text="boom"),
    )
    with sync_client(script) as kv:
        with pytest.raises(BadRequestError) as bad:
            kv.get("k", r=9)
        assert (bad.value.status, bad.value.message) == (400, "bad r")
        with pytest.raises(BadRequestError) as big:
            kv.put("k", b"x" * 10)
        assert (big.value.status, big.value.message) == (413, "value too large")
        with pytest.raises(ServerError) as boom:
            kv.get("k")
        assert boom.value.status == 500


def test_connection_error_is_a_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        Client(URL, transport=httpx.MockTransport(refuse)) as kv,
        pytest.raises(TransportError, match="cannot reach http://node.test:8001"),
    ):
        kv.get("k")


# ------------------------------------------------------------------------ put / delete


def test_put_sends_context_params_and_returns_new_context() -> None:
    script = Script(httpx.Response(204, headers={"X-Context": "new"}))
    with sync_client(script) as kv:
        ctx = kv.put(
            "k", b"v", context="old", w="all", ttl=30, content_type="text/plain", timeout=2
        )
    assert ctx == "new"
    (req,) = script.requests
    assert req.method == "PUT"
    assert req.url.raw_path == b"/kv/k?w=all&timeout=2000&ttl=30"
    assert req.headers["X-Context"] == "old"
    assert req.headers["Content-Type"] == "text/plain"
    assert req.content == b"v"


def test_put_without_context_sends_no_context_header() -> None:
    script = Script(httpx.Response(204, headers={"X-Context": "c"}))
    with sync_client(script) as kv:
        kv.put("k", b"")
    (req,) = script.requests
    assert "X-Context" not in req.headers
    assert req.headers["Content-Type"] == "application/octet-stream"
    assert req.url.raw_path == b"/kv/k"


def test_put_503_is_a_quorum_error() -> None:
    with sync_client(Script(quorum_failed(0, 2))) as kv, pytest.raises(QuorumError) as info:
        kv.put("k", b"v", w=2)
    assert (info.value.acks, info.value.required) == (0, 2)


def test_delete_sends_context_and_tolerates_missing_keys() -> None:
    script = Script(httpx.Response(204), httpx.Response(404, json={"error": "not found"}))
    with sync_client(script) as kv:
        kv.delete("k", context="seen", w=1)
        kv.delete("missing")
    first, second = script.requests
    assert first.method == "DELETE" and first.headers["X-Context"] == "seen"
    assert first.url.raw_path == b"/kv/k?w=1"
    assert "X-Context" not in second.headers


# ------------------------------------------------------------------------------ keys


def test_arbitrary_key_bytes_are_percent_encoded() -> None:
    key = bytes(range(256))
    path = key_path(key)
    assert path == "/kv/" + quote(key, safe="")
    assert unquote_to_bytes(path[len("/kv/") :]) == key
    assert "/" not in path[len("/kv/") :] and "?" not in path and "#" not in path
    script = Script(httpx.Response(404))
    with sync_client(script) as kv:
        kv.get(key)
    raw = script.requests[0].url.raw_path
    assert unquote_to_bytes(raw[len(b"/kv/") :].decode("ascii")) == key


def test_str_keys_are_utf8_and_reserved_characters_quoted() -> None:
    assert key_path("a/b c?d#é%") == "/kv/a%2Fb%20c%3Fd%23%C3%A9%25"
    assert key_path("safe-_.~") == "/kv/safe-_.~"
    assert key_path("..") == "/kv/%2E%2E" and key_path(".") == "/kv/%2E"
    assert key_path("...") == "/kv/..."
    with pytest.raises(ValueError):
        key_path("")
    with pytest.raises(TypeError):
        key_path(42)  # type: ignore[arg-type]


def test_quorum_values() -> None:
    assert quorum_param("r", None) is None
    assert quorum_param("r", 2) == "2"
    assert quorum_param("r", "ONE") == "one"
    assert quorum_param("w", " all ") == "all"
    assert quorum_param("w", "3") == "3"
    for bad in (0, -1, "zero", "", True, 1.5):
        with pytest.raises(ValueError):
            quorum_param("r", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_get("k", timeout=0)


# ----------------------------------------------------------------------------- update


def union(values: list[bytes]) -> bytes:
    merged: set[str] = set()
    for v in values:
        merged |= set(json.loads(v))
    return json.dumps(sorted(merged)).encode()


def add(item: str) -> Callable[[bytes | None], bytes]:
    def fn(current: bytes | None) -> bytes:
        items = set(json.loads(current)) if current is not None else set()
        return json.dumps(sorted(items | {item})).encode()

    return fn


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The update plan looks the delay up in its own module.
    monkeypatch.setattr(update_plan_mod, "backoff_delay", lambda attempt, rng=None: 0.0)
    yield


def test_update_merges_siblings_and_writes_with_the_read_context() -> None:
    script = Script(
        siblings_json(b'["apple"]', b'["pear"]', context="ctx-both"),
        httpx.Response(204, headers={"X-Context": "after"}),
    )
    with sync_client(script) as kv:
        written = kv.update("cart", add("milk"), merge=union, w="quorum")
    assert json.loads(written) == ["apple", "milk", "pear"]
    get, put = script.requests
    assert get.method == "GET" and put.method == "PUT"
    assert put.headers["X-Context"] == "ctx-both"
    assert put.url.raw_path == b"/kv/cart?w=quorum"
    assert put.content == written


def test_update_of_an_absent_key_passes_none_and_keeps_a_tombstone_context() -> None:
    seen: list[bytes | None] = []

    def fn(current: bytes | None) -> bytes:
        seen.append(current)
        return b"fresh"

    script = Script(
        httpx.Response(404, headers={"X-Context": "tomb"}),
        httpx.Response(204, headers={"X-Context": "c"}),
    )
    with sync_client(script) as kv:
        assert kv.update("k", fn) == b"fresh"
    assert seen == [None]
    assert script.requests[1].headers["X-Context"] == "tomb"


def test_update_retries_after_503_and_rereads() -> None:
    script = Script(
        httpx.Response(200, content=b'["a"]', headers={"X-Context": "v1"}),
        quorum_failed(1, 2),  # the write fails
        quorum_failed(0, 2),  # the re-read fails too
        siblings_json(b'["a"]', b'["a", "b"]', context="v2"),
        httpx.Response(204, headers={"X-Context": "v3"}),
    )
    with sync_client(script) as kv:
        written = kv.update("cart", add("b"), merge=union, retries=3)
    assert json.loads(written) == ["a", "b"]
    methods = [r.method for r in script.requests]
    assert methods == ["GET", "PUT", "GET", "GET", "PUT"]
    assert script.requests[-1].headers["X-Context"] == "v2"


def test_update_gives_up_after_retries() -> None:
    script = Script(*[quorum_failed(1, 2)] * 3)
    with sync_client(script) as kv, pytest.raises(QuorumError):
        kv.update("k", add("x"), retries=2)
    assert len(script.requests) == 3


def test_update_with_siblings_needs_merge() -> None:
    script = Script(siblings_json(b'["a"]', b'["b"]'))
    with sync_client(script) as kv, pytest.raises(ConflictError, match="merge"):
        kv.update("k", add("x"))
    assert len(script.requests) == 1  # nothing was written


def test_update_does_not_retry_other_errors() -> None:
    script = Script(httpx.Response(400, json={"error": "key too long"}))
    with sync_client(script) as kv, pytest.raises(BadRequestError):
        kv.update("k", add("x"))


# ------------------------------------------------------------------------------ async


def test_async_client_shares_the_protocol() -> None:
    script = Script(
        siblings_json(b'["a"]', b'["b"]', context="s"),
        quorum_failed(1, 2),
        siblings_json(b'["a"]', b'["b"]', context="s2"),
        httpx.Response(204, headers={"X-Context": "done"}),
        httpx.Response(200, content=b'["a", "b", "c"]', headers={"X-Context": "done"}),
        httpx.Response(404),
        httpx.Response(200, json={"node_id": "n1", "members": []}),
    )

    async def scenario() -> tuple[bytes, GetResult, GetResult, dict[str, Any]]:
        async with async_client(script) as kv:
            written = await kv.update("cart", add("c"), merge=union)
            got = await kv.get("cart")
            missing = await kv.get("other")
            cluster = await kv.cluster()
        return written, got, missing, cluster

    written, got, missing, cluster = asyncio.run(scenario())
    assert json.loads(written) == ["a", "b", "c"]
    assert got.value == b'["a", "b", "c"]'
    assert not missing.found
    assert cluster["node_id"] == "n1"
    assert script.requests[3].headers["X-Context"] == "s2"


# -------------------------------------------------------------------- cluster endpoints


def test_cluster_health_lookup_leave() -> None:
    script = Script(
        httpx.Response(200, json={"status": "ok", "node_id": "n1"}),
        httpx.Response(200, json={"node_id": "n1", "n": 3, "r": 2, "w": 2, "members": []}),
        httpx.Response(200, json={"key": "a/b", "preference_list": ["n2", "n1", "n3"]}),
        httpx.Response(501, json={"error": "leave is not implemented yet"}),
    )
    with sync_client(script) as kv:
        assert kv.health()["status"] == "ok"
        assert kv.cluster()["n"] == 3
        assert kv.lookup("a/b") == ["n2", "n1", "n3"]
        with pytest.raises(ServerError) as info:
            kv.leave()
    assert info.value.status == 501 and "not implemented" in info.value.message
    assert script.requests[2].url.raw_path == b"/ring/lookup?key=a%2Fb"
    assert script.requests[3].method == "POST"


# ------------------------------------------------------------- real HTTP round trip


def test_key_bytes_survive_a_real_aiohttp_server() -> None:
    from aiohttp import web

    seen: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        raw = request.rel_url.raw_path[len("/kv/") :]
        seen.append(unquote_to_bytes(raw))
        return web.Response(
            body=seen[-1], headers={"X-Context": "c", "Content-Type": "application/x-key"}
        )

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("GET", r"/kv/{key:[\s\S]+}", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        key = bytes(range(1, 256)) + b"\x00/.."
        with Client(f"http://127.0.0.1:{port}", timeout=5) as kv:
            result = kv.get(key)
            assert kv.get("ü/ä?#").value == "ü/ä?#".encode()
            assert kv.get("..").value == b".."
            assert kv.get(".").value == b"."
        assert seen[0] == key
        assert result.value == key and result.context == "c"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


# ---------------------------------------------------------------------- CLI commands


@pytest.fixture
def cli_script(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Script]:
    def install(*responses: httpx.Response | Handler) -> Script:
        script = Script(*responses)
        real = client_mod.Client

        def factory(base_url: str = URL, **kwargs: Any) -> Client:
            return real(base_url, transport=httpx.MockTransport(script))

        # The CLI's commands look the class up in ringkv.client when they run.
        monkeypatch.setattr(client_mod, "Client", factory)
        return script

    return install


def test_cli_get_found_prints_raw_value(cli_script: Callable[..., Script]) -> None:
    script = cli_script(httpx.Response(200, content=b"\x00raw", headers={"X-Context": "c9"}))
    result = CliRunner().invoke(cli_main, ["get", "k", "-v", "--r", "one"])
    assert result.exit_code == 0
    assert result.stdout_bytes == b"\x00raw"
    assert result.stderr.strip() == "context: c9"
    assert script.requests[0].url.raw_path == b"/kv/k?r=one"


def test_cli_get_not_found_exits_1(cli_script: Callable[..., Script]) -> None:
    cli_script(httpx.Response(404))
    result = CliRunner().invoke(cli_main, ["get", "k"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "not found"


def test_cli_get_siblings_and_json(cli_script: Callable[..., Script]) -> None:
    cli_script(siblings_json(b"one", b"two\n", context="cx"), siblings_json(b"one", b"two"))
    result = CliRunner().invoke(cli_main, ["get", "k"])
    assert result.exit_code == 0
    assert result.stdout == (
        "--- sibling 1 of 2 (application/json) ---\none\n"
        "--- sibling 2 of 2 (application/json) ---\ntwo\n"
    )
    assert "2 siblings" in result.stderr
    result = CliRunner().invoke(cli_main, ["get", "k", "--json"])
    doc = json.loads(result.stdout)
    assert doc["found"] is True and doc["context"] == "ctx-sib"
    assert [base64.b64decode(s["value"]) for s in doc["siblings"]] == [b"one", b"two"]


def test_cli_quorum_failure_exits_3(cli_script: Callable[..., Script]) -> None:
    cli_script(quorum_failed(1, 3))
    result = CliRunner().invoke(cli_main, ["put", "k", "v", "--w", "all"])
    assert result.exit_code == 3
    assert "1 of 3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_connection_error_exits_4(cli_script: Callable[..., Script]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    cli_script(refuse)
    result = CliRunner().invoke(cli_main, ["get", "k"])
    assert result.exit_code == 4
    assert result.stderr.startswith("error: cannot reach")
    assert "Traceback" not in result.output


def test_cli_usage_error_exits_2() -> None:
    result = CliRunner().invoke(cli_main, ["get", "k", "--r", "most"])
    assert result.exit_code == 2


def test_cli_put_reads_stdin(cli_script: Callable[..., Script]) -> None:
    script = cli_script(
        httpx.Response(204, headers={"X-Context": "n"}),
        httpx.Response(204, headers={"X-Context": "n"}),
    )
    result = CliRunner().invoke(
        cli_main, ["put", "k", "-", "--context", "c0", "--ttl", "9"], input=b"from stdin"
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli_main, ["put", "k"], input=b"implicit")
    assert result.exit_code == 0
    first, second = script.requests
    assert first.content == b"from stdin" and first.headers["X-Context"] == "c0"
    assert first.url.raw_path == b"/kv/k?ttl=9"
    assert second.content == b"implicit"


def test_cli_delete_reads_the_context_first(cli_script: Callable[..., Script]) -> None:
    script = cli_script(
        httpx.Response(200, content=b"v", headers={"X-Context": "seen"}),
        httpx.Response(204),
    )
    result = CliRunner().invoke(cli_main, ["delete", "k"])
    assert result.exit_code == 0, result.output
    assert [r.method for r in script.requests] == ["GET", "DELETE"]
    assert script.requests[1].headers["X-Context"] == "seen"


def test_cli_cluster_status_and_leave(cli_script: Callable[..., Script]) -> None:
    cli_script(
        httpx.Response(
            200,
            json={
                "node_id": "n1",
                "n": 3,
                "r": 2,
                "w": 2,
                "members": [
                    {
                        "node_id": "n1",
                        "http": "127.0.0.1:8001",
                        "rpc": "127.0.0.1:9001",
                        "status": "up",
                    },
                    {
                        "node_id": "n2",
                        "http": "127.0.0.1:8002",
                        "rpc": "127.0.0.1:9002",
                        "status": "down",
                    },
                ],
            },
        ),
        httpx.Response(501, json={"error": "leave is not implemented yet"}),
    )
    result = CliRunner().invoke(cli_main, ["cluster", "status"])
    assert result.exit_code == 0, result.output
    assert "n2" in result.stdout and "down" in result.stdout
    assert "n=3 r=2 w=2" in result.stdout
    result = CliRunner().invoke(cli_main, ["cluster", "leave"])
    assert result.exit_code == 4
    assert "not implemented" in result.stderr


def test_cli_accepts_every_contract_option_on_every_command(
    cli_script: Callable[..., Script],
) -> None:
    script = cli_script(
        httpx.Response(200, content=b"v", headers={"X-Context": "c"}),
        httpx.Response(204, headers={"X-Context": "c2"}),
        httpx.Response(200, content=b"v", headers={"X-Context": "c3"}),
        httpx.Response(204),
    )
    runner = CliRunner()
    for args in (
        ["get", "k", "--r", "2", "--w", "2", "--context", "x"],
        ["put", "k", "v", "--r", "2", "--w", "2", "--context", "x"],
        ["delete", "k", "--r", "one", "--w", "all"],
    ):
        result = runner.invoke(cli_main, [*args, "--node", URL])
        assert result.exit_code == 0, (args, result.output)
    get, put, read, delete = script.requests
    assert get.url.raw_path == b"/kv/k?r=2"
    assert put.url.raw_path == b"/kv/k?w=2" and put.headers["X-Context"] == "x"
    assert read.url.raw_path == b"/kv/k?r=one"
    assert delete.url.raw_path == b"/kv/k?w=all" and delete.headers["X-Context"] == "c3"
