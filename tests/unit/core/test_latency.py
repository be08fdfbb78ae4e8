"""Latency specs (pbs.distributions), the injector (ringkv.core.latency), its switches
(ringkv.core.config, `ringkv serve`), and where it acts (runtime, simulated network)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coordinator.effects import Send
from coordinator.messages import ReplicaGet, ReplicaGetReply, ReplicaPut, ReplicaPutAck
from gossip.membership import Member
from pbs.distributions import LatencySpecError, parse_distribution, parse_legs
from ringkv.core.config import ConfigError, NodeConfig, fast_test_config
from ringkv.core.config_loader import load_config
from ringkv.core.join_wire import JoinRequest
from ringkv.core.latency import LatencyInjector
from ringkv.tools.cli import main
from sim.network import Network, NetworkProfile
from storage.versions import EMPTY

SPEC = "W=exp:10,A=exp:1,R=exp:1,S=exp:1"
DISTINCT = "W=const:4,A=const:3,R=const:2,S=const:1"


# --- specs ---------------------------------------------------------------------------


_NOT_A_LEG = JoinRequest(Member("n9", "h:1", "h:2", (), "joining", 1, 1), 8)  # not a WARS leg


def test_the_issue_spec_parses_and_round_trips() -> None:
    legs = parse_legs(SPEC)
    assert legs.w.kind == "exp" and legs.w.params == (10.0,)
    assert legs.a.mean == legs.r.mean == legs.s.mean == 1.0
    assert parse_legs(legs.describe()) == legs
    assert legs.describe() == SPEC
    # any order, any case, spaces
    assert parse_legs(" s=exp:1, r=exp:1 ,A=exp:1,w=exp:10") == legs


@pytest.mark.parametrize(("spec", "check"), [
    ("exp:2", lambda xs: abs(sum(xs) / len(xs) - 2.0) < 0.15 and min(xs) >= 0),
    ("pareto:1.5:3", lambda xs: min(xs) >= 1.5 and abs(sum(xs) / len(xs) - 2.25) < 0.2),
    ("const:7", lambda xs: set(xs) == {7.0}),
    ("uniform:1:3", lambda xs: min(xs) >= 1 and max(xs) <= 3),
])
def test_distributions_draw_what_they_say(spec: str, check: Any) -> None:
    dist = parse_distribution(spec)
    rng = random.Random(1)
    assert check([dist.draw(rng) for _ in range(4000)])
    assert parse_distribution(dist.describe()) == dist


def test_empirical_list_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("# recorded W delays, ms\n1.5, 2.5\n3.5\n")
    dist = parse_distribution(f"emp:{path}")
    assert dist.samples == (1.5, 2.5, 3.5)
    assert dist.mean == pytest.approx(2.5)
    rng = random.Random(2)
    assert {dist.draw(rng) for _ in range(200)} == {1.5, 2.5, 3.5}
    legs = parse_legs(f"W=file:{path},A=const:1,R=const:1,S=const:1")
    assert legs.w.samples == dist.samples


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty latency spec"),
    ("W=exp:10,A=exp:1,R=exp:1", r"missing leg\(s\) S"),
    ("W=exp:10,A=exp:1,R=exp:1,S=exp:1,X=exp:1", "unknown leg 'X'"),
    ("W=exp:10,W=exp:1,R=exp:1,S=exp:1", "leg W given twice"),
    ("W:exp:10,A=exp:1,R=exp:1,S=exp:1", "expected LEG=DISTRIBUTION"),
    ("W=gauss:10,A=exp:1,R=exp:1,S=exp:1", "expected exp:MEAN"),
    ("W=exp,A=exp:1,R=exp:1,S=exp:1", "expected exp:MEAN"),
    ("W=exp:ten,A=exp:1,R=exp:1,S=exp:1", "the mean must be a number"),
    ("W=exp:-1,A=exp:1,R=exp:1,S=exp:1", "the mean must be > 0"),
    ("W=exp:inf,A=exp:1,R=exp:1,S=exp:1", "must be finite"),
    ("W=pareto:1,A=exp:1,R=exp:1,S=exp:1", "pareto takes 2 parameter"),
    ("W=pareto:1:0,A=exp:1,R=exp:1,S=exp:1", "xm and alpha must be > 0"),
    ("W=const:-2,A=exp:1,R=exp:1,S=exp:1", "cannot be negative"),
    ("W=uniform:3:1,A=exp:1,R=exp:1,S=exp:1", "lo <= hi"),
    ("W=emp:/nonexistent/file,A=exp:1,R=exp:1,S=exp:1", "cannot read it"),
])
def test_bad_specs_are_refused_with_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(LatencySpecError, match=message):
        parse_legs(spec)


def test_an_empty_or_negative_empirical_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(LatencySpecError, match="holds no samples"):
        parse_distribution(f"emp:{empty}")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 -2")
    with pytest.raises(LatencySpecError, match="negative sample"):
        parse_distribution(f"emp:{bad}")


# --- the injector -----------------------------------------------------------------------


def test_each_message_type_is_its_wars_leg() -> None:
    inj = LatencyInjector(parse_legs(DISTINCT), random.Random(1))
    assert inj.delay_ms(ReplicaPut(1, b"k", EMPTY, None)) == 4.0
    assert inj.delay_ms(ReplicaPutAck(1)) == 3.0
    assert inj.delay_ms(ReplicaGet(1, b"k")) == 2.0
    assert inj.delay_ms(ReplicaGetReply(1, None)) == 1.0
    assert inj.delay_ms(_NOT_A_LEG) == 0.0  # not a WARS leg
    assert inj.delay(ReplicaGet(2, b"k")) == 0.002  # seconds
    snap = inj.snapshot()
    assert snap["spec"] == DISTINCT
    assert snap["legs"]["R"] == {"count": 2, "mean_ms": 2.0, "samples_ms": [2.0, 2.0]}
    assert snap["legs"]["W"]["count"] == 1
    assert "samples_ms" not in inj.snapshot(with_samples=False)["legs"]["W"]


def test_injector_draws_only_from_its_rng() -> None:
    def draws(seed: int) -> list[float]:
        inj = LatencyInjector(parse_legs(SPEC), random.Random(seed))
        return [inj.delay_ms(ReplicaPut(1, b"k", EMPTY, None)) for _ in range(5)]

    assert draws(3) == draws(3) != draws(4)


# --- switches: impossible to enable by accident ---------------------------------------------


def test_injection_is_off_by_default() -> None:
    config = NodeConfig(node_id="n1")
    assert config.inject_latency is None and config.experimental is False


def test_injection_refuses_to_turn_on_without_the_experimental_switch() -> None:
    with pytest.raises(ConfigError, match="--inject-latency: .*needs --experimental"):
        load_config({"node_id": "n1", "inject_latency": SPEC}, env={})
    with pytest.raises(ConfigError, match="RINGKV_INJECT_LATENCY: .*RINGKV_EXPERIMENTAL=1"):
        load_config({"node_id": "n1"}, env={"RINGKV_INJECT_LATENCY": SPEC})
    with pytest.raises(ConfigError, match="needs --experimental"):
        NodeConfig(node_id="n1", inject_latency=SPEC)
    with pytest.raises(ConfigError, match="needs --experimental"):
        load_config({"node_id": "n1", "inject_latency": SPEC},
                    env={"RINGKV_EXPERIMENTAL": "0"})


def test_injection_turns_on_with_both_switches() -> None:
    a = load_config({"node_id": "n1", "inject_latency": SPEC, "experimental": True}, env={})
    b = load_config({"node_id": "n1", "inject_latency": SPEC},
                    env={"RINGKV_EXPERIMENTAL": "1"})
    assert a == b and a.inject_latency == SPEC and a.experimental
    # and it survives the round trip through `ringkv serve` arguments (a flag)
    args = a.to_args()
    assert "--experimental" in args and args[args.index("--inject-latency") + 1] == SPEC


def test_a_bad_spec_or_switch_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="--inject-latency: .*missing leg"):
        load_config({"node_id": "n1", "inject_latency": "W=exp:1", "experimental": True},
                    env={})
    with pytest.raises(ConfigError, match="RINGKV_EXPERIMENTAL: expected 1/0"):
        load_config({"node_id": "n1"}, env={"RINGKV_EXPERIMENTAL": "maybe"})


def test_serve_refuses_injection_without_experimental() -> None:
    result = CliRunner().invoke(main, ["serve", "--node-id", "n1", "--inject-latency", SPEC],
                                env={"RINGKV_EXPERIMENTAL": ""})
    assert result.exit_code == 2
    assert "bad setting --inject-latency" in result.output
    assert "--experimental" in result.output


# --- where it acts ---------------------------------------------------------------------------


class _Loop:
    def __init__(self) -> None:
        self.later: list[tuple[float, Any, tuple[Any, ...]]] = []
        self.soon: list[Any] = []

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append((delay, fn, args))

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.soon.append((fn, args))


def test_runtime_holds_a_send_back_by_its_injected_delay() -> None:
    from ringkv.server.runtime import NodeRuntime

    config = fast_test_config("n1", http_port=18701, rpc_port=19701, inject_latency=DISTINCT,
                              experimental=True)
    runtime = NodeRuntime(config)
    try:
        loop = _Loop()
        runtime._loop = loop  # type: ignore[assignment]
        runtime._do(Send("n1", ReplicaGet(1, b"k")), {})
        assert loop.soon == [] and len(loop.later) == 1
        delay, fn, args = loop.later[0]
        assert delay == pytest.approx(0.002)
        fn(*args)  # when the delay is over the message goes, undelayed this time
        assert len(loop.later) == 1 and len(loop.soon) == 1
        runtime._do(Send("n1", _NOT_A_LEG), {})  # not a leg: at once
        assert len(loop.soon) == 2
    finally:
        runtime.engine.close()
        runtime._executor.shutdown(wait=False)


def test_runtime_without_injection_sends_at_once() -> None:
    from ringkv.server.runtime import NodeRuntime

    runtime = NodeRuntime(fast_test_config("n1", http_port=18702, rpc_port=19702))
    try:
        assert runtime.injector is None
        loop = _Loop()
        runtime._loop = loop  # type: ignore[assignment]
        runtime._do(Send("n1", ReplicaGet(1, b"k")), {})
        assert loop.later == [] and len(loop.soon) == 1
    finally:
        runtime.engine.close()
        runtime._executor.shutdown(wait=False)


def test_simulated_network_adds_the_injected_delay_by_message_type() -> None:
    profile = NetworkProfile(latency="uniform", floor=(0.001, 0.001), scale=(0.0, 0.0))
    net = Network(random.Random(1), ["a", "b"], profile)
    net.reorder = True
    assert net.arrivals("a", "b", 10.0, ReplicaGet(1, b"k")) == [pytest.approx(10.001)]
    inj = LatencyInjector(parse_legs(DISTINCT), random.Random(1))
    net.inject = inj.delay
    assert net.arrivals("a", "b", 10.0, ReplicaGet(1, b"k")) == [pytest.approx(10.003)]
    assert net.arrivals("a", "b", 10.0, _NOT_A_LEG) == [pytest.approx(10.001)]
    assert net.local_delay(ReplicaPutAck(1)) == pytest.approx(0.003)
