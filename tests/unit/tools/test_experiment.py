"""Staleness experiments: simulated trials against the WARS prediction, the
`ringkv experiment` commands, and the quorum receipt in /metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from pbs.distributions import parse_legs
from pbs.model import predict_k_staleness, predict_t_visibility
from ringkv.tools.cli import main
from sim.staleness import StalenessSetup, batches, merge, run_batch, run_staleness

PAPER = "W=exp:10,A=exp:1,R=exp:1,S=exp:1"


def test_a_short_simulated_experiment_lands_near_its_prediction() -> None:
    legs = parse_legs(PAPER)
    setup = StalenessSetup(3, 1, 1, legs, ts=(0.0, 10.0), trials=500, seed=3, batch=1000)
    result = run_staleness(setup)
    assert result.failed == 0
    assert result.done == {0.0: 500, 10.0: 500}
    predicted = predict_t_visibility(3, 1, 1, legs, [0.0, 10.0], trials=20_000,
                                     rng=random.Random(1), topology="replica")
    for t, p in result.measured().items():  # 3 standard errors: 0.066 at p = 0.42
        assert p == pytest.approx(predicted[t], abs=0.066), (t, p, predicted[t])
    # the injected delays were recorded, per leg, as drawn
    w = result.injected["W"]
    assert len(w) >= 2 * 1000 and sum(w) / len(w) == pytest.approx(10.0, rel=0.15)


@pytest.mark.parametrize(("r", "w"), [(2, 2), (1, 3), (3, 1)])
def test_strict_quorums_never_measure_a_stale_read(r: int, w: int) -> None:
    setup = StalenessSetup(3, r, w, parse_legs(PAPER), ts=(0.0,), trials=120, ks=(2,),
                           seed=5)
    result = run_staleness(setup)
    assert result.failed == 0
    assert result.measured() == {0.0: 1.0}
    assert result.k_measured() == {2: 1.0}


def test_k_staleness_in_the_simulation() -> None:
    legs = parse_legs(PAPER)
    setup = StalenessSetup(3, 1, 1, legs, ts=(), trials=400, ks=(1, 2), seed=2)
    result = run_staleness(setup)
    predicted = predict_k_staleness(3, 1, 1, legs, [1, 2], trials=5000,
                                    rng=random.Random(1), topology="replica")
    got = result.k_measured()
    assert got[1] < got[2]
    for k in (1, 2):
        assert got[k] == pytest.approx(predicted[k], abs=0.075)


def test_batches_are_independent_of_the_order_they_run_in() -> None:
    setup = StalenessSetup(3, 1, 1, parse_legs(PAPER), ts=(0.0, 5.0), trials=50, seed=4,
                           batch=40)
    work = batches(setup)
    assert len(work) == 3
    forward = merge(setup, [run_batch(setup, n, c) for n, c in work])
    backward = merge(setup, [run_batch(setup, n, c) for n, c in reversed(work)])
    assert forward.consistent == backward.consistent
    assert forward.consistent == run_staleness(setup).consistent


def test_setup_is_validated() -> None:
    legs = parse_legs(PAPER)
    with pytest.raises(ValueError, match="1 <= R, W <= N"):
        StalenessSetup(3, 4, 1, legs)
    with pytest.raises(ValueError, match="another coordinator"):
        StalenessSetup(1, 1, 1, legs)


# --- the commands -------------------------------------------------------------------------


def test_staleness_sim_command_writes_the_fixed_json(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = CliRunner().invoke(main, [
        "experiment", "staleness", "--sim", "--n", "3", "--r", "1", "--w", "1",
        "--latency", PAPER, "--t", "0,10,65", "--trials", "120", "--predict-trials", "2000",
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc["measured"]) == set(doc["predicted"]) == {"0", "10", "65"}
    assert all(0.0 <= p <= 1.0 for p in [*doc["measured"].values(),
                                          *doc["predicted"].values()])
    assert 0.0 <= doc["rmse"] < 0.15
    assert (doc["n"], doc["r"], doc["w"], doc["mode"]) == (3, 1, 1, "sim")
    assert doc["p_nonintersect"] == pytest.approx(2 / 3)
    assert "RMSE" in result.output


def test_staleness_command_usage_errors() -> None:
    runner = CliRunner()
    both = runner.invoke(main, ["experiment", "staleness", "--sim", "--live", "--latency",
                                PAPER])
    assert both.exit_code == 2 and "exactly one of --sim and --live" in both.output
    bad = runner.invoke(main, ["experiment", "staleness", "--sim", "--latency",
                               "W=exp:10,A=exp:1"])
    assert bad.exit_code == 2 and "missing leg(s) R, S" in bad.output
    missing = runner.invoke(main, ["experiment", "staleness", "--sim"])
    assert missing.exit_code == 2 and "--sim needs --latency" in missing.output
    live = runner.invoke(main, ["experiment", "staleness", "--live"])
    assert live.exit_code == 2 and "--live needs --node" in live.output


def test_predict_command(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, [
        "experiment", "predict", "--r", "1", "--w", "1", "--latency", PAPER,
        "--t", "0,65", "--k", "1,2", "--trials", "20000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["predicted"]["0"] == pytest.approx(0.41, abs=0.02)
    assert doc["predicted"]["65"] > 0.995
    assert doc["predicted_k"]["1"] < doc["predicted_k"]["2"]
    assert "C(N-W,R)/C(N,R) = 0.6667" in result.output


def test_plot_command_draws_a_png(tmp_path: Path) -> None:
    runs = []
    for r, w in ((1, 1), (2, 2)):
        doc = {"measured": {"0": 0.4, "10": 0.8}, "predicted": {"0": 0.42, "10": 0.79},
               "rmse": 0.01, "mode": "sim", "n": 3, "r": r, "w": w, "latency": PAPER,
               "predicted_curve": {"0": 0.42, "5": 0.7, "10": 0.79}}
        path = tmp_path / f"r{r}w{w}.json"
        path.write_text(json.dumps(doc))
        runs.append(str(path))
    png = tmp_path / "curves.png"
    result = CliRunner().invoke(main, ["experiment", "plot", *runs, "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the quorum receipt in /metrics --------------------------------------------------------


def test_metrics_count_stale_replies_per_read_quorum() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from ringkv.core.config import fast_test_config
    from ringkv.server.metrics import Metrics
    from ringkv.server.runtime import NodeRuntime

    runtime = NodeRuntime(fast_test_config("n1", http_port=18711, rpc_port=19711))
    try:
        metrics = Metrics(runtime)
        metrics.observe_receipt(1, 0)
        metrics.observe_receipt(2, 1)
        metrics.observe_receipt(2, 0)
        metrics.observe_receipt(3, 2)
        body, _ = metrics.render()
    finally:
        runtime.engine.close()
        runtime._executor.shutdown(wait=False)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body.decode())
               for s in f.samples}
    assert samples[("ringkv_read_stale_replies_count", (("r", "2"),))] == 2
    assert samples[("ringkv_read_stale_replies_sum", (("r", "2"),))] == 1
    assert samples[("ringkv_read_stale_replies_bucket", (("le", "0.0"), ("r", "2")))] == 1
    assert samples[("ringkv_read_stale_replies_sum", (("r", "3"),))] == 2
    assert samples[("ringkv_read_stale_replies_count", (("r", "1"),))] == 1
