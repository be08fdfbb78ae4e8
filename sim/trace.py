"""The event trace of one simulated run: a running hash, and optionally the text.

Job: every event the world processes (a delivery, a timer, a tick, a disk commit, a
client call or reply, a nemesis action) is recorded as one line, and the bytes of every
delivered frame are hashed too. `digest()` fingerprints the run: two runs of the same
seed must give the same digest in any process (the determinism test compares digests
across `PYTHONHASHSEED` values). The text itself is kept only when asked for
(`--trace`), or as a short tail for failure reports.

Cost matters (a 300-second scenario records ~50,000 events): lines are buffered and
hashed in batches; frames go straight into a second hash, combined at the end.

Invariants: a line depends only on simulated state (never on object ids, addresses or
hash order); times are printed relative to the world's epoch with microsecond
precision; `digest()` covers everything recorded so far.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

_BATCH = 2048


class Trace:
    def __init__(self, keep_text: bool = False, sink: Callable[[str], None] | None = None,
                 tail: int = 0) -> None:
        self._lines_hash = hashlib.blake2b(digest_size=16)
        self._frames_hash = hashlib.blake2b(digest_size=16)
        self.keep_text = keep_text
        self.lines: list[str] = []  # every line (keep_text) or the last ones (tail)
        self._sink = sink
        self._tail = tail
        self._pending: list[str] = []
        self._flushed = 0

    @property
    def events(self) -> int:
        return self._flushed + len(self._pending)

    def line(self, text: str) -> None:
        pending = self._pending
        pending.append(text)
        if len(pending) >= _BATCH:
            self._flush()

    def frame(self, payload: bytes) -> None:
        self._frames_hash.update(payload)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._flushed += len(pending)
        self._lines_hash.update("\n".join(pending).encode())
        self._lines_hash.update(b"\n")
        if self._sink is not None:
            for text in pending:
                self._sink(text)
        if self.keep_text:
            self.lines.extend(pending)
        elif self._tail:
            self.lines.extend(pending)
            del self.lines[: max(0, len(self.lines) - self._tail)]

    def flush(self) -> None:
        self._flush()

    def digest(self) -> str:
        self._flush()
        return self._lines_hash.hexdigest() + self._frames_hash.hexdigest()[:16]

    def tail(self, count: int) -> list[str]:
        self._flush()
        return self.lines[-count:]
