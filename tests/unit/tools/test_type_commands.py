"""`ringkv incr | counter | sadd | srem | smembers`, end to end against fake nodes over
sockets (`tests.unit.client.fake_node`): output, `--json`, `--bucket`, exit codes, and
`--node` as a list of nodes to fail over between."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from ringkv.tools.cli import main as cli_main
from tests.unit.client.fake_node import FakeNode, dead_url, fake_nodes


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with fake_nodes(1) as (fake,):
        yield fake


def run(node: FakeNode | str, *args: str) -> Result:
    url = node if isinstance(node, str) else node.url
    return CliRunner().invoke(cli_main, [*args, "--node", url])


def test_incr_and_counter(node: FakeNode) -> None:
    assert run(node, "counter", "hits").exit_code == 1  # never incremented
    assert run(node, "incr", "hits").exit_code == 0
    result = run(node, "incr", "hits", "-5")  # a negative N subtracts
    assert result.exit_code == 0, result.output
    assert run(node, "incr", "hits", "10", "--idempotency-key", "k1").exit_code == 0
    assert run(node, "incr", "hits", "10", "--idempotency-key", "k1").exit_code == 0
    result = run(node, "counter", "hits")
    assert (result.exit_code, result.stdout) == (0, "6\n")
    bodies = [json.loads(r.body) for r in node.requests if r.method == "POST"]
    assert [b["increment"] for b in bodies] == [1, -5, 10, 10]
    keys = [r.headers["Idempotency-Key"] for r in node.requests if r.method == "POST"]
    assert keys[2:] == ["k1", "k1"] and keys[0] != keys[1]


def test_counter_not_found_and_json(node: FakeNode) -> None:
    result = run(node, "counter", "nobody", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"key": "nobody", "bucket": "default",
                                         "found": False, "value": None}
    assert result.stderr.strip() == "not found"
    run(node, "incr", "n", "3", "--bucket", "b1")
    result = run(node, "counter", "n", "--bucket", "b1", "--json", "--r", "one")
    assert json.loads(result.stdout)["value"] == 3
    assert node.requests[-1].path == "/buckets/b1/counters/n"
    assert node.requests[-1].query == {"r": "one"}


def test_incr_json_and_verbose_show_the_idempotency_key(node: FakeNode) -> None:
    result = run(node, "incr", "n", "2", "--json", "-v")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    sent = node.requests[-1].headers["Idempotency-Key"]
    assert doc == {"key": "n", "bucket": "default", "increment": 2, "idempotency_key": sent}
    assert result.stderr.strip() == f"idempotency-key: {sent}"


def test_an_increment_that_may_have_been_applied_says_how_to_retry(node: FakeNode) -> None:
    node.unavailable = True
    result = run(node, "incr", "n", "--idempotency-key", "retry-me")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--idempotency-key retry-me" in lines[0]
    result = run(dead_url(), "incr", "n")
    assert result.exit_code == 4
    assert "cannot reach" in result.stderr and "--idempotency-key" in result.stderr


@pytest.mark.parametrize("args", [["incr", "n", "0"], ["incr", "n", "x"],
                                  ["incr", "n", "--bogus"], ["incr", "n", "9007199254740992"],
                                  ["incr", "n", "--idempotency-key", "a\tb"],
                                  ["incr", ""], ["counter", "n", "--bucket", "a/b"],
                                  ["sadd", "s"], ["sadd", "s", ""], ["smembers", "s", "--r", "0"],
                                  ["srem", "s", "x", "--context", " c"]])
def test_usage_errors_exit_2_before_sending(node: FakeNode, args: list[str]) -> None:
    result = run(node, *args)
    assert result.exit_code == 2, result.output
    assert node.requests == []


def test_sets(node: FakeNode) -> None:
    assert run(node, "smembers", "cart").exit_code == 1
    assert run(node, "sadd", "cart", "pear", "apple", "fig").exit_code == 0
    result = run(node, "smembers", "cart", "-v")
    assert result.stdout == "apple\nfig\npear\n"
    context = result.stderr.strip().removeprefix("context: ")
    result = run(node, "srem", "cart", "fig", "plum")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "not members (nothing to remove): plum"
    # The read before the remove, then the remove of exactly what it observed.
    assert [r.method for r in node.requests[-2:]] == ["GET", "POST"]
    assert json.loads(node.requests[-1].body)["remove"] == ["fig"]
    # An explicit context: sent as is; the node refuses what it did not observe.
    result = run(node, "srem", "cart", "apple", "--context", context, "--json")
    assert json.loads(result.stdout) == {"key": "cart", "bucket": "default",
                                         "removed": ["apple"], "not_members": []}
    result = run(node, "smembers", "cart", "--json")
    doc = json.loads(result.stdout)
    assert doc["found"] is True and doc["elements"] == ["pear"] and doc["context"]


def test_set_commands_take_a_bucket_and_print_json(node: FakeNode) -> None:
    result = run(node, "sadd", "s", "é", "--bucket", "shop", "--json", "--w", "all")
    assert json.loads(result.stdout) == {"key": "s", "bucket": "shop", "added": ["é"]}
    assert node.requests[-1].path == "/buckets/shop/sets/s"
    assert node.requests[-1].query == {"w": "all"}
    assert run(node, "smembers", "s", "--bucket", "shop").stdout == "é\n"
    assert run(node, "smembers", "s").exit_code == 1  # another bucket, another key


def test_a_413_from_a_set_is_one_line_exit_4(node: FakeNode) -> None:
    result = run(node, "sadd", "s", *[f"e{i}" for i in range(10)])
    assert result.exit_code == 4
    assert len(result.stderr.strip().splitlines()) == 1 and "413" in result.stderr


def test_node_lists_fail_over() -> None:
    with fake_nodes(2) as (busy, live):
        busy.unavailable = True
        nodes = f"{dead_url()},{busy.url},{live.url}"
        assert run(nodes, "incr", "n").exit_code == 0
        assert run(nodes, "sadd", "s", "x").exit_code == 0
        result = run(nodes, "counter", "n")
        assert (result.exit_code, result.stdout) == (0, "1\n")
        # A dead first node refuses the connection: even a blind put moves on.
        assert run(f"{dead_url()},{live.url}", "put", "k", "v").exit_code == 0
        result = run(f"{dead_url()},{live.url}", "get", "k")
        assert (result.exit_code, result.stdout) == (0, "v")
        assert [r.method for r in busy.requests] == ["POST", "POST", "GET"]
    result = CliRunner().invoke(cli_main, ["counter", "n", "--node", "http://a,ftp://b"])
    assert result.exit_code == 2
