"""A real Prometheus scrapes a real node serving HTTPS with client tokens, configured by
monitoring/prometheus-tls.yml.

promtool checks the configuration's syntax only: not that a CA verifies a node, nor
that a token gets past the node. So one `ringkv serve` process (`--http-tls on`, a
certificate of a CA made with `ringkv.tools.certs`, `--tokens-file`) is scraped by
Debian's `prometheus` with the file's `ringkv` job as shipped but for what names this
machine: the paths under /etc/prometheus/ moved to the test's directory, the target
the node's loopback address, a one-second interval. Three jobs, one node:

- the job with its client-token lines uncommented and a read token in the file: up,
  and the node's series are stored;
- the same job as shipped, without a token: down, the node answered 401;
- prometheus.yml's plain-HTTP job: down, a TLS port does not speak plain HTTP.

Skipped, saying why, when Prometheus is not installed (Debian: ``apt-get install
prometheus``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from ringkv.tools.certs import init_ca, issue
from tests.support.procs import HOST, Cluster, free_ports, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PROMETHEUS = shutil.which("prometheus")
READ_TOKEN = "prometheus-read-token-0123456789abcdef"
ADMIN_TOKEN = "prometheus-admin-token-0123456789abcdef"
SCRAPED_WITHIN = 30.0  # seconds for Prometheus to start and scrape every job once
# The lines of prometheus-tls.yml a cluster with client tokens uncomments.
_TOKEN_LINES = re.compile(r"^(\s*)# ((?:authorization:|  type: |  credentials_file: ).*)$",
                          re.M)


def _job(config: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ringkv"]
    return {**job, "job_name": name}


def scrape_config(etc: Path, target: str) -> dict[str, Any]:
    """The three jobs of the module docstring, as Prometheus on this machine runs them."""
    shipped = (MONITORING / "prometheus-tls.yml").read_text()
    with_token = _TOKEN_LINES.sub(r"\1\2", shipped)
    assert with_token != shipped, "prometheus-tls.yml has no client-token lines"
    tls = yaml.safe_load(shipped.replace("/etc/prometheus/", f"{etc}/"))
    jobs = [_job(yaml.safe_load(with_token.replace("/etc/prometheus/", f"{etc}/")),
                 "ringkv"),
            _job(tls, "ringkv-no-token"),
            _job(yaml.safe_load((MONITORING / "prometheus.yml").read_text()), "ringkv-http")]
    assert "authorization" in jobs[0] and "authorization" not in jobs[1]
    assert jobs[2].get("scheme", "http") == "http"
    for job in jobs:
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
    return {"global": tls["global"], "scrape_configs": jobs}


@contextlib.contextmanager
def prometheus(binary: str, config: Path, data: Path, log: Path) -> Iterator[str]:
    """Prometheus on a free loopback port, its base URL; killed on the way out."""
    (port,) = free_ports(1)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address={HOST}:{port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _targets(base: str) -> dict[str, dict[str, Any]] | None:
    """job -> its one active target, once every job has been scraped at least once."""
    try:
        resp = httpx.get(f"{base}/api/v1/targets", params={"state": "active"}, timeout=2)
    except httpx.HTTPError:
        return None  # not listening yet
    if resp.status_code != 200:
        return None
    targets = {t["labels"]["job"]: t for t in resp.json()["data"]["activeTargets"]}
    scraped = len(targets) == 3 and all(t["health"] != "unknown" for t in targets.values())
    return targets if scraped else None


def test_prometheus_scrapes_a_tls_node_with_a_read_token(make_cluster: MakeCluster,
                                                         tmp_path: Path) -> None:
    if PROMETHEUS is None:
        pytest.skip("Prometheus not installed (Debian: apt-get install prometheus); this"
                    " test runs a real one")
    pki = tmp_path / "pki"
    init_ca(pki)
    crt, key = issue(pki, "n1")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{READ_TOKEN} read\n{ADMIN_TOKEN} admin\n")
    cluster = make_cluster(size=1, start=False, extra_args=(
        "--n", "1", "--r", "1", "--w", "1", "--tokens-file", str(tokens),
        "--tls-ca", str(pki / "ca.crt"), "--tls-cert", str(crt), "--tls-key", str(key),
        "--http-tls", "on"))
    # The harness's own requests (health, cluster view, probes) check the node's
    # certificate and carry an admin token.
    node = cluster.nodes[0]
    node.verify = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    node.bearer = ADMIN_TOKEN
    cluster.start()
    assert node.put("scraped", b"v").status_code == 204  # a request for the metrics

    # /etc/prometheus of the container, here: the CA and the token file the job names.
    etc = tmp_path / "etc-prometheus"
    (etc / "tls").mkdir(parents=True)
    shutil.copyfile(pki / "ca.crt", etc / "tls" / "ca.crt")
    (etc / "ringkv-token").write_text(READ_TOKEN + "\n")
    config = etc / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(etc, f"{HOST}:{node.http_port}")))
    log = tmp_path / "prometheus.log"
    with prometheus(PROMETHEUS, config, tmp_path / "prometheus-data", log) as base:
        try:
            targets = wait_until(lambda: _targets(base), SCRAPED_WITHIN,
                                 "Prometheus to scrape every job once")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-3000:]}") from None
        assert targets is not None
        health = {job: (t["health"], t["lastError"]) for job, t in targets.items()}
        assert health["ringkv"] == ("up", ""), health
        assert targets["ringkv"]["scrapeUrl"].startswith("https://"), targets["ringkv"]
        assert health["ringkv-no-token"][0] == "down", health
        assert "401" in health["ringkv-no-token"][1], health
        assert health["ringkv-http"][0] == "down", health
        # What the token's scrapes stored: the node's own series, labelled by the job.
        resp = httpx.get(f"{base}/api/v1/query", timeout=5, params={
            "query": 'sum(ringkv_requests_total{job="ringkv", op="put"})'})
        assert resp.status_code == 200, resp.text
        [sample] = resp.json()["data"]["result"]
        assert float(sample["value"][1]) >= 1
    assert READ_TOKEN not in node.log_text()
