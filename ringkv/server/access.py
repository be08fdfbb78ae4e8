"""Client tokens with roles: who may read, write or administer which buckets.

Job: with a tokens file configured (`--tokens-file`), every request but the probes
(`/health`, `/ready`) and the API description needs ``Authorization: Bearer <token>``
naming a token of the file, whose role allows the operation on the request's bucket.
In the style of Redis ACLs and etcd's RBAC, kept small::

    # token                            role   buckets (optional: all)
    3f9c0d6e8a1b4c2d9e7f6a5b4c3d2e1f   read   carts,photos
    a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1   write
    0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a   admin

- ``read``: every GET (values, counters, sets, listing, bucket properties, the cluster's
  state and metrics) and multi-get.
- ``write``: what read may, and PUT, POST and DELETE of values, counters and sets.
- ``admin``: everything: bucket properties, leave, remove, backups, `/debug/`.

A token limited to buckets may touch keys of those buckets only (the plain paths are
bucket `default`); the cluster-wide reads (`/cluster`, `/metrics`, `/ring`, `/ring/lookup`) are
open to every token, and the admin operations to unlimited admin tokens only. The
contract's admin token (`--admin-token`) is an admin token of every bucket.

Invariants:
- No token, another scheme or an unknown token: `401` with ``WWW-Authenticate``; a
  known token whose role or buckets do not allow the request: `403`. Either is a JSON
  ``{"error": ...}`` and happens before the request reaches the node: nothing changes.
- Tokens are compared in constant time (every entry is compared, as SHA-256 digests,
  with no early exit) and never appear in a response, an error message or a log line:
  a malformed tokens file is reported by line number only.
- `reload` (SIGHUP) swaps the whole table at once or, on a bad file, keeps the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from storage.namespace import DEFAULT_BUCKET, is_bucket_name

__all__ = ["ROLES", "Access", "TokenEntry", "load_tokens", "parse_tokens"]

ROLES: Final = ("read", "write", "admin")
_RANK: Final = {role: rank for rank, role in enumerate(ROLES)}
MIN_TOKEN_CHARS: Final = 16
MAX_TOKENS: Final = 10_000
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{16,256}")
_REALM: Final = 'Bearer realm="ringkv"'
# Paths anyone may call: liveness and readiness probes, the API's description, and the
# console's page and assets (they hold no data: what the page shows, it fetches with
# the requests above, which need a token).
_OPEN: Final = ("/health", "/ready", "/openapi.json", "/ui", "/ui/console.js",
                "/ui/console.css", "/ui/favicon.svg")
_ADMIN_PREFIXES: Final = ("/cluster/leave", "/cluster/remove/", "/debug/", "/admin/")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes  # SHA-256 of the token: the token itself is not kept
    role: str
    buckets: frozenset[str] | None  # None: every bucket


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_tokens(text: str) -> list[TokenEntry]:
    """The entries of a tokens file; ValueError names the bad line, never its token."""
    entries: list[TokenEntry] = []
    seen: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"line {number}: expected `token role [bucket,...]`")
        token, role = parts[0], parts[1]
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"line {number}: a token is {MIN_TOKEN_CHARS} to 256 printable"
                             " ASCII characters")
        if role not in ROLES:
            raise ValueError(f"line {number}: role must be one of {', '.join(ROLES)}")
        buckets: frozenset[str] | None = None
        if len(parts) == 3 and parts[2] != "*":
            names = parts[2].split(",")
            if not all(is_bucket_name(b) for b in names):
                raise ValueError(f"line {number}: buckets are [A-Za-z0-9_.-]{{1,64}},"
                                 " separated by commas")
            buckets = frozenset(names)
        digest = _digest(token)
        if digest in seen:
            raise ValueError(f"line {number}: the same token appears twice")
        seen.add(digest)
        entries.append(TokenEntry(digest, role, buckets))
        if len(entries) > MAX_TOKENS:
            raise ValueError(f"more than {MAX_TOKENS} tokens")
    return entries


def load_tokens(path: str) -> list[TokenEntry]:
    with open(path, encoding="utf-8") as f:
        return parse_tokens(f.read())


def _needs(request: web.Request) -> tuple[str, str | None]:
    """(the role `request` needs, the bucket it touches or None for cluster-wide)."""
    path, method = request.path, request.method
    if path.startswith(_ADMIN_PREFIXES):
        return "admin", None
    if path.startswith("/buckets/"):
        bucket, _, rest = path[len("/buckets/"):].partition("/")
        if rest == "props" and method != "GET":
            return "admin", bucket
        if method in ("GET", "HEAD") or rest == "mget":
            return "read", bucket
        return "write", bucket
    if path.startswith(("/kv/", "/counters/", "/sets/")):
        return ("read" if method in ("GET", "HEAD") else "write"), DEFAULT_BUCKET
    return "read", None


class Access:
    """The node's token table and the check every request passes."""

    def __init__(self, admin_token: str | None, tokens_file: str | None) -> None:
        self._admin = [TokenEntry(_digest(admin_token), "admin", None)] if admin_token else []
        self._file = tokens_file
        self._entries: list[TokenEntry] = []
        if tokens_file is not None:
            self._entries = load_tokens(tokens_file)

    @property
    def enabled(self) -> bool:
        """Client tokens are configured: every request but the open ones needs one."""
        return self._file is not None

    def reload(self) -> None:
        if self._file is not None:
            self._entries = load_tokens(self._file)

    def replace(self, other: Access) -> None:
        """Take `other`'s tokens (loaded already: a reload swaps whole tables)."""
        self._admin, self._file, self._entries = other._admin, other._file, other._entries

    def _find(self, given: str) -> TokenEntry | None:
        digest = _digest(given)
        found = None
        for entry in (*self._admin, *self._entries):  # no early exit: constant time
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found

    def refusal(self, request: web.Request) -> web.Response | None:
        """The answer refusing `request`, or None when its token allows it."""
        if not self.enabled or request.path in _OPEN:
            return None
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        given = given.strip()
        entry = self._find(given) if scheme.lower() == "bearer" and given else None
        if entry is None:
            return web.json_response(
                {"error": "a client token is required: send Authorization: Bearer <token>"},
                status=401, headers={"WWW-Authenticate": _REALM})
        role, bucket = _needs(request)
        if _RANK[entry.role] < _RANK[role]:
            return web.json_response(
                {"error": f"this token's role ({entry.role}) may not {request.method}"
                          f" {request.path}: it needs {role}"}, status=403)
        limited = entry.buckets is not None
        if limited and (bucket is None and role == "admin"
                        or bucket is not None and bucket not in entry.buckets):  # type: ignore[operator]
            where = f"bucket {bucket}" if bucket is not None else "the cluster"
            return web.json_response(
                {"error": f"this token may not touch {where}"}, status=403)
        return None

