"""Real ringkv nodes as separate processes on loopback, for the multi-process tests.

`Cluster` starts K `python -m ringkv serve` processes (n1 first, then the others seeded
with n1's RPC address), each in a process group of its own, with its stdout and stderr
appended to ``<tmp>/nI.log``. A node can be stopped (SIGTERM), killed (SIGKILL), paused
(SIGSTOP), resumed (SIGCONT), restarted with the same id, ports and data dir, and have
its data dir wiped. `Cluster.close` kills whatever is still running; the `cluster`
helpers in ``conftest.py`` call it from a finalizer, so no process outlives its test
even when the test fails, and they print the tails of the node logs on failure.

Everything that waits polls with a deadline (`wait_until`); a timeout raises
`AssertionError` with a description of what was awaited and what was last seen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

HOST = "127.0.0.1"
# Durable storage (LMDB, one fsync per group commit) and short timings for tests:
# failures are seen within ~2-3 s. Options given later on the command line win.
FAST_ARGS = (
    "--storage", "lmdb",
    "--sync", "group",
    "--heartbeat-interval", "0.2",
    "--request-timeout-ms", "1500",
    "--join-settle", "0.5",
)
START_TIMEOUT = 30.0  # seconds for a node to answer /health, or a cluster to settle
STOP_TIMEOUT = 15.0  # seconds a SIGTERMed node may take to exit
HTTP_TIMEOUT = 10.0  # seconds for one HTTP exchange of the tests
TAIL_LINES = 40

T = TypeVar("T")

# Every cluster not closed yet, so the report hook of conftest.py can show their logs.
ACTIVE: list[Cluster] = []


# ------------------------------------------------------------------------------ waiting


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "",
    interval: float = 0.05,
) -> T:
    """Poll `predicate` until it returns something truthy; return it.

    Exceptions raised by the predicate count as "not yet" (the last one is reported
    if the deadline passes).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - "not yet", reported on timeout
            value, last = None, exc  # type: ignore[assignment]
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what or predicate!r}; "
                f"last seen: {last!r}"
            )
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free right now (bound to port 0, then closed)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def key_path(key: bytes | str) -> str:
    """``/kv/<key>`` with every byte of the key percent-encoded (any byte string works)."""
    raw = key.encode() if isinstance(key, str) else key
    quoted = quote(raw, safe="")
    if quoted in (".", ".."):  # dot segments would be removed by URL normalisation
        quoted = quoted.replace(".", "%2E")
    return "/kv/" + quoted


# -------------------------------------------------------------------------------- a node

_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    except (OSError, ImportError):  # pragma: no cover
        _LIBC = None


def _die_with_parent() -> None:  # in the child, between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: no orphans if pytest dies


class NodeProc:
    """One `ringkv serve` process: its identity, ports, data dir, log and controls."""

    def __init__(
        self,
        node_id: str,
        http_port: int,
        rpc_port: int,
        base_dir: Path,
        seeds: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.node_id = node_id
        self.http_port = http_port
        self.rpc_port = rpc_port
        self.data_dir = base_dir / node_id
        self.log_path = base_dir / f"{node_id}.log"
        self.seeds = list(seeds)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        self._http: httpx.Client | None = None
        # How the harness's own client (`http`) reaches the node: over HTTPS, checking
        # the node's certificate with `verify`, when that is set; carrying `bearer` as
        # its client token when that is set (a node with --tokens-file). Set both
        # before the first request.
        self.verify: ssl.SSLContext | None = None
        self.bearer: str | None = None

    # --- identity ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "http" if self.verify is None else "https"
        return f"{scheme}://{HOST}:{self.http_port}"

    @property
    def rpc_addr(self) -> str:
        return f"{HOST}:{self.rpc_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "ringkv", "serve",
            "--node-id", self.node_id,
            "--host", HOST,
            "--http-port", str(self.http_port),
            "--rpc-port", str(self.rpc_port),
            "--data-dir", str(self.data_dir),
            "--seeds", ",".join(self.seeds),
            *FAST_ARGS,
            *self.extra_args,
        ]

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.alive else "stopped")
        return f"<NodeProc {self.node_id} {self.url} {state}>"

    # --- process control ----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.node_id} was never started"
        return self.proc.pid

    def start(self) -> None:
        assert not self.alive, f"{self.node_id} is already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"==== start #{self.starts} at {stamp}: {' '.join(self.command())}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: killpg reaches it all
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        self.paused = False
        self._reset_http()

    def _signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT, signal_it: bool = True) -> int | None:
        """SIGTERM (a clean stop) and wait; SIGKILL if it does not exit in time.

        Exactly one SIGTERM is sent (none with ``signal_it=False``, for a node already
        signalled): a second one that lands after the node's event loop has closed,
        in the last moments of a clean exit, would end it with -SIGTERM instead of 0.
        """
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        if signal_it:
            self._signal_group(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.node_id} did not stop within {timeout}s of SIGTERM") from None
        self._reset_http()
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it (a crash, nothing flushed)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT)
        self.paused = False
        self._reset_http()

    def pause(self) -> None:
        """SIGSTOP: the process is frozen; its sockets stay open but nothing answers."""
        self._signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)
        self.paused = False

    def restart(self, wait: bool = True) -> None:
        """Start again with the same id, ports, seeds and data dir (after stop/kill)."""
        if self.alive:
            self.stop()
        self.start()
        if wait:
            self.wait_healthy()

    def wipe(self) -> None:
        """Delete the node's data dir (the node must not be running): a lost disk."""
        assert not self.alive, f"wipe {self.node_id} only while it is down"
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    # --- HTTP --------------------------------------------------------------------------

    def _reset_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.bearer}"} if self.bearer else None
            self._http = httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT,
                                      verify=True if self.verify is None else self.verify,
                                      headers=headers)
        return self._http

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def put(self, key: bytes | str, value: bytes | str, *, context: str | None = None,
            content_type: str | None = None, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        hdrs = dict(headers or {})
        if context is not None:
            hdrs["X-Context"] = context
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        body = value.encode() if isinstance(value, str) else value
        return self.http.put(key_path(key), content=body, headers=hdrs, params=params)

    def get(self, key: bytes | str, *, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get(key_path(key), params=params, headers=headers)

    def delete(self, key: bytes | str, *, context: str | None = None,
               params: dict[str, Any] | None = None) -> httpx.Response:
        hdrs = {"X-Context": context} if context is not None else {}
        return self.http.delete(key_path(key), headers=hdrs, params=params)

    def local(self, key: bytes | str) -> dict[str, Any] | None:
        """This node's own copy of a key (GET /debug/local/kv/KEY), None when absent."""
        resp = self.http.get("/debug/local" + key_path(key))
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def local_values(self, key: bytes | str) -> list[bytes]:
        """The live values of this node's own copy of a key."""
        import base64

        doc = self.local(key)
        if doc is None:
            return []
        return [base64.b64decode(s["value"]) for s in doc["siblings"]
                if s["live"] and s["value"] is not None]

    def cluster_view(self) -> dict[str, Any]:
        resp = self.http.get("/cluster", timeout=2.0)
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def statuses(self) -> dict[str, str]:
        """node id -> status, as this node sees its members."""
        return {m["node_id"]: m["status"] for m in self.cluster_view()["members"]}

    def lookup(self, key: bytes | str) -> list[str]:
        """The key's preference list (GET /ring/lookup), the key percent-encoded."""
        raw = key.encode() if isinstance(key, str) else key
        resp = self.http.get("/ring/lookup?key=" + quote(raw, safe=""))
        resp.raise_for_status()
        return list(resp.json()["preference_list"])

    def metrics(self) -> dict[str, float]:
        """Every sample of GET /metrics: ``name{label="v",...}`` (labels sorted) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        resp = self.http.get("/metrics")
        resp.raise_for_status()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def healthy(self) -> bool:
        try:
            return self.http.get("/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(
                    f"{self.node_id} exited with {self.exit_code()} while starting:\n"
                    + self.tail()
                )
            return self.healthy()

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node_id} not healthy within {timeout}s:\n"
                                     + self.tail())
            time.sleep(0.05)

    # --- logs --------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = self.log_text().rstrip("\n")
        return "\n".join(text.splitlines()[-lines:]) if text else "(log is empty)"


# ------------------------------------------------------------------------------ a cluster


class Cluster:
    """K nodes n1..nK on free loopback ports, data and logs under `base_dir`."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        extra_args: Sequence[str] = (),
        per_node_args: dict[str, Sequence[str]] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        self.per_node_args = dict(per_node_args or {})
        self.nodes: list[NodeProc] = []
        self.closed = False
        ACTIVE.append(self)
        for _ in range(size):
            self.add_node(start=False)

    # --- membership of the harness --------------------------------------------------------

    def add_node(self, start: bool = False, node_id: str | None = None,
                 extra_args: Sequence[str] | None = None,
                 seeds: Sequence[str] | None = None) -> NodeProc:
        """Describe (and optionally start) one more node, seeded with n1 unless told."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        taken = {p for n in self.nodes for p in (n.http_port, n.rpc_port)}
        while True:
            http_port, rpc_port = free_ports(2)
            if http_port not in taken and rpc_port not in taken:
                break
        if seeds is None:
            seeds = [self.nodes[0].rpc_addr] if self.nodes else []
        args = list(self.extra_args) if extra_args is None else list(extra_args)
        args += list(self.per_node_args.get(node_id, ()))
        node = NodeProc(node_id, http_port, rpc_port, self.base_dir, seeds, args)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def __getitem__(self, node_id: str) -> NodeProc:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def others(self, *exclude: NodeProc | str) -> list[NodeProc]:
        names = {e if isinstance(e, str) else e.node_id for e in exclude}
        return [n for n in self.nodes if n.node_id not in names]

    # --- start and settle ------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Cluster:
        """n1 first (a new cluster), wait for its /health, then the others; wait until
        every node's /cluster shows every member up."""
        first, rest = self.nodes[0], self.nodes[1:]
        self._start_with_port_retry(first)
        for node in rest:
            node.start()
        for node in rest:
            node.wait_healthy(timeout)
        self.settle(timeout=timeout)
        return self

    def _start_with_port_retry(self, node: NodeProc, attempts: int = 3) -> None:
        """Start a first node; if a port picked as free was taken meanwhile, pick others."""
        for attempt in range(attempts):
            node.start()
            try:
                node.wait_healthy()
                return
            except AssertionError:
                if node.alive or attempt == attempts - 1 or "in use" not in node.log_text():
                    raise
                node.http_port, node.rpc_port = free_ports(2)
                for other in self.nodes:
                    if other is not node and other.seeds:
                        other.seeds = [node.rpc_addr]

    def wait_all_up(self, nodes: Iterable[NodeProc] | None = None,
                    timeout: float = START_TIMEOUT) -> None:
        """Every given node (default: every running node) sees every node of the
        cluster as "up"."""
        observers = list(nodes) if nodes is not None else [n for n in self.nodes if n.alive]
        want = set(self.ids)

        def settled() -> bool:
            for n in observers:
                st = n.statuses()
                if set(st) != want or any(v != "up" for v in st.values()):
                    return False
            return True

        try:
            wait_until(settled, timeout, "every node to see every member up")
        except AssertionError as exc:
            views = {}
            for n in observers:
                try:
                    views[n.node_id] = n.statuses()
                except Exception as e:  # noqa: BLE001
                    views[n.node_id] = repr(e)  # type: ignore[assignment]
            raise AssertionError(f"{exc}\nviews: {views}") from None

    def wait_connected(self, timeout: float = START_TIMEOUT) -> None:
        """Every running node can complete a read with r=all on keys whose replicas
        cover every node: each pair of nodes exchanges messages both ways again.

        A node that has just restarted is seen "up" before its peers have finished
        reconnecting to it (see the transport's reconnect backoff), so tests that
        need the cluster *settled* after a restart wait for this too.
        """
        live = [n for n in self.nodes if n.alive and not n.paused]
        probes: list[tuple[str, int]] = []  # (key, its number of replicas)
        covered: set[str] = set()
        for i in range(10_000):
            if covered >= set(self.ids):
                break
            key = f"__probe-{i}"
            pref = live[0].lookup(key)
            if not set(pref) <= covered:
                probes.append((key, len(pref)))
                covered |= set(pref)

        def connected() -> bool:
            for node in live:
                for key, replicas in probes:
                    resp = node.get(key, params={"r": str(replicas), "timeout": "1000"})
                    if resp.status_code not in (200, 300, 404):
                        return False
            return True

        wait_until(connected, timeout, "every node to read from every replica (r=all)")

    def settle(self, timeout: float = START_TIMEOUT) -> None:
        """Every member up in every view, and every pair of nodes talking again."""
        self.wait_all_up(timeout=timeout)
        self.wait_connected(timeout=timeout)

    def wait_status(self, target: NodeProc | str, status: str,
                    observers: Iterable[NodeProc] | None = None,
                    timeout: float = 10.0) -> None:
        """Every observer (default: every other running, unpaused node) sees `target`
        with `status`."""
        tid = target if isinstance(target, str) else target.node_id
        obs = list(observers) if observers is not None else [
            n for n in self.nodes if n.node_id != tid and n.alive and not n.paused]
        wait_until(
            lambda: all(n.statuses().get(tid) == status for n in obs),
            timeout,
            f"{tid} to be {status!r} in the view of {[n.node_id for n in obs]}",
        )

    def key_with_preference(self, predicate: Callable[[list[str]], bool],
                            prefix: str = "k") -> tuple[str, list[str]]:
        """A key whose preference list (as n1 sees it) satisfies `predicate`."""
        node = next(n for n in self.nodes if n.alive and not n.paused)
        for i in range(10_000):
            key = f"{prefix}-{i}"
            pref = node.lookup(key)
            if predicate(pref):
                return key, pref
        raise AssertionError("no key with the wanted preference list")

    # --- teardown and logs -----------------------------------------------------------------

    def close(self) -> None:
        """Kill every node (process groups, SIGKILL after SIGCONT) and reap them."""
        if self.closed:
            return
        self.closed = True
        for node in self.nodes:
            if node.alive:
                node.resume()
                node.kill()
            node._reset_http()
        if self in ACTIVE:
            ACTIVE.remove(self)

    def stop_all(self) -> None:
        """SIGTERM every node at once, then wait for each (a clean stop of the cluster)."""
        for node in self.nodes:
            if node.paused:
                node.resume()
            node._signal_group(signal.SIGTERM)
        for node in self.nodes:
            node.stop(signal_it=False)

    def logs_report(self, lines: int = TAIL_LINES) -> str:
        parts = []
        for node in self.nodes:
            code = node.exit_code()
            state = "running" if code is None and node.proc else f"exit {code}"
            if node.paused:
                state = "paused"
            parts.append(f"----- {node.node_id} ({state}, {node.url}, rpc {node.rpc_addr}),"
                         f" last {lines} lines of {node.log_path}:\n{node.tail(lines)}")
        return "\n".join(parts)


def run_cli(*args: str, timeout: float = 60.0,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002
    """Run ``python -m ringkv ARGS`` and capture its output (text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run(
        [sys.executable, "-m", "ringkv", *args],
        capture_output=True,
        text=input is None,
        input=input,
        timeout=timeout,
        env=env,
        check=False,
    )
