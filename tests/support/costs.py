"""Deterministic cost budgets: count the version codec and merge calls a request makes.

`count_costs(monkeypatch)` wraps the functions below wherever a loaded module holds
them (modules import them by name), and returns a Counter the wrappers feed:

    decode          `from_wire`, the validating decoder of received versions
    trusted_decode  `from_trusted_wire`, a record read back from the node's own disk
    encode          `to_wire`, versions put into their wire and disk form
    merge           `merge`, one pairwise merge of two states (`merge_all` is k of them)

Counts are of calls, never of time, so a budget holds on any machine.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from storage import versions

COUNTED: dict[str, Callable[..., Any]] = {
    "decode": versions.from_wire,
    "trusted_decode": versions.from_trusted_wire,
    "encode": versions.to_wire,
    "merge": versions.merge,
}


def _counting(name: str, fn: Callable[..., Any], counts: Counter[str]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return fn(*args, **kwargs)

    return counted


def count_costs(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, fn in COUNTED.items():
        wrapper = _counting(name, fn, counts)
        for module in list(sys.modules.values()):
            if module is not None and getattr(module, fn.__name__, None) is fn:
                monkeypatch.setattr(module, fn.__name__, wrapper)
    return counts
