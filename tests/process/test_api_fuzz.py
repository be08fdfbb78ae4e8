"""The whole HTTP API, fuzzed from its OpenAPI document against a live 3-node cluster.

schemathesis generates requests for every operation of `ringkv/server/openapi.json`,
valid and invalid (positive and negative modes), and sends them round-robin to three
real `ringkv serve` processes on loopback. Each response is checked:

- no 5xx other than the contract's 503 (quorum not reached, node not live) and 507;
- its status code, Content-Type, headers and JSON body are what the document says;

and after the run every node is still alive, answers `/health` with 200, and sees every
member up. The nodes have an admin token: `/debug/*` requests carry it (so the handlers
behind the guard are fuzzed too), `POST /cluster/leave` and `/cluster/remove/{id}` do
not (they are answered 401/403 and the cluster stays whole for the other requests).

Budget: `RINGKV_FUZZ_EXAMPLES` generated requests in all (default 2,000, spread by
weight over the operations; a parameterless operation needs only a few), from a fresh
seed each run (printed; `RINGKV_FUZZ_SEED` replays one). The big run is
`scripts/fuzz api --examples 100000`.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok

from ringkv.server import openapi
from tests.support.procs import Cluster

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "fuzz-admin-token"
TOTAL = int(os.environ.get("RINGKV_FUZZ_EXAMPLES", "2000"))
SEED = int(os.environ.get("RINGKV_FUZZ_SEED") or random.SystemRandom().getrandbits(32))
ALLOWED_5XX = {503, 507}
# Where the generated requests go: the operations with inputs to vary, by weight.
WEIGHTS = {
    "PUT /kv/{key}": 6,
    "GET /kv/{key}": 5,
    "DELETE /kv/{key}": 4,
    "GET /ring/lookup": 2,
    "GET /debug/local/kv/{key}": 2,
    "GET /debug/latency": 1,
    "POST /cluster/remove/{node_id}": 1,
}
FIXED = 10  # at most, for an operation without parameters: each is one request
SCHEMA = schemathesis.openapi.from_dict(openapi.document())
LABELS = [result.ok().label for result in SCHEMA.get_all_operations()
          if isinstance(result, Ok)]
SENT: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()


def budget(label: str) -> int:
    weight = WEIGHTS.get(label)
    if weight is None:
        return FIXED
    return math.ceil(TOTAL * weight / sum(WEIGHTS.values()))


class UnexpectedServerError(Failure):
    def __init__(self, operation: str, status: int, body: str) -> None:
        super().__init__(operation=operation, title="Server error",
                         message=f"{status} (only {sorted(ALLOWED_5XX)} may be answered)"
                                 f": {body[:500]}")


def no_server_error_but_503_507(ctx: Any, response: Any, case: Any) -> None:
    status = response.status_code
    if status >= 500 and status not in ALLOWED_5XX:
        raise UnexpectedServerError(case.operation.label, status, response.text)


CHECKS = [no_server_error_but_503_507, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# A 200 of these is a stored value under the Content-Type it was stored with, which an
# earlier fuzzed PUT chose (`application/json` over bytes that are not JSON, say): the
# document says "any bytes, any type" (`*/*`, binary), so the body is not parsed as the
# type it names. Everything else of the answer is checked.
STORED_VALUE_READS = {"GET /kv/{key}", "GET /buckets/{bucket}/kv/{key}"}
VALUE_CHECKS = [c for c in CHECKS if c is not response_schema_conformance]


def checks_for(label: str, status: int) -> list[Any]:
    return VALUE_CHECKS if label in STORED_VALUE_READS and status == 200 else CHECKS


@pytest.fixture(scope="module")
def cluster(make_module_cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    yield make_module_cluster(size=3, extra_args=("--admin-token", ADMIN_TOKEN))


@pytest.mark.parametrize("label", LABELS)
def test_fuzz_operation(cluster: Cluster, label: str) -> None:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None
    nodes = itertools.cycle([n.url for n in cluster])
    admin = label.split(" ", 1)[1].startswith("/debug/")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=budget(label), deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call(base_url=next(nodes), headers=headers, timeout=30)
        SENT[label] += 1
        STATUSES[(label, response.status_code)] += 1
        case.validate_response(response, checks=checks_for(label, response.status_code),
                               headers=headers)

    print(f"\n{label}: seed {SEED} (RINGKV_FUZZ_SEED replays it)")
    seed(SEED)(run)()
    assert SENT[label] >= 1


def test_the_cluster_is_whole_after_the_fuzz(cluster: Cluster) -> None:
    total = sum(SENT.values())
    summary = ", ".join(f"{label} {status}: {n}" for (label, status), n in
                        sorted(STATUSES.items()))
    print(f"\n{total} generated requests (seed {SEED}): {summary}")
    if len(SENT) == len(LABELS):  # the whole module ran, not one operation picked out
        assert total >= TOTAL, dict(SENT)
    for node in cluster:
        assert node.alive, f"{node.node_id} died:\n{node.tail()}"
        assert node.request("GET", "/health").status_code == 200, node.node_id
        assert "Traceback" not in node.log_text(), node.tail(80)
    cluster.wait_all_up(timeout=15)
