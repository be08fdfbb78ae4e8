"""KeyStore.scan_range: paged range reads in token order, on both engines."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator

import pytest

from ring.token import TokenRange
from storage.engine import Engine
from storage.keys import data_key
from storage.lmdb_engine import LmdbEngine
from storage.memory import MemoryEngine
from storage.record import Record
from storage.store import KeyStore
from storage.versions import EMPTY_CONTEXT, update


@pytest.fixture(params=["memory", "lmdb"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "memory":
        yield MemoryEngine()
        return
    with tempfile.TemporaryDirectory() as d:
        eng = LmdbEngine(d)
        yield eng
        eng.close()


def _fill(store: KeyStore, rng: random.Random, count: int) -> dict[bytes, int]:
    tokens = {}
    for i in range(count):
        key = f"k{i}".encode() + (b"x" * 600 if i % 7 == 0 else b"")  # some long keys
        token = rng.getrandbits(64)
        state, _ = update(None, EMPTY_CONTEXT, ("a", 1, 1), b"v", "t", 0, None)
        store.put_record(token, key, Record(state))
        tokens[key] = token
    return tokens


def _paged(store: KeyStore, start: int, end: int, page: int) -> list[bytes]:
    seen: list[bytes] = []
    after = None
    while True:
        batch = store.scan_range(start, end, after, page)
        seen.extend(key for _, key, _ in batch)
        if len(batch) < page:
            return seen
        token, key, _ = batch[-1]
        after = data_key(token, key)


@pytest.mark.parametrize("page", [1, 7, 1000])
def test_scan_range_pages_cover_exactly_the_range(engine: Engine, page: int) -> None:
    rng = random.Random(5)
    store = KeyStore(engine)
    tokens = _fill(store, rng, 120)
    if engine.has_staged():
        engine.commit(engine.seal())
    for _ in range(6):
        start, end = rng.getrandbits(64), rng.getrandbits(64)
        rng_ = TokenRange(start, end)
        want = sorted((t, k) for k, t in tokens.items() if rng_.contains(t))
        got = _paged(store, start, end, page)
        assert got == [k for _, k in want]  # token order, even for a wrapping range
    assert sorted(_paged(store, 5, 5, page)) == sorted(tokens)  # the whole ring
