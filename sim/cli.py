"""The command-line layer of the simulation: `ringkv sim`, seed sweeps, wall time.

Job: run one seed and print its summary (or its event trace), or sweep a range of seeds
over worker processes with a progress bar, and exit non-zero naming every failing seed.
This is the only module of `sim/` that reads the wall clock (to report wall seconds and
the simulated-to-wall ratio) or starts processes.

Invariants: a seed's result does not depend on the worker that ran it, nor on the
number of workers (each worker builds its world from the seed alone); results are
reported in seed order.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import click

from sim.nemesis import DEFAULT_FAULTS, FAULT_KINDS
from sim.scenario import Result, Scenario, run_scenario
from sim.trace import Trace
from sim.workload import OP_KINDS


@dataclass
class Timed:
    result: Result
    wall: float  # wall seconds (process CPU time would hide contention: we want wall)


def run_timed(scenario: Scenario) -> Timed:
    began = time.perf_counter()
    result = run_scenario(scenario)
    return Timed(result, time.perf_counter() - began)


def sweep(base: Scenario, seeds: list[int], jobs: int = 2,
          on_result: Callable[[Timed], None] | None = None) -> list[Timed]:
    """Run every seed (in `jobs` processes); results in seed order."""
    scenarios = [replace(base, seed=s) for s in seeds]
    results: list[Timed] = []
    if jobs <= 1 or len(scenarios) <= 1:
        for sc in scenarios:
            timed = run_timed(sc)
            results.append(timed)
            if on_result:
                on_result(timed)
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for timed in pool.imap_unordered(run_timed, scenarios, chunksize=1):
                results.append(timed)
                if on_result:
                    on_result(timed)
    results.sort(key=lambda t: t.result.seed)
    return results


def parse_seeds(text: str) -> list[int]:
    """`A:B` (inclusive), `A`, or a comma list of either."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            lo, _, hi = part.partition(":")
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError(f"empty seed range {part!r}")
            seeds.extend(range(a, b + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds")
    return seeds


def parse_faults(text: str) -> tuple[str, ...]:
    """`default`, `all`, `none`, or a comma list of fault kinds (`-kind` removes one)."""
    text = text.strip()
    if text in ("", "none"):
        return ()
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "default":
            chosen.extend(DEFAULT_FAULTS)
        elif part == "all":
            chosen.extend(FAULT_KINDS)
        elif part.startswith("-"):
            chosen = [k for k in chosen if k != part[1:]]
        elif part in FAULT_KINDS:
            chosen.append(part)
        else:
            raise ValueError(f"unknown fault kind {part!r}; known: {', '.join(FAULT_KINDS)}")
    return tuple(dict.fromkeys(chosen))


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """`kind=weight,...` (a bare kind weighs 1); empty: the default mix."""
    mix: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, _, weight = part.partition("=")
        try:
            mix.append((kind.strip(), int(weight) if weight else 1))
        except ValueError:
            raise ValueError(f"bad mix entry {part!r}: kind=weight") from None
    return tuple(mix)


def summary_line(t: Timed) -> str:
    r = t.result
    ratio = r.sim_seconds / t.wall if t.wall > 0 else 0.0
    return (f"seed {r.seed}: {'ok' if r.ok else 'FAILED'}  ops {r.ops}  acknowledged "
            f"{r.acknowledged}  lost {r.lost}  siblings max {r.siblings_max}  simulated "
            f"{r.sim_seconds:.1f} s  wall {t.wall:.2f} s  ({ratio:.0f}x)")


def print_single(t: Timed, as_json: bool) -> None:
    r = t.result
    if as_json:
        doc = r.to_dict()
        doc["wall_seconds"] = round(t.wall, 3)
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(summary_line(t))
    click.echo(f"  writes {r.writes}  repaired by the sweep {r.repaired}  diverged "
               f"{r.diverged}  hints left {r.hints_left}  writes applied twice "
               f"{r.reapplied}  events {r.events}")
    click.echo(f"  faults {r.faults}")
    if r.datatypes:
        click.echo(f"  data types {r.datatypes}")
    if r.checks:
        click.echo(f"  failures by checker {r.checks}")
    click.echo(f"  trace {r.trace_hash}")
    for line in r.failures:
        click.echo(f"  FAIL {line}", err=True)
    if r.failures and r.trace_tail:
        click.echo("  last events:", err=True)
        for line in r.trace_tail:
            click.echo(f"    {line}", err=True)


def sweep_with_progress(base: Scenario, seeds: list[int], jobs: int,
                        quiet: bool = False) -> tuple[list[Timed], float]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    began = time.perf_counter()
    failed: list[int] = []
    # The bar is for someone watching: none into a log or a pipe, where rich would
    # print the finished bar once (the FAILED lines below are printed either way).
    shown = not quiet and sys.stderr.isatty()
    with Progress(TextColumn("[bold]sim"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, disable=not shown) as progress:
        task = progress.add_task("seeds", total=len(seeds), status="")

        def on_result(t: Timed) -> None:
            if not t.result.ok:
                failed.append(t.result.seed)
                progress.console.print(f"[red]seed {t.result.seed} FAILED[/red]: "
                                       f"{t.result.failures[0].splitlines()[0][:160]}")
            progress.update(task, advance=1,
                            status=f"failed {len(failed)}" if failed else "all ok")

        results = sweep(base, seeds, jobs, on_result)
    return results, time.perf_counter() - began


def sweep_report(results: list[Timed], wall: float, jobs: int) -> dict[str, Any]:
    rs = [t.result for t in results]
    sim_total = sum(r.sim_seconds for r in rs)
    cpu_total = sum(t.wall for t in results)
    return {
        "seeds": len(rs),
        "first_seed": rs[0].seed if rs else None,
        "last_seed": rs[-1].seed if rs else None,
        "failed": [r.seed for r in rs if not r.ok],
        "jobs": jobs,
        "wall_seconds": round(wall, 2),
        "seed_wall_seconds_mean": round(cpu_total / max(1, len(rs)), 3),
        "seed_wall_seconds_max": round(max((t.wall for t in results), default=0.0), 3),
        "simulated_seconds": round(sim_total, 1),
        "sim_to_wall_per_process": round(sim_total / cpu_total, 1) if cpu_total else 0.0,
        "sim_to_wall_sweep": round(sim_total / wall, 1) if wall else 0.0,
        "ops": sum(r.ops for r in rs),
        "acknowledged": sum(r.acknowledged for r in rs),
        "lost": sum(r.lost for r in rs),
        "siblings_max": max((r.siblings_max for r in rs), default=0),
        "repaired_keys": sum(r.repaired for r in rs),
        "seeds_needing_repair_sweep": sum(1 for r in rs if r.repaired),
        "writes_applied_twice": sum(r.reapplied for r in rs),
        "anti_entropy": {k: sum(int(r.stats.get(f"ae_{k}", 0)) for r in rs)
                         for k in ("keys_repaired", "exchanges", "bytes_sent", "expired",
                                   "tombstones_compacted")},
        "faults": _sum_faults(rs),
        # Failure lines per checker, and seeds each checker failed.
        "failures_by_check": _sum(r.checks for r in rs),
        "seeds_failed_by_check": _sum({k: 1 for k in r.checks} for r in rs),
        "datatypes": _sum(r.datatypes for r in rs),
        "slowest_seeds": {str(t.result.seed): round(t.wall, 2) for t in
                          sorted(results, key=lambda t: -t.wall)[:5]},
    }


def _sum_faults(rs: list[Result]) -> dict[str, int]:
    return _sum(r.faults for r in rs)


def _sum(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def print_report(report: dict[str, Any], results: list[Timed]) -> None:
    click.echo(f"seeds {report['first_seed']}..{report['last_seed']} ({report['seeds']}): "
               f"{report['seeds'] - len(report['failed'])} ok, {len(report['failed'])} failed")
    click.echo(f"  ops {report['ops']}  acknowledged {report['acknowledged']}  lost "
               f"{report['lost']}  siblings max {report['siblings_max']}")
    click.echo(f"  simulated {report['simulated_seconds']:.0f} s in {report['wall_seconds']:.1f}"
               f" s wall with {report['jobs']} processes: {report['sim_to_wall_sweep']:.0f}x "
               f"overall, {report['sim_to_wall_per_process']:.0f}x per process, "
               f"{report['seed_wall_seconds_mean']:.2f} s per seed (max "
               f"{report['seed_wall_seconds_max']:.2f})")
    click.echo(f"  keys only the repair sweep converged: {report['repaired_keys']} in "
               f"{report['seeds_needing_repair_sweep']} seeds; writes applied twice: "
               f"{report['writes_applied_twice']}")
    ae = report["anti_entropy"]
    click.echo(f"  anti-entropy: {ae['keys_repaired']} keys repaired in {ae['exchanges']} "
               f"exchanges ({ae['bytes_sent'] / 1e6:.1f} MB); {ae['expired']} expiries "
               f"rewritten, {ae['tombstones_compacted']} tombstones compacted "
               f"(running incarnations)")
    click.echo(f"  faults {report['faults']}")
    if report["datatypes"]:
        click.echo(f"  data types {report['datatypes']}")
    checks = report["failures_by_check"]
    click.echo("  failures by checker: " + (", ".join(
        f"{k} {v} in {report['seeds_failed_by_check'][k]} seeds" for k, v in checks.items())
        if checks else "none"))
    for t in results:
        if not t.result.ok:
            r = t.result
            click.echo(f"FAILED seed {r.seed}: {len(r.failures)} failures; first: "
                       f"{r.failures[0].splitlines()[0][:300]}", err=True)
            if r.lost:
                click.echo(f"  seed {r.seed} lost {r.lost} acknowledged writes", err=True)
    if report["failed"]:
        click.echo(f"failing seeds: {' '.join(map(str, report['failed']))}", err=True)


def iter_trace(scenario: Scenario) -> Iterator[str]:
    trace = Trace(keep_text=True)
    result = run_scenario(scenario, trace)
    yield from trace.lines
    yield f"# {'ok' if result.ok else 'FAILED'} trace {result.trace_hash}"
    for line in result.failures:
        yield f"# FAIL {line}"


@click.command("sim", context_settings={"max_content_width": 100})
@click.option("--seed", type=int, default=None, help="Run one scenario with this seed.")
@click.option("--seeds", "seed_range", default=None, metavar="A:B",
              help="Sweep seeds A..B inclusive (also 'A,B,C' or mixes).")
@click.option("--trace", "show_trace", is_flag=True,
              help="Print the event trace of the one seed (--seed).")
@click.option("--nodes", type=click.IntRange(3, 32), default=5, show_default=True)
@click.option("--duration", type=float, default=300.0, show_default=True,
              help="Simulated seconds per scenario (at least 40).")
@click.option("--faults", default="default", show_default=True,
              help="Fault mix: 'default', 'all', 'none', or a comma list of "
              + ", ".join(FAULT_KINDS) + " ('-kind' removes one).")
@click.option("--conflict", type=click.Choice(["dvv", "lww"]), default="dvv",
              show_default=True, help="The nodes' conflict mode (lww: negative control).")
@click.option("--repair-sweep/--no-repair-sweep", default=False, show_default=True,
              help="Let the final r=N reads repair replicas before the convergence check "
              "(off: anti-entropy alone must converge them).")
@click.option("--clients", type=click.IntRange(0, 64), default=4, show_default=True)
@click.option("--ae-interval", type=click.FloatRange(min=0.1), default=2.0,
              show_default=True, help="Seconds between anti-entropy exchanges per peer.")
@click.option("--lose-hints", type=click.FloatRange(min=0.0), default=0.0,
              show_default=True,
              help="Mean seconds between losses of a node's hints (0: never).")
@click.option("--long-partition", type=click.FloatRange(min=0.0), default=0.0,
              show_default=True, help="Seconds one node is cut off during chaos (0: none).")
@click.option("--cold-keys", type=click.IntRange(0, 100_000), default=0, show_default=True,
              help="Registers in a write-heavy, read-light mix (0: the default workload).")
@click.option("--hostile", type=click.IntRange(0, 8), default=0, show_default=True,
              help="Hostile members: authenticated peers sending random well-formed "
              "messages of every type during chaos (sim/hostile.py).")
@click.option("--datatypes/--no-datatypes", default=True, show_default=True,
              help="Counters, sets, conditional writes and key listing in the workload mix "
              "(sim/datatypes.py); off: the value kinds alone.")
@click.option("--mix", default="", metavar="KIND=W,...",
              help="The workload mix instead of the default, e.g. 'set=3,incr=1' (kinds: "
              + ", ".join(OP_KINDS) + ").")
@click.option("--latency", type=click.Choice(["mixed", "exp", "uniform", "lognormal",
                                              "pareto"]), default="mixed", show_default=True,
              help="Per-link latency distribution.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes for a sweep.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def sim_command(seed: int | None, seed_range: str | None, show_trace: bool, nodes: int,
                duration: float, faults: str, conflict: str, repair_sweep: bool,
                clients: int, ae_interval: float, lose_hints: float, long_partition: float,
                cold_keys: int, hostile: int, datatypes: bool, mix: str, latency: str,
                jobs: int, as_json: bool, quiet: bool) -> None:
    """Run the deterministic simulation: one seed, or a sweep of seeds.

    Exits 0 when every guarantee held for every seed, 1 naming the failing seeds
    otherwise, 2 on usage errors. A failing seed replays exactly: rerun it with
    --seed S (and the same options), add --trace for its events.
    """
    try:
        base = Scenario(seed=seed or 1, nodes=nodes, duration=duration,
                        faults=parse_faults(faults), conflict=conflict,
                        repair_sweep=repair_sweep, clients=clients, latency=latency,
                        ae_interval=ae_interval, lose_hints=lose_hints,
                        long_partition=long_partition, cold_keys=cold_keys,
                        hostile=hostile, datatypes=datatypes, mix=parse_mix(mix))
        seeds = parse_seeds(seed_range) if seed_range else [seed or 1]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if seed is not None and seed_range:
        raise click.UsageError("give --seed or --seeds, not both")
    if show_trace:
        if len(seeds) != 1:
            raise click.UsageError("--trace prints one seed: use --seed S")
        ok = True
        for line in iter_trace(replace(base, seed=seeds[0])):
            click.echo(line)
            ok = ok and not line.startswith("# FAIL")
        sys.exit(0 if ok else 1)
    if seed_range is None:
        timed = run_timed(replace(base, seed=seeds[0]))
        print_single(timed, as_json)
        sys.exit(0 if timed.result.ok else 1)
    results, wall = sweep_with_progress(base, seeds, jobs, quiet or as_json)
    report = sweep_report(results, wall, jobs)
    if as_json:
        report["results"] = [dict(t.result.to_dict(), wall_seconds=round(t.wall, 3))
                             for t in results]
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_report(report, results)
    sys.exit(1 if report["failed"] else 0)
