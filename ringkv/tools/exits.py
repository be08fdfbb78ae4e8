"""How a `ringkv` command ends: the documented exit codes and one line on stderr.

Client commands exit 0 on success, 1 when a key is not found, 2 on usage errors,
3 when a quorum was not reached (503), 4 on any other HTTP or connection error.
`serve` exits 2 on bad configuration. Every failure is reported as a single readable
line (``error: ...``), never as a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_QUORUM = 3
EXIT_ERROR = 4


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def client_errors() -> Iterator[None]:
    """Turn client exceptions into one readable line and the documented exit code."""
    from ringkv.client import QuorumError, RingkvError

    try:
        yield
    except QuorumError as exc:
        if exc.acks is not None and exc.required is not None:
            fail(
                f"quorum not reached: {exc.acks} of {exc.required} required replicas"
                f" answered ({exc.message})",
                EXIT_QUORUM,
            )
        fail(f"service unavailable: {exc.message}", EXIT_QUORUM)
    except RingkvError as exc:
        fail(str(exc), EXIT_ERROR)
