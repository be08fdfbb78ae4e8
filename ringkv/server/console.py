"""The operator's web console: a live page at ``GET /ui``, served by every node.

Job: serve the page (``index.html``, ``console.js``, ``console.css`` and an icon: package
data in ``ringkv/server/console/``, hand-written, no build step, nothing fetched from
elsewhere) and the two documents it needs beyond ``/cluster`` and ``/metrics``:

- ``GET /ui/ring.json``: this node's ring as arcs coloured by owner. ``owners`` lists
  the ring's members (sorted); ``arcs`` is ``[[end, owner], ...]`` in ring order, ``end``
  a fraction of the ring in [0, 1] and ``owner`` an index into ``owners``: each arc runs
  clockwise from the previous arc's end (the first from the last's, wrapping) to its own.
  Neighbouring vnodes of one owner are one arc. ``pending`` is the ring a membership
  change is moving to, in the same form, or null when none is in flight.
- ``GET /ui/state.json``: what the page shows and neither of those holds: this node's
  liveness, anti-entropy progress (Merkle trees built, ranges seen equal on every other
  replica), hints by target, and how the admin endpoints would treat this browser.

The page polls ``/cluster``, ``/metrics`` and these every 1.5 s; request rates and
p50/p99 are differences of successive ``/metrics`` scrapes, computed in the browser.

Invariants:
- Every answer under ``/ui`` carries a strict Content-Security-Policy (``default-src
  'self'``, no inline script or style, no plugins, no framing), ``nosniff`` and no
  referrer. The page never builds markup from server data (node ids are chosen by
  users): it uses ``textContent``, ``createElement`` and SVG attributes only.
- The admin token lives only in the page's memory (a password field, never stored) and
  is sent as ``Authorization: Bearer`` on the admin POSTs alone. Nothing here needs it;
  ``state.json`` only reports what the admin guard would answer this browser.
- A node with client tokens (``--tokens-file``, `ringkv.server.access`) serves the page
  and its files to anyone (they hold no data) but answers ``401`` to the polls, these
  two documents included, without a token. The page then asks for a read token in a
  second password field, never stored either, and sends it as ``Authorization: Bearer``
  on its polls alone: never with the admin POSTs, and the admin token never with them.
- ``ring.json`` is bounded whatever the cluster: at most `MAX_ARCS` arcs per ring. A
  ring with more (100 nodes x 256 vnodes is ~25,000 arcs) is coarsened into `MAX_ARCS`
  equal slices, each drawn in the colour of the owner of most of it (``exact`` says
  which). Rings are immutable, so the document is built once per ring and answered
  ``304`` to a matching ``If-None-Match``.
- Reading changes nothing: the handlers only read the node's state. The files are read
  once, when the routes are registered. One missing (an install without the package
  data) is logged then as an error and its route answers 500 naming it: the node keeps
  serving its data, and the broken install is plain to whoever opens the console.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from ring.ring import Ring
from ring.token import MAX_TOKEN, TOKEN_SPACE
from ringkv.server.admin_auth import AdminGuard

if TYPE_CHECKING:
    from ringkv.server.runtime import NodeRuntime

__all__ = ["CSP", "MAX_ARCS", "RingArcs", "admin_mode", "register", "ring_arcs"]

log = logging.getLogger("ringkv")

MAX_ARCS = 2048  # arcs per ring drawn: ~30 KB of JSON, and finer than a pixel on screen
MAX_HINT_TARGETS = 32  # targets listed with their pending hints, the largest first
ASSET_PACKAGE = "ringkv.server"
ASSET_DIR = "console"
# The files of the page: route -> (file, content type).
ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/ui/console.css": ("console.css", "text/css; charset=utf-8"),
    "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
       " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none';"
       " frame-ancestors 'none'")
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_FRACTION_DIGITS = 7  # 1e-7 of the ring: far below a pixel on any screen

Handler = Callable[[web.Request], Awaitable[web.Response]]


# --- the ring as arcs (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RingArcs:
    """A ring as arcs: arc ``i`` runs from ``ends[i - 1]`` (wrapping) to ``ends[i]`` and
    belongs to ``owners[owner_of[i]]``. A single arc is the whole ring; none, no ring."""

    owners: tuple[str, ...]
    ends: tuple[int, ...]
    owner_of: tuple[int, ...]
    vnodes: int
    exact: bool

    def to_json(self) -> dict[str, Any]:
        """The arcs with their ends as fractions of the ring, strictly increasing: an arc
        shorter than the precision kept, whose end would equal the one before it, is
        left out (its sliver goes to the next arc), so none reads as the whole circle."""
        arcs: list[list[float | int]] = []
        for end, owner in zip(self.ends, self.owner_of, strict=True):
            fraction = round(end / TOKEN_SPACE, _FRACTION_DIGITS)
            if not arcs or fraction > arcs[-1][0]:
                arcs.append([fraction, owner])
        return {"owners": list(self.owners), "arcs": arcs, "vnodes": self.vnodes,
                "exact": self.exact}


def ring_arcs(ring: Ring, max_arcs: int = MAX_ARCS) -> RingArcs:
    """`ring` as at most `max_arcs` arcs, exact when it fits (see the module docstring)."""
    if max_arcs < 1:
        raise ValueError(f"max_arcs must be at least 1, got {max_arcs}")
    owners = ring.nodes
    index = {node: i for i, node in enumerate(owners)}
    # (token, node) order is the ring's own: on a shared token the smaller node id comes
    # first and owns the arc; the other vnode's arc is empty and is not drawn.
    entries = sorted((t, node) for node, tokens in ring.token_map().items() for t in tokens)
    ends: list[int] = []
    owner_of: list[int] = []
    for token, node in entries:
        if ends and token == ends[-1]:
            continue
        ends.append(token)
        owner_of.append(index[node])
    ends, owner_of = _merge_runs(ends, owner_of)
    exact = len(ends) <= max_arcs
    if not exact:
        ends, owner_of = _merge_runs(*_coarsen(ends, owner_of, max_arcs))
    return RingArcs(owners, tuple(ends), tuple(owner_of), len(entries), exact)


def _merge_runs(ends: list[int], owner_of: list[int]) -> tuple[list[int], list[int]]:
    """One arc for each run of neighbouring arcs of one owner, around the circle.

    An arc whose successor has the same owner is dropped: the successor's arc then
    starts where the dropped one started. One owner everywhere leaves one arc.
    """
    count = len(ends)
    keep = [i for i in range(count) if owner_of[i] != owner_of[(i + 1) % count]]
    if not keep and count:
        keep = [count - 1]
    return [ends[i] for i in keep], [owner_of[i] for i in keep]


def _coarsen(ends: list[int], owner_of: list[int],
             slices: int) -> tuple[list[int], list[int]]:
    """`slices` equal slices of the ring, each given the owner of most of it.

    The arcs are laid out as segments of [0, TOKEN_SPACE) (the first, wrapping, arc cut
    in two at 0); one sweep over slices and segments together: O(arcs + slices).
    """
    segments: list[tuple[int, int, int]] = [(0, ends[0], owner_of[0])]
    segments += [(ends[k - 1], ends[k], owner_of[k]) for k in range(1, len(ends))]
    segments.append((ends[-1], TOKEN_SPACE, owner_of[0]))
    out_ends: list[int] = []
    out_owner: list[int] = []
    k = 0
    for j in range(slices):
        lo, hi = j * TOKEN_SPACE // slices, (j + 1) * TOKEN_SPACE // slices
        while segments[k][1] <= lo:
            k += 1
        weight: dict[int, int] = {}
        m = k
        while m < len(segments) and segments[m][0] < hi:
            start, end, owner = segments[m]
            overlap = min(hi, end) - max(lo, start)
            if overlap > 0:
                weight[owner] = weight.get(owner, 0) + overlap
            m += 1
        # The largest share wins; a tie goes to the first owner, so every node agrees.
        best = max(weight, key=lambda o: (weight[o], -o))
        out_ends.append(min(hi, MAX_TOKEN))
        out_owner.append(best)
    return out_ends, out_owner


# --- what the page is told about the admin endpoints ---------------------------------------


def admin_mode(guard: AdminGuard, request: web.Request) -> str:
    """How the admin endpoints would treat this client: ``open`` (no token needed: the
    node has none and the client is on loopback), ``token`` (the node wants its admin
    token) or ``loopback-only`` (the node has no token and this client is not local).

    Asked of the guard itself with no credentials, so it cannot drift from it.
    """
    probe = request
    if "Authorization" in request.headers:
        headers = CIMultiDict(request.headers)
        del headers["Authorization"]
        probe = request.clone(headers=headers)
    refused = guard.refusal(probe)
    if refused is None:
        return "open"
    return "token" if refused.status == 401 else "loopback-only"


# --- the routes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(request: web.Request, etag: str) -> bool:
    """True when the request's If-None-Match names `etag` (weakly, as RFC 9110 says)."""
    header = request.headers.get("If-None-Match")
    if header is None or len(header) > 4096:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags or "*" in tags


def _load_assets() -> dict[str, _Asset]:
    """The files of the page by route; one that cannot be read is logged and left out."""
    folder = resources.files(ASSET_PACKAGE).joinpath(ASSET_DIR)
    assets: dict[str, _Asset] = {}
    missing: list[str] = []
    for route, (name, ctype) in ASSETS.items():
        try:
            body = folder.joinpath(name).read_bytes()
        except OSError:
            missing.append(name)
            continue
        assets[route] = _Asset(body, ctype, _etag(body))
    if missing:
        log.error("the web console cannot be served: %s missing from %s/%s (an install"
                  " without the package data)", ", ".join(missing), ASSET_PACKAGE,
                  ASSET_DIR)
    return assets


def _answer(body: bytes, ctype: str, etag: str | None, request: web.Request,
            cache: str) -> web.Response:
    headers = dict(_SECURITY_HEADERS)
    headers["Cache-Control"] = cache
    if etag is not None:
        headers["ETag"] = etag
        if _matches(request, etag):
            return web.Response(status=304, headers=headers)
    headers["Content-Type"] = ctype
    return web.Response(body=body, headers=headers)


class Console:
    """The handlers of ``/ui``; one per app."""

    __slots__ = ("runtime", "guard", "assets", "_ring_cache")

    def __init__(self, runtime: NodeRuntime, guard: AdminGuard) -> None:
        self.runtime = runtime
        self.guard = guard
        self.assets = _load_assets()
        # (ring, pending ring, n, body, etag) of the last ring.json built.
        self._ring_cache: tuple[Ring, Ring, int, bytes, str] | None = None

    def asset(self, route: str) -> Handler:
        """The handler of one file of the page."""
        asset = self.assets.get(route)
        if asset is None:
            why = (f"the console's {ASSETS[route][0]} is missing from this install"
                   f" ({ASSET_PACKAGE}/{ASSET_DIR}: package data)")

            async def missing(request: web.Request) -> web.Response:
                response = web.json_response({"error": why}, status=500)
                response.headers.update(_SECURITY_HEADERS)
                return response

            return missing

        async def serve(request: web.Request) -> web.Response:
            # Revalidated on every load, so a node upgraded in place serves its new page.
            return _answer(asset.body, asset.content_type, asset.etag, request, "no-cache")

        return serve

    async def ring(self, request: web.Request) -> web.Response:
        node = self.runtime.node
        ring, pending = node.ring, node.pending
        cached = self._ring_cache
        if (cached is None or cached[0] is not ring or cached[1] is not pending
                or cached[2] != node.n):
            doc = {"node_id": node.id, "n": node.n, **ring_arcs(ring).to_json(),
                   "pending": (ring_arcs(pending).to_json()
                               if pending is not ring and pending != ring else None)}
            body = json.dumps(doc, separators=(",", ":")).encode()
            cached = self._ring_cache = (ring, pending, node.n, body, _etag(body))
        return _answer(cached[3], "application/json", cached[4], request, "no-cache")

    async def state(self, request: web.Request) -> web.Response:
        runtime = self.runtime
        node = runtime.node
        ae = node.anti_entropy
        stats = node.stats
        shared = [(r, peers) for r, peers in ae.peers_of.items() if peers]
        confirmed = sum(1 for r, peers in shared
                        if all(p in ae.confirmed.get(r, {}) for p in peers))
        by_target = sorted(((target, len(keys)) for target, keys
                            in node.store.hint_index.items() if keys),
                           key=lambda item: (-item[1], item[0]))
        doc = {
            "node_id": node.id,
            "time": time.time(),
            "liveness": self._liveness(),
            "admin": admin_mode(self.guard, request),
            "anti_entropy": {
                "interval": runtime.config.anti_entropy_interval,
                "ranges": len(ae.trees),
                "built": sum(1 for tree in ae.trees.values() if tree.ready),
                "shared": len(shared),
                "confirmed": confirmed,
                "exchanges": ae.stats.exchanges,
                "keys_repaired": ae.stats.keys_repaired,
                "keys_sent": ae.stats.keys_sent,
                "bytes_sent": ae.stats.bytes_sent,
            },
            "hints": {
                "pending": sum(count for _, count in by_target),
                "stored": stats.hints_stored,
                "delivered": stats.hints_delivered,
                "by_target": [{"node_id": target, "pending": count}
                              for target, count in by_target[:MAX_HINT_TARGETS]],
            },
            "read_repairs": stats.read_repairs,
            "requests_waiting": runtime.waiting(),
            "http_connections": runtime.edge.active,
            "faults": sum(node.faults.values()),
        }
        return _answer(json.dumps(doc, separators=(",", ":")).encode(), "application/json",
                       None, request, "no-store")

    def _liveness(self) -> str:
        """This node's own state: ``up`` only once it is up and holds its ranges."""
        node = self.runtime.node
        if not node.joined or node.transfers.held is None:
            return "joining"
        me = node.members.get(node.id)
        return me.status if me is not None else "joining"


def register(app: web.Application, runtime: NodeRuntime, guard: AdminGuard) -> None:
    """Serve the console on `app`: the page, its assets, ring.json and state.json."""
    console = Console(runtime, guard)
    for route in ASSETS:
        app.router.add_get(route, console.asset(route))
    app.router.add_get("/ui/ring.json", console.ring)
    app.router.add_get("/ui/state.json", console.state)
