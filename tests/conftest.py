"""Shared pytest fixtures and hooks.

Multi-process clusters (see `tests/support/procs.py`):

- `make_cluster` (per test) and `make_module_cluster` (per module) are factories:
  ``make_cluster(size=3, extra_args=(...), start=True) -> Cluster``. A finalizer kills
  every node of every cluster they made, so nothing outlives a test even when it fails.
- When a test fails while clusters are running, the tails of their node logs are
  attached to the failure report (section "ringkv node logs").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.procs import ACTIVE, Cluster

ClusterFactory = Callable[..., Cluster]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and ACTIVE and not hasattr(report, "wasxfail"):
        text = "\n".join(c.logs_report() for c in list(ACTIVE))
        report.sections.append(("ringkv node logs", text))


def _factory(base: Path, made: list[Cluster]) -> ClusterFactory:
    def make(
        size: int = 3,
        extra_args: Sequence[str] = (),
        start: bool = True,
        per_node_args: dict[str, Sequence[str]] | None = None,
        name: str | None = None,
    ) -> Cluster:
        cluster = Cluster(base / (name or f"c{len(made) + 1}"), size, extra_args, per_node_args)
        made.append(cluster)
        if start:
            cluster.start()
        return cluster

    return make


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []
    try:
        yield _factory(tmp_path, made)
    finally:
        for cluster in made:
            cluster.close()


@pytest.fixture(scope="module")
def make_module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []
    try:
        yield _factory(tmp_path_factory.mktemp("cluster"), made)
    finally:
        for cluster in made:
            cluster.close()
