"""Progress of a long command on stderr, shown only to someone watching.

Job: one helper for the commands that run long (`ringkv cluster leave` and `remove`
with `--wait`, `ringkv backup` and `restore`, `ringkv experiment staleness`): a status
line redrawn in place on stderr (rich, transient: it is gone when the command ends)
while stderr is a terminal, and nothing at all otherwise, so that logs, pipes and
scripts get only the command's own output. ``--progress`` / ``--no-progress``
(`progress_option`) force it on or off.

Invariants: a disabled `StatusLine` writes nothing, ever; an enabled one writes only to
its stream (stderr unless told otherwise), never to stdout, so ``--json`` documents on
stdout stay whole. The line is redrawn when `update` is called, not by a thread: what
appears follows the command's own polling.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.live import Live

__all__ = ["StatusLine", "duration", "progress_option", "show_progress"]

F = TypeVar("F", bound=Any)


def show_progress(flag: bool | None, stream: IO[str] | None = None) -> bool:
    """Whether to show progress: as `flag` says, else when `stream` (stderr) is a
    terminal."""
    if flag is not None:
        return flag
    target = sys.stderr if stream is None else stream
    isatty = getattr(target, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def progress_option(fn: F) -> F:
    """``--progress/--no-progress`` (the parameter ``progress``: True, False or None)."""
    result: F = click.option(
        "--progress/--no-progress",
        default=None,
        help="Show progress on stderr. [when stderr is a terminal]",
    )(fn)
    return result


def duration(seconds: float) -> str:
    """Seconds as a person reads them: ``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StatusLine:
    """A line of progress text, redrawn in place; a context manager.

    >>> with StatusLine(show_progress(None)) as line:     # doctest: +SKIP
    ...     line.update("3 of 8 ranges handed over, 12s")
    """

    __slots__ = ("_live", "_stream", "enabled", "last")

    def __init__(self, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.last = ""  # the text shown last (kept when disabled too: tests read it)
        self._stream = stream
        self._live: Live | None = None

    def __enter__(self) -> StatusLine:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            # Forced: the caller decided (a terminal, or --progress); rich's own guess
            # (FORCE_COLOR, TTY_COMPATIBLE) must not overrule it either way.
            console = (Console(stderr=True, force_terminal=True) if self._stream is None
                       else Console(file=self._stream, force_terminal=True))
            self._live = Live(Text(self.last), console=console, transient=True,
                              auto_refresh=False)
            self._live.start()
        return self

    def update(self, text: str) -> None:
        """Show `text` instead of the line shown so far."""
        self.last = text
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(text), refresh=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
