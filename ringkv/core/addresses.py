"""How a node names a peer it can reach only by address: a seed before it answers.

Job: the one spelling of a seed destination, `seed:<host>:<port>`, used by the node when
it sends a join request, by the server (which dials the address and accepts whichever
node answers), by the simulation and by the in-memory test network (which route it to
the node listening there). Every other destination is a node id, and node ids cannot
contain `:` (the node-id rule), so the two never collide.
"""

from __future__ import annotations

SEED_PREFIX = "seed:"


def seed_destination(hostport: str) -> str:
    """The destination of a seed known only as `host:port`."""
    return SEED_PREFIX + hostport


def seed_hostport(destination: str) -> str | None:
    """`host:port` if `destination` names a seed by address, else None."""
    if destination.startswith(SEED_PREFIX):
        return destination[len(SEED_PREFIX):]
    return None


def split_hostport(hostport: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` (IPv6 hosts keep their colons), or None if malformed."""
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)
