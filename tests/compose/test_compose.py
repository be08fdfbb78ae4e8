"""The Docker Compose fault test (`scripts/compose-test`) as a pytest test.

Slow (it builds images and runs five containers for about two minutes) and skipped
unless a Docker engine and Compose answer here. `.ci/run` runs the script itself right
after pytest, so it sets RINGKV_COMPOSE_TEST=0 to skip this wrapper there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ok(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _docker_usable() -> str | None:
    """Why the test cannot run here, or None when it can."""
    if os.environ.get("RINGKV_COMPOSE_TEST") == "0":
        return "RINGKV_COMPOSE_TEST=0"
    if shutil.which("docker") is None:
        return "no docker command"
    if not _ok("docker", "info"):
        return "no Docker engine answers"
    if not (_ok("docker", "compose", "version") or _ok("docker-compose", "version")):
        return "no docker compose"
    return None


pytestmark = pytest.mark.slow


@pytest.mark.timeout(1800)
def test_compose_cluster_loses_no_acknowledged_write(tmp_path: Path) -> None:
    why = _docker_usable()
    if why:
        pytest.skip(why)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compose-test"), "--json", str(report)],
        capture_output=True, text=True, timeout=1700, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["lost"] == 0, doc
    assert doc["acknowledged"] > 0, doc
    assert not doc["failures"], doc["failures"]
