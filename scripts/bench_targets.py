"""The server processes scripts/bench.py points its load at: bare, cluster, etcd.

Each target starts fresh processes on loopback, says which HTTP endpoints take the
load (`load`), how much CPU its processes used, and stops them. The protocol a target
speaks (`protocol`) tells the wrk script and the preload how to read and write a key;
its `scheme` is `https` for the cluster with TLS (`cluster-tls`: mutual TLS between
the nodes and HTTPS for clients, certificates of a CA made for the run), whose
`ssl_context` trusts that CA:

- `ringkv`: GET /kv/k, then PUT /kv/k with the X-Context the GET returned (bare too:
  `scripts/bare_server.py` answers the same API from a dict);
- `etcd`: POST /v3/kv/range, then POST /v3/kv/put, on etcd's v3 JSON gateway (keys and
  values base64), always to the leader.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ringkv.tools.certs import init_ca, issue

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BARE = HERE / "bare_server.py"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def http_json(url: str | urllib.request.Request, timeout: float = 1.0,
              context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """(status, the JSON body or None); status 0 when the server could not be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Target:
    """A set of server processes the load is pointed at."""

    name = "?"
    protocol = "ringkv"

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http: list[str] = []  # host:port of every HTTP endpoint
        self.load: list[str] = []  # the endpoints the load goes to (set by start)
        self.logs: list[Path] = []
        self.scheme = "http"
        self.ssl_context: ssl.SSLContext | None = None  # what a client trusts, for https

    def url(self, hostport: str, path: str = "/") -> str:
        return f"{self.scheme}://{hostport}{path}"

    def start(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids())

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name}: a server exited with code {proc.returncode};"
                                   f" log {log}:\n{tail(log)}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def describe(self) -> str:
        return ", ".join(self.http)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(what: str, check: Any, target: Target, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target.check_alive()
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class BareTarget(Target):
    name = "bare"

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir

    def start(self) -> None:
        (port,) = free_ports(1)
        log = self.workdir / "bare.log"
        with open(log, "ab") as fh:
            self.procs = [subprocess.Popen(
                [sys.executable, str(BARE), "--host", HOST, "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True)]
        self.logs = [log]
        self.http = [f"{HOST}:{port}"]
        self.load = list(self.http)
        wait_for("the bare server", lambda: http_json(f"http://{HOST}:{port}/health")[0] == 200,
                 self)


class ClusterTarget(Target):
    """`nodes` ringkv nodes; with `tls`, mutual TLS between them and HTTPS for clients."""

    name = "cluster"

    def __init__(self, workdir: Path, nodes: int, storage: str, sync: str,
                 n: int, r: int, w: int, extra: list[str], load_on: str = "one",
                 tls: bool = False) -> None:
        super().__init__()
        self.load_on = load_on
        self.workdir = workdir
        self.nodes = nodes
        self.node_opts = ["--storage", storage, "--sync", sync, "--n", str(n), "--r", str(r),
                          "--w", str(w), "--log-level", "warning", *extra]
        self.node_ids: list[str] = []
        self.cmds: list[list[str]] = []  # every node's command line, to start it again
        self.tls = tls
        if tls:
            self.name = "cluster-tls"
            self.scheme = "https"

    def _tls_opts(self, node_id: str) -> list[str]:
        """A certificate of the run's CA for `node_id` (the CA made on first use)."""
        if not self.tls:
            return []
        pki = self.workdir / "pki"
        if not (pki / "ca.crt").exists():
            init_ca(pki)
            self.ssl_context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        crt, key = issue(pki, node_id)
        return ["--tls-ca", str(pki / "ca.crt"), "--tls-cert", str(crt), "--tls-key", str(key),
                "--http-tls", "on"]

    def _spawn(self, i: int, http_port: int, rpc_port: int, seeds: str) -> None:
        node_id = f"n{i}"
        data = self.workdir / node_id
        data.mkdir(parents=True, exist_ok=True)
        log = data / "node.log"
        cmd = [sys.executable, "-m", "ringkv", "serve", "--node-id", node_id, "--host", HOST,
               "--http-port", str(http_port), "--rpc-port", str(rpc_port),
               "--data-dir", str(data), "--seeds", seeds, *self.node_opts,
               *self._tls_opts(node_id)]
        self.procs.append(self._launch(cmd, log))
        self.cmds.append(cmd)
        self.logs.append(log)
        self.http.append(f"{HOST}:{http_port}")
        self.node_ids.append(node_id)

    @staticmethod
    def _launch(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            fh.write((" ".join(cmd) + "\n").encode())
            fh.flush()
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=ROOT)

    def stop_node(self, index: int, timeout: float) -> None:
        """Stop node `index` cleanly (SIGTERM) and wait for it to exit; the others run on.

        A node that is not gone after `timeout` seconds is an error (its log tail in
        the message); it is left running for `stop` to kill."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.node_ids[index]} did not exit within {timeout:.0f} s of"
                               f" SIGTERM; log {self.logs[index]}:\n"
                               f"{tail(self.logs[index])}") from None

    def restart_node(self, index: int) -> subprocess.Popen[bytes]:
        """Start stopped node `index` again: same command line, ports and data dir."""
        if self.procs[index].poll() is None:
            raise RuntimeError(f"{self.node_ids[index]} is still running")
        self.procs[index] = self._launch(self.cmds[index], self.logs[index])
        return self.procs[index]

    def start(self) -> None:
        ports = free_ports(2 * self.nodes)
        http_ports, rpc_ports = ports[: self.nodes], ports[self.nodes:]
        self._spawn(1, http_ports[0], rpc_ports[0], "")
        health = self.url(self.http[0], "/health")
        wait_for("n1 to be healthy", lambda: self._get(health)[0] == 200, self)
        for i in range(2, self.nodes + 1):
            self._spawn(i, http_ports[i - 1], rpc_ports[i - 1], f"{HOST}:{rpc_ports[0]}")
        wait_for(f"{self.nodes} nodes to see each other up", self._formed, self)
        self.load = self.http[:1] if self.load_on == "one" else list(self.http)

    def _get(self, url: str) -> tuple[int, Any]:
        return http_json(url, context=self.ssl_context)

    def _formed(self) -> bool:
        want = set(self.node_ids)
        for hostport in self.http:
            code, doc = self._get(self.url(hostport, "/cluster"))
            if code != 200 or not isinstance(doc, dict):
                return False
            up = {m.get("node_id") for m in doc.get("members", []) if m.get("status") == "up"}
            if not want <= up:
                return False
        return all(self._get(self.url(h, "/health"))[0] == 200 for h in self.http)

    def describe(self) -> str:
        return ", ".join(f"{i}={h}" for i, h in zip(self.node_ids, self.http, strict=True))


def post_json(url: str, body: dict[str, Any], timeout: float = 2.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return http_json(req, timeout)


class EtcdTarget(Target):
    """A 3-member etcd cluster (Debian's `etcd-server`), the load on its leader.

    etcd fsyncs its WAL on every commit, as a Raft store must; nothing is tuned away.
    """

    name = "etcd"
    protocol = "etcd"

    def __init__(self, workdir: Path, members: int = 3) -> None:
        super().__init__()
        self.workdir = workdir
        self.members = members
        self.names: list[str] = []

    @staticmethod
    def binary() -> str | None:
        return shutil.which("etcd")

    def start(self) -> None:
        etcd = self.binary()
        if etcd is None:
            raise RuntimeError("etcd is not installed: apt-get install etcd-server")
        ports = free_ports(2 * self.members)
        client, peer = ports[: self.members], ports[self.members:]
        self.names = [f"e{i + 1}" for i in range(self.members)]
        initial = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(self.names, peer,
                                                                     strict=True))
        for name, cport, pport in zip(self.names, client, peer, strict=True):
            data = self.workdir / name
            data.mkdir(parents=True, exist_ok=True)
            log = data / "etcd.log"
            cmd = [etcd, "--name", name, "--data-dir", str(data),
                   "--listen-client-urls", f"http://{HOST}:{cport}",
                   "--advertise-client-urls", f"http://{HOST}:{cport}",
                   "--listen-peer-urls", f"http://{HOST}:{pport}",
                   "--initial-advertise-peer-urls", f"http://{HOST}:{pport}",
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", "ringkv-bench", "--log-level", "warn",
                   "--logger", "zap"]
            with open(log, "ab") as fh:
                self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                                   stderr=subprocess.STDOUT,
                                                   start_new_session=True))
            self.logs.append(log)
            self.http.append(f"{HOST}:{cport}")
        wait_for("etcd to elect a leader", lambda: self.leader() is not None, self)
        leader = self.leader()
        assert leader is not None
        self.load = [leader]

    def leader(self) -> str | None:
        """host:port of the member that is the leader, once every member agrees."""
        leaders = set()
        by_id: dict[str, str] = {}
        for hostport in self.http:
            code, doc = post_json(f"http://{hostport}/v3/maintenance/status", {})
            if code != 200 or not isinstance(doc, dict) or not doc.get("leader"):
                return None
            leaders.add(str(doc["leader"]))
            by_id[str(doc.get("header", {}).get("member_id"))] = hostport
        if len(leaders) != 1:
            return None
        return by_id.get(leaders.pop())

    def describe(self) -> str:
        return ", ".join(f"{n}={h}" + (" (leader)" if [h] == self.load else "")
                         for n, h in zip(self.names, self.http, strict=True))
