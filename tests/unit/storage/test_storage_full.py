"""A full LMDB map is a failed batch, not a dead node (issue 13, item 12).

With a tiny map, a batch that does not fit raises `StorageFullError` (never a bare
`lmdb.MapFullError`); the engine can grow the map up to its `map_size`; a batch that
still does not fit is abandoned: its writes leave the overlay, reads see what is
durable, later batches commit, and the environment reopens cleanly.
"""

from __future__ import annotations

import pytest

from storage.engine import StorageFullError
from storage.lmdb_engine import LmdbEngine
from storage.memory import MemoryEngine
from storage.record import Record
from storage.store import KeyStore
from storage.versions import EMPTY, update

MAP = 1 << 20  # 1 MiB


def fill(engine: LmdbEngine, n: int, size: int) -> list[bytes]:
    keys = [b"big%04d" % i for i in range(n)]
    for k in keys:
        engine.put("data", k, b"x" * size)
    return keys


def test_a_batch_past_a_tiny_map_fails_and_the_engine_keeps_working(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "db")
    engine = LmdbEngine(path, map_size=MAP)
    engine.put("data", b"small", b"kept")
    engine.commit(engine.seal())
    fill(engine, 40, 64 << 10)  # 2.5 MiB into a 1 MiB map
    batch = engine.seal()
    with pytest.raises(StorageFullError) as info:
        engine.commit(batch)
    assert "full" in str(info.value)
    assert engine.grow() is False  # already at its map_size
    engine.abandon(batch)
    # Reads see only what is durable; the abandoned writes are gone.
    assert engine.get("data", b"small") == b"kept"
    assert engine.get("data", b"big0000") is None
    assert [k for k, _ in engine.scan("data", b"", None)] == [b"small"]
    # Later batches commit.
    engine.put("data", b"after", b"1")
    engine.commit(engine.seal())
    assert engine.get("data", b"after") == b"1"
    engine.close()
    reopened = LmdbEngine(path, map_size=MAP)
    assert reopened.get("data", b"small") == b"kept"
    assert reopened.get("data", b"after") == b"1"
    assert reopened.get("data", b"big0000") is None
    reopened.close()


def test_the_map_grows_up_to_its_map_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = LmdbEngine(str(tmp_path / "db"), map_size=16 << 20, initial_map_size=MAP)
    fill(engine, 40, 64 << 10)
    batch = engine.seal()
    with pytest.raises(StorageFullError):
        engine.commit(batch)
    while True:
        assert engine.grow()
        try:
            engine.commit(batch)  # a failed commit may be retried
            break
        except StorageFullError:
            continue
    assert engine.get("data", b"big0039") == b"x" * (64 << 10)
    engine.close()


def test_the_key_store_forgets_what_an_abandoned_batch_held(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = KeyStore(LmdbEngine(str(tmp_path / "db"), map_size=MAP))
    changes: list[tuple[bytes, object, object]] = []
    store.listener = lambda token, key, old, new: changes.append((key, old, new))
    state, _ = update(EMPTY, EMPTY.context, ("n1", 1, 1), b"v" * (2 << 20), "x/y", 1)
    store.put_record(1, b"k", Record(state))
    store.merge_hint(1, b"k", "n2", state)
    assert store.hints_pending() == 1
    batch = store.engine.seal()
    with pytest.raises(StorageFullError):
        store.engine.commit(batch)
    store.abandon(batch)
    assert store.get_record(1, b"k") is None
    assert store.hints_pending() == 0
    # The listener saw the record go back to what is durable (nothing).
    assert changes[-1] == (b"k", state, None)


def test_the_memory_engine_never_fills() -> None:
    assert MemoryEngine().grow() is False
