"""The simulation's workload and checkers against a real cluster, over HTTP.

The deterministic simulation (the rest of `sim`) runs `sim.workload.Workload` on a
simulated world and judges it with `sim.checkers`; this package runs the very same
workload on a world of real time and HTTP (`sim.live.world`) and judges it with the very
same checkers (`sim.live.checks`), so that the Docker Compose fault test
(`scripts/compose-test`) tests what the simulation tests. It is that test's home for
everything but Docker and the faults.

Invariants: the one part of `sim` on an event loop and a wall clock (asyncio, httpx),
so nothing of the deterministic simulation imports it (`tests/sim/test_live.py` checks
this); it uses only public names of `sim.workload` and `sim.checkers`; it speaks to
nodes with `ringkv.client.protocol` only, never through `ringkv.server`.
"""
