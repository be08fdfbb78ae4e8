"""The hashed locks cover pyproject.toml: every requirement is pinned, within its range.

CI installs requirements/test.lock and the image requirements/image.lock; a requirement
added to pyproject.toml without `scripts/lock` would be installed unpinned (whatever
is newest that day), which is the drift the locks exist to stop.
"""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]  # type: ignore[no-any-return]


def _pins(lock: str) -> dict[str, list[tuple[str, str | None]]]:
    pins: dict[str, list[tuple[str, str | None]]] = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins.setdefault(canonicalize_name(m[1]), []).append((m[2], m[3]))
    return pins


def _requirements(extra: str | None) -> list[Requirement]:
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]  # type: ignore[attr-defined]
    if extra is not None:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]  # type: ignore[index]
    return reqs


@pytest.mark.parametrize(("lock", "extra"), [("test.lock", "test"), ("image.lock", None)])
def test_lock_pins_every_requirement_within_its_range(lock: str, extra: str | None) -> None:
    pins = _pins(lock)
    for req in _requirements(extra):
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/{lock}: run scripts/lock"
        versions = [version for version, _marker in pins[name]]
        assert any(req.specifier.contains(v, prereleases=True) for v in versions), (
            f"requirements/{lock} pins {req.name} at {versions}, outside {req.specifier}:"
            " run scripts/lock")


def test_every_pin_carries_a_hash() -> None:
    for lock in ("test.lock", "image.lock"):
        lines = (ROOT / "requirements" / lock).read_text().splitlines()
        for i, line in enumerate(lines):
            if PIN.match(line):
                assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], (lock, line)
