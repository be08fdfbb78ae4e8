"""`ringkv cluster leave | remove` with `--wait`, and `--json` on every cluster command,
against fake members over sockets (`tests.unit.tools.fake_cluster`); and `HandOver`,
the pure tally of what the members answer while a wait polls them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ringkv.tools import cluster_commands
from ringkv.tools.cli import main as cli_main
from ringkv.tools.cluster_commands import HandOver
from tests.unit.tools.fake_cluster import FakeCluster, dead_address, fake_cluster

WIDE = {"COLUMNS": "400"}  # one progress line per redraw, whatever it holds


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_commands, "POLL_EVERY", 0.01)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with fake_cluster("n1", "n2", "n3") as fake:
        yield fake


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli_main, list(args), env=env)


def doc_of(result: Result) -> dict[str, Any]:
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def syncing(total: int, left: int) -> dict[str, Any]:
    return {"syncing": True, "ranges_total": total, "ranges_left": left,
            "fetching_from": ["n3"]}


def script_a_leave(cluster: FakeCluster) -> None:
    """n3 leaves; n1 hears of it late; both heirs fetch, then n3 is left everywhere."""
    waiting = {"leave_waiting_for": ["n1", "n2"]}
    cluster["n3"].script = [({"n3": "leaving"}, waiting), ({"n3": "leaving"}, waiting),
                            ({"n3": "leaving"}, {"leave_waiting_for": ["n2"]}),
                            ({"n3": "left"}, {})]
    cluster["n1"].script = [({"n3": "up"}, {}), ({"n3": "leaving"}, syncing(4, 1)),
                            ({"n3": "left"}, {})]
    cluster["n2"].script = [({"n3": "leaving"}, syncing(6, 6)),
                            ({"n3": "leaving"}, syncing(6, 2)), ({"n3": "left"}, {})]


# ------------------------------------------------------------------------ leave --wait


def test_leave_waits_until_every_member_sees_it_left(cluster: FakeCluster) -> None:
    script_a_leave(cluster)
    result = run("cluster", "leave", "--node", cluster["n3"].url)
    assert result.exit_code == 0, result.output
    assert result.stdout == "n3 has left the cluster; it can be stopped\n"
    assert result.stderr == ""  # not a terminal: no progress at all
    # The others were polled until they all said left; n3 once for the members, then
    # once a round for its own view.
    assert (cluster["n1"].polls(), cluster["n2"].polls(), cluster["n3"].polls()) == (3, 3, 4)
    assert ("POST", "/cluster/leave") in cluster["n3"].requests


def test_leave_json_and_forced_progress(cluster: FakeCluster) -> None:
    script_a_leave(cluster)
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--json", "--progress",
                 env=WIDE)
    assert result.exit_code == 0, result.output
    doc = doc_of(result)
    assert (doc["node_id"], doc["status"], doc["waited"]) == ("n3", "left", True)
    assert (doc["ranges_total"], doc["ranges_done"], doc["ranges_pending"]) == (10, 10, 0)
    assert doc["views"] == {"n1": "left", "n2": "left"}
    assert (doc["heirs_total"], doc["waiting_for"], doc["syncing"]) == (2, [], [])
    # Progress went to stderr, round by round, never to stdout.
    assert "0 of 6 ranges handed over, 6 pending" in result.stderr
    assert "7 of 10 ranges handed over, 3 pending" in result.stderr
    assert "heirs done 1 of 2" in result.stderr
    assert "seen as left by 0 of 2 members" in result.stderr


def test_leave_no_wait_is_unchanged_and_has_json(cluster: FakeCluster) -> None:
    result = run("cluster", "leave", "--no-wait", "--node", cluster["n3"].url)
    assert (result.exit_code, result.stdout) == (0, "n3 is leaving\n")
    result = run("cluster", "leave", "--no-wait", "--json", "--node", cluster["n3"].url)
    assert doc_of(result) == {"node_id": "n3", "status": "leaving", "waited": False}
    assert cluster["n3"].polls() == 0


def test_leave_timeout_exits_4_with_the_state(cluster: FakeCluster) -> None:
    script_a_leave(cluster)
    cluster["n2"].script = [({"n3": "leaving"}, syncing(6, 5))]  # stuck
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--timeout", "0.3",
                 "--json")
    assert result.exit_code == 4, result.output
    doc = doc_of(result)
    assert (doc["kind"], doc["exit_code"], doc["node_id"]) == ("timeout", 4, "n3")
    assert doc["syncing"] == ["n2"] and doc["ranges_pending"] == 5
    assert doc["views"] == {"n1": "left", "n2": "leaving"}
    line = result.stderr.strip()
    assert line.startswith("error: n3 has not left after 0.3 s") and "\n" not in line


def test_leave_withdrawn_exits_4(cluster: FakeCluster) -> None:
    script_a_leave(cluster)
    cluster["n3"].script = [({"n3": "leaving"}, {}), ({"n3": "up"}, {})]
    result = run("cluster", "leave", "--node", cluster["n3"].url)
    assert result.exit_code == 4
    assert result.stderr.startswith("error: n3 withdrew its leave and is up again")
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--json")
    assert doc_of(result)["kind"] == "withdrawn"


def test_leave_refused_is_json(cluster: FakeCluster) -> None:
    cluster["n3"].leave_answer = (401, {"error": "admin token required"})
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--json")
    assert result.exit_code == 4
    doc = doc_of(result)
    assert (doc["kind"], doc["status"]) == ("auth", 401)
    assert "requires an admin token" in doc["error"]
    cluster["n3"].leave_answer = (409, {"error": "the last node of a cluster cannot leave"})
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--json")
    assert result.exit_code == 4
    assert (doc_of(result)["kind"], doc_of(result)["status"]) == ("bad_request", 409)


def test_a_member_unreachable_or_with_a_bad_address_does_not_block(
    cluster: FakeCluster,
) -> None:
    script_a_leave(cluster)
    cluster.bad_address["n1"] = dead_address()
    with fake_cluster("n5") as other:
        cluster.bad_address["n5"] = "evil/path@host:80"  # not an address: never asked
        cluster.members["n5"] = other["n5"]
        result = run("cluster", "leave", "--node", cluster["n3"].url, "--json")
        assert other["n5"].requests == []
    assert result.exit_code == 0, result.output
    assert doc_of(result)["views"] == {"n1": None, "n2": "left", "n5": None}
    assert cluster["n1"].polls() == 0


def test_leave_names_the_node_by_its_own_answer(cluster: FakeCluster) -> None:
    script_a_leave(cluster)
    cluster["n3"].leave_answer = (202, {"status": "leaving"})  # no node_id: read /cluster
    result = run("cluster", "leave", "--node", cluster["n3"].url)
    assert result.exit_code == 0, result.output
    assert result.stdout == "n3 has left the cluster; it can be stopped\n"


def test_leave_with_no_other_member_to_ask_follows_the_leaver(cluster: FakeCluster) -> None:
    # n1 and n2 are left already: nobody else to poll, the leaver's word is taken.
    gone = {"n1": "left", "n2": "left"}
    cluster["n3"].script = [({**gone, "n3": "leaving"}, {}), ({**gone, "n3": "leaving"}, {}),
                            ({**gone, "n3": "left"}, {})]
    result = run("cluster", "leave", "--node", cluster["n3"].url, "--json")
    assert result.exit_code == 0, result.output
    assert doc_of(result)["views"] == {"n3": "left"}
    assert cluster["n1"].polls() == cluster["n2"].polls() == 0


# ----------------------------------------------------------------------- remove --wait


def script_a_removal(cluster: FakeCluster) -> None:
    """n3 is dead; removed through n1; n2 learns of it a round later; both re-fetch."""
    cluster.bad_address["n3"] = dead_address()
    cluster["n1"].script = [({"n3": "down"}, {}), ({"n3": "left"}, syncing(3, 2)),
                            ({"n3": "left"}, {})]
    cluster["n2"].script = [({"n3": "down"}, {}), ({"n3": "left"}, syncing(5, 5)),
                            ({"n3": "left"}, {})]


def test_remove_waits_for_the_survivors(cluster: FakeCluster) -> None:
    script_a_removal(cluster)
    result = run("cluster", "remove", "n3", "--wait", "--node", cluster["n1"].url,
                 "--progress", env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("n3 removed; every member sees it left and its ranges"
                                    " were re-replicated from the survivors (8 ranges")
    assert "1 of 3 ranges re-replicated, 2 pending" in result.stderr
    assert "(fetching: n1)" in result.stderr
    assert cluster["n3"].requests == []  # the dead node is never asked
    assert ("POST", "/cluster/remove/n3") in cluster["n1"].requests


def test_remove_without_wait_is_unchanged(cluster: FakeCluster) -> None:
    result = run("cluster", "remove", "n3", "--node", cluster["n1"].url)
    assert result.exit_code == 0
    assert result.stdout == ("n3 removed; its ranges are being re-replicated from the"
                             " survivors\n")
    assert cluster["n1"].polls() == 0
    result = run("cluster", "remove", "n3", "--node", cluster["n1"].url, "--json")
    assert doc_of(result) == {"node_id": "n3", "status": "left", "waited": False}


def test_remove_json_and_its_errors(cluster: FakeCluster) -> None:
    script_a_removal(cluster)
    result = run("cluster", "remove", "n3", "--wait", "--json", "--node", cluster["n1"].url)
    assert result.exit_code == 0, result.output
    doc = doc_of(result)
    assert (doc["node_id"], doc["waited"], doc["ranges_total"]) == ("n3", True, 8)
    assert "heirs_total" not in doc
    assert result.stderr == ""
    result = run("cluster", "remove", "n9", "--json", "--node", cluster["n1"].url)
    assert result.exit_code == 4
    assert (doc_of(result)["kind"], doc_of(result)["status"]) == ("bad_request", 404)
    result = run("cluster", "remove", "--json", "--node", cluster["n1"].url)
    assert result.exit_code == 2 and doc_of(result)["kind"] == "usage"


# ----------------------------------------------------------------- status and lookup


def test_status_and_lookup_json(cluster: FakeCluster) -> None:
    cluster["n1"].script = [({}, {})]
    result = run("cluster", "status", "--json", "--node", cluster["n1"].url)
    assert result.exit_code == 0
    assert [m["node_id"] for m in doc_of(result)["members"]] == ["n1", "n2", "n3"]
    result = run("cluster", "lookup", "k", "--json", "--node", cluster["n1"].url)
    assert doc_of(result) == {"key": "k", "preference_list": ["n1", "n2", "n3"]}
    result = run("cluster", "lookup", "k", "--node", cluster["n1"].url)
    assert result.stdout == "n1 n2 n3\n"


@pytest.mark.parametrize("command", [["status"], ["lookup", "k"], ["leave"],
                                     ["remove", "n2"]])
def test_unreachable_node_is_json(command: list[str]) -> None:
    result = run("cluster", *command, "--json", "--node", f"http://{dead_address()}")
    assert result.exit_code == 4, result.output
    doc = doc_of(result)
    assert (doc["kind"], doc["exit_code"]) == ("transport", 4)
    assert result.stderr.strip() == f"error: {doc['error']}"


# ----------------------------------------------------------------- HandOver (pure)


def answer(target_status: str | None, transfers: object = None,
           node_id: str = "n3") -> dict[str, Any]:
    members: list[object] = [{"node_id": "n1", "status": "up"}]
    if target_status is not None:
        members.append({"node_id": node_id, "status": target_status})
    return {"members": members, "transfers": transfers or {}}


def test_handover_remembers_totals_of_finished_fetches() -> None:
    watch = HandOver("n3", leaving=False)
    first = watch.observe({"n1": answer("left", syncing(4, 3)), "n2": answer("down")},
                          None, 1.0)
    assert (first.ranges_total, first.ranges_left, first.done) == (4, 3, False)
    assert first.views == {"n1": "left", "n2": "down"}
    second = watch.observe({"n1": answer("left"), "n2": answer("left", syncing(2, 2))},
                           None, 2.0)
    assert (second.ranges_total, second.ranges_left, second.ranges_done) == (6, 2, 4)
    assert second.syncing == ("n2",) and not second.done
    third = watch.observe({"n1": answer("left"), "n2": answer("left")}, None, 3.0)
    assert third.done and (third.ranges_total, third.ranges_left) == (6, 0)


def test_handover_is_done_only_when_someone_answered_and_knows_the_node() -> None:
    watch = HandOver("n3", leaving=False)
    assert not watch.observe({"n1": None, "n2": None}, None, 0.0).done
    assert not watch.observe({}, None, 0.0).done
    state = watch.observe({"n1": answer(None), "n2": answer("left")}, None, 0.0)
    assert state.views == {"n1": "unknown", "n2": "left"} and not state.done
    assert watch.observe({"n1": None, "n2": answer("left")}, None, 0.0).done


def test_handover_leave_counts_heirs_and_sees_a_withdrawal() -> None:
    watch = HandOver("n3", leaving=True)
    own = answer("leaving", {"leave_waiting_for": ["n2", "n1"]})
    state = watch.observe({"n1": answer("leaving")}, own, 0.0)
    assert (state.heirs_total, state.waiting_for, state.own_status) == (2, ("n1", "n2"),
                                                                       "leaving")
    state = watch.observe({"n1": answer("left")}, answer("left"), 0.0)
    assert state.done and state.heirs_total == 2 and state.waiting_for == ()
    withdrawn = HandOver("n3", leaving=True).observe({"n1": answer("left")},
                                                     answer("up"), 0.0)
    assert withdrawn.withdrew and not withdrawn.done


@pytest.mark.parametrize("junk", [
    {},
    {"members": "n3"},
    {"members": [None, 3, {"node_id": "n3", "status": 7}]},
    {"members": [{"node_id": "n3", "status": "x" * 10_000}]},
    {"transfers": {"syncing": True, "ranges_total": True, "ranges_left": -5}},
    {"transfers": {"syncing": True, "ranges_total": 10**30, "ranges_left": "many"}},
    {"transfers": {"syncing": "yes", "leave_waiting_for": [1, None, "n" * 500]}},
    {"transfers": {"leave_waiting_for": ["n1"] * 100_000}},
    {"transfers": []},
])
def test_handover_reads_hostile_answers_without_crashing(junk: dict[str, Any]) -> None:
    watch = HandOver("n3", leaving=True)
    state = watch.observe({"n1": junk}, junk, 0.0)
    assert not state.done
    assert state.views["n1"] == "unknown"
    assert 0 <= state.ranges_left <= state.ranges_total <= cluster_commands.MAX_RANGES
    assert len(state.waiting_for) <= 1 and all(len(n) <= 64 for n in state.waiting_for)
    assert isinstance(state.line(), str) and json.dumps(state.doc())
