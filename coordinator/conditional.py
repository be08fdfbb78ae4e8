"""Conditional writes (contract section 6): entity tags and the precondition check.

A read's answer has an entity tag (`etag`), a quoted strong tag derived from the read's
causal context and the dots of the versions it returned live. The context alone names
every version the read saw; the live dots are added because an expiry turns a live
version into an absent one without changing the context, and a `200` and the `404`
that follows its expiry must not share a tag.

`parse_condition` reads the `If-Match` and `If-None-Match` header values (RFC 9110
section 13.1: `*` or a comma-separated list of entity tags, weak ones written ``W/"..."``)
and `check` decides, from the coordinator's read of the key (R replicas), whether a
write may go ahead, and with which context:

- `If-Match: *` holds when the read found a live value; a list holds when it names the
  read's tag by strong comparison (a weak tag never matches).
- `If-None-Match: *` holds when the read found no live value; a list holds when none of
  its tags is the read's tag (weak comparison).
- A write that passes carries the client's own context when it sent one, and otherwise
  the context of the read that matched: it supersedes exactly the versions the tag
  named, as if the client had sent that read's context.

These are checked at one coordinator and are not linearizable: another write may land
between the read and the write, and two racing conditional writes may both pass; they
are then siblings, and no acknowledged write is lost. This is best effort, not a
compare-and-swap.

Everything here is pure: the HTTP layer and the simulation drive it alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal, overload

import msgpack

from coordinator.requests import NotFound, ReadOk
from storage.versions import EMPTY_CONTEXT, Context, encode_context

__all__ = ["ANY", "MAX_TAGS", "Condition", "PreconditionFailed", "Tag", "check", "etag",
           "parse_condition"]

ETAG_HEX: Final = 32  # hex digits of the digest kept: 128 bits
MAX_TAGS: Final = 64  # entity tags one header may list
ANY: Final = "*"  # a header of `*`: any current value


@overload
def etag(read: ReadOk, encoded: str | None = None) -> str: ...


@overload
def etag(read: ReadOk | NotFound, encoded: str | None = None) -> str | None: ...


def etag(read: ReadOk | NotFound, encoded: str | None = None) -> str | None:
    """The quoted entity tag of a read's answer; None for a 404 that knows no deletion.
    `encoded` is the read's context as `encode_context` gives it, when the caller has
    it already (the answer carries it as X-Context): encoding it is half the cost."""
    if isinstance(read, NotFound):
        if read.context is None:
            return None
        context, live = read.context, []
    else:
        context = read.context
        live = sorted([s.actor[0], s.actor[1], s.actor[2], s.counter] for s in read.siblings)
    digest = hashlib.sha256(b"ringkv-etag-1\x00")
    digest.update((encode_context(context) if encoded is None else encoded).encode("ascii"))
    digest.update(msgpack.packb(live, use_bin_type=True))
    return '"' + digest.hexdigest()[:ETAG_HEX] + '"'


@dataclass(frozen=True, slots=True)
class Tag:
    """One entity tag of a header: its opaque part (without quotes) and weakness."""

    opaque: str
    weak: bool


Tags = tuple[Tag, ...] | Literal["*"]


@dataclass(frozen=True, slots=True)
class Condition:
    """What a request's preconditions ask: `ANY`, the tags listed, or None where it
    sent no such header."""

    if_match: Tags | None = None
    if_none_match: Tags | None = None

    @property
    def present(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None


@dataclass(frozen=True, slots=True)
class PreconditionFailed:
    """A write refused by its preconditions (a 412): nothing was written."""

    reason: str
    etag: str | None  # the tag of the read that decided


def _parse_tags(name: str, text: str) -> Tags:
    """`*`, or the entity tags of a comma-separated list; ValueError when malformed."""
    stripped = text.strip(" \t")
    if stripped == ANY:
        return ANY
    tags: list[Tag] = []
    i, size = 0, len(text)
    while True:
        while i < size and text[i] in " \t,":
            i += 1
        if i == size:
            break
        weak = text.startswith("W/", i)
        if weak:
            i += 2
        if i == size or text[i] != '"':
            raise ValueError(f"{name} must be * or a list of quoted entity tags")
        end = text.find('"', i + 1)
        if end < 0:
            raise ValueError(f"{name} has an unterminated entity tag")
        opaque = text[i + 1:end]
        # etagc: %x21 / %x23-7E / obs-text; anything else is not a tag.
        if any(c < "!" or c == "\x7f" for c in opaque):
            raise ValueError(f"{name} holds an entity tag with a forbidden character")
        tags.append(Tag(opaque, weak))
        if len(tags) > MAX_TAGS:
            raise ValueError(f"{name} lists more than {MAX_TAGS} entity tags")
        i = end + 1
        while i < size and text[i] in " \t":
            i += 1
        if i < size and text[i] != ",":
            raise ValueError(f"{name} entity tags must be separated by commas")
    if not tags:
        raise ValueError(f"{name} must be * or a list of quoted entity tags")
    return tuple(tags)


def parse_condition(if_match: str | None, if_none_match: str | None) -> Condition:
    """The preconditions of a request from its header values (None: header absent).

    Raises ValueError naming the header when a value is malformed.
    """
    return Condition(
        None if if_match is None else _parse_tags("If-Match", if_match),
        None if if_none_match is None else _parse_tags("If-None-Match", if_none_match),
    )


def _names(tags: tuple[Tag, ...], current: str | None, strong: bool) -> bool:
    if current is None:
        return False
    opaque = current[1:-1]
    return any(t.opaque == opaque and not (strong and t.weak) for t in tags)


def check(condition: Condition, read: ReadOk | NotFound,
          client_context: Context) -> Context | PreconditionFailed:
    """The context to write with when `read` satisfies `condition`, else why not.

    `client_context` is what the request sent (empty when it sent none); the read's
    context stands in for an empty one.
    """
    current = etag(read)
    live = isinstance(read, ReadOk)
    if condition.if_match is not None:
        if condition.if_match == ANY:
            if not live:
                return PreconditionFailed("If-Match: * but the key has no live value",
                                          current)
        elif not _names(condition.if_match, current, strong=True):
            found = f"the key's ETag is {current}" if current else "the key has no ETag"
            return PreconditionFailed(f"If-Match failed: {found}", current)
    if condition.if_none_match is not None:
        if condition.if_none_match == ANY:
            if live:
                return PreconditionFailed("If-None-Match: * but the key has a live value",
                                          current)
        elif _names(condition.if_none_match, current, strong=False):
            return PreconditionFailed(f"If-None-Match failed: the key's ETag is {current}",
                                      current)
    if client_context:
        return client_context
    return read.context if read.context is not None else EMPTY_CONTEXT
