"""`ringkv dev-cluster`: run a whole local cluster as separate `ringkv serve` processes.

Job: start n1 (a new cluster, no seeds), wait until it is healthy (`GET /health`),
start n2..nK seeded with n1's RPC address, wait until every node is ready (`GET /ready`:
it sees enough members up for the default R and W) and every node's `GET /cluster`
shows all K members `up`, print where they are, and keep them running until Ctrl-C /
SIGTERM / SIGHUP, then stop them cleanly (SIGTERM, wait, SIGKILL).

Internode traffic is authenticated: the cluster secret is the one given (--cluster-secret
or RINGKV_CLUSTER_SECRET) or a random one made for this run, and it reaches the nodes
through their environment (RINGKV_CLUSTER_SECRET), never their command line, which any
local user can read.

With `--tls` every node speaks TLS: dev-cluster makes a cluster CA and one certificate
per node under D/tls (`ringkv.tools.certs`: ca.crt, ca.key, nI.crt, nI.key; kept and
reused when the cluster is run again on the same D) and starts each node with
`--tls-ca/--tls-cert/--tls-key` (mutual TLS between nodes, plaintext peers refused)
and `--http-tls on` (HTTPS on the client port). It waits for readiness over HTTPS,
verifying the nodes against that CA, and prints `https://` addresses and the CA's path,
which clients need (`--ca`, `RINGKV_CA`, `Client(..., ca=...)`).

With `--tokens-file FILE` every node requires a client token of FILE on every request
but the probes (`ringkv.server.access`). dev-cluster's own look at `GET /cluster` then
needs a credential too: it uses RINGKV_ADMIN_TOKEN when set, or else makes an admin
token for the run, and hands it to the nodes the way it hands them the secret (through
their environment, never printed).

Node nI listens on HTTP P+I-1 and RPC Q+I-1 and keeps its data and its `node.log`
(stdout and stderr, appended across runs) in D/nI, so running the command again on the
same data directory brings the same cluster back. A node that exits during start-up
aborts the whole cluster with the tail of its log; one that exits later is reported
and the others keep running (killing nodes is what a dev cluster is for).

Signals only set a flag; every wait here is a short poll that checks it, so a stop
request is never lost in the middle of spawning a process.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from ringkv.client import Client, RingkvError, tls_context
from ringkv.core.config import ConfigError, env_var
from ringkv.core.config_loader import load_config

HOST = "127.0.0.1"
POLL_INTERVAL = 0.25  # seconds between readiness probes
PROBE_TIMEOUT = 1.0  # seconds one /health, /ready or /cluster probe may take
TAIL_LINES = 25


@dataclass(frozen=True)
class DevClusterSpec:
    """What to start: K nodes, their port bases, their parent data dir, shared settings."""

    nodes: int = 5
    base_http_port: int = 8001
    base_rpc_port: int = 9001
    data_dir: str = "./data"
    storage: str | None = None
    n: int | None = None
    r: int | None = None
    w: int | None = None
    vnodes: int | None = None
    sync: str | None = None
    cluster_secret: str | None = None
    inject_latency: str | None = None  # experiments only: every node delays WARS legs
    experimental: bool | None = None
    tls: bool | None = None  # internode mutual TLS and HTTPS, certificates in D/tls
    tokens_file: str | None = None  # client tokens every node requires
    # What dev-cluster's probes of GET /cluster send when nodes require tokens: an admin
    # token the nodes get through their environment (see `with_probe_token`).
    probe_token: str | None = None

    def node_id(self, i: int) -> str:
        return f"n{i}"

    def http_port(self, i: int) -> int:
        return self.base_http_port + i - 1

    def rpc_port(self, i: int) -> int:
        return self.base_rpc_port + i - 1

    def node_dir(self, i: int) -> Path:
        return Path(self.data_dir) / self.node_id(i)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def http_url(self, i: int) -> str:
        return f"{self.scheme}://{HOST}:{self.http_port(i)}"

    @property
    def tls_dir(self) -> Path:
        """Where the CA and the node certificates are (made by `make_certificates`)."""
        return (Path(self.data_dir) / "tls").resolve()

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate clients verify the nodes against; None without --tls."""
        return self.tls_dir / "ca.crt" if self.tls else None

    def tls_files(self, i: int) -> tuple[Path, Path]:
        """(certificate, key) of node i."""
        return self.tls_dir / f"{self.node_id(i)}.crt", self.tls_dir / f"{self.node_id(i)}.key"

    def node_args(self, i: int) -> list[str]:
        """`ringkv serve` arguments of node i (1-based)."""
        args = [
            "--node-id",
            self.node_id(i),
            "--host",
            HOST,
            "--http-port",
            str(self.http_port(i)),
            "--rpc-port",
            str(self.rpc_port(i)),
            "--data-dir",
            str(self.node_dir(i).resolve()),
            # n1 starts (or restarts) the cluster; "" also overrides any RINGKV_SEEDS.
            "--seeds",
            "" if i == 1 else f"{HOST}:{self.base_rpc_port}",
        ]
        # Not the cluster secret: a command line is visible to every local user.
        for name in ("storage", "n", "r", "w", "vnodes", "sync", "inject_latency"):
            value = getattr(self, name)
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        if self.experimental:
            args.append("--experimental")
        if self.tls:
            cert, key = self.tls_files(i)
            args += ["--tls-ca", str(self.tls_dir / "ca.crt"), "--tls-cert", str(cert),
                     "--tls-key", str(key), "--http-tls", "on"]
        if self.tokens_file:
            args += ["--tokens-file", str(Path(self.tokens_file).resolve())]
        return args

    def node_command(self, i: int) -> list[str]:
        return [sys.executable, "-m", "ringkv", "serve", *self.node_args(i)]

    def node_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of every node: `base` with the cluster secret, if any."""
        env = dict(base)
        # An inherited secret file would be a second, conflicting secret.
        env.pop(env_var("cluster_secret_file"), None)
        if self.cluster_secret:
            env[env_var("cluster_secret")] = self.cluster_secret
        else:
            env.pop(env_var("cluster_secret"), None)
        if self.probe_token:
            env[env_var("admin_token")] = self.probe_token
        return env

    def with_probe_token(self, env: Mapping[str, str]) -> DevClusterSpec:
        """With the credential its probes need when the nodes require client tokens:
        RINGKV_ADMIN_TOKEN in `env`, or a new one (an admin token passes every check
        of `ringkv.server.access`, whatever the tokens file holds). None without
        --tokens-file: then the nodes need no token and get none."""
        if not self.tokens_file:
            return replace(self, probe_token=None)
        token = (self.probe_token or env.get(env_var("admin_token"), "").strip()
                 or secrets.token_urlsafe(32))
        return replace(self, probe_token=token)

    def make_certificates(self) -> list[Path]:
        """The CA and node certificates under `tls_dir`, made where missing; the files
        made (none when a previous run made them all). A node whose certificate or key
        is missing while the other exists is an error: a rotation is not guessed at."""
        from ringkv.tools.certs import init_ca, issue

        made: list[Path] = []
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.tls_dir.chmod(0o700)  # it holds the CA's key
        ca, ca_key = self.tls_dir / "ca.crt", self.tls_dir / "ca.key"
        if not ca.exists() and not ca_key.exists():
            made += init_ca(self.tls_dir, name="ringkv dev-cluster CA")
        elif not (ca.exists() and ca_key.exists()):
            raise ConfigError("--tls", f"{self.tls_dir} holds only one of ca.crt and ca.key;"
                              " remove the directory to start the CA afresh")
        for i in range(1, self.nodes + 1):
            cert, key = self.tls_files(i)
            if not cert.exists() and not key.exists():
                made += issue(self.tls_dir, self.node_id(i))
            elif not (cert.exists() and key.exists()):
                raise ConfigError("--tls", f"{self.tls_dir} holds only one of {cert.name}"
                                  f" and {key.name}; remove it to issue a new pair")
        return made

    def with_secret(self, env: Mapping[str, str]) -> DevClusterSpec:
        """With a secret: the one given, RINGKV_CLUSTER_SECRET in `env`, or a new one."""
        secret = (self.cluster_secret or env.get(env_var("cluster_secret"), "").strip()
                  or secrets.token_urlsafe(32))
        return replace(self, cluster_secret=secret)

    def validate(self) -> None:
        """Raise ConfigError when the spec cannot work (ports, quorums, ...)."""
        if self.nodes < 1:
            raise ConfigError("--nodes", f"must be at least 1, got {self.nodes}")
        for flag, base in (
            ("--base-http-port", self.base_http_port),
            ("--base-rpc-port", self.base_rpc_port),
        ):
            if base < 1 or base + self.nodes - 1 > 65535:
                raise ConfigError(flag, f"ports {base}..{base + self.nodes - 1} out of range")
        http = range(self.base_http_port, self.base_http_port + self.nodes)
        rpc = range(self.base_rpc_port, self.base_rpc_port + self.nodes)
        if set(http) & set(rpc):
            raise ConfigError(
                "--base-rpc-port",
                f"RPC ports {rpc.start}..{rpc.stop - 1} overlap HTTP ports"
                f" {http.start}..{http.stop - 1}",
            )
        # The nodes would refuse these settings one by one; say so once, up front.
        options: dict[str, object] = {
            "node_id": self.node_id(1),
            "http_port": self.base_http_port,
            "rpc_port": self.base_rpc_port,
        }
        for name in ("storage", "n", "r", "w", "vnodes", "sync", "cluster_secret",
                     "inject_latency", "experimental", "tokens_file"):
            options[name] = getattr(self, name)
        if self.tls:
            cert, key = self.tls_files(1)
            options.update(tls_ca=str(self.ca_path), tls_cert=str(cert), tls_key=str(key),
                           http_tls="on")
        load_config(options, env={})
        if self.tokens_file:
            self._check_tokens_file(self.tokens_file)
        # A node is ready once it sees the default quorums' worth of members up.
        quorum = max(2 if self.r is None else self.r, 2 if self.w is None else self.w)
        if self.nodes < quorum:
            raise ConfigError("--nodes", f"{self.nodes} node(s) can never reach the default"
                              f" quorum of {quorum}; start at least {quorum} or lower --r/--w")

    @staticmethod
    def _check_tokens_file(path: str) -> None:
        """Every node would refuse a bad tokens file; say so once (by line number only:
        the file's tokens are never echoed)."""
        from ringkv.server.access import load_tokens

        try:
            load_tokens(path)
        except OSError as exc:
            raise ConfigError("--tokens-file", f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else "not UTF-8 text"
            raise ConfigError("--tokens-file", f"{path}: {reason}") from None


class _Node:
    def __init__(self, spec: DevClusterSpec, i: int, env: Mapping[str, str]) -> None:
        self.i = i
        self.node_id = spec.node_id(i)
        self.command = spec.node_command(i)
        self.env = dict(env)
        self.dir = spec.node_dir(i)
        self.log_path = self.dir / "node.log"
        self.http_url = spec.http_url(i)
        self.rpc_addr = f"{HOST}:{spec.rpc_port(i)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.reported_exit = False
        # Over TLS the probes verify the nodes as any client does: against the CA.
        self.client = Client(self.http_url, timeout=PROBE_TIMEOUT, ca=spec.ca_path,
                             token=spec.probe_token)
        verify = tls_context(spec.ca_path) if spec.ca_path else None
        self.http = httpx.Client(base_url=self.http_url, timeout=PROBE_TIMEOUT, trust_env=False,
                                 verify=True if verify is None else verify)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n==== dev-cluster: starting {self.node_id} at {stamp} ====\n".encode())
            log.write((" ".join(self.command) + "\n").encode())
            log.flush()
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop nodes in order
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                data = fh.read()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        text = data.decode("utf-8", "replace").rstrip("\n")
        return "\n".join(text.splitlines()[-lines:]) if text else "(log is empty)"

    def probe(self, path: str) -> tuple[bool, set[str] | None]:
        """(answers `path` with 200, node ids this node sees up or None if unknown)."""
        try:
            if self.http.get(path).status_code != 200:
                return False, None
        except httpx.HTTPError:
            return False, None
        try:
            members = self.client.cluster().get("members") or []
        except RingkvError:
            return True, None
        return True, {
            str(m.get("node_id"))
            for m in members
            if isinstance(m, dict) and m.get("status") == "up"
        }


# PR_SET_PDEATHSIG: nodes get SIGTERM if dev-cluster itself dies without cleaning up.
_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    except (OSError, ImportError):  # pragma: no cover
        _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM))


class _DevCluster:
    def __init__(self, spec: DevClusterSpec, console: Console) -> None:
        self.spec = spec
        self.console = console
        env = spec.node_env(os.environ)
        self.nodes = [_Node(spec, i, env) for i in range(1, spec.nodes + 1)]
        self.stop_requests = 0
        self.stop_reason = ""

    # -- signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1
        self.stop_reason = self.stop_reason or signal.Signals(signum).name

    def install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def note(self, text: str) -> None:
        """A progress line for logs and pipes, where the live status line is not shown."""
        if not self.console.is_terminal:
            self.console.print(text, highlight=False, markup=False)

    # -- phases ------------------------------------------------------------------------

    def preflight(self) -> str | None:
        busy = []
        for node in self.nodes:
            for kind, port in (
                ("http", self.spec.http_port(node.i)),
                ("rpc", self.spec.rpc_port(node.i)),
            ):
                if _port_in_use(port):
                    busy.append(f"{port} ({node.node_id} {kind})")
        if busy:
            return (
                f"port(s) already in use: {', '.join(busy)};"
                " is another cluster running? choose other --base-*-port values"
            )
        return None

    def early_exit(self) -> _Node | None:
        for node in self.nodes:
            if node.proc is not None and node.exit_code() is not None:
                return node
        return None

    def report_exit(self, node: _Node, during: str) -> None:
        node.reported_exit = True
        self.console.print(
            f"[red]{node.node_id} exited {during} with code {node.exit_code()}[/red]"
            f" -- last lines of {node.log_path}:",
            highlight=False,
        )
        self.console.print(node.tail(), markup=False, highlight=False)

    def wait_until(self, nodes: list[_Node], want: set[str], deadline: float, label: str,
                   path: str) -> bool:
        """Poll until every node answers `path` with 200 and sees every id in `want` up."""
        started = time.monotonic()
        self.note(f"{label} ...")
        with self.console.status(label) as status:
            while True:
                if self.stop_requests:
                    return False
                dead = self.early_exit()
                if dead is not None:
                    self.report_exit(dead, "during start-up")
                    return False
                probes = {node.node_id: node.probe(path) for node in nodes}
                healthy = sum(1 for ok, _ in probes.values() if ok)
                joined = sum(1 for _, up in probes.values() if up is not None and want <= up)
                if joined == len(nodes):
                    return True
                elapsed = time.monotonic() - started
                status.update(
                    f"{label}: {healthy}/{len(nodes)} {path[1:]},"
                    f" {joined}/{len(nodes)} see all {len(want)} up  [{elapsed:.0f}s]"
                )
                if time.monotonic() >= deadline:
                    self.report_timeout(nodes, want, probes, path)
                    return False
                time.sleep(POLL_INTERVAL)

    def report_timeout(
        self, nodes: list[_Node], want: set[str],
        probes: dict[str, tuple[bool, set[str] | None]], path: str,
    ) -> None:
        self.console.print("[red]timed out waiting for the cluster to form[/red]")
        for node in nodes:
            ok, up = probes[node.node_id]
            if not ok:
                state = f"does not answer {path} with 200"
            elif up is None:
                state = f"answers {path}, but GET /cluster failed"
            else:
                missing = sorted(want - up)
                state = "ready" if not missing else f"does not see up: {', '.join(missing)}"
            self.console.print(
                f"  {node.node_id} ({node.http_url}): {state}  log: {node.log_path}",
                highlight=False,
            )
            if not ok:
                self.console.print(_indent(node.tail(10)), markup=False, highlight=False)

    def start(self, startup_timeout: float) -> bool:
        deadline = time.monotonic() + startup_timeout
        first, rest = self.nodes[0], self.nodes[1:]
        first.start()
        # Alone, n1 is live but cannot be ready (it needs the default quorums' worth).
        if not self.wait_until([first], {first.node_id}, deadline, f"starting {first.node_id}",
                               "/health"):
            return False
        for node in rest:
            if self.stop_requests:
                return False
            node.start()
        want = {node.node_id for node in self.nodes}
        return self.wait_until(
            self.nodes, want, deadline, f"waiting for {len(self.nodes)} nodes to be ready",
            "/ready",
        )

    def print_ready(self) -> None:
        spec = self.spec
        table = Table(title=f"ringkv dev-cluster: {len(self.nodes)} nodes up")
        for column in (("node", spec.scheme, "rpc", "data + log")):
            table.add_column(column)
        for node in self.nodes:
            table.add_row(node.node_id, node.http_url, node.rpc_addr, str(node.dir))
        self.console.print(table)
        a = self.nodes[0].http_url
        b = self.nodes[1 % len(self.nodes)].http_url
        curl, ringkv, notes = "curl", "", []
        if spec.ca_path is not None:
            # The path is what a client needs; it is printed whole, on a line of its
            # own, for scripts to find.
            self.console.print(f"CA: {spec.ca_path}", highlight=False, markup=False,
                               soft_wrap=True)
            curl += f" --cacert {spec.ca_path}"
            notes.append(f"  export RINGKV_CA={spec.ca_path}   # for ringkv and the client")
        if spec.tokens_file:
            curl += " -H \"Authorization: Bearer $TOKEN\""
            ringkv = " --token \"$TOKEN\""
            notes.append(f"  TOKEN=<a token of {spec.tokens_file}>   # every request needs one"
                         " (RINGKV_TOKEN for ringkv)")
        self.console.print(
            "try:\n" + "".join(note + "\n" for note in notes)
            + f"  {curl} -i -X PUT --data-binary 'hello' {a}/kv/greeting\n"
            f"  {curl} -i {b}/kv/greeting\n"
            f"  ringkv get greeting --node {b}{ringkv}\n"
            f"  ringkv cluster status --node {a}{ringkv}\n"
            "press Ctrl-C to stop the cluster",
            highlight=False,
            markup=False,
        )

    def run_until_stopped(self) -> int:
        while not self.stop_requests:
            for node in self.nodes:
                if not node.reported_exit and node.exit_code() is not None:
                    self.report_exit(node, "while running")
                    self.console.print("the other nodes keep running; Ctrl-C stops them")
            if all(node.reported_exit for node in self.nodes):
                self.console.print("[red]every node has exited[/red]")
                return 1
            time.sleep(0.5)
        return 0

    def stop_all(self, timeout: float) -> None:
        live = [node for node in self.nodes if node.alive()]
        if not live:
            return
        requests_at_start = self.stop_requests
        for node in live:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        self.note(f"stopping {len(live)} node(s) ...")
        with self.console.status(f"stopping {len(live)} node(s) (Ctrl-C again to kill)"):
            while any(node.alive() for node in live):
                if time.monotonic() >= deadline or self.stop_requests > requests_at_start:
                    break
                time.sleep(0.1)
        for node in live:
            if node.alive():
                assert node.proc is not None
                self.console.print(f"[yellow]{node.node_id} did not stop; killing it[/yellow]")
                node.proc.kill()
        for node in live:
            assert node.proc is not None
            code = node.proc.wait()
            if code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                self.console.print(
                    f"[yellow]{node.node_id} exited with code {code}; see {node.log_path}[/yellow]",
                    highlight=False,
                )

    def close(self) -> None:
        for node in self.nodes:
            node.client.close()
            node.http.close()


def _indent(text: str, prefix: str = "    | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def run_dev_cluster(
    spec: DevClusterSpec,
    startup_timeout: float = 60.0,
    stop_timeout: float = 15.0,
    console: Console | None = None,
) -> int:
    """Run the cluster until a stop signal; return the process exit code."""
    console = console or Console(soft_wrap=True)
    spec = spec.with_secret(os.environ).with_probe_token(os.environ)
    try:
        spec.validate()
        if spec.tls:
            made = spec.make_certificates()
            if made:
                console.print(f"made {len(made) // 2} TLS certificate(s) in {spec.tls_dir}",
                              highlight=False, markup=False, soft_wrap=True)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 2
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot make the TLS certificates in {spec.tls_dir}: {exc}[/red]",
                      highlight=False)
        return 1
    cluster = _DevCluster(spec, console)
    problem = cluster.preflight()
    if problem:
        console.print(f"[red]error: {problem}[/red]", highlight=False)
        return 1
    previous = cluster.install_signals()
    code = 1
    try:
        if cluster.start(startup_timeout):
            cluster.print_ready()
            code = cluster.run_until_stopped()
        elif cluster.stop_requests:
            code = 0
        if cluster.stop_requests:
            console.print(f"{cluster.stop_reason}: stopping the cluster", highlight=False)
    finally:
        cluster.stop_all(stop_timeout)
        cluster.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        console.print("cluster stopped")
    return code


__all__ = ["DevClusterSpec", "run_dev_cluster"]
