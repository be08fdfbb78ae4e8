#!/usr/bin/env python3
"""A long simulation sweep: thousands of seeds, a JSON report, every failing seed named.

`ringkv sim --seeds A:B` is the everyday sweep (CI runs 1:200); this script is for the
long ones that look for rare interleavings, e.g. overnight:

    python scripts/sim_sweep.py --seeds 1:5000 --jobs 2 --out sweep.json
    python scripts/sim_sweep.py --seeds 1:2000 --faults all      # with known-bug faults
    python scripts/sim_sweep.py --seeds 1:500 --repair-sweep  # also count read-only repairs
    python scripts/sim_sweep.py --seeds 1:200 --hostile 1     # under a hostile member

It exits 0 when every seed held every guarantee, 1 otherwise. The report holds the
sweep's figures (simulated-to-wall ratio, ops, acknowledged writes, faults injected)
and, for each failing seed, its failures and the last events of its trace; replay one
with `ringkv sim --seed S [same options]` (add `--trace` for every event).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from sim.cli import parse_faults, parse_seeds, print_report, sweep_report, sweep_with_progress
    from sim.scenario import Scenario
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sim.cli import parse_faults, parse_seeds, print_report, sweep_report, sweep_with_progress
    from sim.scenario import Scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1:2000", help="A:B inclusive [1:2000]")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes [2]")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--faults", default="default",
                        help="default, all, none, or a comma list (see ringkv sim --help)")
    parser.add_argument("--conflict", choices=("dvv", "lww"), default="dvv")
    parser.add_argument("--repair-sweep", action=argparse.BooleanOptionalAction,
                        default=False, help="count keys only the final reads converged")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hostile", type=int, default=0,
                        help="hostile members sending random well-formed messages [0]")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        base = Scenario(nodes=args.nodes, duration=args.duration,
                        faults=parse_faults(args.faults), conflict=args.conflict,
                        repair_sweep=args.repair_sweep, clients=args.clients,
                        hostile=args.hostile)
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    results, wall = sweep_with_progress(base, seeds, args.jobs, args.quiet)
    report = sweep_report(results, wall, args.jobs)
    report["scenario"] = {"nodes": args.nodes, "duration": args.duration,
                          "faults": list(base.faults), "conflict": args.conflict,
                          "repair_sweep": args.repair_sweep, "clients": args.clients,
                          "hostile": args.hostile}
    report["failures"] = {str(t.result.seed): {"failures": t.result.failures,
                                               "trace_tail": t.result.trace_tail}
                          for t in results if not t.result.ok}
    print_report(report, results)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"report written to {args.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
