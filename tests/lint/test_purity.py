"""The pure core must not touch the event loop, sockets, the clock or threads."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE = ["ring", "storage", "coordinator", "gossip", "antientropy", "pbs", "ringkv/core"]
FORBIDDEN = {"asyncio", "aiohttp", "socket", "time", "threading", "uvloop", "selectors"}


def pure_files() -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for entry in PURE:
        path = ROOT / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_pure_modules_do_not_use_global_random() -> None:
    for path in pure_files():
        text = path.read_text()
        for call in ("random.random(", "random.randint(", "random.choice(", "random.shuffle("):
            assert call not in text, f"{path.name} uses the global RNG ({call})"
