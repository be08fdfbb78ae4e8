"""`ringkv_member_up{member}` names the current members only, and a bounded number.

A member that left or was removed drops out of the label set (its record stays in the
membership as a tombstone forever, so labelling it would grow without bound).
"""

from __future__ import annotations

from gossip.membership import LEFT, UP, Member
from ringkv.core.config import fast_test_config
from ringkv.server import metrics
from ringkv.server.metrics import Metrics
from ringkv.server.runtime import NodeRuntime


def _member_labels(runtime: NodeRuntime) -> set[str]:
    body, _ = Metrics(runtime).render()
    return {line.split('"')[1] for line in body.decode().splitlines()
            if line.startswith("ringkv_member_up{")}


def _member(node_id: str, status: str) -> Member:
    return Member(node_id, "127.0.0.1:1", "127.0.0.1:2", (), status, 1, 1)


def test_member_up_drops_members_that_left_and_is_capped() -> None:
    runtime = NodeRuntime(fast_test_config("n1", n=1, r=1, w=1))
    try:
        members = runtime.node.members
        members.merge_one(_member("n2", UP))
        assert _member_labels(runtime) == {"n1", "n2"}
        members.merge_one(Member("n2", "127.0.0.1:1", "127.0.0.1:2", (), LEFT, 2, 1))
        assert _member_labels(runtime) == {"n1"}
        for i in range(metrics.MAX_MEMBER_LABELS + 10):
            members.merge_one(_member(f"m{i:05d}", UP))
        labels = _member_labels(runtime)
        assert len(labels) == metrics.MAX_MEMBER_LABELS
        assert "n1" in labels  # this node always names itself
    finally:
        runtime.engine.close()
        runtime._executor.shutdown()
