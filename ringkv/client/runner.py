"""Running a plan over the nodes: every request through the failover walk, written once.

Job
---
A plan (``ringkv.client.plans``) yields requests and pauses; `over_nodes` turns it into
the two things a client can actually do, and nothing else: an `Attempt` (send these
httpx arguments to that node; report the httpx answer, or the httpx error) and a
`Sleep`. Between the two lies the failover policy (``ringkv.client.failover``),
followed for each request by `exchange`: the node to try, whether a failed attempt
may be made again elsewhere and after what pause, which node to prefer next, and the
`TransportError` when it gives up. `Client` and `AsyncClient` each drive these steps
in a loop of a few lines -- a blocking call and ``time.sleep``, or an awaited call and
``asyncio.sleep`` -- which is all that differs between them.

Invariants
----------
* A request is attempted as the policy allows and no more: a 503 or an httpx error
  is reported to the request's `Walk`, and only a pause it grants leads to another
  `Attempt`.
* Every attempt carries the client token as ``Authorization: Bearer`` unless the
  request has its own (an admin request's): ``ringkv.client.transport.request_args``.
* A `TransportError` (the walk gave up) is thrown into the plan at the request that
  failed, so the plan decides (today every plan lets it through); any other answer is
  sent to the plan, whose parser raises what it stands for.
* When the steps are closed (the caller stopped, was cancelled or failed), the plan is
  closed too.
* Given a `Router` (a client routing by the ring), a keyed request starts its walk at
  the replica the router names, the router's map is refreshed first when it is due
  (its requests exchanged like any other, a failure among them only leaving the old
  map), and every failed attempt is reported to the router too.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import httpx

from ringkv.client.errors import TransportError
from ringkv.client.failover import Failover, status_failure
from ringkv.client.plans import Plan, Sleep
from ringkv.client.protocol import HttpRequest, HttpResponse
from ringkv.client.routing import Router
from ringkv.client.transport import failure_of, gave_up, request_args, to_response

__all__ = ["Attempt", "Outcome", "Step", "exchange", "over_nodes", "refresh"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send one request to the node at `url`: ``http[url].request(**args)``."""

    url: str
    args: dict[str, Any]


Step: TypeAlias = Attempt | Sleep
# What the driver sends back: for an `Attempt` httpx's answer or the httpx error it
# raised, for a `Sleep` None.
Outcome: TypeAlias = httpx.Response | httpx.HTTPError | None


def exchange(
    req: HttpRequest, failover: Failover, token: str | None, router: Router | None = None
) -> Generator[Step, Outcome, HttpResponse]:
    """One request over the nodes, as the failover policy allows; the answer kept."""
    first = req.node
    if first is None and router is not None:
        first = router.url_for(req.route)
    walk = failover.start(req.resend, first)
    while True:
        outcome = yield Attempt(walk.url, request_args(req, token))
        if isinstance(outcome, httpx.Response):
            answer = to_response(outcome)
            failure = status_failure(answer.status)
            if failure is None:
                walk.succeeded()
                return answer
            if router is not None:
                router.failed(walk.url)
            pause = walk.failed(failure)
            if pause is None:
                return answer  # its parser raises what the answer stands for
        else:
            if outcome is None:
                raise TypeError("an Attempt is answered with an httpx response or error")
            if router is not None:
                router.failed(walk.url)
            pause = walk.failed(failure_of(outcome))
            if pause is None:
                raise gave_up(walk, outcome) from None
        yield Sleep(pause)


def refresh(
    router: Router, failover: Failover, token: str | None
) -> Generator[Step, Outcome, None]:
    """The router's refresh, its requests exchanged like any; a request that fails
    is answered None (the router then keeps what it had)."""
    updates = router.refresh()
    try:
        req = next(updates)
        while True:
            answer: HttpResponse | None
            try:
                answer = yield from exchange(req, failover, token)
            except TransportError:
                answer = None
            req = updates.send(answer)
    except StopIteration:
        return
    finally:
        updates.close()


def over_nodes(
    plan: Plan[T], failover: Failover, token: str | None, router: Router | None = None
) -> Generator[Step, Outcome, T]:
    """The steps of `plan` with each request made an `exchange` (a keyed one sent to a
    replica of its key first, given a `router`, whose map is refreshed when due);
    returns the plan's result."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Sleep):
                yield step
                step = next(plan)
                continue
            if router is not None and step.route is not None and router.due():
                yield from refresh(router, failover, token)
            try:
                answer = yield from exchange(step, failover, token, router)
            except TransportError as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(answer)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        plan.close()
