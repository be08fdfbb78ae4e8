"""Token allocation: balance, minimal movement on join, determinism, validity."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring.allocation import MAX_COUNT, allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import MAX_TOKEN, TOKEN_SPACE, key_token

VNODES = 256
REPO = Path(__file__).resolve().parents[3]

# Two naming schemes, so that no result hinges on how nodes happen to be named.
_rng = random.Random(20240611)
NAMINGS = {
    "sequential": tuple(f"n{i}" for i in range(1, 22)),
    "random": tuple(f"{_rng.getrandbits(48):012x}" for _ in range(21)),
}


@cache
def grown(naming: str) -> tuple[Ring, ...]:
    """Rings of 1..21 nodes, each node joining the previous ring with allocate_tokens."""
    members: dict[str, tuple[int, ...]] = {}
    rings = []
    for name in NAMINGS[naming]:
        members[name] = allocate_tokens(members, name, VNODES)
        rings.append(Ring(members))
    return tuple(rings)


def ring_of(naming: str, size: int) -> Ring:
    return grown(naming)[size - 1]


@cache
def sample_keys(count: int = 20_000) -> tuple[bytes, ...]:
    rng = random.Random(7)
    return tuple(rng.randbytes(rng.randint(1, 24)) for _ in range(count))


def worst_deviation(shares: dict[str, float], ideal: float) -> float:
    return max(abs(share / ideal - 1) for share in shares.values())


# -- balance ----------------------------------------------------------------------


@pytest.mark.parametrize("naming", sorted(NAMINGS))
@pytest.mark.parametrize("size", [5, 20])
def test_every_node_within_10_percent_of_fair_share(naming: str, size: int) -> None:
    ring = ring_of(naming, size)
    assert len(ring) == size
    assert all(len(ring.tokens_of(node)) == VNODES for node in ring.nodes)
    assert worst_deviation(ring.ownership(), 1 / size) <= 0.10
    assert worst_deviation(ring.replica_ownership(3), 3 / size) <= 0.10


@pytest.mark.parametrize("naming", sorted(NAMINGS))
def test_balance_holds_at_every_size_along_the_way(naming: str) -> None:
    # Not only at the sizes the requirement names: a ring that is fine at 5 and 20
    # but 15% off at 7 would still be a bug.
    for size in range(2, 22):
        ring = ring_of(naming, size)
        assert worst_deviation(ring.ownership(), 1 / size) <= 0.10, size
        assert worst_deviation(ring.replica_ownership(3), min(3, size) / size) <= 0.10, size


# -- movement on join -------------------------------------------------------------


@pytest.mark.parametrize("naming", sorted(NAMINGS))
@pytest.mark.parametrize("size", [5, 10, 20])
def test_join_moves_about_one_share_and_only_to_the_joiner(naming: str, size: int) -> None:
    before, after = ring_of(naming, size), ring_of(naming, size + 1)
    (joiner,) = set(after.nodes) - set(before.nodes)
    keys = sample_keys()
    moved = 0
    for key in keys:
        token = key_token(key)
        old_owner, new_owner = before.owner(token), after.owner(token)
        if old_owner != new_owner:
            moved += 1
            assert new_owner == joiner  # never from one old node to another
        old_list, new_list = before.preference_list(token, 3), after.preference_list(token, 3)
        if old_list != new_list:
            # The joiner slots into the old list, which loses its last member.
            assert joiner in new_list
            assert [n for n in new_list if n != joiner] == old_list[: len(new_list) - 1]
    fraction = moved / len(keys)
    assert 0.8 / (size + 1) <= fraction <= 1.2 / (size + 1)


def test_old_nodes_keep_their_tokens() -> None:
    rings = grown("sequential")
    for smaller, larger in zip(rings, rings[1:], strict=False):
        for node in smaller.nodes:
            assert larger.tokens_of(node) == smaller.tokens_of(node)


# -- determinism ------------------------------------------------------------------

_DETERMINISM_SCRIPT = """
import json, random
from ring.allocation import allocate_tokens
from ring.ring import Ring
names = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"}
members = {}
for name in sorted(names):
    # Insertion order follows set iteration, which PYTHONHASHSEED changes.
    shuffled = {n: members[n] for n in names if n in members}
    members[name] = allocate_tokens(shuffled, name, 64)
ring = Ring({n: members[n] for n in names})
rng = random.Random(3)
lists = [ring.key_preference_list(rng.randbytes(8), 3) for _ in range(200)]
print(json.dumps({"tokens": {n: list(t) for n, t in sorted(members.items())}, "lists": lists}))
"""


def _run_with_hash_seed(seed: str) -> object:
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", _DETERMINISM_SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_same_tokens_and_lists_under_any_hash_seed() -> None:
    first = _run_with_hash_seed("1")
    assert _run_with_hash_seed("4242") == first


def test_same_inputs_same_tokens_whatever_the_mapping_order() -> None:
    members = ring_of("random", 6).token_map()
    forward = allocate_tokens(members, "joiner", 64)
    backward = allocate_tokens(dict(reversed(list(members.items()))), "joiner", 64)
    assert forward == backward == allocate_tokens(members, "joiner", 64)
    assert allocate_tokens(members, "other", 64) != forward  # ties and jitter follow the id


# -- validity ---------------------------------------------------------------------

_tokens = st.one_of(
    st.integers(0, MAX_TOKEN),
    st.integers(0, 16),
    st.integers(MAX_TOKEN - 16, MAX_TOKEN),
)


@settings(max_examples=100, deadline=None)
@given(
    existing=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]), st.lists(_tokens, max_size=12), max_size=5
    ),
    count=st.integers(0, 40),
    replicas=st.integers(1, 4),
)
def test_tokens_are_valid_and_new(
    existing: dict[str, list[int]], count: int, replicas: int
) -> None:
    tokens = allocate_tokens(existing, "joiner", count, replicas=replicas)
    taken = {t for ts in existing.values() for t in ts}
    assert len(tokens) == count
    assert list(tokens) == sorted(set(tokens))
    assert all(0 <= t < TOKEN_SPACE and t not in taken for t in tokens)


def test_concurrent_joiners_against_one_stale_ring_stay_valid_and_fair_enough() -> None:
    base = ring_of("sequential", 10)
    members = base.token_map()
    x = allocate_tokens(members, "x", VNODES)
    y = allocate_tokens(members, "y", VNODES)
    assert not set(x) & set(y)
    ring = Ring({**members, "x": x, "y": y})
    shares = ring.ownership()
    # Less balanced than one join at a time, but neither joiner is starved.
    assert min(shares["x"], shares["y"]) >= 0.7 / len(ring)
    assert worst_deviation(shares, 1 / len(ring)) <= 0.3


def test_initial_tokens_are_evenly_spaced_with_a_per_node_offset() -> None:
    tokens = initial_tokens("first", VNODES)
    step = TOKEN_SPACE // VNODES
    assert len(tokens) == VNODES
    assert all(b - a == step for a, b in zip(tokens, tokens[1:], strict=False))
    assert 0 <= tokens[0] < step
    assert initial_tokens("other", VNODES)[0] != tokens[0]
    assert allocate_tokens({}, "first", VNODES) == tokens
    assert allocate_tokens({"gone": []}, "first", VNODES) == tokens
    assert initial_tokens("first", 0) == ()


def test_a_nodes_own_old_entry_is_ignored() -> None:
    members = ring_of("sequential", 4).token_map()
    stale = {**members, "n9": (1, 2, 3)}
    assert allocate_tokens(stale, "n9", 32) == allocate_tokens(members, "n9", 32)


def test_more_tokens_than_the_ring_has_arcs() -> None:
    small = {"a": initial_tokens("a", 4)}
    tokens = allocate_tokens(small, "b", VNODES)
    assert len(set(tokens) | set(small["a"])) == VNODES + 4
    assert Ring({**small, "b": tokens}).ownership()["b"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("count", "replicas"), [(-1, 3), (MAX_COUNT + 1, 3), (4, 0)], ids=["neg", "huge", "rf0"]
)
def test_bad_arguments_raise(count: int, replicas: int) -> None:
    with pytest.raises(ValueError):
        allocate_tokens({"a": [1, 2]}, "b", count, replicas=replicas)


@pytest.mark.parametrize("bad", [-1, TOKEN_SPACE, True])
def test_bad_existing_tokens_raise(bad: int) -> None:
    with pytest.raises(ValueError):
        allocate_tokens({"a": [5, bad]}, "b", 4)


def test_allocating_against_200_nodes_is_fast() -> None:
    rng = random.Random(11)
    members = {f"m{i:03}": [rng.getrandbits(64) for _ in range(VNODES)] for i in range(200)}
    started = time.perf_counter()
    tokens = allocate_tokens(members, "joiner", VNODES)
    elapsed = time.perf_counter() - started
    assert len(tokens) == VNODES
    # ~0.3 s on a laptop; the bound only catches an accidental quadratic.
    assert elapsed < 3.0
    shares = Ring({**members, "joiner": tokens}).ownership()
    assert shares["joiner"] == pytest.approx(1 / 201, rel=0.05)
