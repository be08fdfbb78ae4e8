"""A write past the node's siblings bound (409 with `siblings` and `limit`) is a
`TooManySiblingsError`, still a `BadRequestError`; another 409 stays a plain one."""

from __future__ import annotations

import json

from ringkv.client import BadRequestError, TooManySiblingsError, error_for
from ringkv.client.protocol import HttpResponse


def _resp(status: int, doc: dict[str, object]) -> HttpResponse:
    return HttpResponse(status, {"Content-Type": "application/json"}, json.dumps(doc).encode())


def test_a_409_with_the_counts_is_a_too_many_siblings_error() -> None:
    err = error_for(_resp(409, {"error": "key would hold 101 versions; limit 100",
                                "siblings": 101, "limit": 100}))
    assert isinstance(err, TooManySiblingsError) and isinstance(err, BadRequestError)
    assert (err.status, err.siblings, err.limit) == (409, 101, 100)
    assert "limit 100" in str(err)


def test_another_409_is_a_plain_bad_request() -> None:
    err = error_for(_resp(409, {"error": "a membership change is in flight"}))
    assert type(err) is BadRequestError and err.status == 409
