"""Conditional writes (contract section 6): entity tags, header parsing, the check."""

from __future__ import annotations

import pytest

from coordinator.conditional import (
    ANY,
    MAX_TAGS,
    Condition,
    PreconditionFailed,
    Tag,
    check,
    etag,
    parse_condition,
)
from coordinator.requests import NotFound, ReadOk
from storage.versions import EMPTY_CONTEXT, Context, Sibling, encode_context

A = ("n1", 1, 0)
B = ("n2", 1, 0)


def sib(actor: tuple[str, int, int], counter: int, value: bytes = b"v",
        expires: int | None = None) -> Sibling:
    return Sibling(actor, counter, value, "text/plain", 1_000, expires)


CTX1 = Context({A: 1})
CTX2 = Context({A: 1, B: 1})
ONE = ReadOk((sib(A, 1),), CTX1)
TWO = ReadOk((sib(A, 1), sib(B, 1)), CTX2)
GONE = NotFound(CTX1)  # a deletion (or expiry) is known
NEVER = NotFound(None)


# ------------------------------------------------------------------------ entity tags


def test_a_tag_is_quoted_hex_and_stable() -> None:
    tag = etag(ONE)
    assert tag is not None and tag.startswith('"') and tag.endswith('"')
    assert len(tag) == 34 and all(c in "0123456789abcdef" for c in tag[1:-1])
    assert etag(ReadOk((sib(A, 1),), Context({A: 1}))) == tag  # a value, not an identity


def test_tags_differ_with_the_versions_named() -> None:
    tags = [etag(ONE), etag(TWO), etag(GONE), etag(ReadOk((sib(A, 2),), Context({A: 2})))]
    assert len(set(tags)) == len(tags)


def test_the_order_of_siblings_does_not_change_the_tag() -> None:
    assert etag(TWO) == etag(ReadOk((sib(B, 1), sib(A, 1)), CTX2))


def test_an_expired_value_has_another_tag_than_when_it_was_live() -> None:
    # The same context, read live (200) and after its expiry (404): other tags.
    assert etag(ONE) != etag(NotFound(CTX1))


def test_a_404_without_context_has_no_tag() -> None:
    assert etag(NEVER) is None


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("text", "tags"), [
    ('"abc"', (Tag("abc", False),)),
    ('W/"abc"', (Tag("abc", True),)),
    ('"a", W/"b" ,"c"', (Tag("a", False), Tag("b", True), Tag("c", False))),
    ('"a,b"', (Tag("a,b", False),)),  # a comma is a legal tag character
    ('""', (Tag("", False),)),
    (" * ", ANY),
])
def test_header_values_parse(text: str, tags: object) -> None:
    assert parse_condition(text, None) == Condition(if_match=tags)  # type: ignore[arg-type]
    assert parse_condition(None, text) == Condition(if_none_match=tags)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "", "  ", "abc", '"abc', '"a" "b"', '*, "a"', 'w/"a"', '"a\x01b"', '"a b"', "W/",
    ",".join(['"t"'] * (MAX_TAGS + 1)),
])
def test_malformed_header_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="If-Match"):
        parse_condition(text, None)
    with pytest.raises(ValueError, match="If-None-Match"):
        parse_condition(None, text)


def test_no_headers_is_no_condition() -> None:
    assert not parse_condition(None, None).present
    assert parse_condition('"x"', None).present and parse_condition(None, "*").present


# ------------------------------------------------------------------------------- check


def cond(if_match: str | None = None, if_none_match: str | None = None) -> Condition:
    return parse_condition(if_match, if_none_match)


def test_if_match_with_the_current_tag_writes_with_the_reads_context() -> None:
    assert check(cond(etag(ONE)), ONE, EMPTY_CONTEXT) == CTX1
    assert check(cond(etag(TWO)), TWO, EMPTY_CONTEXT) == CTX2
    # Any tag of a list will do.
    assert check(cond(f'"nope", {etag(TWO)}'), TWO, EMPTY_CONTEXT) == CTX2


def test_the_clients_own_context_wins_over_the_reads() -> None:
    mine = Context({A: 1})
    assert check(cond(etag(TWO)), TWO, mine) == mine


def test_if_match_with_a_stale_tag_fails_naming_the_current_one() -> None:
    stale = etag(ONE)
    result = check(cond(stale), TWO, EMPTY_CONTEXT)
    assert isinstance(result, PreconditionFailed)
    assert result.etag == etag(TWO) and str(etag(TWO)) in result.reason


def test_if_match_compares_strongly() -> None:
    weak = "W/" + str(etag(ONE))
    assert isinstance(check(cond(weak), ONE, EMPTY_CONTEXT), PreconditionFailed)


def test_if_match_on_a_key_with_no_tag_fails() -> None:
    result = check(cond(etag(ONE)), NEVER, EMPTY_CONTEXT)
    assert isinstance(result, PreconditionFailed) and result.etag is None


def test_if_match_with_the_tag_of_a_deletion_holds_while_it_is_deleted() -> None:
    assert check(cond(etag(GONE)), GONE, EMPTY_CONTEXT) == CTX1
    assert isinstance(check(cond(etag(GONE)), ONE, EMPTY_CONTEXT), PreconditionFailed)


@pytest.mark.parametrize(("read", "passes"), [(ONE, True), (TWO, True), (GONE, False),
                                              (NEVER, False)])
def test_if_match_any_needs_a_live_value(read: ReadOk | NotFound, passes: bool) -> None:
    result = check(cond("*"), read, EMPTY_CONTEXT)
    assert isinstance(result, Context) == passes


@pytest.mark.parametrize(("read", "expected"), [
    (NEVER, EMPTY_CONTEXT),  # never written: supersedes nothing
    (GONE, CTX1),  # deleted: supersedes the tombstone it found
])
def test_if_none_match_any_creates_only_when_nothing_is_live(
        read: NotFound, expected: Context) -> None:
    assert check(cond(None, "*"), read, EMPTY_CONTEXT) == expected
    result = check(cond(None, "*"), ONE, EMPTY_CONTEXT)
    assert isinstance(result, PreconditionFailed) and result.etag == etag(ONE)


def test_if_none_match_with_tags_compares_weakly() -> None:
    current = str(etag(ONE))
    for header in (current, "W/" + current, f'"other", {current}'):
        assert isinstance(check(cond(None, header), ONE, EMPTY_CONTEXT), PreconditionFailed)
    assert check(cond(None, '"other"'), ONE, EMPTY_CONTEXT) == CTX1
    assert check(cond(None, current), NEVER, EMPTY_CONTEXT) == EMPTY_CONTEXT


def test_both_headers_must_hold() -> None:
    current = str(etag(ONE))
    assert check(cond(current, '"other"'), ONE, EMPTY_CONTEXT) == CTX1
    assert isinstance(check(cond(current, "*"), ONE, EMPTY_CONTEXT), PreconditionFailed)


def test_the_tag_is_derived_from_the_encoded_context() -> None:
    # Two contexts that encode alike (a compacted cloud) give the same tag.
    folded = Context({A: 1}, frozenset())
    assert encode_context(folded) == encode_context(CTX1)
    assert etag(NotFound(folded)) == etag(GONE)
