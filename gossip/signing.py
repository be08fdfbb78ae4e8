"""Who may write which member record: Ed25519 signatures and the rules that admit them.

Job: sign the records this node writes, and decide whether a record of another member,
learned by gossip or in a join reply, may replace the one held (`refusal`). The
gossiper asks before every merge; a record this module refuses changes nothing.

Every node has an Ed25519 key pair, drawn on its first start and kept with its data
(`ringkv.core.node`). A record carries its owner's public key (`key`), the id of the
member that signed it when that is not the owner (`author`, empty for the owner), and a
signature (`sig`) over the canonical encoding of every other field (`signed_bytes`).

The rules (`refusal`), for a record R of member X, held record H (if any):
- Written by X itself: its signature must verify with R's key, and R's key must be the
  key pinned for X, which is H's key (trust on first use: the first record learned of
  X, from gossip or from a join reply, pins it). Any content is then X's own choice.
  A new key is taken only as for a seed's join below (X `left`, or a new life of X
  while X is not heard from here): the seed's record of a node that lost its disk is
  soon superseded by the node's own, and a node that missed the former needs the latter.
- Written by another member A (the only two cases a node writes another's record):
  A must be known here with a key, R's signature must verify with it, and R's version
  may not run more than `AUTHORED_STEP` past H's. Then:
  * `left`, an operator's removal served by A: accepted only while X is not heard from
    here (down, or not watched); its key must be X's pinned key.
  * `joining`, a seed A admitting X: accepted when X is new here, `left` (its id is free
    again), held from before records were signed, or, for a member already known, when
    it is not heard from here and R is a new life (another generation): a node that lost
    its disk, and with it its key, comes back through a seed under a new key.
  * nothing else: only a member writes its own record.
- Records of this node itself are the gossiper's business: it refutes every one it did
  not write (`gossip.gossiper`), signed or not, so no other node decides its status.

What a hostile peer can still do, and why that is the line. Any process that holds the
cluster secret can join, so it can add itself as a member, and it can take the id of a
member that the receivers do not hear from under a new key (as a node that lost its
disk does): nothing tells a lost disk from a hijack but the old life's silence. A
re-keyed member that comes back is locked out (peers refuse its old key) until an
operator removes its id and it rejoins with an empty data dir. A member (whose key the
others pinned) can also remove a member the receivers do not hear from; one that comes
back refutes the removal. Heartbeats are not signed, so a peer can make a dead member
look alive (which delays its removal) by gossiping beats for it. No one but X can
change the record of a member X that is alive and heard from.

Invariants:
- Pure: no I/O and no global randomness. The one exception is `new_private_key`, which
  draws a key from the operating system's CSPRNG; the simulation and tests never call it
  (they derive keys from their seeded rng).
- `signed_bytes` depends on the record's fields only, so any node computes the same
  bytes; a signature covers the key and the author too, so neither can be swapped.
"""

from __future__ import annotations

from dataclasses import replace

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gossip.membership import JOINING, KEY_BYTES, LEFT, Member

__all__ = ["AUTHORED_STEP", "Signer", "new_private_key", "refusal", "signed_bytes", "verify"]

# How far past the held version a record written by another member may go. A remover
# or a seed writes one past the version it holds, which is at most a few of the member's
# own changes ahead of ours; the bound keeps one hostile write from spending the
# member's room under REFUTE_LIMIT.
AUTHORED_STEP = 1 << 20

_DOMAIN = b"ringkv member record v1"


def signed_bytes(m: Member) -> bytes:
    """The canonical encoding of every field of `m` but its signature."""
    packed: bytes = msgpack.packb(
        [_DOMAIN, m.node_id, m.http, m.rpc, list(m.tokens), m.status, m.version,
         m.generation, m.key, m.author], use_bin_type=True)
    return packed


def verify(m: Member, key: bytes) -> bool:
    """True if `m.sig` is a signature of `m` by the private half of `key`."""
    if len(key) != KEY_BYTES or not m.sig:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(m.sig, signed_bytes(m))
    except (InvalidSignature, ValueError):
        return False
    return True


def new_private_key() -> bytes:
    """32 bytes of a new Ed25519 private key, from the operating system's CSPRNG.

    The one call in the pure packages whose randomness is not a seeded rng: a key drawn
    from a Mersenne Twister could be recovered from its other outputs (generations and
    request ids are visible to peers). Only the runtime's nodes use it.
    """
    return Ed25519PrivateKey.generate().private_bytes_raw()


class Signer:
    """This node's private key: signs the records it writes."""

    def __init__(self, node_id: str, private_key: bytes) -> None:
        self.node_id = node_id
        self._key = Ed25519PrivateKey.from_private_bytes(private_key)
        self.public_key = self._key.public_key().public_bytes_raw()

    def sign(self, m: Member) -> Member:
        """`m` signed by this node: its own record, carrying its key; or another
        member's record it writes (a removal, a joiner's first record), naming it as
        the author and keeping the member's key."""
        if m.node_id == self.node_id:
            m = replace(m, key=self.public_key, author="")
        else:
            m = replace(m, author=self.node_id)
        return replace(m, sig=self._key.sign(signed_bytes(m)))


def refusal(rec: Member, held: Member | None, author: Member | None, *,
            up: bool) -> str | None:
    """Why `rec`, a record of another member, may not replace `held`; None if it may.

    `author` is the held record of `rec.author` (None when it is not known here, or when
    the owner wrote `rec`); `up` is whether the member is heard from here. See the
    module docstring for the rules.
    """
    if len(rec.key) != KEY_BYTES:
        return "record carries no key"
    pinned = held.key if held is not None and held.key else None
    if not rec.author:
        if pinned is not None and rec.key != pinned and held is not None \
                and held.status != LEFT and (up or rec.generation == held.generation):
            return "key differs from the member's pinned key"
        return None if verify(rec, rec.key) else "bad signature"
    if author is None or not author.key:
        return "written by a member not known here"
    if not verify(rec, author.key):
        return "bad signature"
    if held is not None and rec.version > held.version + AUTHORED_STEP:
        return "version too far past the held one"
    if rec.status == LEFT:
        if pinned is not None and rec.key != pinned:
            return "removal under another key"
        return "removal of a member heard from here" if up else None
    if rec.status == JOINING:
        if held is None or held.status == LEFT or pinned is None:
            return None
        if up:
            return "join of a member heard from here"
        if rec.key != pinned and rec.generation == held.generation:
            return "new key without a new life"
        return None
    return "only a member writes its own record"
