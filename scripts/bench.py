#!/usr/bin/env python3
"""Benchmark: a 3-node ringkv cluster against a bare aiohttp dict server, same load.

The load is YCSB-A-like: 50% reads, 50% updates, zipfian keys (constant 0.99), 1 KiB
values. An update is a read-modify-write: GET the key, then PUT a new value with the
X-Context the GET returned; it counts as ONE operation, timed from the GET's request to
the PUT's response. The load generator is `wrk` with `scripts/bench_wrk.lua`, one
connection per wrk thread (the script needs that to tie a PUT to its GET), the
connections spread round-robin over the target's HTTP ports.

Each run measures, in this order and on fresh processes:

1. bare: `scripts/bare_server.py` (aiohttp on uvloop, a dict; no replication, no disk):
   the single-process ceiling;
2. cluster: three `python -m ringkv serve` processes (LMDB, `--sync group`, i.e. one
   real fsync per group-commit batch; N=3, R=2, W=2), the load spread over all three.

For each target: start, preload every key once, warm up, measure, stop. The machine's
cores are shared by the servers and wrk; the CPU each used during the measurement is
reported, and so is CPU used by anything else (a disturbed run is flagged).

    python scripts/bench.py                      # 10 s per measurement, 1 run
    python scripts/bench.py --runs 3 --json bench.json
    python scripts/bench.py --targets cluster --profile-out /tmp/n1   # py-spy on node n1
    python scripts/bench.py --targets cluster --sync none    # variants: --storage memory,
                                                           # --nodes 1 --n 1 --r 1 --w 1

Needs `wrk` (`apt-get install wrk`); `--profile-out` needs `py-spy` (`pip install py-spy`).

3. etcd (with `--targets bare,cluster,etcd`): three members of Debian's `etcd-server`
   on loopback, the load on the leader over the v3 JSON gateway: a read is a range, an
   update a range then a put (`scripts/bench_targets.py` starts each target).
4. cluster-tls (with `--targets bare,cluster,cluster-tls`): the same cluster with mutual
   TLS between the nodes and HTTPS for clients (certificates of a CA made for the run);
   wrk speaks HTTPS to it and, as always, does not verify the certificate. The report
   gives cluster-tls / cluster: the cost of TLS.

By default the whole load goes to one node (`--load-on one`), as it goes to etcd's
leader; `--load-on all` spreads it over every node. `--rate R` paces the load to R
operations a second in all (each wrk thread waits before its next operation until its
share of the schedule is due), for the latency at a given throughput, such as half the
saturated rate. The pacing is closed-loop: a thread that falls behind sends at once and
does not make up the missed starts, so latency at overload is understated; below
saturation the schedule holds.

`--footprint` ends each cluster run (cluster-tls too), after its measurement and before
its nodes stop, with what the loaded keys cost: every node's resident memory (VmRSS from
/proc, its anonymous and file-backed parts; bytes per key summed over the nodes, and
the growth since the node started), the bytes of every node's data dir (allocated on
disk, st_blocks x 512, and apparent; per key and replica, i.e. the nodes' total over
keys x N; the node's log is left out), and how long n1 takes to come back on its data:
SIGTERM, wait for it to exit, start it again with the same arguments, time until
/health, then /ready, answer 200. A node that is not back within 300 s fails the run
with its log tail. The figures go into the report and under `footprint` in --json.

    python scripts/bench.py --targets cluster --keys 1000000 --footprint
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import ssl
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_targets import (
    CLK_TCK,
    ROOT,
    BareTarget,
    ClusterTarget,
    EtcdTarget,
    Target,
    proc_cpu_seconds,
    tail,
)

HERE = Path(__file__).resolve().parent
LUA = HERE / "bench_wrk.lua"


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------ machine load


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all cores) spent in user and system mode.

    Interrupt and softirq time (much of loopback TCP) and steal are left out: the
    kernel does not charge them to any process, so they could not be told apart from
    other processes' work."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return (values[0] + values[1] + values[2]) / CLK_TCK


def wait_idle(target: Target, args: argparse.Namespace, label: str) -> float:
    """Wait until nothing but our (idle) servers uses the CPU; the other load seen last."""
    deadline = time.monotonic() + args.wait_idle
    next_note = time.monotonic() + 10
    while True:
        cpu0, busy0, t0 = target.cpu_seconds(), machine_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        cpu1, busy1, t1 = target.cpu_seconds(), machine_busy_seconds(), time.monotonic()
        other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / (t1 - t0)
        if other <= args.max_other or time.monotonic() >= deadline:
            if other > args.max_other:
                say(f"  [{label}] machine still busy ({other:.2f} cores used by other"
                    " processes); measuring anyway")
            return other
        if time.monotonic() >= next_note:
            say(f"  [{label}] waiting for the machine to be idle: other processes use"
                f" {other:.2f} cores")
            next_note = time.monotonic() + 10


# ------------------------------------------------------------------------------ preload


def key_name(i: int) -> str:
    return f"k{i}"


async def _preload(bases: list[str], protocol: str, keys: int, value_size: int,
                   concurrency: int, label: str,
                   ssl_context: ssl.SSLContext | None) -> tuple[int, Counter[int]]:
    import aiohttp

    statuses: Counter[int] = Counter()
    next_key = iter(range(keys))
    done = 0
    value = b"p" * value_size
    started = time.monotonic()

    def write(session: aiohttp.ClientSession, base: str, key: str) -> Any:
        if protocol == "etcd":
            return session.post(f"{base}/v3/kv/put", json={
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value).decode()})
        return session.put(f"{base}/kv/{key}", data=value)

    async def worker(session: aiohttp.ClientSession, base: str) -> None:
        nonlocal done
        for i in next_key:
            for attempt in range(5):
                try:
                    async with write(session, base, key_name(i)) as resp:
                        await resp.read()
                        # etcd answers a put 200; count it as the store's "written"
                        statuses[204 if resp.status == 200 else resp.status] += 1
                        if resp.status < 500:
                            break
                except aiohttp.ClientError:
                    statuses[0] += 1
                await asyncio.sleep(0.05 * (attempt + 1))
            done += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(2.0)
            rate = done / max(1e-9, time.monotonic() - started)
            eta = (keys - done) / rate if rate > 0 else None
            left = ("" if eta is None else f", {eta:.0f} s left" if eta < 120
                    else f", {eta / 60:,.1f} min left")
            say(f"  [{label}] preload {done:,}/{keys:,} keys ({rate:,.0f}/s{left})")

    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ssl_context or True)
    async with aiohttp.ClientSession(connector=connector) as session:
        ticker = asyncio.ensure_future(reporter())
        try:
            await asyncio.gather(*(worker(session, bases[j % len(bases)])
                                   for j in range(concurrency)))
        finally:
            ticker.cancel()
    return done, statuses


def preload(target: Target, keys: int, value_size: int, concurrency: int, label: str) -> None:
    started = time.monotonic()
    bases = [target.url(hostport, "") for hostport in target.load]
    coro = _preload(bases, target.protocol, keys, value_size, concurrency, label,
                    target.ssl_context)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        done, statuses = asyncio.run(coro)
    else:
        done, statuses = uvloop.run(coro)
    elapsed = time.monotonic() - started
    bad = {code: n for code, n in statuses.items() if code != 204}
    say(f"  [{label}] preloaded {done} keys in {elapsed:.1f} s ({done / elapsed:,.0f}/s)"
        + (f"; non-204 answers: {bad}" if bad else ""))
    if statuses[204] < keys:
        raise RuntimeError(f"{label}: only {statuses[204]} of {keys} preload writes succeeded")


# ---------------------------------------------------------------------------------- wrk


@dataclass
class Measurement:
    target: str
    run: int
    result: dict[str, Any]
    duration: float
    server_cpu: float  # CPU seconds of the server processes during the measurement
    wrk_cpu: float
    other_cpu: float  # CPU seconds of everything else on the machine
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return float(self.result["ops"]) / self.duration

    @property
    def server_cpu_per_op_us(self) -> float:
        """CPU the servers spent per operation: robust to other load on the machine."""
        return 1e6 * self.server_cpu / max(1, int(self.result["ops"]))

    def latency_ms(self, kind: str, pct: str) -> float | None:
        value = self.result["latency"].get(kind, {}).get(pct)
        return None if value is None else float(value) / 1000.0

    def status_counts(self) -> dict[str, Counter[int]]:
        return {kind: Counter({int(k): int(v) for k, v in self.result["status"].get(kind,
                                                                                   {}).items()})
                for kind in ("get", "put")}

    def errors(self) -> int:
        """Failed HTTP answers (not 2xx, 300 or 404) plus socket errors and timeouts."""
        bad = 0
        for counts in self.status_counts().values():
            bad += sum(n for code, n in counts.items()
                       if not (200 <= code < 300 or code in (300, 404)))
        sock = self.result.get("socket_errors") or {}
        bad += sum(int(sock.get(k, 0)) for k in ("connect", "read", "write", "timeout"))
        return bad

    def count(self, code: int) -> int:
        return sum(c[code] for c in self.status_counts().values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "run": self.run, "duration_s": self.duration,
            "ops_per_s": self.ops_per_s,
            "latency_ms": {kind: {pct: self.latency_ms(kind, pct)
                                  for pct in ("p50", "p90", "p99", "p999", "mean", "max")}
                           for kind in ("op", "read", "update", "get", "put")},
            "server_cpu_us_per_op": self.server_cpu_per_op_us,
            "errors": self.errors(), "siblings_300": self.count(300),
            "not_found_404": self.count(404),
            "cpu_cores": {"server": self.server_cpu / self.duration,
                          "wrk": self.wrk_cpu / self.duration,
                          "other": self.other_cpu / self.duration},
            "wrk": self.result, **self.extra,
        }


def wrk_command(target: Target, duration: int, connections: int) -> list[str]:
    return ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", "10s", "-s", str(LUA), target.url(target.load[0])]


def wrk_env(target: Target, args: argparse.Namespace, seed: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BENCH_TARGETS": ",".join(target.load),
        "BENCH_PROTOCOL": target.protocol,
        # the paced rate is the whole load's; each connection takes its share
        "BENCH_RATE": str(args.rate / args.connections if args.rate else 0),
        "BENCH_KEYS": str(args.keys),
        "BENCH_KEY_PREFIX": "k",
        "BENCH_VALUE_SIZE": str(args.value_size),
        "BENCH_READ_FRACTION": str(args.read_fraction),
        "BENCH_ZIPF": str(args.zipf),
        "BENCH_SEED": str(seed),
    })
    return env


def run_wrk(target: Target, args: argparse.Namespace, duration: int, seed: int, label: str,
            profile: subprocess.Popen[bytes] | None = None) -> Measurement:
    cmd = wrk_command(target, duration, args.connections)
    children_before = os.times()
    cpu0, busy0, t0 = target.cpu_seconds(), machine_busy_seconds(), time.monotonic()
    profiler_cpu0 = proc_cpu_seconds(profile.pid) if profile is not None else 0.0
    proc = subprocess.Popen(cmd, env=wrk_env(target, args, seed), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    last = (t0, cpu0, busy0, 0.0)
    while True:
        try:
            out, err = proc.communicate(timeout=2.0)
            break
        except subprocess.TimeoutExpired:
            now, cpu, busy = time.monotonic(), target.cpu_seconds(), machine_busy_seconds()
            wrk = proc_cpu_seconds(proc.pid)
            dt = now - last[0]
            srv, gen = (cpu - last[1]) / dt, (wrk - last[3]) / dt
            other = max(0.0, (busy - last[2]) / dt - srv - gen)
            say(f"  [{label}] {now - t0:4.0f}/{duration} s   cores used: servers {srv:4.2f},"
                f" wrk {gen:4.2f}, other processes {other:4.2f}")
            last = (now, cpu, busy, wrk)
    t1 = time.monotonic()
    cpu1, busy1 = target.cpu_seconds(), machine_busy_seconds()
    children_after = os.times()
    wrk_cpu = (children_after.children_user - children_before.children_user
               + children_after.children_system - children_before.children_system)
    profiler_cpu = (proc_cpu_seconds(profile.pid) - profiler_cpu0) if profile else 0.0
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}")
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"no BENCH_RESULT from wrk:\n{out.decode()}\n{err.decode()}")
    result = json.loads(line[len("BENCH_RESULT "):])
    duration_s = float(result["duration_us"]) / 1e6
    server_cpu = cpu1 - cpu0
    other = max(0.0, (busy1 - busy0) - server_cpu - wrk_cpu - profiler_cpu)
    m = Measurement(target.name, 0, result, duration_s, server_cpu, wrk_cpu, other)
    if profile is not None:
        m.extra["profiler_cpu_cores"] = profiler_cpu / (t1 - t0)
    return m


# ------------------------------------------------------------------------------ profile


def start_profiler(pid: int, duration: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile-out needs py-spy: pip install py-spy")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(duration), "--rate", str(rate),
         "--format", "raw", "--threads", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame_name(frame: str) -> str:
    """'f (/long/path/site-packages/pkg/mod.py:12)' -> 'f (pkg/mod.py)'."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r" \((?:[^()]*/)?([^/()]+/[^/()]+)\)$", r" (\1)", frame)


def summarize_profile(path: Path, rate: int, seconds: float, top: int = 20) -> str:
    """Where the node's event-loop thread spends its time, from py-spy's raw stacks.

    Samples are taken only while a thread runs (or waits for a CPU), so the main
    thread's sample count over rate x seconds is how busy the event loop was."""
    per_thread: Counter[str] = Counter()
    entry: Counter[str] = Counter()
    self_s: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(":", 1)[-1].strip() if frames[0].startswith("thread") else "?"
        per_thread[thread] += count
        if thread != "MainThread":
            continue
        names = [_frame_name(f) for f in frames[1:]]
        if not names:
            continue
        main += count
        loop = max((i for i, f in enumerate(names) if f.startswith("Runner.run ")), default=-1)
        below = [f for f in names[loop + 1:] if ".py)" in f or "(<string>)" in f]
        entry[below[0] if below else "(event loop itself: polling, callbacks)"] += count
        self_s[names[-1]] += count
        for f in set(below):
            incl[f] += count
    expected = rate * seconds
    out = ["busy share of each thread (samples / (rate x seconds)):"]
    out += [f"  {name}: {n / expected:.0%}" for name, n in per_thread.most_common()]
    if not main:
        return "\n".join(out)
    out += ["", "event-loop thread, by callback it was running:"]
    out += [f"  {100 * n / main:5.1f}%  {f}" for f, n in entry.most_common(8)]
    out += ["", "event-loop thread, self time:"]
    out += [f"  {100 * n / main:5.1f}%  {f}" for f, n in self_s.most_common(top)]
    out += ["", "event-loop thread, inclusive time:"]
    out += [f"  {100 * n / main:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


# ----------------------------------------------------------------------------- footprint

MIB = 1 << 20
STOP_TIMEOUT = 120.0  # seconds a node may take to exit cleanly on SIGTERM
RESTART_TIMEOUT = 300.0  # seconds a restarted node may take to answer /ready 200
NODE_LOG = "node.log"  # the node's output, kept by the benchmark in the data dir


def proc_memory(pid: int) -> dict[str, int]:
    """Resident memory of a process from /proc/PID/status, in bytes: VmRSS (anon + file
    + shmem), its anonymous and file-backed parts (LMDB's map is file-backed: page
    cache the kernel may take back) and the peak (VmHWM)."""
    wanted = {"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file",
              "VmHWM": "rss_peak"}
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in wanted:
                out[wanted[name]] = int(rest.split()[0]) * 1024  # the kernel says kB
    return out


def dir_bytes(top: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Regular files under `top`: bytes allocated on disk (st_blocks x 512, what sparse
    files really use) and apparent size (st_size); a hard-linked file counts once, links
    are not followed, and the names in `skip` at the top level are left out."""
    allocated = apparent = files = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = Path(dirpath) / name
            if path.parent == top and name in skip:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            allocated += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return {"allocated": allocated, "apparent": apparent, "files": files}


def _probe(target: ClusterTarget, hostport: str, path: str) -> tuple[int, str]:
    """(status, reason from the JSON body) of GET path; status 0 when not reachable."""
    try:
        with urllib.request.urlopen(target.url(hostport, path), timeout=1.0,
                                    context=target.ssl_context) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        try:
            reason = str(json.loads(exc.read() or b"null").get("reason", ""))
        except (ValueError, AttributeError, OSError):
            reason = ""
        return exc.code, reason
    except OSError:
        return 0, "not listening"


def time_restart(target: ClusterTarget, index: int, label: str) -> dict[str, Any]:
    """Stop node `index` cleanly, start it again on its data and time it back.

    The times run from the start of the new process until /health, then /ready, first
    answer 200 (polled every 50 ms, so each is late by at most that plus one request)."""
    node_id, hostport = target.node_ids[index], target.http[index]
    say(f"  [{label}] restart of {node_id}: stopping it (SIGTERM)")
    t_stop = time.monotonic()
    target.stop_node(index, STOP_TIMEOUT)
    stop_s = time.monotonic() - t_stop
    say(f"  [{label}] {node_id} exited in {stop_s:.2f} s; starting it again on its data")
    t0 = time.monotonic()
    proc = target.restart_node(index)
    times: dict[str, float] = {}
    status: dict[str, tuple[int, str]] = {}
    next_note = t0 + 5.0
    while True:
        now = time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"{node_id} exited with code {proc.returncode} while"
                               f" restarting; log {target.logs[index]}:\n"
                               f"{tail(target.logs[index])}")
        for path in ("/health", "/ready"):
            if path not in times:
                status[path] = _probe(target, hostport, path)
                if status[path][0] == 200:
                    times[path] = time.monotonic() - t0
        if len(times) == 2:
            break
        if now - t0 > RESTART_TIMEOUT:
            raise RuntimeError(
                f"{node_id} not ready {RESTART_TIMEOUT:.0f} s after its restart (/health"
                f" {status['/health'][0]}, /ready {status['/ready'][0]}"
                f" {status['/ready'][1]}); log {target.logs[index]}:\n"
                f"{tail(target.logs[index], 40)}")
        if now >= next_note:
            say(f"  [{label}] {node_id} restarting: {now - t0:.0f} s, "
                + ", ".join(f"{path} " + (f"200 after {times[path]:.2f} s" if path in times
                                          else f"{status[path][0] or '-'}"
                                          + (f" ({status[path][1]})" if status[path][1]
                                             else ""))
                            for path in ("/health", "/ready")))
            next_note = now + 5.0
        time.sleep(0.05)
    target.check_alive()
    rss = proc_memory(proc.pid)["rss"]
    say(f"  [{label}] {node_id} back: /health 200 after {times['/health']:.2f} s,"
        f" /ready 200 after {times['/ready']:.2f} s (RSS {rss / MIB:.0f} MiB)")
    return {"node": node_id, "stop_s": stop_s, "health_s": times["/health"],
            "ready_s": times["/ready"], "rss_mib_after": rss / MIB}


def footprint(target: ClusterTarget, args: argparse.Namespace, label: str,
              rss_at_start: list[int]) -> dict[str, Any]:
    """Memory and disk of every node with `args.keys` keys loaded, then n1's restart time.

    Per key, RSS is summed over the nodes; disk bytes are per key and replica (the
    nodes' total over keys x N). The data dir's node.log (the node's output, kept by
    the benchmark) is left out of the disk figures."""
    say(f"  [{label}] footprint: memory and disk of every node")
    nodes = []
    rss = anon = allocated = apparent = 0
    for i, node_id in enumerate(target.node_ids):
        mem = proc_memory(target.procs[i].pid)
        disk = dir_bytes(target.workdir / node_id, skip=(NODE_LOG,))
        rss, anon = rss + mem["rss"], anon + mem["rss_anon"]
        allocated, apparent = allocated + disk["allocated"], apparent + disk["apparent"]
        nodes.append({"node": node_id,
                      **{f"{k}_mib": v / MIB for k, v in mem.items()},
                      "rss_mib_at_start": rss_at_start[i] / MIB,
                      "disk_allocated_mib": disk["allocated"] / MIB,
                      "disk_apparent_mib": disk["apparent"] / MIB, "disk_files": disk["files"]})
    copies = args.keys * args.n
    out: dict[str, Any] = {
        "keys": args.keys, "n": args.n, "nodes": nodes,
        "rss_bytes_per_key": rss / args.keys,
        "rss_anon_bytes_per_key": anon / args.keys,
        "rss_growth_bytes_per_key": (rss - sum(rss_at_start)) / args.keys,
        "disk_allocated_bytes_per_key_replica": allocated / copies,
        "disk_apparent_bytes_per_key_replica": apparent / copies,
    }
    say(f"  [{label}] RSS {rss / MIB:.0f} MiB over the nodes ({out['rss_bytes_per_key']:,.0f}"
        f" B/key, {out['rss_growth_bytes_per_key']:,.0f} B/key more than at start); disk"
        f" {allocated / MIB:.0f} MiB allocated, {apparent / MIB:.0f} MiB apparent"
        f" ({out['disk_allocated_bytes_per_key_replica']:,.0f} /"
        f" {out['disk_apparent_bytes_per_key_replica']:,.0f} B per key and replica)")
    out["restart"] = time_restart(target, 0, label)
    return out


def rss_of(target: Target) -> list[int]:
    return [proc_memory(pid)["rss"] for pid in target.pids()]


# --------------------------------------------------------------------------------- main


def measure(target: Target, args: argparse.Namespace, run: int, workdir: Path) -> Measurement:
    label = f"{target.name} run {run}/{args.runs}"
    say(f"[{label}] starting")
    target.start()
    try:
        say(f"  [{label}] serving on {target.describe()}")
        with_footprint = args.footprint and isinstance(target, ClusterTarget)
        rss_at_start = rss_of(target) if with_footprint else []
        preload(target, args.keys, args.value_size, args.preload_concurrency, label)
        for attempt in range(1, args.retries + 2):
            wait_idle(target, args, label)
            if args.warmup > 0:
                say(f"  [{label}] warm-up {args.warmup} s")
                run_wrk(target, args, args.warmup, seed=1000 * attempt + run,
                        label=label + " warm-up")
            profiler = None
            profile_out = None
            if args.profile_out and isinstance(target, ClusterTarget):
                profile_out = Path(f"{args.profile_out}.run{run}.txt")
                profiler = start_profiler(target.procs[0].pid, args.duration + 1, profile_out,
                                          args.profile_rate)
                time.sleep(0.5)
            say(f"  [{label}] measuring {args.duration} s with {args.connections} connections")
            m = run_wrk(target, args, args.duration, seed=run, label=label, profile=profiler)
            m.run = run
            if profiler is not None and profile_out is not None:
                profiler.wait(timeout=60)
                summary = summarize_profile(profile_out, args.profile_rate, args.duration)
                Path(f"{args.profile_out}.run{run}.top.txt").write_text(summary + "\n")
                say(f"  [{label}] py-spy profile of n1: {profile_out}\n"
                    + "\n".join("    " + ln for ln in summary.splitlines()))
            other = m.other_cpu / m.duration
            m.extra["attempts"] = attempt
            m.extra["disturbed"] = other > args.max_other
            if not m.extra["disturbed"]:
                break
            say(f"  [{label}] disturbed: other processes used {other:.2f} cores"
                + ("; measuring again" if attempt <= args.retries else ""))
        target.check_alive()
        if isinstance(target, ClusterTarget):
            m.extra["node_metrics"] = scrape_metrics(target)
        say(f"  [{label}] {m.ops_per_s:,.0f} ops/s, p50 {fmt(m.latency_ms('op', 'p50'))} ms,"
            f" p99 {fmt(m.latency_ms('op', 'p99'))} ms, errors {m.errors()},"
            f" cpu: servers {m.server_cpu / m.duration:.2f} + wrk {m.wrk_cpu / m.duration:.2f}"
            f" + other {m.other_cpu / m.duration:.2f} cores")
        if with_footprint:
            assert isinstance(target, ClusterTarget)
            m.extra["footprint"] = footprint(target, args, label, rss_at_start)
        return m
    finally:
        target.stop()


def scrape_metrics(target: ClusterTarget) -> dict[str, dict[str, float]]:
    """A few counters of every node's /metrics (siblings, read repairs, hints)."""
    wanted = ("ringkv_read_repairs_total", "ringkv_hints_pending", "ringkv_siblings_sum",
              "ringkv_siblings_count")
    out: dict[str, dict[str, float]] = {}
    for node_id, hostport in zip(target.node_ids, target.http, strict=True):
        values: dict[str, float] = {}
        try:
            with urllib.request.urlopen(target.url(hostport, "/metrics"), timeout=2,
                                        context=target.ssl_context) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in wanted:
                with contextlib.suppress(ValueError):
                    values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        out[node_id] = values
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    for mod in ("uvloop", "aiohttp", "lmdb", "msgpack"):
        try:
            info[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            info[mod] = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        first = (wrk.stdout + wrk.stderr).splitlines()[0]
        info["wrk"] = first.split(" Copyright")[0].removeprefix("wrk ").strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["commit"] = head + (" (with uncommitted changes)" if dirty else "")
    return info


def report(results: list[Measurement], args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    by_target: dict[str, list[Measurement]] = {}
    for m in results:
        by_target.setdefault(m.target, []).append(m)

    table = Table(title=f"ringkv bench: {args.read_fraction:.0%} reads / "
                        f"{1 - args.read_fraction:.0%} read-modify-write updates, zipf "
                        f"{args.zipf}, {args.keys} keys, {args.value_size} B values, "
                        f"{args.connections} connections, {args.duration} s"
                        + (f", median of {args.runs} runs" if args.runs > 1 else ""))
    for col in ("target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "GET p50/p99",
                "PUT p50/p99", "errors", "300s", "404s", "cores: srv+wrk+other",
                "srv CPU/op"):
        table.add_column(col, justify="left" if col == "target" else "right")
    summary: dict[str, Any] = {}
    for name, ms in by_target.items():
        row: dict[str, Any] = {
            "ops_per_s": median([m.ops_per_s for m in ms]),
            "runs_ops_per_s": [round(m.ops_per_s, 1) for m in ms],
            "latency_ms": {kind: {pct: median([m.latency_ms(kind, pct) for m in ms])
                                  for pct in ("p50", "p99", "p999")}
                           for kind in ("op", "read", "update", "get", "put")},
            "errors": sum(m.errors() for m in ms),
            "siblings_300": sum(m.count(300) for m in ms),
            "not_found_404": sum(m.count(404) for m in ms),
            "cpu_cores": {k: median([getattr(m, f"{k}_cpu") / m.duration for m in ms])
                          for k in ("server", "wrk", "other")},
            "server_cpu_us_per_op": median([m.server_cpu_per_op_us for m in ms]),
            "disturbed_runs": sum(1 for m in ms if m.extra.get("disturbed")),
        }
        summary[name] = row
        lat = row["latency_ms"]
        cpu = row["cpu_cores"]
        table.add_row(
            name, f"{row['ops_per_s']:,.0f}", fmt(lat["op"]["p50"]), fmt(lat["op"]["p99"]),
            fmt(lat["op"]["p999"]),
            f"{fmt(lat['get']['p50'])}/{fmt(lat['get']['p99'])}",
            f"{fmt(lat['put']['p50'])}/{fmt(lat['put']['p99'])}",
            str(row["errors"]), str(row["siblings_300"]), str(row["not_found_404"]),
            f"{cpu['server']:.2f}+{cpu['wrk']:.2f}+{cpu['other']:.2f}",
            f"{row['server_cpu_us_per_op']:,.0f} us")
    console.print(table)
    footprint_report(console, by_target, summary)
    if len(by_target.get("bare", [])) > 0 or len(by_target.get("cluster", [])) > 0:
        for name, ms in by_target.items():
            if len(ms) > 1:
                console.print(f"{name} runs: " + ", ".join(
                    f"{m.ops_per_s:,.0f}" + (" (disturbed)" if m.extra.get("disturbed") else "")
                    for m in ms) + " ops/s", highlight=False)
    if "bare" in summary and "cluster" in summary:
        ratio = summary["cluster"]["ops_per_s"] / summary["bare"]["ops_per_s"]
        summary["ratio_cluster_to_bare"] = ratio
        verdict = "meets" if ratio >= 0.40 else "below"
        console.print(f"cluster / bare = {ratio:.1%}  ({verdict} the 40% aim)", highlight=False)
        cost = (summary["cluster"]["server_cpu_us_per_op"]
                / summary["bare"]["server_cpu_us_per_op"])
        summary["cpu_per_op_cluster_to_bare"] = cost
        console.print(f"server CPU per op: cluster / bare = {cost:.1f}x", highlight=False)
    if "cluster-tls" in summary and "cluster" in summary:
        tls, plain = summary["cluster-tls"], summary["cluster"]
        ratio = tls["ops_per_s"] / plain["ops_per_s"]
        summary["ratio_cluster_tls_to_cluster"] = ratio
        cost = tls["server_cpu_us_per_op"] / plain["server_cpu_us_per_op"]
        summary["cpu_per_op_cluster_tls_to_cluster"] = cost
        console.print(f"cluster-tls / cluster = {ratio:.1%} of the throughput, server CPU"
                      f" per op {cost:.2f}x", highlight=False)
    if "etcd" in summary and "cluster" in summary:
        ratio = summary["cluster"]["ops_per_s"] / summary["etcd"]["ops_per_s"]
        summary["ratio_cluster_to_etcd"] = ratio
        verdict = "meets" if ratio >= 1.0 else "below"
        console.print(f"cluster / etcd = {ratio:.2f}x  ({verdict} the 1.0x aim)",
                      highlight=False)
    worst_other = max((m.other_cpu / m.duration for m in results), default=0.0)
    if worst_other > args.max_other:
        console.print(f"[yellow]warning: other processes used up to {worst_other:.2f} cores"
                      " during a measurement; figures are disturbed[/yellow]")
    if any(m.errors() for m in results):
        console.print("[red]errors: some requests failed (see --json for status codes)[/red]")
    return summary


def footprint_report(console: Any, by_target: dict[str, list[Measurement]],
                     summary: dict[str, Any]) -> None:
    """The --footprint figures: a row per node and run, lines per run, medians in the
    summary."""
    from rich.table import Table

    runs = [m for ms in by_target.values() for m in ms if "footprint" in m.extra]
    if not runs:
        return
    first = runs[0].extra["footprint"]
    table = Table(title=f"footprint after the measurement: {first['keys']:,} keys, N={first['n']}"
                        " (MiB; RSS = anon + file + shmem, peak = VmHWM, at start = before"
                        " the preload)")
    for col in ("target", "node", "RSS", "anon", "file", "peak", "at start",
                "disk allocated", "disk apparent"):
        table.add_column(col, justify="left" if col in ("target", "node") else "right")
    for m in runs:
        for n in m.extra["footprint"]["nodes"]:
            table.add_row(f"{m.target} run {m.run}", n["node"], f"{n['rss_mib']:,.1f}",
                          f"{n['rss_anon_mib']:,.1f}", f"{n['rss_file_mib']:,.1f}",
                          f"{n['rss_peak_mib']:,.1f}", f"{n['rss_mib_at_start']:,.1f}",
                          f"{n['disk_allocated_mib']:,.1f}", f"{n['disk_apparent_mib']:,.1f}")
    console.print(table)
    for m in runs:
        fp = m.extra["footprint"]
        r = fp["restart"]
        console.print(
            f"{m.target} run {m.run}: RSS {fp['rss_bytes_per_key']:,.0f} B/key over the nodes"
            f" (anon {fp['rss_anon_bytes_per_key']:,.0f}, growth since start"
            f" {fp['rss_growth_bytes_per_key']:,.0f}); disk"
            f" {fp['disk_allocated_bytes_per_key_replica']:,.0f} B per key and replica"
            f" allocated ({fp['disk_apparent_bytes_per_key_replica']:,.0f} apparent);"
            f" {r['node']} restart: exited in {r['stop_s']:.2f} s, /health 200 after"
            f" {r['health_s']:.2f} s, /ready 200 after {r['ready_s']:.2f} s", highlight=False)
    for name, ms in by_target.items():
        fps = [m.extra["footprint"] for m in ms if "footprint" in m.extra]
        if fps:
            summary[name]["footprint"] = {
                key: median([fp[key] for fp in fps])
                for key in ("rss_bytes_per_key", "rss_anon_bytes_per_key",
                            "rss_growth_bytes_per_key", "disk_allocated_bytes_per_key_replica",
                            "disk_apparent_bytes_per_key_replica")
            } | {f"restart_{k}": median([fp["restart"][k] for fp in fps])
                 for k in ("stop_s", "health_s", "ready_s")}


def main() -> int:
    parser = argparse.ArgumentParser(
        description="3-node ringkv cluster vs a bare aiohttp dict server under the same wrk"
                    " load (read / read-modify-write, zipfian keys).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each")
    parser.add_argument("--connections", type=int, default=32,
                        help="concurrent clients (one wrk thread each)")
    parser.add_argument("--keys", type=int, default=10_000,
                        help="distinct keys, all written once before measuring")
    parser.add_argument("--value-size", type=int, default=1024, help="bytes per value")
    parser.add_argument("--read-fraction", type=float, default=0.5,
                        help="share of plain reads; the rest are read-modify-write updates")
    parser.add_argument("--zipf", type=float, default=0.99,
                        help="zipfian constant; 0 for uniform keys")
    parser.add_argument("--runs", type=int, default=1, help="report medians of this many runs")
    parser.add_argument("--targets", default="bare,cluster",
                        help="comma-separated: bare, cluster, cluster-tls, etcd")
    parser.add_argument("--load-on", choices=("one", "all"), default="one",
                        help="the cluster's load on its first node, or spread over all")
    parser.add_argument("--rate", type=float, default=0.0, metavar="OPS",
                        help="pace the load to this many operations a second (0: as fast"
                             " as it goes)")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size")
    parser.add_argument("--storage", choices=("lmdb", "memory"), default="lmdb",
                        help="storage engine of every node")
    parser.add_argument("--sync", choices=("group", "none"), default="group",
                        help="group: one fsync per group-commit batch")
    parser.add_argument("--n", type=int, default=3, help="replicas per key")
    parser.add_argument("--r", type=int, default=2, help="read quorum")
    parser.add_argument("--w", type=int, default=2, help="write quorum")
    parser.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `ringkv serve` (repeatable)")
    parser.add_argument("--preload-concurrency", type=int, default=64,
                        help="concurrent PUTs while writing every key before a run")
    parser.add_argument("--max-other", type=float, default=0.15, metavar="CORES",
                        help="a measurement during which other processes used more CPU than"
                             " this is disturbed: it is flagged and measured again")
    parser.add_argument("--retries", type=int, default=2,
                        help="extra attempts at a disturbed measurement")
    parser.add_argument("--wait-idle", type=float, default=120, metavar="SECONDS",
                        help="before measuring, wait up to this long for other processes to"
                             " leave the CPU alone")
    parser.add_argument("--data-dir", default=None,
                        help="parent of the nodes' data dirs (default: a fresh temp dir, "
                             "removed afterwards); must be on a real disk for fsync to count")
    parser.add_argument("--nice", type=int, default=None, metavar="N",
                        help="run the benchmark, its servers and wrk at this nice value "
                             "(negative needs root): on a shared machine, keeps niced "
                             "background jobs from disturbing the measurement")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON here")
    parser.add_argument("--profile-out", metavar="PREFIX",
                        help="py-spy n1 during each cluster measurement; writes "
                             "PREFIX.runK.txt (collapsed stacks) and PREFIX.runK.top.txt")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument("--footprint", action="store_true",
                        help="cluster targets: after each measurement, report every node's"
                             " resident memory and data-dir bytes (per key), then time n1's"
                             " restart on its data until /health and /ready answer 200")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        say("wrk is not installed; it is the load generator of this benchmark.\n"
            "Install it with:  apt-get install wrk   (Debian/Ubuntu; `brew install wrk` on"
            " macOS)")
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"bare", "cluster", "cluster-tls", "etcd"}:
        parser.error("--targets takes bare, cluster, cluster-tls, etcd (comma-separated)")
    if "etcd" in targets and EtcdTarget.binary() is None:
        say("etcd is not installed; the etcd target needs it.\n"
            "Install it with:  apt-get install etcd-server")
        return 2
    if args.connections < 1 or args.duration < 1 or args.keys < 1 or args.runs < 1:
        parser.error("--connections, --duration, --keys and --runs must be positive")

    if args.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # children inherit it
        except OSError as exc:
            parser.error(f"--nice {args.nice}: {exc}")
    info = machine_info()
    info["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    say("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    say("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    workdir = Path(args.data_dir) if args.data_dir else Path(
        tempfile.mkdtemp(prefix="ringkv-bench-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run_all(args, targets, info, workdir)
    finally:
        if not args.data_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_all(args: argparse.Namespace, targets: list[str], info: dict[str, Any],
            workdir: Path) -> int:
    results: list[Measurement] = []
    try:
        for run in range(1, args.runs + 1):
            for name in targets:
                target: Target
                if name == "bare":
                    target = BareTarget(workdir)
                elif name == "etcd":
                    target = EtcdTarget(workdir / f"etcd-run{run}")
                else:
                    cdir = workdir / f"{name}-run{run}"
                    target = ClusterTarget(cdir, args.nodes, args.storage, args.sync,
                                           args.n, args.r, args.w, args.node_arg,
                                           args.load_on, tls=name == "cluster-tls")
                results.append(measure(target, args, run, workdir))
                if name != "bare" and not args.data_dir:
                    shutil.rmtree(workdir / f"{name}-run{run}", ignore_errors=True)
    except KeyboardInterrupt:
        say("interrupted")
        if not results:
            return 130
    summary = report(results, args)
    if args.json:
        doc = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "wrk_command": (f"BENCH_TARGETS=<host:port,...> wrk -t {args.connections} -c "
                            f"{args.connections} -d {args.duration}s --timeout 10s "
                            f"-s scripts/bench_wrk.lua http(s)://<first target>/"),
            "summary": summary,
            "measurements": [m.as_dict() for m in results],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 1 if any(m.errors() for m in results) else 0

if __name__ == "__main__":
    sys.exit(main())
