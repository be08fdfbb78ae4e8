"""Write bounds and validators agree by construction (issue 13, items 8 and 9).

Whatever a client sends within the decoder's limits, a write whose outcome passes
`storage.limits` leaves a state that `from_wire` accepts (also joined with another
such state, as a merge on a replica does), and hands back a context `decode_context`
accepts; a refused write is one whose outcome would not have passed.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import limits
from storage.versions import (
    MAX_CONTEXT_CHARS,
    MAX_CONTEXT_ENTRIES,
    Context,
    ContextError,
    Versions,
    decode_context,
    encode_context,
    from_wire,
    merge,
    to_wire,
    update,
)

ACTOR = ("n1", 7, 1)


def forged(tag: str, vector: int, cloud: int, name_len: int) -> Context:
    name = (tag * name_len)[:name_len]
    vec = {(f"{name[: max(1, name_len - 5)]}{i:05d}"[-name_len:], 1, i): 3 for i in range(vector)}
    dots = frozenset(((f"c{name}"[:name_len], 2, i), 5) for i in range(cloud))
    return Context(vec, dots)


def client_input(ctx: Context) -> Context | None:
    """What the HTTP layer would let through: a context that decodes, or None."""
    try:
        return decode_context(encode_context(ctx))
    except ContextError:
        return None


def wire_ok(state: Versions) -> None:
    from_wire(msgpack.unpackb(msgpack.packb(to_wire(state), use_bin_type=True), raw=False))


sizes = st.integers(min_value=0, max_value=MAX_CONTEXT_ENTRIES)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v1=sizes, c1=st.integers(0, 300), v2=sizes, c2=st.integers(0, 300),
       name_len=st.integers(1, 64), value_len=st.integers(0, 4096))
def test_accepted_writes_leave_states_every_decoder_accepts(
        v1: int, c1: int, v2: int, c2: int, name_len: int, value_len: int) -> None:
    accepted: list[Versions] = []
    state: Versions | None = None
    for tag, v, c in (("a", v1, c1), ("b", v2, c2)):
        ctx = client_input(forged(tag, v, c, name_len))
        if ctx is None:
            continue  # the HTTP layer answers 400 before any write
        new, handed = update(state, ctx, ACTOR, b"x" * value_len, "text/plain", 1)
        problem = limits.context_problem(new.context) or limits.context_problem(handed)
        if problem is None and limits.record_too_large(new) is None:
            wire_ok(new)
            assert len(encode_context(handed)) <= MAX_CONTEXT_CHARS
            decode_context(encode_context(handed))
            state = new
            accepted.append(new)
        else:
            # Only a state past the bounds is refused.
            assert limits.entries(new.context) > limits.MAX_WRITE_CONTEXT_ENTRIES or len(
                encode_context(new.context)) > limits.MAX_WRITE_CONTEXT_CHARS or len(
                encode_context(handed)) > limits.MAX_WRITE_CONTEXT_CHARS or limits.entries(
                handed) > limits.MAX_WRITE_CONTEXT_ENTRIES
    # Two accepted states written at different replicas still merge into a valid one.
    if len(accepted) == 2:
        other, _ = update(None, client_input(forged("z", v2, c2, name_len)) or Context(),
                          ("n2", 1, 1), b"y", "text/plain", 2)
        if limits.context_problem(other.context) is None:
            wire_ok(merge(accepted[0], other))


def test_the_write_bounds_leave_room_for_a_merge() -> None:
    assert 2 * limits.MAX_WRITE_CONTEXT_ENTRIES <= MAX_CONTEXT_ENTRIES
    assert 2 * limits.MAX_WRITE_CONTEXT_CHARS <= MAX_CONTEXT_CHARS
    assert limits.MAX_RECORD_BYTES * 2 + (8 << 20) < limits.FRAME_BYTES


def test_the_cheap_record_bound_never_lets_an_oversized_record_through() -> None:
    big = b"v" * (1 << 20)
    state: Versions | None = None
    for i in range(40):
        state, _ = update(state, Context(), ("n1", 1, 1), big, "application/x" * 10, i)
        size = limits.record_bytes(state)
        assert (limits.record_too_large(state) is None) == (size <= limits.MAX_RECORD_BYTES)
