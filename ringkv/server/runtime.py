"""The asyncio shell around one `Node`: clock, timers, transport, disk and HTTP.

The runtime feeds the node its inputs (HTTP requests, frames from peers, timers, a tick
every `TICK` seconds) with the wall clock, and carries out the effects it returns.

Group commit: writes the node stages in its engine are committed by one committer task,
one batch at a time, in a worker thread when the engine syncs to disk (so the loop keeps
serving while the fsync runs; writes staged meanwhile form the next batch). An effect
marked `durable` is held until the batch holding every write staged before it commits
(`ringkv.core.gate`): a replica's acknowledgement never leaves before its write is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from aiohttp import web

from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.effects import Message as AnyMessage
from coordinator.requests import ClientRequest, ClientResponse
from gossip.membership import valid_node_id
from ringkv.core import wire
from ringkv.core.addresses import seed_destination, seed_hostport, split_hostport
from ringkv.core.config import NodeConfig
from ringkv.core.gate import DurabilityGate
from ringkv.core.latency import LatencyInjector
from ringkv.core.node import Node
from ringkv.net.transport import Transport
from storage.engine import Engine
from storage.memory import MemoryEngine

log = logging.getLogger("ringkv")

TICK = 0.1  # seconds between node ticks: heartbeats, hint replay, joins
MAX_REQUEST_LINE = 64 * 1024  # bytes of HTTP request line (method, path, query)


def open_engine(config: NodeConfig) -> Engine:
    if config.storage == "memory":
        return MemoryEngine()
    from storage.lmdb_engine import LmdbEngine

    os.makedirs(config.data_path, exist_ok=True)
    return LmdbEngine(os.path.join(config.data_path, "lmdb"), sync=config.sync == "group")


class NodeRuntime:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.engine = open_engine(config)
        self.node = Node(config, self.engine, time.time(), random.Random(os.urandom(16)))
        secret = config.cluster_secret.encode() if config.cluster_secret else None
        self.transport = Transport(config.node_id, self._on_frame, valid_peer_id=valid_node_id,
                                   secret=secret, logger=log)
        self._clients: dict[int, asyncio.Future[ClientResponse]] = {}
        self._next_client = 0
        self._gate = DurabilityGate(self.engine)
        self._committer: asyncio.Task[None] | None = None
        self._sync_commits = config.storage != "memory" and config.sync == "group"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._ticker: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bad_frames = 0
        self._seeds_forgotten = False
        self._judged_down: set[str] = set()  # members whose connection was dropped
        self.commits = 0
        # Experiments only (config refuses it without `experimental`): WARS leg delays.
        self.injector = (LatencyInjector.from_spec(config.inject_latency,
                                                   random.Random(os.urandom(16)))
                         if config.inject_latency else None)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        """Listen for peers and serve `app` (the HTTP API) on the client port."""
        self._loop = asyncio.get_running_loop()
        await self._flush()  # identity and membership must be on disk before we speak
        await self.transport.listen(self.config.host, self.config.rpc_port)
        # A request line long enough for any over-long key to reach the API and get
        # the contract's 414 (aiohttp's default, 8190, answers a bare 400 before that).
        self._runner = web.AppRunner(app, access_log=None,
                                     handle_signals=False, max_line_size=MAX_REQUEST_LINE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.http_port,
                           reuse_address=True)
        await site.start()
        self._ticker = asyncio.create_task(self._tick_loop())
        if self.injector is not None:
            log.warning("EXPERIMENTAL: latency injection is ON (%s): every replica message "
                        "is delayed on purpose. Never run this node in production.",
                        self.injector.legs.describe())
        log.info("node %s serving http %s:%d rpc %s:%d", self.config.node_id,
                 self.config.host, self.config.http_port, self.config.host,
                 self.config.rpc_port)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()
        await self._flush()
        await self.transport.close()
        self.engine.close()
        self._executor.shutdown(wait=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                now = time.time()
                self._run(self.node.tick(now))
                self._redial_down_peers(now)
            except Exception:  # a bug in one tick must not stop the node's heartbeat
                log.exception("tick failed")

    def _redial_down_peers(self, now: float) -> None:
        """Drop the connection to each member as it is judged down, once: it may be
        half-open, and the next frame to it should dial afresh."""
        for member in self.node.members.members():
            peer = member.node_id
            if peer == self.config.node_id:
                continue
            if self.node.is_up(peer, now):
                self._judged_down.discard(peer)
            elif peer not in self._judged_down:
                self._judged_down.add(peer)
                self.transport.redial(peer)

    # --- inputs -----------------------------------------------------------------------

    async def request(self, req: ClientRequest) -> ClientResponse:
        assert self._loop is not None
        self._next_client += 1
        client_id = self._next_client
        fut: asyncio.Future[ClientResponse] = self._loop.create_future()
        self._clients[client_id] = fut
        try:
            self._run(self.node.client_request(client_id, req, time.time()))
            return await fut
        finally:
            self._clients.pop(client_id, None)

    def leave(self) -> str | None:
        """Start handing this node's ranges over (POST /cluster/leave); an error or None."""
        error, effects = self.node.start_leave(time.time())
        self._run(effects)
        return error

    def remove(self, node_id: str) -> str | None:
        """Remove a dead member for good (POST /cluster/remove/{node}); an error or None."""
        error, effects = self.node.remove_member(node_id, time.time())
        self._run(effects)
        return error

    def _on_frame(self, src: str, payload: bytes) -> None:
        try:
            msg = wire.decode(payload)
        except wire.WireError as exc:
            self.bad_frames += 1
            log.warning("dropped a malformed message from %s: %s", src, exc)
            return
        self._run(self.node.receive(src, msg, time.time()))

    def _deliver_local(self, msg: AnyMessage) -> None:
        self._run(self.node.receive(self.config.node_id, cast(wire.Message, msg), time.time()))

    def _on_timer(self, key: int) -> None:
        self._run(self.node.timer(key, time.time()))

    # --- effects ----------------------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        if self.node.addresses_changed:
            self._update_addresses()
        encoded: dict[int, bytes] = {}
        for effect in effects:
            if self._gate.admit(effect):
                self._do(effect, encoded)
        if self.engine.has_staged() and self._committer is None:
            self._committer = asyncio.ensure_future(self._commit_loop())

    def _do(self, effect: Effect, encoded: dict[int, bytes], delayed: bool = False) -> None:
        assert self._loop is not None
        if isinstance(effect, Send):
            if self.injector is not None and not delayed:
                delay = self.injector.delay(effect.msg)
                if delay > 0.0:  # the message leaves (or is delivered locally) late
                    self._loop.call_later(delay, self._do, effect, {}, True)
                    return
            if effect.dst == self.config.node_id:
                self._loop.call_soon(self._deliver_local, effect.msg)
                return
            # One message fanned out to several replicas is encoded once.
            payload = encoded.get(id(effect.msg))
            if payload is None:
                payload = encoded[id(effect.msg)] = wire.encode(effect.msg)
            dst = effect.dst
            hostport = seed_hostport(dst)
            if hostport is not None:
                # A seed's node id is unknown until it answers: the transport dials its
                # address under the destination as a name, and any valid node may answer.
                address = split_hostport(hostport)
                if address is None:
                    log.warning("not sending to a malformed seed address %r", hostport)
                    return
                self.transport.set_address(dst, *address, any_node=True)
            self.transport.send(dst, payload)
        elif isinstance(effect, Reply):
            fut = self._clients.get(effect.client_id)
            if fut is not None and not fut.done():
                fut.set_result(effect.response)
        elif isinstance(effect, SetTimer):
            delay = max(0.0, effect.at - time.time())
            self._loop.call_later(delay, self._on_timer, effect.key)

    def _update_addresses(self) -> None:
        self.node.addresses_changed = False
        if self.node.joined and not self._seeds_forgotten:
            # Once joined, seeds are reached by their node ids like any member.
            self._seeds_forgotten = True
            for seed in self.config.seeds:
                self.transport.forget(seed_destination(seed))
        for member in self.node.members.members():
            if member.node_id == self.config.node_id:
                continue
            address = split_hostport(member.rpc)
            if address is not None:
                self.transport.set_address(member.node_id, *address)

    async def _commit_loop(self) -> None:
        assert self._loop is not None
        try:
            # Only this task starts batches (one task at a time), so `start` never finds
            # one in flight: it seals whatever is staged, or ends the loop.
            while (batch := self._gate.start()) is not None:
                if self._sync_commits:
                    await self._loop.run_in_executor(self._executor, self.engine.commit,
                                                     batch)
                else:
                    self.engine.commit(batch)
                self.commits += 1
                encoded: dict[int, bytes] = {}
                for effect in self._gate.committed():
                    self._do(effect, encoded)
        except Exception:
            # A failed commit means the disk is gone or full: acknowledging anything
            # from here on could lose it, so stop the node loudly.
            log.exception("commit failed; stopping the node")
            os.kill(os.getpid(), signal.SIGTERM)
            raise
        finally:
            self._committer = None

    async def _flush(self) -> None:
        """Commit everything staged so far (at start and at a clean stop)."""
        if self._committer is not None:
            await asyncio.shield(self._committer)
        if self.engine.has_staged():
            self._committer = asyncio.ensure_future(self._commit_loop())
            await self._committer
