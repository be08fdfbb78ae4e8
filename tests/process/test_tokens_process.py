"""Client tokens with roles on a real node process: who may read, write, administer.

Real `ringkv serve` processes on loopback (`tests/support/procs.py`) started with
`--tokens-file` (`ringkv.server.access`) and `--log-level debug`, the most a node logs.
What must hold:

- no token, another scheme or an unknown token: `401` JSON with `WWW-Authenticate`;
  the probes (`/health`, `/ready`) and the API's description answer without one;
- `read` reads everything and changes nothing (`403` for every write, nothing
  changes); `write` writes values, counters and sets, but bucket properties, leave,
  remove and `/debug/` are `403`; `admin` may do everything (the contract's admin
  token is one);
- a token limited to buckets touches those buckets only (`/kv/x` is bucket
  `default`), may still read the cluster-wide state, and never administers the cluster;
- SIGHUP swaps the tokens file in without a restart (a removed token gets `401` on the
  next request, a new one works), and a malformed file keeps the table in use and is
  reported by line number, never by its content;
- no token ever appears in a node's log or in an answer.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import HTTP_TIMEOUT, Cluster, NodeProc, key_path, wait_until

pytestmark = pytest.mark.slow

RELOADED = "reloaded its certificates and tokens"
RELOAD_FAILED = "reload failed, keeping the certificates and tokens in use"


def new_token(role: str) -> str:
    return f"{role}-{secrets.token_hex(16)}"


READ, WRITE, ADMIN = new_token("read"), new_token("write"), new_token("admin")
READ_CARTS, WRITE_CARTS, ADMIN_CARTS = (new_token("read-carts"), new_token("write-carts"),
                                        new_token("admin-carts"))
CONTRACT_ADMIN = new_token("contract-admin")  # --admin-token: an admin of every bucket
UNKNOWN = new_token("unknown")
TOKENS_FILE = f"""\
# token  role  buckets
{READ} read
{WRITE} write *
{ADMIN}   admin
{READ_CARTS} read carts
{WRITE_CARTS} write carts,photos   # two buckets
{ADMIN_CARTS} admin carts
"""
ALL_TOKENS = [READ, WRITE, ADMIN, READ_CARTS, WRITE_CARTS, ADMIN_CARTS, CONTRACT_ADMIN,
              UNKNOWN]
ONE_NODE = ("--n", "1", "--r", "1", "--w", "1", "--log-level", "debug")


def token_cluster(base: Path, tokens: str, size: int = 1,
                  extra: tuple[str, ...] = ONE_NODE) -> tuple[Cluster, Path]:
    """A cluster of `size` nodes sharing one tokens file (not started)."""
    base.mkdir(parents=True, exist_ok=True)
    path = base / "tokens.txt"
    path.write_text(tokens)
    # The admin token in a config file: on a command line it would be in the log's
    # header line (and in `ps` for anyone on the machine).
    config = base / "node.toml"
    config.write_text(f'admin_token = "{CONTRACT_ADMIN}"\n')
    cluster = Cluster(base, size=0)
    for _ in range(size):
        node = cluster.add_node(extra_args=[*extra, "--tokens-file", str(path),
                                            "--config", str(config)])
        # The harness's own requests (health, cluster view, local reads) carry the admin
        # token; the tests' requests go through `call` with exactly the token they name.
        node.bearer = ADMIN
    return cluster, path


def call(node: NodeProc, method: str, path: str, token: str | None = None,
         **kw: Any) -> httpx.Response:
    """One request on a fresh client: with `Authorization: Bearer token` if given."""
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=node.url, timeout=HTTP_TIMEOUT) as client:
        return client.request(method, path, headers=headers, **kw)


def refused(resp: httpx.Response, status: int) -> dict[str, Any]:
    """`resp` is a JSON refusal with `status` that echoes no token."""
    assert resp.status_code == status, (resp.request.method, resp.request.url,
                                        resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    doc: dict[str, Any] = resp.json()
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), resp.headers
    for token in ALL_TOKENS:
        assert token not in resp.text and token not in str(resp.headers), resp.text
    return doc


def assert_no_token_logged(node: NodeProc, *more: str) -> None:
    text = node.log_text()
    assert text, f"{node.node_id} logged nothing"
    for token in (*ALL_TOKENS, *more):
        assert token not in text, f"{node.node_id}'s log holds a token"


def sighup(node: NodeProc) -> None:
    os.kill(node.pid, signal.SIGHUP)


def wait_log_line(node: NodeProc, offset: int, text: str) -> str:
    def found() -> str | None:
        return next((ln for ln in node.log_text()[offset:].splitlines() if text in ln), None)

    line = wait_until(found, 10, f"{text!r} in {node.node_id}'s log")
    assert line is not None
    return line


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster, _ = token_cluster(tmp_path_factory.mktemp("tokens"), TOKENS_FILE)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def node(shared: Cluster) -> Iterator[NodeProc]:
    (n1,) = shared.nodes
    assert n1.alive, n1.tail()
    yield n1
    assert_no_token_logged(n1)


# ------------------------------------------------------------------------ authentication


def test_without_a_valid_token_every_request_is_401(node: NodeProc) -> None:
    requests = [("GET", "/kv/x"), ("PUT", "/kv/x"), ("DELETE", "/kv/x"),
                ("POST", "/counters/c"), ("GET", "/sets/s"), ("GET", "/cluster"),
                ("GET", "/metrics"), ("GET", "/buckets/b/props"), ("PUT", "/buckets/b/props"),
                ("GET", "/buckets/b/keys"), ("POST", "/cluster/leave"),
                ("GET", "/debug/local/kv/x"), ("GET", "/ring/lookup?key=x")]
    for method, path in requests:
        refused(call(node, method, path), 401)
        refused(call(node, method, path, UNKNOWN), 401)
        refused(call(node, method, path, headers={"Authorization": f"Basic {ADMIN}"}), 401)
        refused(call(node, method, path, headers={"Authorization": "Bearer"}), 401)
        refused(call(node, method, path, headers={"Authorization": ADMIN}), 401)
    # Nothing was written by any of them.
    assert call(node, "GET", "/kv/x", ADMIN).status_code == 404
    assert call(node, "GET", "/counters/c", ADMIN).status_code == 404


def test_probes_and_the_api_description_answer_without_a_token(node: NodeProc) -> None:
    for path in ("/health", "/ready", "/openapi.json"):
        resp = call(node, "GET", path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)


# ----------------------------------------------------------------------------- roles


def snapshot(node: NodeProc) -> dict[str, Any]:
    """What the role tests must not change, read with the admin token."""
    kv = call(node, "GET", "/kv/roles", ADMIN)
    return {
        "kv": (kv.status_code, kv.content),
        "counter": call(node, "GET", "/counters/roles", ADMIN).json(),
        "set": call(node, "GET", "/sets/roles", ADMIN).json()["value"],
        "props": call(node, "GET", "/buckets/roles/props", ADMIN).json(),
        "status": node.statuses(),
    }


@pytest.fixture
def roles_data(node: NodeProc) -> dict[str, Any]:
    if call(node, "GET", "/kv/roles", ADMIN).status_code == 404:  # once for the module
        assert call(node, "PUT", "/kv/roles", ADMIN, content=b"original").status_code == 204
        assert call(node, "POST", "/counters/roles", ADMIN,
                    json={"increment": 5}).status_code == 204
        assert call(node, "POST", "/sets/roles", ADMIN,
                    json={"add": ["a"]}).status_code == 204
    return snapshot(node)


def test_a_read_token_reads_everything_and_changes_nothing(
        node: NodeProc, roles_data: dict[str, Any]) -> None:
    reads = [("GET", "/kv/roles", 200), ("GET", "/counters/roles", 200),
             ("GET", "/sets/roles", 200), ("GET", "/buckets/roles/props", 200),
             ("GET", "/buckets/default/keys", 200), ("GET", "/cluster", 200),
             ("GET", "/metrics", 200), ("GET", "/ring/lookup?key=roles", 200),
             ("GET", "/kv/never-written", 404)]
    for method, path, status in reads:
        resp = call(node, method, path, READ)
        assert resp.status_code == status, (path, resp.status_code, resp.text)
    assert call(node, "GET", "/kv/roles", READ).content == b"original"
    mget = call(node, "POST", "/buckets/default/mget", READ, json={"keys": ["roles"]})
    assert mget.status_code == 200, mget.text
    assert mget.json()["results"][0]["status"] == 200

    ctx = call(node, "GET", "/kv/roles", READ).headers["X-Context"]
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/kv/roles", {"content": b"changed", "headers": {"X-Context": ctx}}),
        ("PUT", "/kv/new-from-read", {"content": b"v"}),
        ("DELETE", "/kv/roles", {"headers": {"X-Context": ctx}}),
        ("POST", "/counters/roles", {"json": {"increment": 1}}),
        ("POST", "/sets/roles", {"json": {"add": ["b"]}}),
        ("PUT", "/buckets/roles/kv/x", {"content": b"v"}),
        ("PUT", "/buckets/roles/props", {"json": {"max_siblings": 7}}),
        ("POST", "/cluster/leave", {}),
        ("POST", "/cluster/remove/n9", {}),
        ("GET", "/debug/local/kv/roles", {}),
    ]
    for method, path, kw in writes:
        doc = refused(call(node, method, path, READ, **kw), 403)
        assert "read" in doc["error"], doc
    assert snapshot(node) == roles_data
    assert call(node, "GET", "/kv/new-from-read", ADMIN).status_code == 404


def test_a_write_token_writes_data_but_never_administers(
        node: NodeProc, roles_data: dict[str, Any]) -> None:
    assert call(node, "PUT", "/kv/by-writer", WRITE, content=b"w1").status_code == 204
    got = call(node, "GET", "/kv/by-writer", WRITE)
    assert (got.status_code, got.content) == (200, b"w1")
    assert call(node, "DELETE", "/kv/by-writer", WRITE,
                headers={"X-Context": got.headers["X-Context"]}).status_code == 204
    assert call(node, "GET", "/kv/by-writer", ADMIN).status_code == 404
    assert call(node, "POST", "/counters/by-writer", WRITE,
                json={"increment": 2}).status_code == 204
    assert call(node, "POST", "/sets/by-writer", WRITE, json={"add": ["x"]}).status_code == 204
    assert call(node, "PUT", "/buckets/any/kv/k", WRITE, content=b"v").status_code == 204
    assert call(node, "POST", "/buckets/any/mget", WRITE,
                json={"keys": ["k"]}).status_code == 200

    for method, path, kw in [
        ("PUT", "/buckets/roles/props", {"json": {"max_siblings": 7}}),
        ("POST", "/cluster/leave", {}),
        ("POST", "/cluster/remove/n9", {}),
        ("GET", "/debug/local/kv/roles", {}),
    ]:
        doc = refused(call(node, method, path, WRITE, **kw), 403)
        assert "needs admin" in doc["error"], doc
    assert snapshot(node) == roles_data


@pytest.mark.parametrize("token", [ADMIN, CONTRACT_ADMIN], ids=["admin", "--admin-token"])
def test_an_admin_token_may_do_everything(node: NodeProc, token: str) -> None:
    key = "/kv/by-" + token[:token.rindex("-")]  # one key for each admin token
    assert call(node, "PUT", key, token, content=b"a").status_code == 204
    assert call(node, "GET", key, token).content == b"a"
    assert call(node, "PUT", "/buckets/carts" + key, token, content=b"a").status_code == 204
    assert call(node, "PUT", "/buckets/admin-props/props", token,
                json={"max_siblings": 7}).status_code == 204
    props = call(node, "GET", "/buckets/admin-props/props", token)
    assert props.status_code == 200 and props.json()["max_siblings"] == 7, props.text
    local = call(node, "GET", "/debug/local" + key, token)
    assert local.status_code == 200, local.text
    # Past the token check, the membership rules answer: a lone node may not leave (it
    # would leave fewer than N members) and n9 is no member. Neither is 401 or 403.
    leave = call(node, "POST", "/cluster/leave", token)
    assert leave.status_code == 409, leave.text
    assert call(node, "POST", "/cluster/remove/n9", token).status_code == 404
    assert node.statuses() == {"n1": "up"}


def test_a_token_limited_to_buckets_touches_those_buckets_only(node: NodeProc) -> None:
    for path in ("/buckets/carts/kv/x", "/kv/x", "/buckets/other/kv/x"):
        assert call(node, "PUT", path, ADMIN, content=b"stored").status_code == 204

    # read carts: reads bucket carts and the cluster's state, nothing else.
    got = call(node, "GET", "/buckets/carts/kv/x", READ_CARTS)
    assert (got.status_code, got.content) == (200, b"stored")
    for path in ("/buckets/carts/props", "/buckets/carts/keys", "/cluster", "/metrics",
                 "/ring/lookup?key=x"):
        assert call(node, "GET", path, READ_CARTS).status_code == 200, path
    assert call(node, "POST", "/buckets/carts/mget", READ_CARTS,
                json={"keys": ["x"]}).status_code == 200
    for method, path in [("GET", "/kv/x"), ("GET", "/buckets/default/kv/x"),
                         ("GET", "/buckets/other/kv/x"), ("GET", "/counters/x"),
                         ("GET", "/buckets/other/keys"), ("POST", "/buckets/other/mget")]:
        doc = refused(call(node, method, path, READ_CARTS, json={"keys": ["x"]}), 403)
        assert "may not touch bucket" in doc["error"], doc
    refused(call(node, "PUT", "/buckets/carts/kv/x", READ_CARTS, content=b"no"), 403)

    # write carts,photos: writes both of its buckets, not another.
    for path in ("/buckets/carts/kv/y", "/buckets/photos/kv/y"):
        assert call(node, "PUT", path, WRITE_CARTS, content=b"w").status_code == 204, path
    for path in ("/buckets/other/kv/y", "/kv/y"):
        refused(call(node, "PUT", path, WRITE_CARTS, content=b"w"), 403)
    refused(call(node, "PUT", "/buckets/carts/props", WRITE_CARTS,
                 json={"max_siblings": 9}), 403)

    # admin carts: administers bucket carts, but never the cluster.
    assert call(node, "PUT", "/buckets/carts/props", ADMIN_CARTS,
                json={"max_siblings": 9}).status_code == 204
    refused(call(node, "PUT", "/buckets/other/props", ADMIN_CARTS,
                 json={"max_siblings": 9}), 403)
    for method, path in [("POST", "/cluster/leave"), ("POST", "/cluster/remove/n9"),
                         ("GET", "/debug/local/kv/x")]:
        doc = refused(call(node, method, path, ADMIN_CARTS), 403)
        assert "the cluster" in doc["error"], doc

    # Nothing a refused request touched changed.
    for path in ("/buckets/carts/kv/x", "/kv/x", "/buckets/other/kv/x"):
        assert call(node, "GET", path, ADMIN).content == b"stored", path
    for path in ("/buckets/other/kv/y", "/kv/y"):
        assert call(node, "GET", path, ADMIN).status_code == 404, path
    assert call(node, "GET", "/buckets/other/props", ADMIN).json()["max_siblings"] != 9


# ---------------------------------------------------------------------------- reload


def test_sighup_swaps_the_tokens_file_and_a_malformed_one_is_kept_out(
        tmp_path: Path) -> None:
    cluster, path = token_cluster(tmp_path / "reload", TOKENS_FILE)
    replacement = new_token("write-next")
    secret_in_bad_file = new_token("leaked")
    try:
        cluster.start()
        (n1,) = cluster.nodes
        pid = n1.pid
        assert call(n1, "PUT", key_path("rot-1"), WRITE, content=b"1").status_code == 204
        refused(call(n1, "PUT", key_path("rot-x"), replacement, content=b"x"), 401)

        # The write token is replaced by another; the rest stay.
        path.write_text(TOKENS_FILE.replace(WRITE, replacement))
        offset = len(n1.log_text())
        sighup(n1)
        wait_log_line(n1, offset, RELOADED)
        refused(call(n1, "PUT", key_path("rot-2"), WRITE, content=b"2"), 401)
        assert call(n1, "PUT", key_path("rot-3"), replacement, content=b"3").status_code == 204
        assert call(n1, "GET", key_path("rot-3"), READ).content == b"3"
        assert n1.pid == pid and n1.alive  # no restart

        # A malformed file: line 3 names a role that does not exist. The table in use
        # stays, and the error names the line, never what is on it.
        path.write_text(f"{ADMIN} admin\n\n{secret_in_bad_file} superuser\n{READ} read\n")
        offset = len(n1.log_text())
        sighup(n1)
        line = wait_log_line(n1, offset, RELOAD_FAILED)
        assert "ERROR" in line and "line 3" in line, line
        assert secret_in_bad_file not in line
        assert call(n1, "PUT", key_path("rot-4"), replacement, content=b"4").status_code == 204
        refused(call(n1, "PUT", key_path("rot-5"), WRITE, content=b"5"), 401)
        refused(call(n1, "GET", key_path("rot-4"), secret_in_bad_file), 401)
        assert call(n1, "GET", key_path("rot-4"), READ).content == b"4"

        # A missing file is kept out alike.
        path.unlink()
        offset = len(n1.log_text())
        sighup(n1)
        wait_log_line(n1, offset, RELOAD_FAILED)
        assert call(n1, "GET", key_path("rot-4"), replacement).status_code == 200
        assert n1.pid == pid and n1.alive
        assert_no_token_logged(n1, replacement, secret_in_bad_file)
    finally:
        cluster.close()


def test_three_nodes_each_check_tokens_and_reload_on_their_own(tmp_path: Path) -> None:
    """Every node of a cluster checks tokens itself (a coordinator does not vouch for
    a client to its peers), and each reloads only when it gets SIGHUP."""
    cluster, path = token_cluster(tmp_path / "three", TOKENS_FILE, size=3,
                                  extra=("--log-level", "debug"))
    replacement = new_token("write-next")
    try:
        cluster.start()
        n1, n2, n3 = cluster.nodes
        for node in cluster:
            refused(call(node, "GET", "/kv/three"), 401)
            refused(call(node, "PUT", "/kv/three", READ, content=b"r"), 403)
        assert call(n1, "PUT", "/kv/three", WRITE, content=b"w").status_code == 204
        for node in cluster:
            got = call(node, "GET", "/kv/three", READ, params={"r": "3"})
            assert (got.status_code, got.content) == (200, b"w"), node.node_id

        path.write_text(TOKENS_FILE.replace(WRITE, replacement))
        offset = len(n2.log_text())
        sighup(n2)
        wait_log_line(n2, offset, RELOADED)
        refused(call(n2, "PUT", "/kv/three-2", WRITE, content=b"x"), 401)
        assert call(n2, "PUT", "/kv/three-2", replacement, content=b"y").status_code == 204
        # n1 and n3 were not told: they still hold the old table.
        for node in (n1, n3):
            refused(call(node, "PUT", "/kv/three-2", replacement, content=b"z"), 401)
            assert call(node, "GET", "/kv/three-2", WRITE).content == b"y"
        for node in cluster:
            assert_no_token_logged(node, replacement)
    finally:
        cluster.close()
