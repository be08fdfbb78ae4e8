"""`update()`: the read-modify-write plan, written once for both clients.

Job: the shopping-cart loop Dynamo applications need -- read, merge the siblings,
apply the caller's function, write back with the read's context, and retry with
jittered backoff when a quorum is not reached -- as a plan
(``ringkv.client.plans``): built from the `get` and `put` plans, with a `Sleep`
between attempts. `Client.update` and `AsyncClient.update` only run it.

Invariants: the plan does no I/O itself; it writes at most once per read, always with
that read's context; it retries only on `QuorumError`, at most `retries` times, and
re-raises any other error at once. The pause before retry ``k`` is
`backoff_delay` (looked up in this module when it is needed).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ringkv.client.plans import Plan, Sleep, get, put
from ringkv.client.protocol import ConflictError, GetResult, Quorum, QuorumError

__all__ = ["backoff_delay", "merged_value", "update_plan"]


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: ~50 ms, 100 ms, 200 ms, ... capped at 2 s."""
    base = min(2.0, 0.05 * 2.0**attempt)
    jitter: float = (rng or random).random()
    return base * (0.5 + jitter)


def merged_value(
    got: GetResult, merge: Callable[[list[bytes]], bytes] | None, key: str | bytes
) -> bytes | None:
    """The single current value of a read: None, the value, or the merge of siblings."""
    if not got.values:
        return None
    if len(got.values) == 1:
        return got.values[0]
    if merge is None:
        raise ConflictError(
            f"key {key!r} has {len(got.values)} siblings; pass merge= to update() to reconcile them"
        )
    return merge(list(got.values))


def update_plan(
    key: str | bytes,
    fn: Callable[[bytes | None], bytes],
    merge: Callable[[list[bytes]], bytes] | None,
    retries: int,
    r: Quorum | None,
    w: Quorum | None,
    content_type: str | None,
    bucket: str | None = None,
) -> Plan[bytes]:
    """Read-merge-apply-write, retried on QuorumError; returns the value written."""
    attempt = 0
    while True:
        try:
            got = yield from get(key, r, bucket=bucket)
            new = fn(merged_value(got, merge, key))
            if not isinstance(new, bytes | bytearray):
                raise TypeError(f"update fn must return bytes, not {type(new).__name__}")
            yield from put(key, bytes(new), got.context, w, content_type=content_type,
                           bucket=bucket)
            return bytes(new)
        except QuorumError:
            if attempt >= retries:
                raise
        yield Sleep(backoff_delay(attempt))
        attempt += 1
