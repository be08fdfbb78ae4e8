"""The errors of the ringkv client, and which HTTP answer stands for which.

Job: one hierarchy of exceptions for every way a request can fail, and `error_for`,
the pure mapping from an unexpected answer to its exception. ``ringkv.client`` and
``ringkv.client.protocol`` re-export every name; import them from there.

The hierarchy::

    RingkvError
    +-- QuorumError              503: fewer replicas than required answered in time
    +-- BadRequestError          other 4xx: refused, nothing changed
    |   +-- AuthError            401 / 403: no token, a wrong one, or not allowed
    |   +-- PreconditionFailedError  412: If-Match / If-None-Match did not hold
    |   +-- TooManySiblingsError 409 naming `siblings` and `limit`
    |   +-- RecordTooLargeError  413 naming `size` (bytes) and `limit`
    |   +-- LimitExceededError   413 to a counter or set update: a data type's bound
    +-- ServerError              anything else (5xx but 503, malformed answers)
    |   +-- StorageFullError     507
    +-- TransportError           the node could not be reached or did not answer in time
    +-- ConflictError            `update` found siblings and was given no `merge`

Invariants: `error_for` never raises; it reads at most the JSON object of the body
(``{"error": ..., <extra fields>}``), falls back to the body's text (first 300
characters) or the status's reason, and ignores extra fields of the wrong type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "LimitExceededError",
    "PreconditionFailedError",
    "QuorumError",
    "RecordTooLargeError",
    "RingkvError",
    "ServerError",
    "StorageFullError",
    "TooManySiblingsError",
    "TransportError",
    "datatype_error_for",
    "decode_json",
    "error_for",
]


class HttpResponse(Protocol):
    """What `error_for` reads of an answer (``ringkv.client.protocol.HttpResponse``)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class RingkvError(Exception):
    """Base class of every error raised by this client."""


class QuorumError(RingkvError):
    """503: fewer than the required replicas answered in time (the write may still exist)."""

    status = 503

    def __init__(self, acks: int | None, required: int | None, message: str = "") -> None:
        self.acks = acks
        self.required = required
        self.message = message or "quorum not reached"
        detail = ""
        if acks is not None and required is not None:
            detail = f" ({acks} of {required} required replicas answered)"
        super().__init__(self.message + detail)


class BadRequestError(RingkvError):
    """A 4xx answer: the request was refused and changed nothing."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class AuthError(BadRequestError):
    """401 / 403: the node refused the request's credentials. From an admin endpoint:
    no admin token, or a wrong one, or no token configured and the client not on the
    node's loopback. From a node with client tokens (``--tokens-file``): no token or an
    unknown one (401), or a token whose role or buckets do not allow the request (403)."""


class PreconditionFailedError(BadRequestError):
    """412: a conditional write's precondition did not hold at the coordinator (the key's
    ETag was not the `If-Match` one, or `If-None-Match: *` found a live value); nothing
    changed. `etag` is the key's current ETag when the node said it, else None."""

    def __init__(self, message: str, etag: str | None = None) -> None:
        self.etag = etag
        super().__init__(412, message)


class TooManySiblingsError(BadRequestError):
    """409: the write would leave the key with more than `limit` versions; nothing changed.

    Read the key and write with its context (which covers the siblings): that always works.
    """

    def __init__(self, message: str, siblings: int, limit: int) -> None:
        self.siblings = siblings
        self.limit = limit
        super().__init__(409, message)


class RecordTooLargeError(BadRequestError):
    """413: the write would leave the key larger than every node can store and move
    (`size` bytes encoded, over `limit`); nothing changed."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(413, message)


class LimitExceededError(BadRequestError):
    """413 to a counter or set update: it would take the key past a bound of its data
    type (the elements a set may hold, the elements one update may name, the bytes a
    key's state may take); nothing changed. `size` and `limit` are in that bound's unit
    and `what` names it, each when the node said so (else None)."""

    def __init__(
        self, message: str, what: str | None = None, size: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(413, message)


class ServerError(RingkvError):
    """Any other unexpected answer (5xx other than 503, 501 not implemented, ...)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class StorageFullError(ServerError):
    """507: the coordinating node's disk or storage map is full; the write was not
    taken. Reads still work; another node may take the write."""

    def __init__(self, message: str) -> None:
        super().__init__(507, message)


class TransportError(RingkvError):
    """The node could not be reached, or did not answer in time."""


class ConflictError(RingkvError):
    """`update` found siblings but was given no `merge` function to reconcile them."""


def decode_json(body: bytes) -> Any:
    """`json.loads`, with nesting too deep for the parser a ValueError like any other."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def datatype_error_for(resp: HttpResponse) -> RingkvError:
    """`error_for` an answer to a counter or set update: there, every 413 is a bound of
    the data type (`LimitExceededError`), whatever the body names."""
    error = error_for(resp)
    if resp.status == 413 and isinstance(error, BadRequestError) and not isinstance(
        error, LimitExceededError
    ):
        size = getattr(error, "size", None)
        limit = getattr(error, "limit", None)
        return LimitExceededError(error.message, None, size, limit)
    return error


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_for(resp: HttpResponse) -> RingkvError:
    """The exception an unexpected answer stands for."""
    message, doc = _error_message(resp)
    if resp.status == 503:
        return QuorumError(_int(doc.get("acks")), _int(doc.get("required")), message)
    if resp.status in (401, 403):
        return AuthError(resp.status, message)
    if resp.status == 412:
        etag = doc.get("etag") or resp.headers.get("ETag")
        return PreconditionFailedError(message, etag if isinstance(etag, str) else None)
    size, limit = _int(doc.get("size")), _int(doc.get("limit"))
    siblings = _int(doc.get("siblings"))
    if resp.status == 409 and siblings is not None and limit is not None:
        return TooManySiblingsError(message, siblings, limit)
    what = doc.get("what")
    if resp.status == 413 and isinstance(what, str) and what:
        return LimitExceededError(message, what[:100], size, limit)
    if resp.status == 413 and size is not None and limit is not None:
        return RecordTooLargeError(message, size, limit)
    if 400 <= resp.status < 500:
        return BadRequestError(resp.status, message)
    if resp.status == 507:
        return StorageFullError(message)
    return ServerError(resp.status, message)


def _error_message(resp: HttpResponse) -> tuple[str, dict[str, Any]]:
    doc: dict[str, Any] = {}
    try:
        parsed = decode_json(resp.body) if resp.body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        doc = parsed
        message = str(doc.get("error") or doc.get("message") or "")
    else:
        message = resp.body.decode("utf-8", "replace").strip()
    message = " ".join(message.split())[:300]
    return message or _REASONS.get(resp.status, f"HTTP {resp.status}"), doc


_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    412: "precondition failed",
    413: "value too large",
    414: "key too long",
    500: "internal server error",
    501: "not implemented",
    503: "service unavailable",
}
