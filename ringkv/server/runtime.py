"""The asyncio shell around one `Node`: clock, timers, transport, disk and HTTP.

The runtime feeds the node its inputs (HTTP requests, frames from peers, timers, a tick
every `TICK` seconds) with the wall clock, and carries out the effects it returns.

Group commit: writes the node stages in its engine are committed by one committer task,
one batch at a time, in a worker thread when the engine syncs to disk (so the loop keeps
serving while the fsync runs; writes staged meanwhile form the next batch). An effect
marked `durable` is held until the batch holding every write staged before it commits
(`ringkv.core.gate`): a replica's acknowledgement never leaves before its write is on disk.

Nothing wedges the loop: the node contains a failing part of its tick, message handler
or timer (`Node.on_fault`: logged here, at most once per `FAULT_LOG_EVERY` seconds for
each place, and counted); an effect that cannot be carried out is skipped alone; every
client request is answered by its deadline (its timeout plus `REQUEST_GRACE`, found by
the tick that follows it: a 503 if the node never answered), and stopping answers those
still waiting at once. The HTTP edge (`ringkv.server.http_edge`) bounds connections,
request heads and idle time.

Cost: the hot path makes no loop timer per request. The node's own timers (a deadline
per request, which the quorum almost always beats) are coalesced into `TIMER_SLOT`
slots, one loop timer each, and the runtime's safety deadline is a sweep by the tick.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import random
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from aiohttp import web

from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.effects import Message as AnyMessage
from coordinator.requests import (
    ClientRequest,
    ClientResponse,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    WriteRequest,
)
from gossip.membership import valid_node_id
from ringkv.core import wire
from ringkv.core.addresses import seed_destination, seed_hostport, split_hostport
from ringkv.core.config import NodeConfig
from ringkv.core.gate import DurabilityGate
from ringkv.core.latency import LatencyInjector
from ringkv.core.node import Node
from ringkv.net.tls import TlsContexts, TlsFiles
from ringkv.net.transport import Transport
from ringkv.server.access import Access
from ringkv.server.http_edge import EdgeLimits, EdgeRunner, EdgeStats
from storage.crdt import props_table
from storage.engine import Batch, Engine, StorageFullError
from storage.memory import MemoryEngine
from storage.namespace import PROPS_KEY
from storage.versions import MAX_CONTEXT_CHARS

log = logging.getLogger("ringkv")

TICK = 0.1  # seconds between node ticks: heartbeats, hint replay, joins
# Seconds a node that found its storage full refuses writes before trying again.
STORAGE_FULL_RETRY = 5.0
MAX_REQUEST_LINE = 64 * 1024  # bytes of HTTP request line (method, path, query)
# Bytes of one header field (name and value): the largest context the store accepts,
# and so every context it hands out, must come back as X-Context (contract section 4).
MAX_HEADER_FIELD = MAX_CONTEXT_CHARS + 1024
# Bytes of a whole request head: one largest context plus room for the other headers.
MAX_REQUEST_HEAD = MAX_HEADER_FIELD + MAX_REQUEST_LINE
# Seconds past a request's own timeout before the runtime answers it itself: room for a
# forwarded write's grace and a group commit, so the coordinator's answer comes first.
REQUEST_GRACE = 1.0
# Upper bounds (seconds) of the group-commit duration histogram.
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
# Seconds of one timer slot: the node's timers due within one slot fire together, at
# its end (a deadline is kept at most this late).
TIMER_SLOT = 0.005
# Seconds a stopping node gives its HTTP handlers to finish (requests still waiting on
# the node are answered at once; this bounds slow bodies and slow readers).
STOP_GRACE = 2.0
# Seconds the server keeps reading (and dropping) the rest of a body it refused before
# closing, so the client reads the refusal rather than a reset; aiohttp's 10 s would let
# a client that refused to send its body hold the connection that much longer.
LINGER = 2.0
# Seconds between reads of the bucket properties: how long a change made through
# another node may take to apply here (contract 7: "within seconds").
BUCKET_REFRESH = 2.0
BUCKET_READ_TIMEOUT_MS = 2000
FAULT_LOG_EVERY = 10.0  # seconds between logged tracebacks of failures at one place


def open_engine(config: NodeConfig) -> Engine:
    if config.storage == "memory":
        return MemoryEngine(max_memory=config.max_memory or None)
    from storage.lmdb_engine import LmdbEngine

    os.makedirs(config.data_path, exist_ok=True)
    return LmdbEngine(os.path.join(config.data_path, "lmdb"), sync=config.sync == "group",
                      map_size=config.map_size)


def _tls_contexts(config: NodeConfig) -> TlsContexts | None:
    if not (config.tls_ca and config.tls_cert and config.tls_key):
        return None
    return TlsContexts(TlsFiles(config.tls_ca, config.tls_cert, config.tls_key))


def _http_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """HTTPS for clients (`--http-tls on|mutual`), with the node's own certificate."""
    if config.http_tls == "off" or not (config.tls_cert and config.tls_key):
        return None
    return _http_context_of(config)


def _http_context_of(config: NodeConfig) -> ssl.SSLContext:
    assert config.tls_cert and config.tls_key
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    if config.http_tls == "mutual" and config.tls_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=config.tls_ca)
    return ctx


class NodeRuntime:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.engine = open_engine(config)
        self._fault_logged: dict[str, tuple[float, int]] = {}  # place -> (last, since)
        self.node = Node(config, self.engine, time.time(), random.Random(os.urandom(16)),
                         on_fault=self._fault)
        secret = config.cluster_secret.encode() if config.cluster_secret else None
        self.access = Access(config.admin_token, config.tokens_file)
        self.tls = _tls_contexts(config)
        self.http_ssl = _http_ssl_context(config)
        self.transport = Transport(config.node_id, self._on_frame, valid_peer_id=valid_node_id,
                                   secret=secret, logger=log, tls=self.tls)
        self._clients: dict[int, asyncio.Future[ClientResponse]] = {}
        # The quorum each waiting client asked for, and the loop time by which the
        # runtime answers it itself if the node has not (swept by the tick).
        self._waiting: dict[int, tuple[int, float]] = {}
        # The node's timers, coalesced: keys by the `TIMER_SLOT` they fall due in, each
        # slot one loop timer (most deadlines are never needed: the quorum came first).
        self._timer_slots: dict[int, list[int]] = {}
        self._next_client = 0
        self._gate = DurabilityGate(self.engine)
        self._committer: asyncio.Task[None] | None = None
        self._sync_commits = config.storage != "memory" and config.sync == "group"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._ticker: asyncio.Task[None] | None = None
        self._bucket_reader: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.edge = EdgeStats()
        self.bad_frames = 0
        self._seeds_forgotten = False
        self._judged_down: set[str] = set()  # members whose connection was dropped
        self.commits = 0
        self.committed_writes = 0  # records made durable, over all commits
        # How long each group commit took, from sealing its batch to the end of the
        # commit (the hand-off to the commit thread and back included): counts per
        # `COMMIT_BUCKETS` bound (the last, past every bound), and their sum.
        self.commit_counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_seconds = 0.0
        self.storage_full_batches = 0  # batches abandoned because storage was full
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
        # the contract's 414 (aiohttp's default, 8190, answers a bare 400 before that);
        # header fields long enough for every context (aiohttp's parser written in
        # Python applies the line limit to header lines too, hence the larger of both).
        config = self.config
        limits = EdgeLimits(max_connections=config.max_http_connections,
                            header_timeout=config.http_header_timeout,
                            max_head_bytes=MAX_REQUEST_HEAD)
        self._runner = EdgeRunner(app, limits, self.edge, access_log=None,
                                  handle_signals=False, handler_cancellation=True,
                                  shutdown_timeout=STOP_GRACE,
                                  keepalive_timeout=config.http_keepalive_timeout,
                                  lingering_time=LINGER,
                                  max_line_size=max(MAX_REQUEST_LINE, MAX_HEADER_FIELD),
                                  max_field_size=MAX_HEADER_FIELD)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.http_port,
                           reuse_address=True, ssl_context=self._https_listener())
        await site.start()
        self._ticker = asyncio.create_task(self._tick_loop())
        self._bucket_reader = asyncio.create_task(self._bucket_loop())
        if self.injector is not None:
            log.warning("EXPERIMENTAL: latency injection is ON (%s): every replica message "
                        "is delayed on purpose. Never run this node in production.",
                        self.injector.legs.describe())
        log.info("node %s serving http %s:%d rpc %s:%d", self.config.node_id,
                 self.config.host, self.config.http_port, self.config.host,
                 self.config.rpc_port)

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # Stopping is not leaving: requests still waiting on the node are answered now
        # (the write may exist, as after any 503), not after their timeouts.
        for client_id in list(self._clients):
            self._unanswered(client_id, "node is stopping")
        for task in (self._ticker, self._bucket_reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
        await self._flush()
        await self.transport.close()
        self.engine.close()
        self._executor.shutdown(wait=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            # The node contains each part of its tick; these catch what is left, so a
            # bug anywhere never stops the node's heartbeat.
            now = time.time()
            try:
                self._run(self.node.tick(now))
            except Exception as exc:
                self._fault("tick", exc)
            try:
                self._sweep_requests()
            except Exception as exc:
                self._fault("sweep", exc)
            try:
                self._redial_down_peers(now)
            except Exception as exc:
                self._fault("redial", exc)

    def _https_listener(self) -> ssl.SSLContext | None:
        """The context the HTTPS listener is built with. Every handshake is handed to
        the node's current context (`http_ssl`) as it starts, so a reload swaps the
        certificate and the client CA whole, without touching the listener (loading
        into a live context would add a rotated CA to the old one, not replace it)."""
        if self.http_ssl is None:
            return None
        listener = _http_context_of(self.config)

        def current(ssl_object: ssl.SSLObject, _name: str | None,
                    _ctx: ssl.SSLContext) -> None:
            if self.http_ssl is not None:
                ssl_object.context = self.http_ssl

        listener.sni_callback = current
        return listener

    def reload(self) -> None:
        """Reload the certificates, key, CA and tokens file (SIGHUP) without a restart:
        connections made from now on use them, open ones keep theirs; the next request
        is checked against the new tokens. All or nothing: everything is loaded first,
        and a missing or mismatched file raises with the old ones all still in use."""
        config = self.config
        tls = _tls_contexts(config)
        http = _http_ssl_context(config)
        tokens = Access(config.admin_token, config.tokens_file)
        if tls is not None and self.tls is not None:
            self.tls.adopt(tls)  # the transport and its peers hold this very object
        if http is not None:
            self.http_ssl = http  # the listener's context hands new handshakes to it
        self.access.replace(tokens)
        log.info("node %s reloaded its certificates and tokens", config.node_id)

    async def _bucket_loop(self) -> None:
        """Re-read every bucket's properties from the cluster every `BUCKET_REFRESH` s
        (`ringkv.core.buckets`): a quorum read of the one key that holds them."""
        while True:
            await asyncio.sleep(BUCKET_REFRESH)
            try:
                resp = await self.request(ReadRequest(PROPS_KEY, None, BUCKET_READ_TIMEOUT_MS))
                if isinstance(resp, ReadOk):
                    self.node.learn_buckets(props_table(resp.siblings))
                    self._run([])  # a changed table is staged in the meta table: commit it
            except Exception as exc:
                self._fault("buckets", exc)

    def _fault(self, where: str, exc: Exception) -> None:
        """Log a contained failure: its traceback at most once per `FAULT_LOG_EVERY`
        seconds for each place (one failing every tick must not flood the log)."""
        now = time.monotonic()
        last, since = self._fault_logged.get(where, (-FAULT_LOG_EVERY, 0))
        if now - last < FAULT_LOG_EVERY:
            self._fault_logged[where] = (last, since + 1)
            return
        self._fault_logged[where] = (now, 0)
        log.error("%s failed (%d more since the last report): %s", where, since,
                  type(exc).__name__, exc_info=exc)

    def _count_fault(self, where: str, exc: Exception) -> None:
        """A failure contained here rather than in the node, counted with the node's."""
        faults = self.node.faults
        faults[where] = faults.get(where, 0) + 1
        self._fault(where, exc)

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
        """The node's answer to `req`; by its deadline, whatever the node does."""
        assert self._loop is not None
        quorum = self._quorum(req)
        if self._stopping:
            return QuorumFailed(0, quorum, "node is stopping")
        self._next_client += 1
        client_id = self._next_client
        fut: asyncio.Future[ClientResponse] = self._loop.create_future()
        self._clients[client_id] = fut
        timeout_ms = req.timeout_ms or self.config.request_timeout_ms
        # No timer per request: the coordinator answers by the deadline itself, and the
        # tick sweeps up any request it lost (`_sweep_requests`).
        self._waiting[client_id] = (quorum,
                                    self._loop.time() + timeout_ms / 1000 + REQUEST_GRACE)
        try:
            self._run(self.node.client_request(client_id, req, time.time()))
            return await fut
        finally:
            self._clients.pop(client_id, None)
            self._waiting.pop(client_id, None)

    def _sweep_requests(self) -> None:
        """Answer every request past its deadline that the node has not answered: the
        coordinator lost it (a bug, a failed timer), so answer as for a quorum not
        reached, which is what the client sees; the write may still exist."""
        assert self._loop is not None
        now = self._loop.time()
        late = [cid for cid, (_, until) in self._waiting.items() if until <= now]
        for client_id in late:
            fut = self._clients.get(client_id)
            if fut is not None and not fut.done():
                self._count_fault("request", TimeoutError("no answer by the deadline"))
                self._unanswered(client_id, "no answer from the coordinator by the"
                                 " request's deadline")

    def waiting(self) -> int:
        """Client requests waiting for the node's answer now."""
        return len(self._clients)

    def _quorum(self, req: ClientRequest) -> int:
        if isinstance(req, WriteRequest):
            return req.w or self.node.w
        return req.r or self.node.r

    def _unanswered(self, client_id: int, why: str) -> None:
        fut = self._clients.get(client_id)
        if fut is not None and not fut.done():
            quorum = self._waiting.get(client_id, (0, 0.0))[0]
            fut.set_result(QuorumFailed(0, quorum, why))

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

    def _set_timer(self, at: float, key: int) -> None:
        """Fire the node's timer `key` at wall-clock time `at`, or up to `TIMER_SLOT`
        later: timers due in one slot share one loop timer."""
        assert self._loop is not None
        slot = math.ceil(at / TIMER_SLOT)
        keys = self._timer_slots.get(slot)
        if keys is not None:
            keys.append(key)
            return
        self._timer_slots[slot] = [key]
        self._loop.call_later(max(0.0, slot * TIMER_SLOT - time.time()), self._on_slot, slot)

    def _on_slot(self, slot: int) -> None:
        keys = self._timer_slots.pop(slot, ())
        for key in keys:
            try:
                self._run(self.node.timer(key, time.time()))
            except Exception as exc:  # one timer's fault stops none of the others
                self._fault("timer", exc)

    # --- effects ----------------------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        if self.node.addresses_changed:
            self._update_addresses()
        encoded: dict[int, bytes] = {}
        for effect in effects:
            if self._gate.admit(effect):
                try:
                    self._do(effect, encoded)
                except Exception as exc:  # one effect that cannot be done stops no other
                    self._count_fault("effect", exc)
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
            self._set_timer(effect.at, effect.key)

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
                started = self._loop.time()
                try:
                    await self._commit(batch)
                except StorageFullError as exc:
                    self._storage_full(batch, exc)
                    continue
                self._count_commit(len(batch), self._loop.time() - started)
                self.node.store.full = None
                encoded: dict[int, bytes] = {}
                for effect in self._gate.committed():
                    try:
                        self._do(effect, encoded)
                    except Exception as exc:  # an effect, not the commit: skip it alone
                        self._count_fault("effect", exc)
        except Exception:
            # A failed commit means the disk is gone or full: acknowledging anything
            # from here on could lose it, so stop the node loudly.
            log.exception("commit failed; stopping the node")
            os.kill(os.getpid(), signal.SIGTERM)
            raise
        finally:
            self._committer = None

    def _count_commit(self, writes: int, seconds: float) -> None:
        self.commits += 1
        self.committed_writes += writes
        self.commit_seconds += seconds
        self.commit_counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1

    async def _commit(self, batch: Batch) -> None:
        """Commit `batch`, growing the engine and retrying while it does not fit."""
        assert self._loop is not None
        while True:
            try:
                if self._sync_commits:
                    await self._loop.run_in_executor(self._executor, self.engine.commit,
                                                     batch)
                else:
                    self.engine.commit(batch)
                return
            except StorageFullError:
                # No commit runs now and this thread holds no read transaction: the
                # one moment the engine may remap itself.
                if not self.engine.grow():
                    raise

    def _storage_full(self, batch: Batch, exc: StorageFullError) -> None:
        """A batch that cannot be made durable fails alone; the node lives on.

        Its writes leave the store (reads see what is on disk), and the effects held
        for it (acks, answers) are dropped, so every write in it fails: its
        coordinator's quorum never counts this replica. Until a commit succeeds again,
        or `STORAGE_FULL_RETRY` seconds pass, writes coordinated here get 507.
        """
        log.error("%s; failing the %d writes of this batch", exc, len(batch))
        self.node.store.abandon(batch)
        dropped = self._gate.committed()
        self.storage_full_batches += 1
        log.debug("dropped %d effects held for the failed batch", len(dropped))
        self.node.store.full = str(exc.strerror or exc)
        assert self._loop is not None
        self._loop.call_later(STORAGE_FULL_RETRY, self._retry_storage)

    def _retry_storage(self) -> None:
        self.node.store.full = None  # the next batch tries again; it fails alone if full

    async def _flush(self) -> None:
        """Commit everything staged so far (at start and at a clean stop)."""
        if self._committer is not None:
            await asyncio.shield(self._committer)
        if self.engine.has_staged():
            self._committer = asyncio.ensure_future(self._commit_loop())
            await self._committer
