"""Live staleness experiments against real nodes started with latency injection (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ringkv.tools.cli import main
from ringkv.tools.live_staleness import run_live

SPEC = "W=exp:10,A=exp:1,R=exp:1,S=exp:1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def injected(make_module_cluster):  # type: ignore[no-untyped-def]
    return make_module_cluster(3, extra_args=["--inject-latency", SPEC, "--experimental",
                                              "--n", "3"])


def test_nodes_warn_loudly_and_record_every_leg(injected) -> None:  # type: ignore[no-untyped-def]
    for node in injected:
        assert "EXPERIMENTAL: latency injection is ON" in node.log_text()
    result = run_live([injected.nodes[0].url], 1, 1, (0.0, 20.0), 20, concurrency=2, seed=1)
    assert result.failed == 0, result.errors
    assert sorted(result.nodes) == ["n1", "n2", "n3"] and result.n == 3
    assert result.done == {0.0: 20, 20.0: 20}
    assert all(0.0 <= p <= 1.0 for p in result.measured().values())
    legs = result.recorded_legs()
    assert legs is not None
    assert 4.0 < legs.w.mean < 25.0 and legs.a.mean < 5.0  # what was injected: exp(10), exp(1)
    assert all(offs for offs in result.offsets.values())


def test_strict_quorums_are_never_stale_live(injected) -> None:  # type: ignore[no-untyped-def]
    urls = [node.url for node in injected]
    result = run_live(urls, 2, 2, (0.0,), 15, ks=(2,), concurrency=2, seed=2)
    assert result.failed == 0, result.errors
    assert result.measured() == {0.0: 1.0}
    assert result.k_measured() == {2: 1.0}


def test_quorum_receipt_headers_and_metrics(injected) -> None:  # type: ignore[no-untyped-def]
    n1, n2 = injected.nodes[0], injected.nodes[1]
    with httpx.Client(timeout=10.0) as http:
        assert http.put(f"{n1.url}/kv/receipt", content=b"v", params={"w": "3"}
                        ).status_code == 204
        resp = http.get(f"{n2.url}/kv/receipt", params={"r": "3"})
        assert resp.status_code == 200
        assert sorted(resp.headers["X-Ringkv-Replied"].split(",")) == ["n1", "n2", "n3"]
        assert resp.headers["X-Ringkv-Stale"] == ""
        metrics = http.get(f"{n2.url}/metrics").text
        assert 'ringkv_read_stale_replies_count{r="3"}' in metrics
        doc = http.get(f"{n2.url}/debug/latency", params={"samples": "0"}).json()
        assert doc["spec"] == SPEC and doc["legs"]["R"]["count"] > 0


def test_live_command_writes_the_fixed_json(injected, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "live.json"
    result = CliRunner().invoke(main, [
        "experiment", "staleness", "--live", "--node", injected.nodes[0].url,
        "--r", "1", "--w", "1", "--t", "0,30", "--trials", "15", "--predict-trials", "5000",
        "--latency", SPEC, "--concurrency", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc["measured"]) == set(doc["predicted"]) == {"0", "30"}
    assert doc["predicted_from"] == "recorded" and doc["mode"] == "live"
    assert 0.0 <= doc["rmse"] <= 1.0
    assert set(doc["predicted_from_spec"]) == {"0", "30"}
