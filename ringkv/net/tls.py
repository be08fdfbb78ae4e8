"""Mutual TLS between nodes: the contexts, and the node id a certificate names.

Job
---
Build the two `ssl.SSLContext`s a node uses on its internode port (one to accept, one
to dial), both requiring a peer certificate signed by the cluster CA, and read the node
id out of a verified peer certificate. The transport binds that id to the one the peer
claims in the ringkv handshake (`ringkv.net.connection`), so a member holding a
certificate for `n9` cannot speak as `n2`.

A node certificate names its node in the subject's common name and says it is a node
in the subject's organizational unit (`NODE_UNIT`); a certificate of the same CA issued
to a client (another unit) is refused on the internode port, so a client's certificate
cannot be used to join as a node.

Invariants
----------
* Both contexts verify the peer's chain against the CA only (no system roots), with
  TLS 1.2 at least; the dialing side checks no host name (nodes are reached by IP
  address, and the node id, not the address, is what a certificate vouches for).
* `reload` builds new contexts from the files and swaps them in: connections made after
  it use the new certificate, key and CA (the old CA is no longer trusted), open
  connections keep theirs. A reload that fails (a missing or
  mismatched file) raises and leaves the contexts as they were.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["NODE_UNIT", "TlsFiles", "TlsContexts", "node_identity"]

NODE_UNIT: Final = "ringkv node"
CLIENT_UNIT: Final = "ringkv client"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


def _context(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                         else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=files.ca)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


class TlsContexts:
    """The accepting and the dialing context of one node, reloadable in place."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.server = _context(ssl.Purpose.CLIENT_AUTH, files)
        self.client = _context(ssl.Purpose.SERVER_AUTH, files)

    def reload(self, files: TlsFiles | None = None) -> None:
        """Swap in contexts built afresh from the files (a rotated CA replaces the old
        one: loading into the old contexts would trust both)."""
        files = files or self.files
        self.adopt(TlsContexts(files))

    def adopt(self, other: TlsContexts) -> None:
        """Take `other`'s contexts (built already: a reload swaps them whole)."""
        self.server, self.client, self.files = other.server, other.client, other.files


def _subject(cert: dict[str, Any], name: str) -> list[str]:
    out = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == name:
                out.append(str(value))
    return out


def node_identity(ssl_object: Any) -> str | None:
    """The node id a verified peer certificate names, or None if it names none.

    None for a missing certificate, a certificate of another unit (a client's), or a
    subject with no single common name.
    """
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    names = _subject(cert, "commonName")
    if len(names) != 1 or _subject(cert, "organizationalUnitName") != [NODE_UNIT]:
        return None
    return names[0]
