"""`update()`: one read-modify-write plan, two drivers.

Job: the shopping-cart loop Dynamo applications need -- read, merge the siblings,
apply the caller's function, write back with the read's context, and retry with
jittered backoff when a quorum is not reached -- written once, as a generator of I/O
steps (`Read`, `Write`, `Sleep`). `Client.update` and `AsyncClient.update` only
execute the steps (sync or awaited) and feed the outcomes back through a `Stepper`.

Invariants: the plan does no I/O itself; it writes at most once per read, always with
that read's context; it retries only on `QuorumError`, at most `retries` times, and
re-raises any other error at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass

from ringkv.client.protocol import ConflictError, GetResult, Quorum, QuorumError, RingkvError

__all__ = ["Read", "Sleep", "Step", "Stepper", "Write", "backoff_delay", "merged_value",
           "update_plan"]


@dataclass(frozen=True)
class Read:
    key: str | bytes
    r: Quorum | None
    bucket: str | None = None


@dataclass(frozen=True)
class Write:
    key: str | bytes
    value: bytes
    context: str | None
    w: Quorum | None
    content_type: str | None
    bucket: str | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Read | Write | Sleep


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
) -> Generator[Step, object, bytes]:
    """Read-merge-apply-write, retried on QuorumError; yields the I/O it needs done."""
    attempt = 0
    while True:
        try:
            got = yield Read(key, r, bucket)
            assert isinstance(got, GetResult)
            new = fn(merged_value(got, merge, key))
            if not isinstance(new, bytes | bytearray):
                raise TypeError(f"update fn must return bytes, not {type(new).__name__}")
            yield Write(key, bytes(new), got.context, w, content_type, bucket)
            return bytes(new)
        except QuorumError:
            if attempt >= retries:
                raise
        yield Sleep(backoff_delay(attempt))
        attempt += 1


class Stepper:
    """Advances an update plan: feed it the outcome of each step, get the next one."""

    def __init__(self, plan: Generator[Step, object, bytes]) -> None:
        self._plan = plan
        self.result: bytes | None = None

    def next(self, reply: object = None, error: RingkvError | None = None) -> Step | None:
        """The next step to execute, or None when done (then `result` is set)."""
        try:
            if error is not None:
                return self._plan.throw(error)
            return self._plan.send(reply)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def close(self) -> None:
        self._plan.close()
