"""`ringkv put | get | delete --json`, and failures as JSON documents
(`ringkv.tools.exits.JsonCommand`), against a fake node over a socket
(`tests.unit.client.fake_node`) or a scripted transport."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

import ringkv.client as client_mod
from ringkv.tools.cli import main as cli_main
from tests.unit.client.fake_node import FakeNode, dead_url, fake_nodes


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with fake_nodes(1) as (fake,):
        yield fake


def run(url: str, *args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli_main, [*args, "--node", url], input=stdin)


def doc_of(result: Result) -> dict[str, Any]:
    """stdout as exactly one JSON object."""
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


# --------------------------------------------------------------------------- success


def test_put_get_delete_json(node: FakeNode) -> None:
    result = run(node.url, "put", "k", "héllo", "--content-type", "text/plain", "--json")
    assert result.exit_code == 0, result.output
    assert doc_of(result) == {"key": "k", "bucket": "default", "written": True,
                              "bytes": len("héllo".encode()), "content_type": "text/plain",
                              "context": "c1"}
    result = run(node.url, "get", "k", "--json")
    assert result.exit_code == 0, result.output
    got = doc_of(result)
    assert got == {"key": "k", "bucket": "default", "found": True, "conflict": False,
                   "siblings": [{"value": base64.b64encode("héllo".encode()).decode(),
                                 "text": "héllo", "content_type": "text/plain"}],
                   "context": "c1", "etag": '"v1"'}
    result = run(node.url, "delete", "k", "--json")
    assert result.exit_code == 0, result.output
    assert doc_of(result) == {"key": "k", "bucket": "default", "deleted": True,
                              "context": "c1", "if_match": None}
    assert run(node.url, "put", "k", "in b", "--bucket", "b").exit_code == 0
    result = run(node.url, "delete", "k", "--json", "--if-match", '"v2"', "--bucket", "b")
    assert result.exit_code == 0, result.output
    assert doc_of(result) == {"key": "k", "bucket": "b", "deleted": True, "context": None,
                              "if_match": '"v2"'}


def test_get_json_value_not_utf8_is_base64_only(node: FakeNode) -> None:
    raw = b"\xff\x00\xfe"
    assert run(node.url, "put", "bin", "-", stdin=raw).exit_code == 0
    (sibling,) = doc_of(run(node.url, "get", "bin", "--json"))["siblings"]
    assert base64.b64decode(sibling["value"]) == raw
    assert sibling["text"] is None
    assert sibling["content_type"] == "application/octet-stream"


def test_get_json_not_found_is_a_document_and_exit_1(node: FakeNode) -> None:
    result = run(node.url, "get", "nothing", "--json")
    assert result.exit_code == 1
    assert doc_of(result) == {"key": "nothing", "bucket": "default", "found": False,
                              "conflict": False, "siblings": [], "context": None,
                              "etag": None}
    assert result.stderr.strip() == "not found"


def test_outputs_without_json_are_unchanged(node: FakeNode) -> None:
    result = run(node.url, "put", "k", "v")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    result = run(node.url, "get", "k")
    assert result.stdout_bytes == b"v" and result.stderr == ""
    result = run(node.url, "delete", "k")
    assert (result.exit_code, result.stdout) == (0, "")


def test_get_json_siblings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [b"one", b"\xfftwo"]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(300, json={
            "siblings": [{"value": base64.b64encode(v).decode(), "content_type": "a/b"}
                         for v in values],
            "context": "ctx"}, headers={"X-Context": "ctx"})

    real = client_mod.Client

    def factory(base_url: str = "http://127.0.0.1:1", **kwargs: Any) -> Any:
        return real(base_url, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(client_mod, "Client", factory)
    result = CliRunner().invoke(cli_main, ["get", "k", "--json"])
    assert result.exit_code == 0, result.output
    doc = doc_of(result)
    assert doc["conflict"] is True and doc["context"] == "ctx"
    assert [base64.b64decode(s["value"]) for s in doc["siblings"]] == values
    assert [s["text"] for s in doc["siblings"]] == ["one", None]
    assert "siblings" not in result.stderr  # the hint is for people, not for --json


# --------------------------------------------------------------------------- failures


def test_quorum_failure_is_json_with_exit_3(node: FakeNode) -> None:
    node.unavailable = True
    for args in (["put", "k", "v"], ["get", "k"], ["delete", "k"]):
        result = run(node.url, *args, "--json")
        assert result.exit_code == 3, (args, result.output)
        doc = doc_of(result)
        assert doc["kind"] == "quorum" and doc["exit_code"] == 3
        assert (doc["status"], doc["acks"], doc["required"]) == (503, 0, 2)
        assert doc["error"].startswith("quorum not reached: 0 of 2")
        # stderr keeps its one readable line.
        assert result.stderr.strip() == f"error: {doc['error']}"


def test_precondition_failed_is_json_with_exit_4(node: FakeNode) -> None:
    assert run(node.url, "put", "doc", "v1").exit_code == 0
    result = run(node.url, "put", "doc", "v2", "--if-none-match", "--json")
    assert result.exit_code == 4
    doc = doc_of(result)
    assert (doc["kind"], doc["status"], doc["exit_code"]) == ("precondition_failed", 412, 4)
    assert doc["etag"] == '"v1"' and "nothing was written" in doc["error"]


def test_unreachable_node_is_json_with_exit_4() -> None:
    result = run(dead_url(), "get", "k", "--json")
    assert result.exit_code == 4
    doc = doc_of(result)
    assert doc["kind"] == "transport" and doc["error"].startswith("cannot reach")
    assert "status" not in doc


@pytest.mark.parametrize("args", [
    ["put", "k", "v", "--json", "--w", "0"],           # found while parsing
    ["get", "", "--json"],                             # a callback's check
    ["put", "k", "v", "--if-match", "e", "--if-none-match", "--json"],  # the body's check
    ["delete", "--json"],                              # KEY missing
])
def test_usage_errors_are_json_with_exit_2(node: FakeNode, args: list[str]) -> None:
    result = run(node.url, *args)
    assert result.exit_code == 2, result.output
    doc = doc_of(result)
    assert (doc["kind"], doc["exit_code"]) == ("usage", 2) and doc["error"]
    assert "Error:" in result.stderr  # click's own message stays on stderr
    assert node.requests == []


def test_usage_errors_without_json_print_nothing_on_stdout(node: FakeNode) -> None:
    result = run(node.url, "put", "k", "v", "--w", "0")
    assert result.exit_code == 2 and result.stdout == ""
    # After "--", --json is a word of the command line, not the flag.
    result = run(node.url, "put", "--w", "0", "--", "--json")
    assert result.exit_code == 2 and result.stdout == ""
