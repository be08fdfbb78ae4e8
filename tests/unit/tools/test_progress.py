"""Progress on stderr only for someone watching: `ringkv.tools.progress`, the sweep bar
of `ringkv sim --seeds` and the trials bar of `ringkv experiment staleness`. A stream
that is not a terminal gets no progress at all; a (fake) terminal gets it."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

import sim.cli as sim_cli
from ringkv.tools import experiment
from ringkv.tools.progress import StatusLine, duration, show_progress
from sim.scenario import Scenario


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def plain(text: str) -> str:
    """`text` without its terminal control sequences (colours, cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_show_progress_follows_the_stream_unless_told() -> None:
    assert show_progress(None, FakeTerminal()) is True
    assert show_progress(None, Pipe()) is False
    assert show_progress(None, Closed()) is False
    assert show_progress(None, object()) is False  # type: ignore[arg-type]
    assert show_progress(True, Pipe()) is True  # --progress
    assert show_progress(False, FakeTerminal()) is False  # --no-progress


def test_show_progress_reads_stderr_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert show_progress(None) is True
    monkeypatch.setattr(sys, "stderr", Pipe())
    assert show_progress(None) is False


def test_status_line_disabled_writes_nothing() -> None:
    out = FakeTerminal()
    with StatusLine(False, out) as line:
        line.update("3 of 8 ranges")
        line.update("8 of 8 ranges")
    assert out.getvalue() == ""
    assert line.last == "8 of 8 ranges"


def test_status_line_on_a_terminal_redraws_in_place_then_goes() -> None:
    out = FakeTerminal()
    with StatusLine(True, out) as line:
        line.update("3 of 8 ranges")
        line.update("8 of 8 ranges")
    text = out.getvalue()
    assert text.index("3 of 8 ranges") < text.index("8 of 8 ranges")
    assert "\r\x1b[2K" in text  # the second line erased the first
    assert text.endswith("\x1b[2K")  # and the last one is gone at the end
    assert "\n3 of 8" not in text  # never a new line per update


def test_status_line_draws_to_stderr_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    err, out = FakeTerminal(), FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    with StatusLine(True) as line:
        line.update("working")
    assert "working" in err.getvalue() and out.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.9, "42s"), (185, "3m05s"),
                                           (3725, "1h02m"), (-3, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# ------------------------------------------------------------------- ringkv sim --seeds


def fake_sweep(base: Scenario, seeds: list[int], jobs: int = 2,
               on_result: Any = None) -> list[Any]:
    """Every seed "runs" at once; seed 2 fails."""
    results = []
    for seed in seeds:
        ok = seed != 2
        timed = SimpleNamespace(result=SimpleNamespace(
            seed=seed, ok=ok, failures=[] if ok else ["lost write k1\nmore"]), wall=0.1)
        results.append(timed)
        on_result(timed)
    return results


def sweep_stderr(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO,
                 quiet: bool = False) -> str:
    monkeypatch.setattr(sim_cli, "sweep", fake_sweep)
    monkeypatch.setattr(sys, "stderr", stream)
    results, _ = sim_cli.sweep_with_progress(Scenario(), [1, 2, 3], 1, quiet)
    assert [t.result.seed for t in results] == [1, 2, 3]
    return plain(stream.getvalue())


def test_sim_sweep_shows_progress_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    text = sweep_stderr(monkeypatch, FakeTerminal())
    assert "3/3" in text and "failed 1" in text  # seeds done of total, failures so far
    assert "seed 2 FAILED" in text


def test_sim_sweep_prints_no_progress_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    text = sweep_stderr(monkeypatch, Pipe())
    assert "3/3" not in text and "failed 1" not in text and "━" not in text
    assert "seed 2 FAILED" in text  # the failures are output, not progress
    quiet = sweep_stderr(monkeypatch, FakeTerminal(), quiet=True)
    assert "3/3" not in quiet


# ------------------------------------------------------- ringkv experiment staleness


def trials_bar(monkeypatch: pytest.MonkeyPatch, stderr: io.StringIO) -> str:
    monkeypatch.setattr(sys, "stderr", stderr)
    out = FakeTerminal()
    console = Console(file=out, force_terminal=True, width=120)
    with experiment._progress(console, 4, "simulated trials") as advance:
        advance(3)
        advance(1)
    return plain(out.getvalue())


def test_experiment_trials_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    text = trials_bar(monkeypatch, FakeTerminal())
    assert "simulated trials" in text and "4/4" in text and "eta" in text


def test_experiment_trials_bar_not_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert trials_bar(monkeypatch, Pipe()) == ""
