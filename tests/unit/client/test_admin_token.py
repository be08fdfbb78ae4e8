"""The admin token on the client side: the library sends it on leave and remove only,
and the CLI takes it from --admin-token or RINGKV_ADMIN_TOKEN and turns a 401 / 403
into one readable line and exit 4. No sockets: `httpx.MockTransport`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import ringkv.client as client_mod
from ringkv.client import AsyncClient, AuthError, BadRequestError, Client, build_admin
from ringkv.tools.cli import main as cli_main

URL = "http://node.test:8001"
TOKEN = "tok-3f9a"


class Recorder:
    """Answers every request with `answer` and remembers the requests."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        # A fresh copy each time: a response's stream is read once, by one client kind.
        return httpx.Response(self.answer.status_code, headers=self.answer.headers,
                              content=self.answer.content)


ACCEPTED = httpx.Response(202, json={"node_id": "n1", "status": "left"})


def test_client_sends_the_token_on_admin_calls_only() -> None:
    rec = Recorder(ACCEPTED)
    with Client(URL, transport=httpx.MockTransport(rec), admin_token=TOKEN) as kv:
        kv.leave()
        kv.remove("n2")
        rec.answer = httpx.Response(200, content=b"v", headers={"X-Context": "c"})
        kv.get("k")
    leave, remove, get = rec.requests
    assert leave.url.path == "/cluster/leave"
    assert leave.headers["Authorization"] == f"Bearer {TOKEN}"
    assert remove.url.path == "/cluster/remove/n2"
    assert remove.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in get.headers  # never on key-value requests


def test_async_client_sends_the_token() -> None:
    rec = Recorder(ACCEPTED)

    async def go() -> None:
        async with AsyncClient(URL, transport=httpx.MockTransport(rec),
                               admin_token=TOKEN) as kv:
            await kv.leave()
            await kv.remove("n2")

    asyncio.run(go())
    assert [r.headers["Authorization"] for r in rec.requests] == [f"Bearer {TOKEN}"] * 2


def test_no_token_sends_no_header() -> None:
    rec = Recorder(ACCEPTED)
    with Client(URL, transport=httpx.MockTransport(rec)) as kv:
        kv.leave()
    assert "Authorization" not in rec.requests[0].headers
    assert build_admin("POST", "/cluster/leave", "").headers == ()
    with pytest.raises(ValueError):
        build_admin("POST", "/cluster/leave", "a\r\nX-Evil: 1")


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_auth_errors(status: int) -> None:
    rec = Recorder(httpx.Response(status, json={"error": "admin token rejected"}))
    with Client(URL, transport=httpx.MockTransport(rec)) as kv, pytest.raises(AuthError) as info:
        kv.remove("n2")
    assert isinstance(info.value, BadRequestError)  # still a 4xx for existing handlers
    assert info.value.status == status and info.value.message == "admin token rejected"


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_node(monkeypatch: pytest.MonkeyPatch) -> Callable[[httpx.Response], Recorder]:
    def install(answer: httpx.Response) -> Recorder:
        rec = Recorder(answer)
        real = client_mod.Client

        def factory(base_url: str = URL, **kwargs: Any) -> Client:
            return real(base_url, transport=httpx.MockTransport(rec), **kwargs)

        monkeypatch.setattr(client_mod, "Client", factory)
        monkeypatch.delenv("RINGKV_ADMIN_TOKEN", raising=False)
        return rec

    return install


@pytest.mark.parametrize("command", [["cluster", "leave", "--no-wait"],
                                     ["cluster", "remove", "n2"]])
def test_cli_sends_the_admin_token(cli_node: Callable[[httpx.Response], Recorder],
                                   command: list[str]) -> None:
    rec = cli_node(ACCEPTED)
    result = CliRunner().invoke(cli_main, [*command, "--admin-token", TOKEN])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli_main, command, env={"RINGKV_ADMIN_TOKEN": "from-env"})
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli_main, command, env={"RINGKV_ADMIN_TOKEN": ""})
    assert result.exit_code == 0, result.output
    first, second, third = rec.requests
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert second.headers["Authorization"] == "Bearer from-env"
    assert "Authorization" not in third.headers  # empty means none
    assert TOKEN not in result.output


@pytest.mark.parametrize("command", [["cluster", "leave"], ["cluster", "remove", "n2"]])
def test_cli_401_says_a_token_is_needed(cli_node: Callable[[httpx.Response], Recorder],
                                        command: list[str]) -> None:
    cli_node(httpx.Response(401, json={"error": "admin token required"},
                            headers={"WWW-Authenticate": "Bearer"}))
    result = CliRunner().invoke(cli_main, command)
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "requires an admin token" in lines[0] and "--admin-token" in lines[0]
    assert "RINGKV_ADMIN_TOKEN" in lines[0]


@pytest.mark.parametrize("command", [["cluster", "leave"], ["cluster", "remove", "n2"]])
def test_cli_403_says_the_request_was_refused(cli_node: Callable[[httpx.Response], Recorder],
                                              command: list[str]) -> None:
    cli_node(httpx.Response(403, json={"error": "admin token rejected"}))
    result = CliRunner().invoke(cli_main, [*command, "--admin-token", "wrong-one"])
    assert result.exit_code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the admin request" in lines[0]
    assert "admin token rejected" in lines[0] and "wrong-one" not in lines[0]
