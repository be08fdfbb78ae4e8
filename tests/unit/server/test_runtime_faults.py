"""The runtime contains failures: one failing part, timer, message handler or effect is
logged and counted, and everything else goes on; no client request waits forever.

- A part of the tick that raises every time (hint replay, as with a hint that cannot
  be decoded) does not stop gossip, transfers or anti-entropy.
- A timer or a message handler that raises is counted, and the next one runs.
- An effect that cannot be carried out does not stop the effects after it.
- A request the coordinator never answers gets a 503 after its timeout plus a grace.
- Stopping answers the requests still waiting (503) instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from coordinator.effects import Effect, Reply, Send
from coordinator.messages import ReplicaGet
from coordinator.requests import ClientRequest, WriteOk
from ringkv.core import wire
from ringkv.server.runtime import TIMER_SLOT
from storage.versions import EMPTY_CONTEXT
from tests.unit.server.live import base_url, live_node

BOUND = 10.0  # seconds: a generous bound on waits that must end


class Boom(RuntimeError):
    pass


def _raise(*_: Any) -> list[Effect]:
    raise Boom("injected failure")


def _counting(calls: dict[str, int], name: str, step: Any) -> Any:
    def wrapped(*args: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        return step(*args)

    return wrapped


def test_a_tick_part_that_always_raises_does_not_stop_the_others() -> None:
    calls: dict[str, int] = {}

    async def go() -> None:
        async with live_node() as runtime:
            node = runtime.node
            node.coordinator.tick = _counting(calls, "hints", _raise)  # type: ignore[method-assign]
            for name, part in (("transfers", node.transfers), ("anti_entropy",
                                                               node.anti_entropy)):
                part.tick = _counting(calls, name, part.tick)  # type: ignore[method-assign]
            async with asyncio.timeout(BOUND):
                while min(calls.get(n, 0) for n in ("hints", "transfers", "anti_entropy")) < 5:
                    await asyncio.sleep(0.05)
            assert node.faults["tick:coordinator"] == calls["hints"]
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{base_url(runtime)}/metrics") as resp:
                body = await resp.read()
            assert b'ringkv_internal_errors_total{part="tick:coordinator"}' in body

    asyncio.run(go())


def test_a_timer_that_raises_is_counted_and_the_next_one_runs() -> None:
    """Two timers due in one slot fire from one loop timer; the first raising stops
    neither the second nor a later slot."""
    async def go() -> None:
        async with live_node() as runtime:
            node = runtime.node
            real = node.coordinator.timer
            fired: list[int] = []

            def timer(key: int, now: float) -> list[Effect]:
                fired.append(key)
                if key == 7:
                    raise RuntimeError("boom")
                return real(key, now)

            node.coordinator.timer = timer  # type: ignore[method-assign]
            due = time.time()
            runtime._set_timer(due, 7)
            runtime._set_timer(due, 8)  # a timer of no op: nothing to do, no failure
            runtime._set_timer(due + 5 * TIMER_SLOT, 9)
            assert len(runtime._timer_slots) == 2  # two slots, not three loop timers
            async with asyncio.timeout(BOUND):
                while len(fired) < 3:
                    await asyncio.sleep(TIMER_SLOT)
            assert fired == [7, 8, 9]
            assert node.faults["timer"] == 1
            assert not runtime._timer_slots

    asyncio.run(go())


def test_a_message_handler_that_raises_is_counted_and_the_next_message_is_handled() -> None:
    async def go() -> None:
        async with live_node() as runtime:
            node = runtime.node
            handled: list[int] = []
            node._handlers[ReplicaGet.TYPE] = _raise
            runtime._on_frame("n2", wire.encode(ReplicaGet(1, b"k")))
            assert node.faults["message"] == 1

            def handle(src: str, msg: ReplicaGet, now: float) -> list[Effect]:
                handled.append(msg.req_id)
                return []

            node._handlers[ReplicaGet.TYPE] = handle
            runtime._on_frame("n2", wire.encode(ReplicaGet(2, b"k")))
            assert handled == [2]
            assert node.faults["message"] == 1

    asyncio.run(go())


class _Unencodable:
    TYPE = 999  # registered nowhere: the wire refuses to encode it


def test_an_effect_that_fails_does_not_stop_the_effects_after_it() -> None:
    async def go() -> None:
        async with live_node() as runtime:
            def answer(client_id: int, req: ClientRequest, now: float) -> list[Effect]:
                return [Send("n2", _Unencodable()),  # type: ignore[arg-type]
                        Reply(client_id, WriteOk(EMPTY_CONTEXT, 1))]

            runtime.node.client_request = answer  # type: ignore[method-assign]
            async with aiohttp.ClientSession() as http, \
                    http.put(f"{base_url(runtime)}/kv/k", data=b"v") as resp:
                assert resp.status == 204
            assert runtime.node.faults["effect"] == 1

    asyncio.run(go())


def _never_answer(client_id: int, req: ClientRequest, now: float) -> list[Effect]:
    return []  # the request is lost: no reply, no timer


def test_a_request_no_one_answers_gets_a_503_after_its_deadline() -> None:
    async def go() -> None:
        async with live_node() as runtime:
            runtime.node.client_request = _never_answer  # type: ignore[method-assign]
            # The runtime's own periodic read of the bucket properties would be lost
            # too and is no client's request: stop it, so only the HTTP requests count.
            assert runtime._bucket_reader is not None
            runtime._bucket_reader.cancel()
            timeout = aiohttp.ClientTimeout(total=BOUND)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                url = f"{base_url(runtime)}/kv/k?timeout=100"
                for method in ("PUT", "GET", "DELETE"):
                    async with http.request(method, url, data=b"v") as resp:
                        assert resp.status == 503, method
                        doc = await resp.json()
                        assert "error" in doc and doc["acks"] == 0
            assert not runtime._clients

    asyncio.run(go())


def test_stopping_answers_the_requests_still_waiting() -> None:
    async def go() -> None:
        async with live_node() as runtime:
            runtime.node.client_request = _never_answer  # type: ignore[method-assign]
            # The runtime's own periodic read of the bucket properties would be lost
            # too and is no client's request: stop it, so only the HTTP requests count.
            assert runtime._bucket_reader is not None
            runtime._bucket_reader.cancel()
            timeout = aiohttp.ClientTimeout(total=BOUND)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                url = f"{base_url(runtime)}/kv/k?timeout=600000"

                async def put() -> tuple[int, dict[str, Any]]:
                    async with http.put(url, data=b"v") as resp:
                        return resp.status, await resp.json()

                pending = asyncio.ensure_future(put())
                async with asyncio.timeout(BOUND):
                    while not runtime._clients:
                        await asyncio.sleep(0.01)
                await asyncio.wait_for(runtime.stop(), BOUND)
                status, doc = await pending
                assert status == 503 and "stopping" in doc["error"]

    asyncio.run(go())
