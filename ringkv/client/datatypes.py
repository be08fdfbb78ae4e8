"""Counters and sets (contract 5) as pure functions: requests built, answers parsed.

Job
---
The convergent data types of the HTTP API, in the shape of ``ringkv.client.protocol``:
``build_*`` make an ``HttpRequest`` for ``/counters/{key}`` and ``/sets/{key}`` (or
``/buckets/{bucket}/...``), ``parse_*`` read the answer or raise the ``RingkvError`` it
stands for. `Client` and `AsyncClient` only carry them.

* A counter increment is ``POST /counters/{key}`` with ``{"increment": n}`` (n a non-zero
  integer, |n| < 2**53) and, when given, an ``Idempotency-Key`` header (1-128 printable
  ASCII characters): the node applies a key at most once, so the request may be sent
  again after a failure (``Resend.ANY_FAILURE``); without one it may not.
* A set update is ``POST /sets/{key}`` with ``{"add": [...], "remove": [...],
  "context": ...}``. A remove deletes only the adds its context observed, so removing
  needs the context of a read (`SetResult.context`); `observed` picks, from the
  elements asked to be removed, those a read actually saw.
* Reads never answer 300: a counter is one number, a set one sorted list.

A 413 to an update is a `LimitExceededError` (a bound of the data type: elements a set
may hold, elements one update may name, bytes a key's state may take).

Invariants: elements are ``str`` of 1-1024 UTF-8 bytes; anything else, an empty
update, or a remove without a context raises ``TypeError`` / ``ValueError`` before
anything is sent. A 404 is "never written": `parse_counter` gives None and
`parse_smembers` a `SetResult` with ``found`` False, as `parse_get` gives an empty
`GetResult` (a 404 is an answer, not an error).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ringkv.client.errors import ServerError, datatype_error_for, error_for
from ringkv.client.failover import Resend
from ringkv.client.protocol import (
    JSON_HEADERS,
    HttpRequest,
    HttpResponse,
    Quorum,
    header_value,
    json_body,
    key_route,
    parse_object,
    query,
    read_request,
    resource_path,
)

__all__ = [
    "MAX_ELEMENT_BYTES",
    "MAX_INCREMENT",
    "SetResult",
    "build_counter",
    "build_incr",
    "build_set_update",
    "build_smembers",
    "check_idempotency_key",
    "counter_path",
    "observed",
    "parse_counter",
    "parse_incr",
    "parse_set_update",
    "parse_smembers",
    "set_path",
]

MAX_INCREMENT = 2**53  # |n| must stay below it: every JSON reader holds it exactly
MAX_ELEMENT_BYTES = 1024
MAX_IDEMPOTENCY_KEY = 128


@dataclass(frozen=True)
class SetResult:
    """What a set read found: its elements (sorted) and the context to remove with."""

    elements: list[str] = field(default_factory=list)
    context: str | None = None  # None only when the set was never written
    found: bool = False


def counter_path(key: str | bytes, bucket: str | None = None) -> str:
    return resource_path("counters", key, bucket)


def set_path(key: str | bytes, bucket: str | None = None) -> str:
    return resource_path("sets", key, bucket)


# ------------------------------------------------------------------------------ counters


def check_idempotency_key(value: str) -> str:
    """Validate an ``Idempotency-Key``: 1-128 printable ASCII characters."""
    header_value("idempotency_key", value)
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return value


def build_incr(
    key: str | bytes,
    amount: int = 1,
    idempotency_key: str | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    """Add `amount` (negative to subtract) to a counter. With an idempotency key the
    request may be sent again (the node applies the key once); without one it may not."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount must be an int, not {type(amount).__name__}")
    if amount == 0 or abs(amount) >= MAX_INCREMENT:
        raise ValueError(f"amount must be a non-zero integer with |amount| < 2**53, got {amount}")
    params, transport_timeout = query(("w", w), timeout)
    headers = list(JSON_HEADERS)
    resend = Resend.UNDELIVERED
    if idempotency_key is not None:
        headers.append(("Idempotency-Key", check_idempotency_key(idempotency_key)))
        resend = Resend.ANY_FAILURE
    return HttpRequest(
        "POST",
        counter_path(key, bucket),
        tuple(params),
        tuple(headers),
        json_body({"increment": amount}),
        transport_timeout,
        resend,
        route=key_route("counter", key, bucket),
    )


def parse_incr(resp: HttpResponse) -> None:
    if resp.status not in (200, 201, 204):
        raise datatype_error_for(resp)


def build_counter(
    key: str | bytes,
    r: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    return read_request(counter_path(key, bucket), r, timeout, key_route("counter", key, bucket))


def parse_counter(resp: HttpResponse) -> int | None:
    """The counter's value; None when it was never incremented (404)."""
    if resp.status == 404:
        return None
    doc = parse_object(resp) if 200 <= resp.status < 300 else None
    if doc is None:
        raise error_for(resp)
    value = doc.get("value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServerError(resp.status, "counter answer without an integer value")
    return value


# ---------------------------------------------------------------------------------- sets


def elements_of(name: str, elements: Iterable[str]) -> list[str]:
    """Validate the elements of an update: strings of 1-1024 UTF-8 bytes."""
    if isinstance(elements, str | bytes):
        raise TypeError(f"{name} must be a collection of strings, not a single value")
    out: list[str] = []
    for element in elements:
        if not isinstance(element, str):
            raise TypeError(f"set elements must be str, not {type(element).__name__}")
        try:
            size = len(element.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"set element {element!r} is not valid UTF-8 text") from None
        if not 1 <= size <= MAX_ELEMENT_BYTES:
            raise ValueError(f"set elements must be 1 to {MAX_ELEMENT_BYTES} bytes, got {size}")
        out.append(element)
    return out


def build_set_update(
    key: str | bytes,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    context: str | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    """Add and remove elements in one update. Removing needs `context`, from a read:
    only the adds it observed are removed (an add it did not see survives)."""
    adds, removes = elements_of("add", add), elements_of("remove", remove)
    if not adds and not removes:
        raise ValueError("a set update needs elements to add or to remove")
    if removes and not context:
        raise ValueError(
            "removing needs the context of a read of the set (smembers): a remove deletes"
            " only the adds its context observed"
        )
    doc: dict[str, object] = {}
    if adds:
        doc["add"] = adds
    if removes:
        doc["remove"] = removes
    if context:
        doc["context"] = header_value("context", context)
    params, transport_timeout = query(("w", w), timeout)
    return HttpRequest(
        "POST",
        set_path(key, bucket),
        tuple(params),
        JSON_HEADERS,
        json_body(doc),
        transport_timeout,
        # An add applied twice leaves the element present once; a remove deletes the
        # adds its context names however often it is applied: safe to send again.
        Resend.ANY_FAILURE,
        route=key_route("set", key, bucket),
    )


# A set edit is answered like an increment: 204, or a data-type error.
parse_set_update = parse_incr


def build_smembers(
    key: str | bytes,
    r: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    return read_request(set_path(key, bucket), r, timeout, key_route("set", key, bucket))


def parse_smembers(resp: HttpResponse) -> SetResult:
    """The set's elements and context; ``found`` False when never written (404)."""
    if resp.status == 404:
        return SetResult()
    doc = parse_object(resp) if 200 <= resp.status < 300 else None
    if doc is None:
        raise error_for(resp)
    elements, context = doc.get("value"), doc.get("context")
    if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
        raise ServerError(resp.status, "set answer without a list of string elements")
    if not isinstance(context, str) or not context:
        raise ServerError(resp.status, "set answer without a context")
    return SetResult(list(elements), context, True)


def observed(elements: Iterable[str], seen: SetResult) -> list[str]:
    """The elements (in the order asked, once each) that the read `seen` found: the
    only ones a remove with its context can delete."""
    members = set(seen.elements)
    out: list[str] = []
    for element in elements:
        if element in members:
            members.discard(element)  # once each
            out.append(element)
    return out
