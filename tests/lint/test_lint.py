"""ruff over the whole tree and mypy (strict on the pure packages) as tests."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def test_import_layers() -> None:
    """The layer, independence and no-cycle contracts of pyproject.toml."""
    lint_imports = pathlib.Path(sys.executable).parent / "lint-imports"
    command = [str(lint_imports)] if lint_imports.exists() else ["lint-imports"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

