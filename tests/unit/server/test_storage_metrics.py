"""The store's fullness is exported, for the "disk or map nearly full" alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.server.live import base_url, live_node


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


async def _scrape_after_a_write(**overrides: object) -> dict[str, float]:
    async with live_node(**overrides) as runtime, aiohttp.ClientSession() as http:
        async with http.put(f"{base_url(runtime)}/kv/k", data=b"v" * 1000) as resp:
            assert resp.status == 204
        async with http.get(f"{base_url(runtime)}/metrics") as resp:
            return _samples(await resp.text())


def test_lmdb_exports_map_use_limit_and_free_disk(tmp_path: Path) -> None:
    got = asyncio.run(_scrape_after_a_write(storage="lmdb", data_dir=str(tmp_path),
                                            map_size=1 << 30))
    assert 0 < got["ringkv_storage_used_bytes"] <= got["ringkv_storage_limit_bytes"] == 1 << 30
    assert got["ringkv_data_dir_free_bytes"] > 0


def test_a_bounded_memory_engine_exports_use_limit_and_evictions() -> None:
    got = asyncio.run(_scrape_after_a_write(storage="memory", max_memory=64 << 20))
    assert got["ringkv_storage_limit_bytes"] == 64 << 20
    assert got["ringkv_storage_used_bytes"] >= 0
    assert got["ringkv_storage_evictions_total"] == 0


def test_group_commits_are_counted_with_their_writes_and_durations(tmp_path: Path) -> None:
    got = asyncio.run(_scrape_after_a_write(storage="lmdb", data_dir=str(tmp_path),
                                            map_size=1 << 30))
    commits = got["ringkv_storage_commits_total"]
    assert commits >= 1
    # The write's record (and whatever the node stored of its own at start) is durable.
    assert got["ringkv_storage_committed_writes_total"] >= 1
    # One duration observed per commit, each a real one (a synced commit takes time).
    assert got["ringkv_storage_commit_seconds_count"] == commits
    assert got["ringkv_storage_commit_seconds_sum"] > 0
