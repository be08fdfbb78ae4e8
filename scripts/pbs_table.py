"""Print the measured-vs-predicted tables of docs/consistency.md from experiment JSONs.

    python scripts/pbs_table.py docs/data/pbs/*.json

One markdown table per latency setting: a row per t, a measured/predicted column pair
per (R, W), then the RMSE of each run and the RMSE sampling error alone would give.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def floor(doc: dict) -> float:  # type: ignore[type-arg]
    ps = [doc["predicted"][t] for t in doc["measured"]]
    return math.sqrt(sum(p * (1 - p) for p in ps) / len(ps) / doc["trials"])


def main(paths: list[str]) -> None:
    groups: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for path in sorted(paths):
        doc = json.loads(Path(path).read_text())
        groups.setdefault(doc["latency"], []).append(doc)
    for latency, docs in groups.items():
        docs.sort(key=lambda d: (d["r"] + d["w"], d["w"], d["r"]))
        print(f"\n`{latency}` ({docs[0]['mode']}, N={docs[0]['n']})\n")
        head = "| t (ms) |" + "".join(f" R={d['r']} W={d['w']} measured | predicted |"
                                      for d in docs)
        print(head)
        print("|---:|" + "---:|---:|" * len(docs))
        ts = sorted({t for d in docs for t in d["measured"]}, key=float)
        for t in ts:
            cells = []
            for d in docs:
                m, p = d["measured"].get(t), d["predicted"].get(t)
                cells.append("-" if m is None else f"{m:.4f}")
                cells.append("-" if p is None else f"{p:.4f}")
            print(f"| {t} | " + " | ".join(cells) + " |")
        print("| **RMSE** (points) | " + " | ".join(
            f"**{100 * d['rmse']:.3f}** | floor {100 * floor(d):.3f}" for d in docs) + " |")
        print("| trials per t | " + " | ".join(f"{d['trials']} | " for d in docs) + " |")
        print("| paper model (WARS) at t=0 | " + " | ".join(
            f"{d['predicted_wars'][ts[0]]:.4f} | " for d in docs) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
