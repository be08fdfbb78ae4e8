"""`ringkv keys | mget | bucket props | bucket set`, and `put`/`get`/`delete` with
`--bucket`, `--if-match` and `--if-none-match`, end to end against a fake node over a
socket (`tests.unit.client.fake_node`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from ringkv.tools.cli import main as cli_main
from tests.unit.client.fake_node import FakeNode, fake_nodes


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with fake_nodes(1) as (fake,):
        yield fake


def run(node: FakeNode, *args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli_main, [*args, "--node", node.url], input=stdin)


def put_all(node: FakeNode, bucket: str, *keys: str) -> None:
    for key in keys:
        assert run(node, "put", key, f"value of {key}", "--bucket", bucket).exit_code == 0


# ------------------------------------------------------------------------------ keys


def test_keys_follows_the_cursor_to_the_end(node: FakeNode) -> None:
    names = [f"k{i:02}" for i in range(7)]
    put_all(node, "b1", *names)
    put_all(node, "other", "elsewhere")
    result = run(node, "keys", "--bucket", "b1", "--limit", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == names
    pages = [r for r in node.requests if r.path.endswith("/keys")]
    assert len(pages) == 3 and all(p.query["limit"] == "3" for p in pages)
    assert "cursor" not in pages[0].query and pages[1].query["cursor"] == "p3"


def test_keys_prints_unprintable_keys_encoded_and_json_lines(node: FakeNode) -> None:
    put_all(node, "default", "a/b", "line\nbreak", "é")
    result = run(node, "keys")
    assert result.stdout.splitlines() == ["a/b", "line%0Abreak", "é"]
    result = run(node, "keys", "--json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert docs == [{"key": "a/b", "encoded": "a%2Fb"},
                    {"key": "line\nbreak", "encoded": "line%0Abreak"},
                    {"key": "é", "encoded": "%C3%A9"}]


@pytest.mark.parametrize("args", [["keys", "--limit", "0"], ["keys", "--limit", "1001"],
                                  ["keys", "--bucket", "no/slash"], ["bucket", "props", "a b"],
                                  ["bucket", "set", "b"], ["bucket", "set", "b", "--r", "0"],
                                  ["bucket", "set", "b", "--ttl", "5", "--unset", "ttl"],
                                  ["bucket", "set", "b", "--conflict", "merge"],
                                  ["mget"], ["mget", ""], ["get", ""],
                                  ["put", "k", "v", "--if-match", "e", "--if-none-match"],
                                  ["put", "k", "v", "--if-match", "a b"],
                                  ["put", "k", "v", "--context", "a\x01b"]])
def test_usage_errors_exit_2_before_sending(node: FakeNode, args: list[str]) -> None:
    result = run(node, *args)
    assert result.exit_code == 2, result.output
    assert node.requests == []


# ------------------------------------------------------------------------------ mget


def test_mget_prints_each_key_and_exits_1_when_one_is_missing(node: FakeNode) -> None:
    put_all(node, "b1", "a", "c")
    result = run(node, "mget", "a", "c", "--bucket", "b1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "--- a ---\nvalue of a\n--- c ---\nvalue of c\n"
    result = run(node, "mget", "a", "missing", "--bucket", "b1", "--r", "one")
    assert result.exit_code == 1
    assert "--- missing (not found) ---" in result.stdout
    assert result.stderr.strip() == "not found: missing"
    assert node.requests[-1].path == "/buckets/b1/mget"
    assert node.requests[-1].query == {"r": "one"}
    assert json.loads(node.requests[-1].body) == {"keys": ["a", "missing"]}


def test_mget_json(node: FakeNode) -> None:
    put_all(node, "default", "a/b")
    result = run(node, "mget", "a/b", "nope", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["bucket"] == "default"
    first, second = doc["results"]
    assert first["key"] == "a/b" and first["status"] == 200 and first["found"] is True
    assert base64.b64decode(first["values"][0]) == b"value of a/b"
    assert first["etag"] and first["context"]
    assert second == {"key": "nope", "status": 404, "found": False, "values": [],
                      "content_types": [], "context": None, "etag": None, "error": None}


# ---------------------------------------------------------------------------- bucket


def test_bucket_props_and_set(node: FakeNode) -> None:
    result = run(node, "bucket", "props", "users")
    assert result.exit_code == 0, result.output
    assert "r: 2" in result.stdout.splitlines() and "ttl: none" in result.stdout
    result = run(node, "bucket", "set", "users", "--r", "1", "--ttl", "60",
                 "--conflict", "lww", "--max-siblings", "5", "--json")
    assert result.exit_code == 0, result.output
    sent = {"r": 1, "ttl": 60, "conflict": "lww", "max_siblings": 5}
    assert json.loads(node.requests[-1].body) == sent
    assert json.loads(result.stdout) == {"bucket": "users", "set": sent}
    doc = json.loads(run(node, "bucket", "props", "users", "--json").stdout)
    assert (doc["r"], doc["ttl"], doc["conflict"], doc["max_siblings"]) == (1, 60, "lww", 5)
    assert run(node, "bucket", "set", "users", "--unset", "ttl", "--unset", "r").exit_code == 0
    assert json.loads(node.requests[-1].body) == {"ttl": None, "r": None}
    doc = json.loads(run(node, "bucket", "props", "users", "--json").stdout)
    assert (doc["r"], doc["ttl"]) == (2, None)


# ----------------------------------------------------------- put / get / delete options


def test_put_get_delete_take_a_bucket(node: FakeNode) -> None:
    assert run(node, "put", "k", "in b1", "--bucket", "b1").exit_code == 0
    assert run(node, "get", "k", "--bucket", "b1").stdout == "in b1"
    assert run(node, "get", "k").exit_code == 1  # the default bucket has no such key
    assert run(node, "delete", "k", "--bucket", "b1").exit_code == 0
    assert [r.path for r in node.requests[-2:]] == ["/buckets/b1/kv/k"] * 2
    assert run(node, "get", "k", "--bucket", "b1").exit_code == 1


def test_conditional_writes(node: FakeNode) -> None:
    assert run(node, "put", "doc", "v1", "--if-none-match").exit_code == 0
    result = run(node, "put", "doc", "again", "--if-none-match")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: precondition failed: 'doc'")
    assert "nothing was written" in result.stderr
    result = run(node, "get", "doc", "-v")
    etag = next(line.split(": ", 1)[1] for line in result.stderr.splitlines()
                if line.startswith("etag: "))
    doc = json.loads(run(node, "get", "doc", "--json").stdout)
    assert doc["etag"] == etag
    # The quotes a shell strips off --if-match "..." are put back.
    assert run(node, "put", "doc", "v2", "--if-match", etag.strip('"')).exit_code == 0
    assert node.requests[-1].headers["If-Match"] == etag
    result = run(node, "delete", "doc", "--if-match", etag)  # stale now
    assert result.exit_code == 4 and "its ETag is now" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    fresh = json.loads(run(node, "get", "doc", "--json").stdout)["etag"]
    before = len(node.requests)
    assert run(node, "delete", "doc", "--if-match", fresh).exit_code == 0
    # No read first: the delete covers exactly what the ETag named.
    assert [r.method for r in node.requests[before:]] == ["DELETE"]
    assert run(node, "get", "doc").exit_code == 1
