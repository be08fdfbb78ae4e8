#!/usr/bin/env python3
"""Scale figures of the gossip protocol, from the seeded simulation (docs/membership.md).

    python scripts/gossip_scale.py                      # 10, 50, 200 nodes; joins 3..20
    python scripts/gossip_scale.py --sizes 10,50 --trials 5 --seed 2
    python scripts/gossip_scale.py --no-gossip          # the key-movement table only
    python scripts/gossip_scale.py --sizes "" --joins 3:3   # the pause sweep (and one join)

Prints two markdown tables: per cluster size, the time for one node's record change to
reach every node (median/max over trials), gossip bytes sent per node per second
(every message encoded with ringkv.core.wire), and the time until each other node judges a
killed node down (median/max over observers and trials) and, once it restarts, until
each judges it up again; how many stalls of 1-4 s of one node of ten were judged down
by any node; and, per cluster size n, the
share of keys whose replicas change when one node joins (N=3, 256 vnodes). The same
seed prints the same figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from sim.gossip_scale import measure, movement_table, pause_sweep
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sim.gossip_scale import measure, movement_table, pause_sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,200", help="cluster sizes, comma separated")
    parser.add_argument("--trials", type=int, default=3, help="changes and kills per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--joins", default="3:20", help="cluster sizes n for one join, A:B")
    parser.add_argument("--no-gossip", action="store_true", help="skip the gossip tables")
    parser.add_argument("--pause-seeds", type=int, default=20,
                        help="worlds per pause length (5 pauses each)")
    args = parser.parse_args()

    if not args.no_gossip:
        sizes = [int(x) for x in args.sizes.split(",") if x]
        if sizes:
            print("| nodes | convergence median / max (s) | gossip bytes/node/s "
                  "| detection median / max (s) | restart seen up median / max (s) "
                  "| wall (s) |")
            print("|---:|---:|---:|---:|---:|---:|")
        for n in sizes:
            started = time.perf_counter()
            row = measure(n, args.seed, trials=args.trials)
            print(f"| {n} | {row.converge_median:.2f} / {row.converge_max:.2f} "
                  f"| {row.bytes_per_node_s:,.0f} "
                  f"| {row.detect_median:.2f} / {row.detect_max:.2f} "
                  f"| {row.restart_median:.2f} / {row.restart_max:.2f} "
                  f"| {time.perf_counter() - started:.0f} |", flush=True)
        print()
        print("| pause (s) | 10 nodes: pauses judged down / pauses |")
        print("|---:|---:|")
        for pause in (1.0, 2.0, 3.0, 4.0):
            judged, total = pause_sweep(10, pause, range(args.pause_seeds))
            print(f"| {pause:.1f} | {judged} / {total} |", flush=True)
        print()

    lo, hi = (int(x) for x in args.joins.split(":"))
    print("| n before join | replica set changed (ideal 3/(n+1)) | primary changed "
          "(ideal 1/(n+1)) | copies moved (ideal 1/(n+1)) | keys gaining an old node |")
    print("|---:|---:|---:|---:|---:|")
    for m in movement_table(range(lo, hi + 1)):
        n = m.nodes
        print(f"| {n} | {m.replica_set_changed:.3f} ({min(3, n + 1) / (n + 1):.3f}) "
              f"| {m.primary_changed:.3f} ({1 / (n + 1):.3f}) "
              f"| {m.copies_moved:.3f} ({1 / (n + 1):.3f}) | {m.between_old:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
