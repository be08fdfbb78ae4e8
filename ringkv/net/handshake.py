"""The internode handshake: its messages, the node-id rule and the HMAC checks.

Job
---
Define what the two ends of a new connection say before any data frame flows, and how each
proves it knows the cluster secret. Pure: no sockets, no event loop. The connection
protocols in ``ringkv.net.connection`` drive it; ``ringkv.net.framing`` carries its frames.

Handshake (the same with and without a cluster secret; the MACs are ``b""`` without one)::

    server -> client  Challenge  ["ringkv", 1, server_nonce(16 bytes)]
    client -> server  Hello      ["ringkv", 1, client_id, mac, client_nonce(16 bytes)]
                                   mac   = HMAC-SHA256(secret, server_nonce + client_id)
    server -> client  Accept     ["ringkv", 1, server_id, proof]
                                   proof = HMAC-SHA256(secret, client_nonce + server_id)

The server checks the node id (``[A-Za-z0-9_.-]{1,64}``) and, with a secret, the MAC
(constant-time compare) before delivering anything from the connection; it delivers every
later frame as ``on_message(client_id, payload)``. The client checks that ``server_id`` is the
peer it meant to reach (any id if the peer name starts with ``SEED_PREFIX``: a seed addressed
by host and port before its id is known) and, with a secret, the proof, before it sends any
queued frame. A server without a secret accepts any MAC; a client with a secret refuses a
server that cannot produce the proof.

Invariants
----------
* Every handshake message is a msgpack list that starts with ``MAGIC, PROTOCOL_VERSION``;
  ``_check_header`` rejects anything else, including a different version.
* ``_decode`` never raises: a payload that is not msgpack decodes to None, which
  ``_check_header`` rejects.
* Received MACs are compared in constant time (``_mac_ok``).
* A node id is a ``str`` matching ``NODE_ID_RE`` in full (``_valid_node_id``).
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Final

import msgpack

from ringkv.net.framing import _pack_len

__all__ = ["MAGIC", "NODE_ID_RE", "NONCE_SIZE", "PROTOCOL_VERSION", "SEED_PREFIX"]

MAGIC: Final = "ringkv"
PROTOCOL_VERSION: Final = 1
NONCE_SIZE: Final = 16
NODE_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# A peer name starting with this is a seed addressed before its node id is known (the
# runtime names it "seed-<host>-<port>"): its Accept may carry any valid node id.
SEED_PREFIX: Final = "seed-"


def _frame(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return _pack_len(len(body)) + body


def _decode(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        return None


def _valid_node_id(node_id: object) -> bool:
    return type(node_id) is str and NODE_ID_RE.fullmatch(node_id) is not None


def _check_header(msg: Any, length: int) -> str | None:
    """None if msg is a list of ``length`` items starting with MAGIC, 1; else why not."""
    if type(msg) is not list or len(msg) != length or msg[0] != MAGIC:
        return "malformed handshake frame"
    if type(msg[1]) is not int or msg[1] != PROTOCOL_VERSION:
        return f"unsupported protocol version {msg[1]!r}"
    return None


def _mac(secret: bytes, nonce: bytes, ident: bytes) -> bytes:
    """HMAC-SHA256(secret, nonce + ident): the Hello's mac and the Accept's proof."""
    return hmac.digest(secret, nonce + ident, "sha256")


def _mac_ok(secret: bytes, nonce: bytes, ident: bytes, mac: bytes) -> bool:
    """Whether mac is ``_mac(secret, nonce, ident)``, compared in constant time."""
    return hmac.compare_digest(mac, _mac(secret, nonce, ident))
