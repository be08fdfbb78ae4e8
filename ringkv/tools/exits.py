"""How a `ringkv` command ends: the documented exit codes and one line on stderr.

Client commands exit 0 on success, 1 when a key is not found, 2 on usage errors,
3 when a quorum was not reached (503), 4 on any other HTTP or connection error (and
when a `--wait` gives up). `serve` exits 2 on bad configuration. Every failure is
reported as a single readable line (``error: ...``), never as a traceback.

With ``--json``, a command built on `JsonCommand` reports its failures on stdout too,
as one JSON document, so that a script reads stdout alone whatever happens::

    {"error": "quorum not reached: 1 of 2 required replicas answered (...)",
     "kind": "quorum", "exit_code": 3, "status": 503, "acks": 1, "required": 2}

``error`` is the line stderr gets, ``exit_code`` the process's exit code, and ``kind``
one of ``usage``, ``quorum``, ``auth``, ``precondition_failed``, ``bad_request``,
``server``, ``transport``, ``timeout``, ``withdrawn`` or ``error``; other fields
(``status``, ``acks``, ``required``, ``etag``, ...) say more when they are known. A
success document never has an ``error`` field. Usage errors found while the command
line is parsed count too, as soon as ``--json`` is among the arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_QUORUM = 3
EXIT_ERROR = 4

_JSON_ERRORS = "ringkv.json_errors"  # ctx.meta: this command's failures go to stdout too


def print_json(doc: dict[str, Any]) -> None:
    """One JSON document on stdout (ASCII only: any terminal or pipe takes it)."""
    click.echo(json.dumps(doc, indent=2))


def json_errors_on() -> bool:
    """Whether the running command was asked for --json (through `JsonCommand`)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(_JSON_ERRORS))


def error_doc(message: str, code: int, kind: str, **details: object) -> dict[str, Any]:
    """The JSON document of a failure (see the module docstring)."""
    extra = {k: v for k, v in details.items() if v is not None}
    return {"error": message, "kind": kind, "exit_code": code, **extra}


def fail(message: str, code: int, kind: str = "error", **details: object) -> NoReturn:
    """Print ``error: <message>`` to stderr (and, under --json, its JSON document to
    stdout) and exit with `code`."""
    if json_errors_on():
        print_json(error_doc(message, code, kind, **details))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def client_errors() -> Iterator[None]:
    """Turn client exceptions into one readable line and the documented exit code."""
    from ringkv.client import (
        AuthError,
        BadRequestError,
        PreconditionFailedError,
        QuorumError,
        RingkvError,
        ServerError,
        TransportError,
    )

    try:
        yield
    except QuorumError as exc:
        if exc.acks is not None and exc.required is not None:
            fail(
                f"quorum not reached: {exc.acks} of {exc.required} required replicas"
                f" answered ({exc.message})",
                EXIT_QUORUM, "quorum", status=503, acks=exc.acks, required=exc.required,
            )
        fail(f"service unavailable: {exc.message}", EXIT_QUORUM, "quorum", status=503)
    except RingkvError as exc:
        kind, status = "error", None
        if isinstance(exc, AuthError):
            kind, status = "auth", exc.status
        elif isinstance(exc, PreconditionFailedError):
            kind, status = "precondition_failed", exc.status
        elif isinstance(exc, BadRequestError):
            kind, status = "bad_request", exc.status
        elif isinstance(exc, ServerError):
            kind, status = "server", exc.status
        elif isinstance(exc, TransportError):
            kind = "transport"
        fail(str(exc), EXIT_ERROR, kind, status=status)


def _asks_json(args: Sequence[str]) -> bool:
    """Whether a command line (not yet parsed) holds the --json flag."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


class JsonCommand(click.Command):
    """A click command whose ``--json`` (the parameter ``as_json``) covers failures too.

    Invoked with ``--json``, it marks its context so that `fail` prints the failure's
    JSON document on stdout; a `click.ClickException` (a usage error raised by the
    command's own checks, say) gets its document as well. A usage error found while
    the arguments are parsed, before there is a context to mark, gets one when
    ``--json`` is among the arguments. In every case stderr keeps its one readable
    line and the exit code is unchanged.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        wants_json = _asks_json(args)  # before parsing, which consumes `args`
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if wants_json:
                print_json(error_doc(exc.format_message(), exc.exit_code, "usage"))
            raise

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.params.get("as_json"):
            ctx.meta[_JSON_ERRORS] = True
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if ctx.meta.get(_JSON_ERRORS):
                kind = "usage" if isinstance(exc, click.UsageError) else "error"
                print_json(error_doc(exc.format_message(), exc.exit_code, kind))
            raise
