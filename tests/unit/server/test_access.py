"""Client tokens with roles: what each role may do, and bad tokens files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from ringkv.server.access import Access, parse_tokens

READ, WRITE, ADMIN = "r" * 20, "w" * 20, "a" * 20
CARTS = "c" * 20


@pytest.fixture
def access(tmp_path: Path) -> Access:
    f = tmp_path / "tokens"
    f.write_text(f"# comment\n{READ} read\n{WRITE} write *\n{ADMIN} admin\n"
                 f"{CARTS} write carts,photos  # limited\n")
    return Access("the-contract-admin-token", str(f))


def status(access: Access, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    refused = access.refusal(make_mocked_request(method, path, headers=headers))
    return 200 if refused is None else refused.status


@pytest.mark.parametrize("method, path, read, write, admin", [
    ("GET", "/kv/x", 200, 200, 200),
    ("PUT", "/kv/x", 403, 200, 200),
    ("DELETE", "/buckets/b/kv/x", 403, 200, 200),
    ("POST", "/counters/x", 403, 200, 200),
    ("POST", "/buckets/b/sets/x", 403, 200, 200),
    ("POST", "/buckets/b/mget", 200, 200, 200),
    ("GET", "/buckets/b/keys", 200, 200, 200),
    ("GET", "/buckets/b/props", 200, 200, 200),
    ("PUT", "/buckets/b/props", 403, 403, 200),
    ("POST", "/cluster/leave", 403, 403, 200),
    ("POST", "/cluster/remove/n3", 403, 403, 200),
    ("GET", "/debug/latency", 403, 403, 200),
    ("GET", "/admin/backup", 403, 403, 200),
    ("GET", "/metrics", 200, 200, 200),
    ("GET", "/cluster", 200, 200, 200),
])
def test_each_role_may_do_what_it_should(access: Access, method: str, path: str,
                                         read: int, write: int, admin: int) -> None:
    assert [status(access, method, path, t) for t in (READ, WRITE, ADMIN)] == [
        read, write, admin]
    assert status(access, method, path, "the-contract-admin-token") == 200


@pytest.mark.parametrize("token", [None, "x" * 20, READ + "x", READ[:-1]])
def test_no_token_or_an_unknown_one_is_401(access: Access, token: str | None) -> None:
    assert status(access, "GET", "/kv/x", token) == 401
    refused = access.refusal(make_mocked_request("GET", "/kv/x", headers={
        "Authorization": f"Basic {READ}"}))
    assert refused is not None and refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_probes_and_the_console_page_need_no_token(access: Access) -> None:
    for path in ("/health", "/ready", "/openapi.json", "/ui"):
        assert status(access, "GET", path, None) == 200
    assert status(access, "GET", "/ui/state.json", None) == 401


def test_a_bucket_limited_token_touches_its_buckets_only(access: Access) -> None:
    assert status(access, "PUT", "/buckets/carts/kv/x", CARTS) == 200
    assert status(access, "POST", "/buckets/photos/sets/x", CARTS) == 200
    assert status(access, "PUT", "/buckets/other/kv/x", CARTS) == 403
    assert status(access, "PUT", "/kv/x", CARTS) == 403  # bucket default
    assert status(access, "GET", "/cluster", CARTS) == 200


def test_no_tokens_file_means_no_client_authentication() -> None:
    assert Access(None, None).refusal(make_mocked_request("PUT", "/kv/x")) is None


@pytest.mark.parametrize("text, line", [
    ("short read\n", 1),
    (f"{READ} reader\n", 1),
    (f"{READ}\n", 1),
    (f"\n{READ} read bad bucket!\n", 2),
    (f"{READ} read\n{READ} write\n", 2),
])
def test_a_bad_tokens_file_names_the_line_and_never_the_token(text: str, line: int) -> None:
    with pytest.raises(ValueError) as err:
        parse_tokens(text)
    assert f"line {line}" in str(err.value)
    assert READ not in str(err.value) and "short" not in str(err.value)


def test_reload_swaps_the_table_or_keeps_the_old_one(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"{READ} read\n")
    access = Access(None, str(f))
    f.write_text(f"{WRITE} write\n")
    access.reload()
    assert status(access, "GET", "/kv/x", READ) == 401
    assert status(access, "PUT", "/kv/x", WRITE) == 200
    f.write_text("garbage\n")
    with pytest.raises(ValueError):
        access.reload()
    assert status(access, "PUT", "/kv/x", WRITE) == 200
