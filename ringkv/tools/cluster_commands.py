"""`ringkv cluster status | leave | remove | lookup`: membership and the ring.

Job: show the members and their state as one node sees them (a table, or
``GET /cluster`` as JSON), ask a node to leave gracefully and follow its hand-over,
remove a node that is dead for good and follow the re-replication, and print a key's
preference list. Every command talks to its node through `ringkv.client.Client`; exit
codes are those of `ringkv.tools.exits`. `leave` and `remove` call admin endpoints:
they send `--admin-token` (`RINGKV_ADMIN_TOKEN`), and a refusal (401 / 403) is one line
saying what the node wants, exit 4.

Waiting (`leave`, on by default as it always was; `remove --wait`, off by default): the
command polls ``GET /cluster`` of every other member (at the HTTP address each
advertises, with the scheme and the security options of `--node`) until each member
that answers sees the node as `left` and none of them is still fetching ranges
(``transfers.syncing``), and, for a leave, the leaving node has not withdrawn (its own
view turned back to `up`: another leave won, or too few members would stay). Progress
-- ranges handed over and pending, the heirs the leaver still waits for, the time
elapsed -- is a line on stderr while it is a terminal (`ringkv.tools.progress`). Past
`--timeout` the command gives up with exit 4; the hand-over itself goes on.

`--json` on every command: one document on stdout, errors included (`JsonCommand`).
What the members answer while a wait polls them is hostile input: `HandOver` reads
only fields of the expected types, and bounds what it keeps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ringkv.tools.client_options import (
    admin_token_option,
    connect,
    json_option,
    node_option,
    security,
)
from ringkv.tools.exits import EXIT_ERROR, JsonCommand, client_errors, fail, print_json
from ringkv.tools.progress import StatusLine, duration, progress_option, show_progress

if TYPE_CHECKING:
    from ringkv.client import Client

__all__ = ["HandOver", "HandOverState", "cluster"]

POLL_EVERY = 0.5  # seconds between two rounds of GET /cluster while waiting
POLL_TIMEOUT = 5.0  # seconds one member may take to answer a poll
MAX_NAMES = 1024  # members read from one answer (a list longer than a cluster is junk)
MAX_RANGES = 1 << 20  # a range count above this is junk, read as 0

_ADDRESS = re.compile(r"[A-Za-z0-9._\-\[\]:]{1,253}:[0-9]{1,5}")


@click.group("cluster")
def cluster() -> None:
    """Cluster membership and ring commands."""


_STATUS_STYLE = {
    "up": "green",
    "down": "red",
    "joining": "yellow",
    "leaving": "yellow",
    "left": "dim",
}


@cluster.command("status", cls=JsonCommand)
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /cluster as JSON.")
def cluster_status(node: str, as_json: bool) -> None:
    """Show the members and their status, as one node sees them."""
    from rich.console import Console
    from rich.table import Table

    with client_errors(), connect(node) as kv:
        doc = kv.cluster()
    if as_json:
        print_json(doc)
        return
    me = doc.get("node_id")
    table = Table(title=f"ringkv cluster, as seen by {me}")
    for column in ("node", "status", "share", "http", "rpc"):
        table.add_column(column, justify="right" if column == "share" else "left")
    members = sorted(doc.get("members") or [], key=lambda m: str(m.get("node_id")))
    for m in members:
        status = str(m.get("status", "?"))
        style = _STATUS_STYLE.get(status, "")
        name = str(m.get("node_id", "?")) + (" *" if m.get("node_id") == me else "")
        share = m.get("replica_share")
        table.add_row(
            name,
            f"[{style}]{status}[/{style}]" if style else status,
            f"{100 * float(share):.1f}%" if isinstance(share, (int, float)) and share else "-",
            str(m.get("http", "")),
            str(m.get("rpc", "")),
        )
    console = Console()
    console.print(table)
    counts: dict[str, int] = {}
    for m in members:
        counts[str(m.get("status"))] = counts.get(str(m.get("status")), 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    console.print(
        f"n={doc.get('n')} r={doc.get('r')} w={doc.get('w')}"
        f"  members: {len(members)} ({summary or 'none'})"
        "  share: fraction of keys each node replicates",
        highlight=False,
    )
    transfers = doc.get("transfers")
    if isinstance(transfers, dict):
        console.print(f"transfers on {me}: {_transfer_summary(transfers)}", highlight=False)


def _transfer_summary(t: dict[str, Any]) -> str:
    parts = []
    if t.get("syncing"):
        parts.append(f"fetching ranges from {', '.join(t.get('fetching_from') or []) or '-'}"
                     f" ({t.get('ranges_left')} of {t.get('ranges_total')} left)")
    if t.get("leave_waiting_for"):
        parts.append("leaving; waiting for " + ", ".join(t["leave_waiting_for"]))
    parts.append(f"received {t.get('keys_received', 0)} keys"
                 f" ({t.get('bytes_received', 0)} B),"
                 f" sent {t.get('keys_sent', 0)} keys ({t.get('bytes_sent', 0)} B)")
    return "; ".join(parts)


@contextmanager
def admin_errors(node: str) -> Iterator[None]:
    """A 401 / 403 from an admin endpoint as one line saying what the node wants."""
    from ringkv.client import AuthError

    try:
        yield
    except AuthError as exc:
        if exc.status == 401:
            fail(f"{node} requires an admin token: give --admin-token or set"
                 f" RINGKV_ADMIN_TOKEN (401: {exc.message})", EXIT_ERROR, "auth", status=401)
        fail(f"{node} refused the admin request (403: {exc.message}); check --admin-token"
             " / RINGKV_ADMIN_TOKEN, or run the command on the node's own host", EXIT_ERROR,
             "auth", status=exc.status)


# ------------------------------------------------------------------ following a change


def _text(value: object, limit: int = 64) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RANGES:
        return value
    return 0


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(sorted({n for n in (_text(v) for v in value[:MAX_NAMES]) if n}))


UNKNOWN = "unknown"  # a view of a node that the answering member does not list


def _member_status(doc: Mapping[str, Any], node_id: str) -> str:
    """`doc`'s view of `node_id` (a /cluster answer): its status, or `UNKNOWN`."""
    members = doc.get("members")
    if not isinstance(members, list):
        return UNKNOWN
    for m in members[:MAX_NAMES]:
        if isinstance(m, dict) and m.get("node_id") == node_id:
            return _text(m.get("status"), 16) or UNKNOWN
    return UNKNOWN


def _transfers(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    t = doc.get("transfers")
    return t if isinstance(t, dict) else {}


@dataclass(frozen=True, slots=True)
class HandOverState:
    """Where a leave or a removal stands, as the members answered one round of polls."""

    target: str
    leaving: bool  # a leave (the target hands over); else a removal (survivors copy)
    seconds: float  # since the wait began
    views: Mapping[str, str | None]  # each member polled: its view (None: no answer)
    answered: int  # members that answered this round
    syncing: tuple[str, ...]  # members still fetching ranges
    ranges_total: int  # ranges the members fetch or fetched during the wait
    ranges_left: int
    heirs_total: int  # leave: heirs the leaver has waited for
    waiting_for: tuple[str, ...]  # leave: heirs it still waits for
    own_status: str | None  # leave: the leaver's view of itself (None: no answer)
    done: bool
    withdrew: bool  # leave: the leaver turned back to `up`

    @property
    def ranges_done(self) -> int:
        return self.ranges_total - self.ranges_left

    def line(self) -> str:
        """The progress line: the ranges first, what is slow to come last."""
        verb = "handed over" if self.leaving else "re-replicated"
        left = sum(1 for v in self.views.values() if v == "left")
        parts = [f"{self.target} {'leaving' if self.leaving else 'removed'},"
                 f" {duration(self.seconds)}:"]
        if self.ranges_total:
            parts.append(f"{self.ranges_done} of {self.ranges_total} ranges {verb},"
                         f" {self.ranges_left} pending;")
        elif self.syncing:
            parts.append("ranges being fetched;")
        if self.heirs_total:
            parts.append(f"heirs done {self.heirs_total - len(self.waiting_for)}"
                         f" of {self.heirs_total};")
        parts.append(f"seen as left by {left} of {len(self.views)} members")
        if self.syncing:
            parts.append("(fetching: " + ", ".join(self.syncing) + ")")
        return " ".join(parts)

    def doc(self) -> dict[str, Any]:
        """The state as JSON (a `--json` document's fields)."""
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 3),
            "views": dict(self.views),
            "syncing": list(self.syncing),
            "ranges_total": self.ranges_total,
            "ranges_done": self.ranges_done,
            "ranges_pending": self.ranges_left,
        }
        if self.leaving:
            out["heirs_total"] = self.heirs_total
            out["waiting_for"] = list(self.waiting_for)
        return out


class HandOver:
    """What a wait learns, round after round of ``GET /cluster`` answers (pure).

    Each member fetching ranges reports how many it fetches (``ranges_total``) and how
    many are left; once it is done, it reports nothing any more, so its last total is
    remembered and counted as done. The leaver's own answer names the heirs it waits
    for (``leave_waiting_for``); their number at its largest is the heirs' total.
    """

    __slots__ = ("_heirs", "_totals", "leaving", "target")

    def __init__(self, target: str, leaving: bool) -> None:
        self.target = target
        self.leaving = leaving
        self._totals: dict[str, int] = {}  # member -> its latest ranges_total
        self._heirs = 0

    def observe(self, views: Mapping[str, Mapping[str, Any] | None],
                own: Mapping[str, Any] | None, seconds: float) -> HandOverState:
        """One round: `views` maps each member polled to its answer (None: it did not
        answer); `own` is the leaver's own answer (a leave), `seconds` the time since
        the wait began."""
        seen: dict[str, str | None] = {}
        syncing: list[str] = []
        left = 0
        for name, doc in views.items():
            if doc is None:
                seen[name] = None
                continue
            seen[name] = _member_status(doc, self.target)
            t = _transfers(doc)
            if t.get("syncing") is True:
                syncing.append(name)
                total = _count(t.get("ranges_total"))
                self._totals[name] = total  # keys: the members polled, a bounded set
                left += min(_count(t.get("ranges_left")), total)
        answers = [v for v in seen.values() if v is not None]
        own_status = None
        waiting: tuple[str, ...] = ()
        if own is not None:
            own_status = _member_status(own, self.target)
            waiting = _names(_transfers(own).get("leave_waiting_for"))
            self._heirs = max(self._heirs, len(waiting))
        withdrew = self.leaving and own_status == "up"
        done = (bool(answers) and all(v == "left" for v in answers) and not syncing
                and not withdrew)
        return HandOverState(
            target=self.target, leaving=self.leaving, seconds=seconds, views=seen,
            answered=len(answers), syncing=tuple(sorted(syncing)),
            ranges_total=sum(self._totals.values()), ranges_left=left,
            heirs_total=self._heirs, waiting_for=waiting, own_status=own_status,
            done=done, withdrew=withdrew,
        )


def _member_url(scheme: str, address: object) -> str | None:
    """The URL of a member's advertised HTTP address, or None when it is not one."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        return None
    return f"{scheme}://{address}"


def _observers(stack: ExitStack, kv: Client, first: Mapping[str, Any], target: str,
               node: str) -> dict[str, Client | None]:
    """A client of every member to poll (None: its address is unusable): every member
    of `first` (the answer of --node) but the target and those already left. --node
    itself is polled through `kv`."""
    from ringkv.client import Client

    scheme = node.split(",", 1)[0].split("://", 1)[0]
    options: dict[str, Any] = {"timeout": POLL_TIMEOUT, **security()}
    me = first.get("node_id")
    members = first.get("members")
    out: dict[str, Client | None] = {}
    for m in members[:MAX_NAMES] if isinstance(members, list) else []:
        name = _text(m.get("node_id")) if isinstance(m, dict) else None
        if name is None or name == target or m.get("status") == "left":
            continue
        if name == me:
            out[name] = kv
            continue
        url = _member_url(scheme, m.get("http"))
        try:
            out[name] = None if url is None else stack.enter_context(
                Client(url, **options))
        except ValueError:
            out[name] = None
    if not out and me == target:
        out[target] = kv  # no other member to ask: the leaver's own word it is
    return out


def _poll(client: Client | None) -> dict[str, Any] | None:
    from ringkv.client import RingkvError

    if client is None:
        return None
    try:
        doc = client.cluster()
    except RingkvError:
        return None
    return doc if isinstance(doc, dict) else None


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _clock() -> float:
    return time.monotonic()


def follow(kv: Client, node: str, target: str, leaving: bool, timeout: float,
           line: StatusLine) -> HandOverState:
    """Poll the members until the change of `target` is complete, it was withdrawn, or
    `timeout` seconds passed; show each round on `line`. Raises what the client raises
    when --node itself cannot say who the members are."""
    began = _clock()
    with ExitStack() as stack:
        first = kv.cluster()
        if leaving:  # --node is the leaver: its own answer names it best
            target = _text(first.get("node_id")) or target
        observers = _observers(stack, kv, first, target, node)
        watch = HandOver(target, leaving)
        while True:
            views = {name: _poll(client) for name, client in observers.items()}
            own = (views.get(target) if target in observers else _poll(kv)) \
                if leaving else None
            state = watch.observe(views, own, _clock() - began)
            line.update(state.line())
            if state.done or state.withdrew or state.seconds >= timeout:
                return state
            _sleep(min(POLL_EVERY, max(0.0, timeout - state.seconds)))


def _gave_up(state: HandOverState, timeout: float) -> None:
    """Exit 4 when a wait ended without the change done (a withdrawal, or time)."""
    if state.withdrew:
        fail(f"{state.target} withdrew its leave and is up again (another leave is in"
             " flight, or too few members would stay); nothing was handed over for good",
             EXIT_ERROR, "withdrawn", node_id=state.target, **state.doc())
    if not state.done:
        what = "has not left" if state.leaving else "is not re-replicated"
        fail(f"{state.target} {what} after {timeout:g} s ({state.line()});"
             " the change goes on: follow it with ringkv cluster status",
             EXIT_ERROR, "timeout", node_id=state.target, **state.doc())


_wait_timeout = click.option(
    "--timeout", type=click.FloatRange(min=0.0), default=600.0, show_default=True,
    metavar="SECONDS", help="How long --wait waits.")


@cluster.command("leave", cls=JsonCommand)
@node_option
@admin_token_option
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the node has handed over its ranges and left.")
@_wait_timeout
@progress_option
@json_option
def cluster_leave(node: str, admin_token: str | None, wait: bool, timeout: float,
                  progress: bool | None, as_json: bool) -> None:
    """Ask the node at --node to hand its ranges to their new owners, then leave."""
    with client_errors(), connect(node, admin_token) as kv:
        with admin_errors(node):
            result = kv.leave()
        node_id = str(result.get("node_id"))
        if not wait:
            if as_json:
                print_json({"node_id": node_id, "status": result.get("status"),
                            "waited": False})
            else:
                click.echo(f"{node_id} is {result.get('status')}")
            return
        with StatusLine(show_progress(progress)) as line:
            state = follow(kv, node, node_id, True, timeout, line)
    _gave_up(state, timeout)
    if as_json:
        print_json({"node_id": state.target, "status": "left", "waited": True,
                    **state.doc()})
    else:
        click.echo(f"{state.target} has left the cluster; it can be stopped")


@cluster.command("remove", cls=JsonCommand)
@click.argument("node_id")
@node_option
@admin_token_option
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Wait until every member sees the node left and holds its ranges again.")
@_wait_timeout
@progress_option
@json_option
def cluster_remove(node_id: str, node: str, admin_token: str | None, wait: bool,
                   timeout: float, progress: bool | None, as_json: bool) -> None:
    """Remove NODE_ID, a node that is dead for good; its ranges are re-replicated."""
    with client_errors(), connect(node, admin_token) as kv:
        with admin_errors(node):
            result = kv.remove(node_id)
        if not wait:
            if as_json:
                print_json({"node_id": node_id, "status": result.get("status", "left"),
                            "waited": False})
            else:
                click.echo(f"{node_id} removed; its ranges are being re-replicated from"
                           " the survivors")
            return
        with StatusLine(show_progress(progress)) as line:
            state = follow(kv, node, node_id, False, timeout, line)
    _gave_up(state, timeout)
    if as_json:
        print_json({"node_id": node_id, "status": "left", "waited": True, **state.doc()})
    else:
        click.echo(f"{node_id} removed; every member sees it left and its ranges were"
                   f" re-replicated from the survivors ({state.ranges_total} ranges fetched"
                   f" in {duration(state.seconds)})")


@cluster.command("lookup", cls=JsonCommand)
@click.argument("key")
@node_option
@json_option
def cluster_lookup(key: str, node: str, as_json: bool) -> None:
    """Print KEY's preference list (its N primary replicas, in ring order)."""
    with client_errors(), connect(node) as kv:
        nodes = kv.lookup(key)
    if as_json:
        print_json({"key": key, "preference_list": nodes})
    else:
        click.echo(" ".join(nodes))
