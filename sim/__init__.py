"""The deterministic simulation of ringkv (FoundationDB style).

One seeded world (`sim.world.World`) owns a virtual clock, one `random.Random` and a
heap of events, and drives the very same `ringkv.core.node.Node` objects the asyncio runtime
drives, with the real wire codec and the in-memory engine. A simulated network and a
nemesis (`sim.network`, `sim.nemesis`) inject faults; a workload (`sim.workload`) goes
through the client-facing coordinator path; checkers (`sim.checkers`) judge the history
once the cluster has healed. `sim.scenario.run_scenario` ties one seed together.
`sim.hostile` adds, on request, authenticated members that attack with random
well-formed messages.

Invariant of the whole package: the same seed gives the same trace, byte for byte,
whatever the process (no wall clock, no sockets, no asyncio, no iteration over sets of
str in an order that matters; the only `time` import is in `sim.cli`, to report wall
seconds). The one exception is `sim.live`: it runs the same workload and checkers
against a real cluster over HTTP (the Docker Compose fault test uses it), and nothing
else in the package imports it.
"""

from sim.scenario import (
    DEFAULT_FAULTS,
    FAULT_KINDS,
    KNOWN_BUG_FAULTS,
    Result,
    Scenario,
    run_scenario,
)

__all__ = ["DEFAULT_FAULTS", "FAULT_KINDS", "KNOWN_BUG_FAULTS", "Result", "Scenario",
           "run_scenario"]
