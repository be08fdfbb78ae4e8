"""The monitoring that ships in monitoring/ uses only what a real node exports.

monitoring/rules.yml (recording rules, alerts) and monitoring/grafana/ringkv-dashboard.json
name `ringkv_*` series in PromQL. A metric renamed in ringkv/server/metrics.py but not
there would leave a panel empty and an alert silent, with no error anywhere. So a node
runs in this process with the real HTTP stack, takes a put and a get (the labelled
request histogram and the read receipts get their children), and every name the files
use is checked against its real `/metrics` body, under the suffix rules of the text
format prometheus-client writes and Prometheus stores:

    counter   X_total            (the `# TYPE` line names X_total; X alone is no series)
    histogram X_bucket, X_sum, X_count   (X alone is no series)
    gauge     X

Also checked: every recorded name (`level:metric:operation`) used is defined in
rules.yml; each `le="..."` matcher names a bucket the node writes; prometheus.yml scrapes
exactly the nodes of compose.yaml, whose `monitoring` profile mounts what it loads;
prometheus-tls.yml is the same job over https against the cluster CA, and
compose.tls.yaml's `monitoring` profile loads it with the CA its nodes' certificates
come from; the dashboard reads through its `${DS_PROMETHEUS}` variable. With promtool
installed (Debian's `prometheus` package): `promtool check config` of both
configurations (the TLS one also with its client-token lines uncommented), `check
rules`, the unit tests of monitoring/rules_test.yml, and every dashboard query parses
as PromQL. `tests/process/test_prometheus_tls_scrape.py` has a real Prometheus scrape a
node over HTTPS with that configuration.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.server.live import base_url, live_node

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "rules.yml"
PROMETHEUS_TLS = MONITORING / "prometheus-tls.yml"
# The lines of prometheus-tls.yml a cluster with client tokens uncomments.
_TOKEN_LINES = re.compile(r"^(\s*)# ((?:authorization:|  type: |  credentials_file: ).*)$",
                          re.M)
DASHBOARD = MONITORING / "grafana" / "ringkv-dashboard.json"
DS = "${DS_PROMETHEUS}"
PROMTOOL = shutil.which("promtool")

# What the dashboard must show (the contract's metrics among them).
DASHBOARD_MUST_USE = {
    "ringkv_member_up", "ringkv_requests_total", "ringkv_request_duration_seconds_bucket",
    "ringkv_hints_pending", "ringkv_hints_delivered_total", "ringkv_read_repairs_total",
    "ringkv_anti_entropy_keys_repaired_total", "ringkv_siblings_bucket",
    "ringkv_read_stale_replies_count",
}
ALERTS = {
    "RingkvNodeDown", "RingkvMemberSeenDown", "RingkvHintsPilingUp",
    "RingkvReadRepairsSpiking", "RingkvLatencyP99High", "RingkvErrorRatioHigh",
    "RingkvStorageFull",
}

_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")  # [5m], [$__rate_interval], [1h:1m]: no names inside
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(ringkv_[A-Za-z0-9_]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:\\.|[^"\\])*)"')


# ------------------------------------------------------------------ parsing


def metric_names(expr: str) -> set[str]:
    """The `ringkv_*` series and the recorded (colon) names a PromQL expression reads.

    Quoted label values and range brackets go first, so that neither a value nor a
    subquery's `5m:1m` passes for a name; what is left of a PromQL expression is names,
    functions, label names and keywords, and only ours start with `ringkv_` or hold `:`.
    """
    bare = _RANGE.sub("", _QUOTED.sub('""', expr))
    return {t for t in _TOKEN.findall(bare) if t.startswith("ringkv_") or ":" in t}


def exported_series(body: str) -> dict[str, str]:
    """Every series name a `/metrics` body gives Prometheus, with its family's type."""
    series: dict[str, str] = {}
    for line in body.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        name, kind = parts[2], parts[3]
        if kind == "counter":
            # Text format 0.0.4 names the family X_total, OpenMetrics X: the series is
            # X_total either way.
            series[name.removesuffix("_total") + "_total"] = kind
        elif kind in ("histogram", "gaugehistogram"):
            series.update({name + s: kind for s in ("_bucket", "_sum", "_count")})
        elif kind == "summary":
            series.update({name + s: kind for s in ("", "_sum", "_count")})
        else:
            series[name] = kind
    return series


def exported_samples(body: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, dict(s.labels))
            for family in text_string_to_metric_families(body) for s in family.samples]


def unexported(names: set[str], body: str) -> set[str]:
    """The `ringkv_*` names (recorded ones aside) that `body` does not export."""
    series = exported_series(body)
    return {n for n in names if ":" not in n and n not in series}


def rule_docs() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in rule_docs()]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _strings_under(node: Any, keys: tuple[str, ...]) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _strings_under(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings_under(item, keys)


def dashboard_exprs() -> list[str]:
    """Every panel query, and every variable query (label_values(...) reads a name too)."""
    doc = dashboard()
    exprs = list(_strings_under(doc["panels"], ("expr",)))
    exprs += [q for q in _strings_under(doc["templating"], ("query", "definition"))
              if q != "prometheus"]  # the data source variable's plugin type
    return exprs


def _as_rules(exprs: list[str]) -> str:
    """Dashboard queries as recording rules, Grafana's variables given concrete values,
    so that promtool parses them."""
    rules = []
    for i, expr in enumerate(exprs):
        concrete = (expr.replace("$__rate_interval", "1m").replace("$node", ".*")
                    .replace("$op", ".*"))
        if concrete.startswith("label_values("):
            concrete = concrete.split("(", 1)[1].split(",", 1)[0]
        rules.append({"record": f"dashboard:query:{i}", "expr": concrete})
    return str(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


# ------------------------------------------------------------------ a real node


@pytest.fixture(scope="module")
def metrics_body() -> str:
    async def go() -> str:
        # A bounded memory store exports its use and its limit, as LMDB does.
        async with live_node(storage="memory", max_memory=64 << 20) as runtime, \
                aiohttp.ClientSession() as http:
            url = base_url(runtime)
            async with http.put(f"{url}/kv/monitored", data=b"v") as resp:
                assert resp.status == 204, await resp.text()
            async with http.get(f"{url}/kv/monitored") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                return await resp.text()

    return asyncio.run(go())


def test_every_metric_the_rules_use_is_exported(metrics_body: str) -> None:
    used = set().union(*(metric_names(e) for e in rule_exprs()))
    assert {"ringkv_requests_total", "ringkv_request_duration_seconds_bucket",
            "ringkv_read_repairs_total", "ringkv_hints_pending"} <= used
    assert unexported(used, metrics_body) == set()


def test_every_metric_the_dashboard_uses_is_exported(metrics_body: str) -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert used >= DASHBOARD_MUST_USE
    assert unexported(used, metrics_body) == set()


def test_the_check_catches_a_renamed_metric_and_a_wrong_suffix(metrics_body: str) -> None:
    renamed = metrics_body.replace("ringkv_read_repairs_total", "ringkv_read_repaired_total")
    assert unexported({"ringkv_read_repairs_total"}, renamed) == {"ringkv_read_repairs_total"}
    # The suffixes follow the family's type: a gauge has no _total, a histogram no bare
    # series, a counter no bare series.
    wrong = {"ringkv_hints_pending_total", "ringkv_siblings", "ringkv_read_repairs",
             "ringkv_requests_total_bucket"}
    assert unexported(wrong, metrics_body) == wrong
    right = {"ringkv_hints_pending", "ringkv_siblings_bucket", "ringkv_siblings_count",
             "ringkv_read_repairs_total", "ringkv_request_duration_seconds_sum"}
    assert unexported(right, metrics_body) == set()
    # Names inside quoted label values or ranges are not names.
    assert metric_names('sum(rate(ringkv_x_total{job="ringkv_y"}[5m:1m])) by (op)') == {
        "ringkv_x_total"}


def test_recorded_names_are_defined_in_rules() -> None:
    recorded = {str(rule["record"]) for rule in rule_docs() if "record" in rule}
    assert {"op:ringkv_request_duration_seconds:p50_1m",
            "op:ringkv_request_duration_seconds:p99_1m", "op:ringkv_requests:rate1m",
            "node:ringkv_read_repairs:rate1m", "node:ringkv_hints_pending:sum"} <= recorded
    for expr in rule_exprs() + dashboard_exprs():
        for name in metric_names(expr):
            if ":" in name:
                assert name in recorded, f"{name} in {expr!r} is recorded by no rule"


def test_bucket_matchers_name_buckets_the_node_writes(metrics_body: str) -> None:
    # le="0.0", not le="0": prometheus-client writes bounds as floats, and a matcher
    # with the other spelling silently matches nothing.
    samples = exported_samples(metrics_body)
    checked = 0
    for expr in rule_exprs() + dashboard_exprs():
        for name, matchers in _SELECTOR.findall(expr):
            for label, op, value in _MATCHER.findall(matchers):
                if label == "le" and op == "=":
                    checked += 1
                    assert any(n == name and labels.get("le") == value
                               for n, labels in samples), f"{name}{{le={value!r}}}"
    assert checked, "the staleness panel reads the le=\"0.0\" bucket"


def test_alerts_have_a_severity_and_a_summary() -> None:
    alerts = {str(rule["alert"]): rule for rule in rule_docs() if "alert" in rule}
    assert set(alerts) >= ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_dashboard_reads_through_its_data_source_variable() -> None:
    doc = dashboard()
    assert 36 <= doc["schemaVersion"] <= 41
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DS, panel["title"]
            assert target["expr"].strip(), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
    # No two panels on the same cells.
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


def test_prometheus_scrapes_exactly_the_compose_nodes() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    nodes = {name for name, svc in services.items()
             if "RINGKV_NODE_ID" in (svc.get("environment") or {})}
    assert len(nodes) == 5
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ringkv"]
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    port = services["n1"]["environment"]["RINGKV_HTTP_PORT"]
    assert targets == {f"{n}:{port}" for n in nodes}
    assert job.get("metrics_path", "/metrics") == "/metrics"

    prom = services["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert prom["build"]["context"] == "monitoring"
    assert any(p.startswith("127.0.0.1:") and p.endswith(":9090") for p in prom["ports"])
    # The rule files prometheus.yml names (relative to it) are mounted beside it.
    mounts = {m.split(":")[1]: m.split(":")[0] for m in prom["volumes"] if m.startswith("./")}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./monitoring/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert mounts[f"/etc/prometheus/{rule_file}"] == f"./monitoring/{rule_file}"
    # The nodes' HTTP port is on a network the scraper shares with them.
    for node in nodes:
        assert set(prom["networks"]) & set(services[node]["networks"])


def with_client_token(text: str) -> str:
    """prometheus-tls.yml as for nodes with client tokens: its token lines uncommented."""
    return _TOKEN_LINES.sub(r"\1\2", text)


def _ringkv_job(config: dict[str, Any]) -> dict[str, Any]:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ringkv"]
    return dict(job)


def _merged_volumes(*services: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of a service's short-syntax mounts, the later files'
    overriding the earlier ones' at the same path, as Compose merges them."""
    mounts: dict[str, str] = {}
    for svc in services:
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            mounts[target] = source
    return mounts


def test_prometheus_tls_is_the_same_job_over_https_against_the_cluster_ca() -> None:
    plain = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    text = PROMETHEUS_TLS.read_text()
    tls = yaml.safe_load(text)
    job, plain_job = _ringkv_job(tls), _ringkv_job(plain)
    assert job.pop("scheme") == "https"
    tls_config = job.pop("tls_config")
    assert set(tls_config) == {"ca_file"}  # no insecure_skip_verify, no other name
    assert tls_config["ca_file"] == "/etc/prometheus/tls/ca.crt"
    # Everything else is prometheus.yml's: targets, node labels, rules, intervals.
    assert job == plain_job
    assert {k: v for k, v in tls.items() if k != "scrape_configs"} == {
        k: v for k, v in plain.items() if k != "scrape_configs"}
    # Shipped without a token (the compose cluster has no client tokens); the commented
    # lines give the job a read token from a file.
    assert "authorization" not in job
    token_job = _ringkv_job(yaml.safe_load(with_client_token(text)))
    assert token_job.pop("authorization") == {
        "type": "Bearer", "credentials_file": "/etc/prometheus/ringkv-token"}
    assert token_job == _ringkv_job(tls)


def test_the_tls_compose_monitoring_profile_loads_it_with_the_nodes_ca() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    override = yaml.safe_load((ROOT / "compose.tls.yaml").read_text())
    tls = yaml.safe_load(PROMETHEUS_TLS.read_text())
    prom = override["services"]["prometheus"]
    assert set(prom) == {"depends_on", "volumes"}  # profile, build, ports: compose.yaml's
    assert prom["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    mounts = _merged_volumes(compose["services"]["prometheus"], prom)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./monitoring/prometheus-tls.yml"
    for rule_file in tls["rule_files"]:
        assert mounts[f"/etc/prometheus/{rule_file}"] == f"./monitoring/{rule_file}"
    # The CA file it names is the `ca.crt` of the volume the nodes' certificates and CA
    # come from, mounted read-only.
    ca_file = Path(_ringkv_job(tls)["tls_config"]["ca_file"])
    (tls_mount,) = [m for m in prom["volumes"] if m.split(":")[1] == str(ca_file.parent)]
    assert tls_mount.split(":")[0] == "tls" and tls_mount.endswith(":ro")
    node_ca = override["services"]["n1"]["environment"]["RINGKV_TLS_CA"]
    assert Path(node_ca).name == ca_file.name
    node_mount = next(m for m in override["services"]["n1"]["volumes"]
                      if m.split(":")[1] == str(Path(node_ca).parent))
    assert node_mount.split(":")[0] == "tls"
    # Every target is a node of the TLS cluster, on the name its certificate holds (the
    # service name: `certs` issues each with hosts=[node, ...]).
    certs = override["services"]["certs"]
    issued = set(certs["environment"]["RINGKV_TLS_NODES"].split())
    assert "hosts=[node," in certs["command"][0]
    targets = {t for c in _ringkv_job(tls)["static_configs"] for t in c["targets"]}
    assert {t.split(":")[0] for t in targets} == issued


def _promtool(*args: str, cwd: Path = MONITORING) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    _promtool("check", "config", "prometheus.yml")
    _promtool("check", "rules", "rules.yml")


@needs_promtool
def test_promtool_accepts_the_tls_config_with_and_without_a_client_token(
        tmp_path: Path) -> None:
    _promtool("check", "config", "prometheus-tls.yml")
    # With the token lines: promtool wants the credentials file to exist, so the
    # configuration goes to a directory that has it (and the rules it loads).
    text = with_client_token(PROMETHEUS_TLS.read_text())
    assert text != PROMETHEUS_TLS.read_text()
    (tmp_path / "prometheus.yml").write_text(text.replace("/etc/prometheus/",
                                                          f"{tmp_path}/"))
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "ringkv-token").write_text("a-read-token-of-the-tokens-file\n")
    _promtool("check", "config", "prometheus.yml", cwd=tmp_path)


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    _promtool("test", "rules", "rules_test.yml")


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(_as_rules(dashboard_exprs()))
    _promtool("check", "rules", str(rules), cwd=tmp_path)
