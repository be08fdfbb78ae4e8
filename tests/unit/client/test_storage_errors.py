"""A 413 naming the size and the limit is a `RecordTooLargeError` (a bad request); a 507
is a `StorageFullError` (a server error)."""

from __future__ import annotations

import json

from ringkv.client import (
    BadRequestError,
    RecordTooLargeError,
    ServerError,
    StorageFullError,
    error_for,
)
from ringkv.client.protocol import HttpResponse


def _resp(status: int, doc: dict[str, object]) -> HttpResponse:
    return HttpResponse(status, {"Content-Type": "application/json"}, json.dumps(doc).encode())


def test_a_413_with_the_size_is_a_record_too_large_error() -> None:
    err = error_for(_resp(413, {"error": "key would take 17000000 bytes encoded",
                                "size": 17_000_000, "limit": 16 << 20}))
    assert isinstance(err, RecordTooLargeError) and isinstance(err, BadRequestError)
    assert (err.status, err.size, err.limit) == (413, 17_000_000, 16 << 20)


def test_a_413_without_the_size_is_a_plain_bad_request() -> None:
    err = error_for(_resp(413, {"error": "value is 2000000 bytes; the limit is 1048576"}))
    assert type(err) is BadRequestError and err.status == 413


def test_a_507_is_a_storage_full_error() -> None:
    err = error_for(_resp(507, {"error": "storage is full"}))
    assert isinstance(err, StorageFullError) and isinstance(err, ServerError)
    assert err.status == 507 and "storage is full" in str(err)
