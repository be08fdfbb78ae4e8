"""Storage engines: the overlay contract on both engines, LMDB durability, key layout.

Run with ``-s`` to see the LMDB micro-benchmark figures.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.engine import TABLES, Batch, EngineClosedError, OverlayEngine, Table
from storage.keys import (
    MAX_KEY_LEN,
    MAX_TOKEN,
    data_key,
    hint_key,
    hint_prefix,
    prefix_end,
    split_data_key,
    split_hint_key,
    token_range_bounds,
)
from storage.lmdb_engine import LmdbEngine
from storage.memory import MemoryEngine

REPO = Path(__file__).resolve().parents[3]
KINDS = ["memory", "lmdb", "lmdb-inline3"]


class Harness:
    """Makes one kind of engine in a directory and restarts it as after a crash."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.path = path

    def make(self) -> OverlayEngine:
        if self.kind == "memory":
            return MemoryEngine()
        inline = 3 if self.kind == "lmdb-inline3" else None
        return LmdbEngine(self.path, inline_key_max=inline)

    def restart(self, engine: OverlayEngine) -> OverlayEngine:
        """Only what was committed survives; the old engine is closed."""
        if isinstance(engine, MemoryEngine):
            return engine.crash(lose_disk=False)
        engine.close()
        return self.make()


@contextmanager
def harness(kind: str) -> Iterator[Harness]:
    with tempfile.TemporaryDirectory() as path:
        yield Harness(kind, path)


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(request.param, str(tmp_path / "env"))


@pytest.fixture
def engine(h: Harness) -> Iterator[OverlayEngine]:
    e = h.make()
    yield e
    e.close()


def items(e: OverlayEngine, table: Table = "data", start: bytes = b"", end: bytes | None = None):
    return list(e.scan(table, start, end))


# -- semantics -------------------------------------------------------------------------


def test_layers_are_visible_and_deletes_hide_older_layers(engine: OverlayEngine) -> None:
    e = engine
    e.put("data", b"a", b"durable")
    e.put("data", b"b", b"durable")
    e.put("data", b"c", b"durable")
    e.commit(e.seal())
    assert e.get("data", b"a") == b"durable"
    e.put("data", b"a", b"sealed")
    e.delete("data", b"b")
    e.put("data", b"d", b"sealed")
    sealed = e.seal()
    assert not e.has_staged()
    assert e.get("data", b"a") == b"sealed"
    assert e.get("data", b"b") is None
    e.put("data", b"a", b"staged")
    e.put("data", b"b", b"staged")
    e.delete("data", b"c")
    e.delete("data", b"d")
    assert e.has_staged()
    assert [e.get("data", k) for k in (b"a", b"b", b"c", b"d")] == [b"staged"] * 2 + [None] * 2
    assert items(e) == [(b"a", b"staged"), (b"b", b"staged")]
    assert e.count("data") == 2
    staged = e.seal()
    e.commit(sealed)
    assert items(e) == [(b"a", b"staged"), (b"b", b"staged")]
    e.commit(staged)
    assert items(e) == [(b"a", b"staged"), (b"b", b"staged")]
    assert e.count("data") == 2
    assert e.get("data", b"c") is None


def test_tables_are_separate(engine: OverlayEngine) -> None:
    for i, t in enumerate(TABLES):
        engine.put(t, b"k", bytes([i]))
    engine.commit(engine.seal())
    engine.put("hints", b"only-hints", b"x")
    assert [engine.get(t, b"k") for t in TABLES] == [b"\x00", b"\x01", b"\x02"]
    assert [engine.count(t) for t in TABLES] == [1, 2, 1]
    assert items(engine, "meta") == [(b"k", b"\x02")]


def test_scan_order_and_bounds(engine: OverlayEngine) -> None:
    keys = [b"\x00", b"\x00\x00", b"a", b"ab", b"abc", b"b", b"\xff", b"\xff\xff"]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    for i, k in enumerate(shuffled):
        engine.put("data", k, k)
        if i == 3:
            engine.commit(engine.seal())
        if i == 5:
            engine.seal()
    assert [k for k, _ in items(engine)] == keys
    assert [k for k, _ in items(engine, start=b"ab")] == keys[3:]
    assert [k for k, _ in items(engine, start=b"a", end=b"b")] == [b"a", b"ab", b"abc"]
    assert [k for k, _ in items(engine, start=b"aa", end=b"abc")] == [b"ab"]
    assert items(engine, start=b"b", end=b"b") == []
    assert [k for k, _ in items(engine, end=b"\x00\x00")] == [b"\x00"]


def test_scan_snapshots_the_overlay_when_called(engine: OverlayEngine) -> None:
    for i in range(600):  # more than one durable chunk
        engine.put("data", b"k%04d" % i, b"old")
    engine.commit(engine.seal())
    engine.put("data", b"k0001", b"staged")
    it = engine.scan("data", b"", None)
    engine.put("data", b"k0000", b"after")  # staged after the call: not seen
    engine.put("data", b"k0002a", b"new")  # a new key: not seen, and no dict error
    got = dict(it)
    assert got[b"k0000"] == b"old"
    assert got[b"k0001"] == b"staged"
    assert b"k0002a" not in got
    assert len(got) == 600


def test_interleaved_scan_and_writes(engine: OverlayEngine) -> None:
    for i in range(1500):
        engine.put("data", b"k%05d" % i, b"v")
    engine.commit(engine.seal())
    seen = 0
    for key, _ in engine.scan("data", b"", None):
        seen += 1
        engine.delete("data", key)  # the owning thread keeps writing while it scans
        if seen % 100 == 0:
            engine.commit(engine.seal())
    assert seen == 1500
    assert engine.count("data") == 0
    engine.commit(engine.seal())
    assert items(engine) == []


def test_commit_rules(engine: OverlayEngine, h: Harness) -> None:
    engine.put("data", b"a", b"1")
    first = engine.seal()
    engine.put("data", b"b", b"2")
    second = engine.seal()
    with pytest.raises(ValueError):
        engine.commit(second)  # out of order
    engine.commit(first)
    with pytest.raises(ValueError):
        engine.commit(first)  # twice
    assert first.durable and not second.durable
    engine.commit(second)
    empty = engine.seal()
    assert len(empty) == 0
    engine.commit(empty)
    other = h.make() if h.kind == "memory" else MemoryEngine()
    with pytest.raises(ValueError):
        engine.commit(other.seal())
    other.close()
    with pytest.raises(ValueError):
        engine.put("data", b"", b"x")


def test_batch_is_a_mapping_in_staging_order(engine: OverlayEngine) -> None:
    engine.put("data", b"z", b"1")
    engine.put("meta", b"a", b"2")
    engine.delete("data", b"b")
    engine.put("data", b"z", b"3")
    batch = engine.seal()
    assert isinstance(batch, Batch)
    assert list(batch.items()) == [
        (("data", b"z"), b"3"),
        (("meta", b"a"), b"2"),
        (("data", b"b"), None),
    ]
    assert batch.seq == 1 and len(batch) == 3


def test_closed_engine_refuses_use(h: Harness) -> None:
    e = h.make()
    e.close()
    e.close()  # idempotent
    for call in (
        lambda: e.get("data", b"a"),
        lambda: e.put("data", b"a", b"b"),
        lambda: e.scan("data", b"", None),
        e.seal,
    ):
        with pytest.raises(EngineClosedError):
            call()


def test_restart_keeps_only_committed(h: Harness) -> None:
    e = h.make()
    e.put("data", b"committed", b"1")
    e.put("meta", b"committed", b"1")
    e.commit(e.seal())
    e.put("data", b"sealed", b"2")
    e.delete("data", b"committed")
    e.seal()
    e.put("data", b"staged", b"3")
    e = h.restart(e)
    assert items(e) == [(b"committed", b"1")]
    assert e.get("meta", b"committed") == b"1"
    assert not e.has_staged()
    # sequence numbers restart with the new engine
    e.put("data", b"after", b"4")
    e.commit(e.seal())
    e = h.restart(e)
    assert [k for k, _ in items(e)] == [b"after", b"committed"]
    e.close()


def test_memory_crash_and_disk_loss() -> None:
    e = MemoryEngine()
    e.put("data", b"a", b"1")
    e.commit(e.seal())
    e.put("data", b"b", b"2")
    copy = e.crash_copy()
    assert items(copy) == [(b"a", b"1")]
    assert items(e) == [(b"a", b"1"), (b"b", b"2")]  # crash_copy leaves the original alone
    lost = e.crash(lose_disk=True)
    assert items(lost) == [] and lost.count("data") == 0
    with pytest.raises(EngineClosedError):
        e.get("data", b"a")


def test_long_keys_keep_byte_order(tmp_path: Path) -> None:
    e = LmdbEngine(str(tmp_path))
    rng = random.Random(3)
    prefix = bytes(rng.randrange(256) for _ in range(600))
    keys = {
        data_key(5, prefix[:n] + bytes([b])) for n in (470, 472, 480, 500, 600) for b in (0, 7, 255)
    }
    keys |= {
        data_key(5, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1025))))
        for _ in range(200)
    }
    keys |= {data_key(MAX_TOKEN, b"\xff" * 1024), data_key(0, b"\x00")}
    keys |= {hint_key(5, prefix, f"node-{i}") for i in range(20)}
    for i, k in enumerate(sorted(keys)):
        e.put("data", k, b"%d" % i)
        if i % 50 == 0:
            e.commit(e.seal())
    e.commit(e.seal())
    e.close()
    e = LmdbEngine(str(tmp_path))
    want = [(k, b"%d" % i) for i, k in enumerate(sorted(keys))]
    assert items(e) == want
    assert e.count("data") == len(keys)
    assert all(e.get("data", k) == v for k, v in want)
    hp = hint_prefix(5, prefix)
    hints = [split_hint_key(k)[2] for k, _ in items(e, start=hp, end=prefix_end(hp))]
    assert hints == sorted(f"node-{i}" for i in range(20))
    lo, hi = sorted(keys)[10], sorted(keys)[150]
    assert items(e, start=lo, end=hi) == want[10:150]
    e.close()
    with pytest.raises(ValueError):
        LmdbEngine(str(tmp_path), inline_key_max=100)


# -- the overlay against a dict model ----------------------------------------------------

KEY = st.lists(st.sampled_from([0, 1, 0x61, 0xFF]), min_size=1, max_size=6).map(bytes)
BOUND = st.one_of(st.none(), KEY)
TABLE = st.sampled_from(["data", "hints"])
OP = st.one_of(
    st.tuples(st.just("put"), TABLE, KEY, st.binary(max_size=3)),
    st.tuples(st.just("delete"), TABLE, KEY),
    st.tuples(st.just("seal")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("scan"), TABLE, st.binary(max_size=3), BOUND),
    st.tuples(st.just("count"), TABLE),
    st.tuples(st.just("restart")),
)


def view(durable: dict, pending: list[dict], staged: dict) -> dict:
    merged = dict(durable)
    for layer in [*pending, staged]:
        for k, v in layer.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
    return merged


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OP, max_size=60))
def test_random_ops_match_dict_model(kind: str, ops: list[tuple]) -> None:
    with harness(kind) as hs:
        e = hs.make()
        durable: dict = {}
        pending: list[dict] = []
        batches: list[Batch] = []
        staged: dict = {}
        for op in ops:
            name = op[0]
            if name == "put":
                _, t, k, v = op
                e.put(t, k, v)
                staged[(t, k)] = v
            elif name == "delete":
                _, t, k = op
                e.delete(t, k)
                staged[(t, k)] = None
            elif name == "seal":
                batches.append(e.seal())
                pending.append(staged)
                staged = {}
            elif name == "commit" and batches:
                e.commit(batches.pop(0))
                durable = view(durable, [pending.pop(0)], {})
            elif name == "restart":
                e = hs.restart(e)
                pending, batches, staged = [], [], {}
            elif name == "scan":
                _, t, lo, hi = op
                want = sorted(
                    (k, v)
                    for (tt, k), v in view(durable, pending, staged).items()
                    if tt == t and k >= lo and (hi is None or k < hi)
                )
                assert list(e.scan(t, lo, hi)) == want
            elif name == "count":
                t = op[1]
                assert e.count(t) == sum(1 for tt, _ in view(durable, pending, staged) if tt == t)
            current = view(durable, pending, staged)
            if name in ("put", "delete"):
                assert e.get(op[1], op[2]) == current.get((op[1], op[2]))
        current = view(durable, pending, staged)
        for t in ("data", "hints", "meta"):
            assert list(e.scan(t, b"", None)) == sorted(
                (k, v) for (tt, k), v in current.items() if tt == t
            )
        e.close()


# -- commit in a worker thread -----------------------------------------------------------


def test_commit_in_worker_thread_keeps_reads_consistent(engine: OverlayEngine) -> None:
    e = engine
    rng = random.Random(11)
    keys = [b"key-%03d" % i for i in range(200)]
    model: dict[bytes, bytes] = {}
    futures = []
    with ThreadPoolExecutor(max_workers=1) as pool:  # one committer: seal order kept
        for i in range(20_000):
            k = rng.choice(keys)
            if rng.random() < 0.2:
                e.delete("data", k)
                model.pop(k, None)
            else:
                v = b"%d" % i
                e.put("data", k, v)
                model[k] = v
            probe = rng.choice(keys)
            assert e.get("data", probe) == model.get(probe)
            if i % 37 == 0:
                futures.append(pool.submit(e.commit, e.seal()))
            if i % 997 == 0:
                assert list(e.scan("data", b"", None)) == sorted(model.items())
                assert e.count("data") == len(model)
        futures.append(pool.submit(e.commit, e.seal()))
        for f in futures:
            f.result()
    assert list(e.scan("data", b"", None)) == sorted(model.items())


def test_reads_during_each_phase_of_a_commit(engine: OverlayEngine) -> None:
    """Block a commit before and after its durable write; reads agree at every step."""
    e = engine
    for i in range(50):
        e.put("data", b"k%02d" % i, b"old")
    e.commit(e.seal())
    for i in range(0, 50, 2):
        e.put("data", b"k%02d" % i, b"new")
    for i in range(1, 50, 4):
        e.delete("data", b"k%02d" % i)
    batch = e.seal()
    e.put("data", b"k00", b"staged")
    want = {b"k%02d" % i: b"old" for i in range(50)}
    want.update({b"k%02d" % i: b"new" for i in range(0, 50, 2)})
    for i in range(1, 50, 4):
        del want[b"k%02d" % i]
    want[b"k00"] = b"staged"

    before, after, go_on = threading.Event(), threading.Event(), threading.Event()
    real_write = e._durable_write

    def slow_write(b: Batch) -> None:
        before.set()
        go_on.wait(10)
        go_on.clear()
        real_write(b)
        after.set()
        go_on.wait(10)

    e._durable_write = slow_write  # type: ignore[method-assign]

    def check() -> None:
        assert all(e.get("data", k) == want.get(k) for k in (b"k%02d" % i for i in range(50)))
        assert list(e.scan("data", b"", None)) == sorted(want.items())
        assert e.count("data") == len(want)

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(e.commit, batch)
        assert before.wait(10)
        check()  # commit started, nothing written
        go_on.set()
        assert after.wait(10)
        check()  # written, not yet marked durable
        assert not batch.durable
        go_on.set()
        done.result(10)
    assert batch.durable
    check()  # marked durable, dropped from the overlay by this read
    assert e._sealed == []


# -- LMDB durability ---------------------------------------------------------------------

CHILD = r"""
import sys
from storage.lmdb_engine import LmdbEngine

e = LmdbEngine(sys.argv[1])
long = b"L" * 700
i = 0
while True:
    for j in range(5):
        e.put("data", b"b%08d-%d" % (i, j), b"%d" % i)
    e.put("data", long + b"%08d" % i, b"%d" % i)
    e.put("meta", b"last", b"%d" % i)
    e.commit(e.seal())
    print(i, flush=True)
    i += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_keeps_every_reported_commit(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = str(tmp_path / "env")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    reported: list[int] = []
    target = rng.randrange(5, 300)
    while len(reported) < target:
        line = child.stdout.readline()
        assert line, "child died early"
        reported.append(int(line))
    time.sleep(rng.random() * 0.005)  # land anywhere inside a batch or a commit
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reported += [int(line) for line in child.stdout.read().splitlines()]
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert reported == list(range(len(reported)))

    e = LmdbEngine(path)
    present = sorted(int(v) for k, v in e.scan("data", b"b", b"c") if k.endswith(b"-0"))
    # commits are atomic and in order: the durable batches are a prefix 0..n-1, whole
    n = len(present)
    assert present == list(range(n))
    assert n in (len(reported), len(reported) + 1)  # at most one committed, unreported
    for i in range(n):
        for j in range(5):
            assert e.get("data", b"b%08d-%d" % (i, j)) == b"%d" % i
        assert e.get("data", b"L" * 700 + b"%08d" % i) == b"%d" % i
    assert e.get("data", b"b%08d-0" % n) is None
    assert e.get("meta", b"last") == b"%d" % (n - 1)
    assert e.count("data") == 6 * n
    e.close()


def test_lmdb_values_survive_close_and_reopen(tmp_path: Path) -> None:
    for sync in (True, False):
        path = str(tmp_path / str(sync))
        e = LmdbEngine(path, sync=sync)
        for i in range(1000):
            e.put("data", data_key(i * 7919, b"k%d" % i), b"v%d" % i)
        e.commit(e.seal())
        e.close()
        e = LmdbEngine(path, sync=sync)
        assert e.count("data") == 1000
        assert e.get("data", data_key(7919, b"k1")) == b"v1"
        e.close()


# -- key layout ----------------------------------------------------------------------------

TOKEN = st.one_of(
    st.sampled_from([0, 1, 2, MAX_TOKEN - 1, MAX_TOKEN, 2**63 - 1, 2**63]),
    st.integers(0, MAX_TOKEN),
)
USER_KEY = st.binary(min_size=1, max_size=1024)


@given(TOKEN, USER_KEY, st.text(min_size=1, max_size=20))
def test_key_round_trips(token: int, key: bytes, target: str) -> None:
    assert split_data_key(data_key(token, key)) == (token, key)
    hk = hint_key(token, key, target)
    assert split_hint_key(hk) == (token, key, target)
    p = hint_prefix(token, key)
    end = prefix_end(p)
    assert hk.startswith(p) and (end is None or hk < end)


@given(TOKEN, TOKEN, USER_KEY, USER_KEY)
def test_data_key_order_is_token_order(t1: int, t2: int, k1: bytes, k2: bytes) -> None:
    if t1 != t2:
        assert (data_key(t1, k1) < data_key(t2, k2)) == (t1 < t2)


def test_hint_prefix_matches_exactly_one_key() -> None:
    p = hint_prefix(9, b"ab")
    assert hint_key(9, b"ab", "n1").startswith(p)
    assert not hint_key(9, b"abc", "n1").startswith(p)
    assert not hint_key(10, b"ab", "n1").startswith(p)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: data_key(-1, b"k"),
        lambda: data_key(2**64, b"k"),
        lambda: data_key(0, b""),
        lambda: data_key(0, b"k" * (MAX_KEY_LEN + 1)),
        lambda: split_data_key(b"12345678"),
        lambda: hint_key(0, b"k", ""),
        lambda: split_hint_key(data_key(0, b"k")),
        lambda: token_range_bounds(0, 2**64),
    ],
)
def test_key_layout_rejects_bad_input(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        bad()


def tb(t: int) -> bytes:
    return t.to_bytes(8, "big")


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (10, 20, [(tb(11), tb(21))]),
        (0, MAX_TOKEN, [(tb(1), None)]),
        (10, MAX_TOKEN, [(tb(11), None)]),
        (20, 10, [(tb(0), tb(11)), (tb(21), None)]),
        (MAX_TOKEN, 10, [(tb(0), tb(11))]),
        (MAX_TOKEN, 0, [(tb(0), tb(1))]),
        (10, 0, [(tb(0), tb(1)), (tb(11), None)]),
        (7, 7, [(tb(0), None)]),
        (MAX_TOKEN - 1, MAX_TOKEN, [(tb(MAX_TOKEN), None)]),
    ],
)
def test_token_range_bounds_table(start: int, end: int, want: list) -> None:
    assert token_range_bounds(start, end) == want


@given(TOKEN, TOKEN, TOKEN, USER_KEY)
def test_token_range_bounds_cover_exactly_the_range(s: int, e: int, t: int, key: bytes) -> None:
    inside = (s < t <= e) if s < e else (t > s or t <= e)
    k = data_key(t, key)
    hits = sum(1 for lo, hi in token_range_bounds(s, e) if lo <= k and (hi is None or k < hi))
    assert hits == int(inside)


# -- micro-benchmark -----------------------------------------------------------------------


@pytest.mark.slow
def test_lmdb_microbenchmark(tmp_path: Path) -> None:
    e = LmdbEngine(str(tmp_path / "bench"))
    n = 100_000
    keys = [data_key(random.Random(i).getrandbits(64), b"user:%d" % i) for i in range(n)]
    for i in range(0, n, 1000):
        for k in keys[i : i + 1000]:
            e.put("data", k, b"v" * 100)
        e.commit(e.seal())
    probe = random.Random(1).sample(keys, 20_000)

    def per_call_us(fn: Callable[[], None], calls: int) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, (time.perf_counter() - t0) / calls * 1e6)
        return best

    def gets() -> None:
        for k in probe:
            e.get("data", k)

    get_us = per_call_us(gets, len(probe))
    e.put("data", b"staged", b"x")
    staged_us = per_call_us(lambda: [e.get("data", b"staged") for _ in range(20_000)], 20_000)
    e.commit(e.seal())

    def commit_rate(engine: OverlayEngine, per_batch: int, batches: int) -> float:
        t0 = time.perf_counter()
        for b in range(batches):
            for j in range(per_batch):
                engine.put("data", b"bench-%d-%d" % (b, j), b"v" * 100)
            engine.commit(engine.seal())
        return per_batch * batches / (time.perf_counter() - t0)

    one_sync = commit_rate(e, 1, 500)
    thousand_sync = commit_rate(e, 1000, 50)

    # bare py-lmdb on the same environment, for the engine's overhead (machine-independent)
    env, db = e._env, e._dbs["data"]

    def raw_gets() -> None:
        for k in probe:
            txn = env.begin(db=db)
            txn.get(k)
            txn.abort()

    raw_get_us = per_call_us(raw_gets, len(probe))
    t0 = time.perf_counter()
    for i in range(500):
        with env.begin(write=True, db=db) as txn:
            txn.put(b"raw-%d" % i, b"v" * 100)
    raw_one_sync = 500 / (time.perf_counter() - t0)
    e.close()
    e = LmdbEngine(str(tmp_path / "nosync"), sync=False)
    one_nosync = commit_rate(e, 1, 5000)
    thousand_nosync = commit_rate(e, 1000, 50)
    e.close()
    mem = MemoryEngine()
    mem_rate = commit_rate(mem, 1000, 50)
    print(
        f"\nLMDB get (durable, 100k keys): {get_us:.2f} us (bare py-lmdb {raw_get_us:.2f} us);"
        f" overlay hit: {staged_us:.2f} us\n"
        f"LMDB sync=True  commit, 1 put/batch:    {one_sync:,.0f} puts/s"
        f" (bare py-lmdb {raw_one_sync:,.0f}/s)\n"
        f"LMDB sync=True  commit, 1000 puts/batch: {thousand_sync:,.0f} puts/s\n"
        f"LMDB sync=False commit, 1 put/batch:    {one_nosync:,.0f} puts/s\n"
        f"LMDB sync=False commit, 1000 puts/batch: {thousand_nosync:,.0f} puts/s\n"
        f"MemoryEngine put+seal+commit, 1000/batch: {mem_rate:,.0f} puts/s"
    )
    assert get_us < 100  # sanity only; the figures are for reading
