"""Probabilistically Bounded Staleness (Bailis et al., VLDB 2012): the WARS model.

Pure: no clock, no sockets, no global random. Everything that draws takes a
`random.Random`.

- `pbs.distributions`: latency distributions (ms) and the `W=...,A=...,R=...,S=...`
  spec that names one per WARS leg.
- `pbs.model`: the WARS Monte Carlo predictor of t-visibility and k-staleness.
- `pbs.closed_form`: the closed forms the Monte Carlo must agree with, and the RMSE.
"""

from pbs.closed_form import k_staleness, p_nonintersect, rmse
from pbs.distributions import (
           LEGS,
           Distribution,
           LatencySpecError,
           Legs,
           parse_distribution,
           parse_legs,
)
from pbs.model import TOPOLOGIES, predict_k_staleness, predict_t_visibility

__all__ = ["LEGS", "TOPOLOGIES", "Distribution", "LatencySpecError", "Legs", "k_staleness",
           "p_nonintersect", "parse_distribution", "parse_legs", "predict_k_staleness",
           "predict_t_visibility", "rmse"]
