"""ruff over the whole tree and mypy (strict on the pure packages) as tests."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None and not (ROOT / ".venv").exists()
                    and run("ruff", "--version").returncode != 0, reason="ruff missing")
def test_ruff_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_clean() -> None:
    result = run("mypy", "ring", "storage", "coordinator", "gossip", "ringkv", "sim", "pbs")
    assert result.returncode == 0, result.stdout + result.stderr
