"""Prometheus metrics of one node, in a registry of its own.

Request counts and latencies are observed by the HTTP layer as they happen. Everything
the pure node counts (read repairs, hints) lives in plain ints on `Node.stats` and is
read only when `/metrics` is scraped, so the hot path pays nothing for it. The runtime
is handed in by the HTTP layer and imported here for type checking only.

Every label set is bounded: `ringkv_member_up{member}` names current members only (a
member that left stays in the membership as a record forever) and at most
`MAX_MEMBER_LABELS` of them, this node first; `ringkv_internal_errors_total{part}`
names the fixed places where the node contains failures.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gossip.membership import LEFT
from ringkv.server.runtime import COMMIT_BUCKETS
from storage.memory import MemoryEngine

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
SIBLING_BUCKETS = (1, 2, 3, 4, 5, 8, 16, 32, 64)
STALE_BUCKETS = (0, 1, 2, 3, 4, 5, 7, 10)
MAX_MEMBER_LABELS = 1024  # member_up series at most: a scrape stays small in any cluster


class _NodeCollector:
    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        node = self.runtime.node
        stats = node.stats
        ae = node.anti_entropy.stats
        yield GaugeMetricFamily("ringkv_hints_pending",
                                "Hints this node holds for other nodes",
                                value=node.store.hints_pending())
        counters = [
            ("ringkv_hints_delivered", "Hints handed off to their target",
             stats.hints_delivered),
            ("ringkv_hints_stored", "Writes this node accepted as a fallback",
             stats.hints_stored),
            ("ringkv_read_repairs", "Replicas sent the merged version after a read",
             stats.read_repairs),
            ("ringkv_anti_entropy_keys_repaired", "Keys repaired by Merkle anti-entropy",
             ae.keys_repaired),
            ("ringkv_anti_entropy_exchanges", "Merkle exchanges this node started",
             ae.exchanges),
            ("ringkv_anti_entropy_bytes", "Bytes of anti-entropy messages sent",
             ae.bytes_sent),
            ("ringkv_anti_entropy_keys_sent", "Key versions sent by anti-entropy",
             ae.keys_sent),
            ("ringkv_expired_versions", "Records whose expired siblings became tombstones",
             ae.expired),
            ("ringkv_tombstones_compacted", "Dead records reduced to their causal context",
             ae.tombstones_compacted),
            ("ringkv_stale_replica_responses",
             "Replica answers to reads that were older than the merged answer",
             stats.stale_replies),
            ("ringkv_forwarded_writes", "Writes forwarded to a replica to coordinate",
             stats.forwarded),
            ("ringkv_rpc_bad_frames", "Internode frames refused as malformed",
             self.runtime.bad_frames),
            ("ringkv_storage_commits", "Group commits (one durable transaction each)",
             self.runtime.commits),
            ("ringkv_storage_committed_writes", "Records made durable by group commits",
             self.runtime.committed_writes),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield _commit_histogram(self.runtime)
        moved = node.transfers.stats
        for unit, received, sent in (("keys", moved.keys_received, moved.keys_sent),
                                     ("bytes", moved.bytes_received, moved.bytes_sent)):
            family = CounterMetricFamily(
                f"ringkv_transfer_{unit}", f"Range-transfer {unit} moved by joins, leaves "
                "and removals", labels=["direction"])
            family.add_metric(["received"], received)
            family.add_metric(["sent"], sent)
            yield family
        yield GaugeMetricFamily("ringkv_transfer_ranges_pending",
                                "Ranges this node still has to fetch",
                                value=_pending_ranges(node.transfers.view()))
        up = GaugeMetricFamily("ringkv_member_up", "1 when this node sees the member up",
                               labels=["member"])
        now = time.time()
        current = sorted((m for m in node.members.members() if m.status != LEFT),
                         key=lambda m: (m.node_id != node.id, m.node_id))
        for m in current[:MAX_MEMBER_LABELS]:
            up.add_metric([m.node_id], 1.0 if node.view_status(m, now) == "up" else 0.0)
        yield up
        errors = CounterMetricFamily("ringkv_internal_errors",
                                     "Failures the node contained, by where they happened",
                                     labels=["part"])
        for part, count in sorted(node.faults.items()):
            errors.add_metric([part], count)
        yield errors
        yield GaugeMetricFamily("ringkv_requests_waiting",
                                "Client requests waiting for the node's answer",
                                value=self.runtime.waiting())
        edge = self.runtime.edge
        yield GaugeMetricFamily("ringkv_http_connections", "Client connections open",
                                value=edge.active)
        refused = CounterMetricFamily("ringkv_http_connections_refused",
                                      "Client connections cut by the HTTP edge, by reason",
                                      labels=["reason"])
        refused.add_metric(["limit"], edge.refused)
        refused.add_metric(["head_timeout"], edge.head_timeouts)
        refused.add_metric(["head_too_large"], edge.heads_too_large)
        yield refused
        yield from _storage_metrics(self.runtime)


def _storage_metrics(runtime: NodeRuntime) -> Iterator[Metric]:
    """How full the store is: what "disk or map nearly full" alerts watch."""
    engine = runtime.engine
    used = limit = None
    if isinstance(engine, MemoryEngine):
        used, limit = engine.memory_used, engine.max_memory
        yield CounterMetricFamily("ringkv_storage_evictions",
                                  "Records the memory engine evicted to stay under its bound",
                                  value=engine.evictions)
    elif hasattr(engine, "space"):
        used, limit = engine.space()
        try:
            free = shutil.disk_usage(runtime.config.data_path).free
        except OSError:
            free = None
        if free is not None:
            yield GaugeMetricFamily("ringkv_data_dir_free_bytes",
                                    "Free bytes on the file system of the data directory",
                                    value=free)
    if used is not None:
        yield GaugeMetricFamily("ringkv_storage_used_bytes",
                                "Bytes the store holds (LMDB: map pages in use)", value=used)
    if limit:
        yield GaugeMetricFamily("ringkv_storage_limit_bytes",
                                "Most the store may hold (--map-size, or --max-memory)",
                                value=limit)


class Metrics:
    def __init__(self, runtime: NodeRuntime) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ringkv_requests", "Client requests by operation and status",
                                ["op", "code"], registry=self.registry)
        self.duration = Histogram("ringkv_request_duration_seconds",
                                  "Client request latency by operation", ["op"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.siblings = Histogram("ringkv_siblings", "Sibling counts returned by reads",
                                  buckets=SIBLING_BUCKETS, registry=self.registry)
        # The quorum receipt of every read, by read quorum (the replicas that answered):
        # _count reads, _sum stale replica answers, bucket le="0" reads with none stale.
        self.stale = Histogram("ringkv_read_stale_replies",
                               "Stale replica answers per read, by read quorum", ["r"],
                               buckets=STALE_BUCKETS, registry=self.registry)
        self._stale_children: dict[int, object] = {}
        self.registry.register(_NodeCollector(runtime))
        self._children: dict[tuple[str, int], tuple[object, object]] = {}

    def observe(self, op: str, code: int, seconds: float) -> None:
        # Label lookups cost more than the increments: cache the children.
        pair = self._children.get((op, code))
        if pair is None:
            pair = (self.requests.labels(op, str(code)), self.duration.labels(op))
            self._children[(op, code)] = pair
        pair[0].inc()  # type: ignore[attr-defined]
        pair[1].observe(seconds)  # type: ignore[attr-defined]

    def observe_receipt(self, replied: int, stale: int) -> None:
        child = self._stale_children.get(replied)
        if child is None:
            child = self._stale_children[replied] = self.stale.labels(str(replied))
        child.observe(stale)  # type: ignore[attr-defined]

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _commit_histogram(runtime: NodeRuntime) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip((*COMMIT_BUCKETS, float("inf")), runtime.commit_counts,
                            strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(
        "ringkv_storage_commit_seconds", "Duration of each group commit, from sealing"
        " its batch to its end (hand-off to the commit thread included)",
        buckets=buckets, sum_value=runtime.commit_seconds)


def _pending_ranges(view: dict[str, object]) -> int:
    left = view.get("ranges_left", 0)
    return left if isinstance(left, int) else 0
