"""Latency distributions for the four WARS legs, and the text spec that names them.

Job: parse `W=exp:10,A=exp:1,R=exp:1,S=exp:1` into a `Legs` value (one `Distribution`
per leg) and draw from it. Every value is in milliseconds.

Distributions (`KIND:PARAMS`):

    exp:MEAN            exponential with that mean (rate 1/MEAN)
    pareto:XM:ALPHA     Pareto with scale XM (its minimum) and shape ALPHA
    const:X             always X
    uniform:LO:HI       uniform between LO and HI
    emp:PATH            an empirical list: numbers (ms) read from a file, separated by
                        whitespace or commas, `#` starting a comment, drawn uniformly
                        (`file:PATH` is the same)

Invariants:
- A draw is one `rng.random()` through an inverse CDF: a seed fixes every draw, and the
  same spec draws the same numbers in the predictor, the simulation and a live node.
- Every draw is finite and >= 0; a spec that could break this is refused at parse time
  with a `LatencySpecError` whose message names the bad part.
- `describe()` gives back a spec that parses to an equal distribution (except `emp`,
  which names its file).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LEGS = ("W", "A", "R", "S")
LEG_NAMES = {"W": "write request to a replica", "A": "write acknowledgement",
             "R": "read request to a replica", "S": "read response"}
KINDS = ("exp", "pareto", "const", "uniform", "emp")


class LatencySpecError(ValueError):
    """A latency spec that cannot be used; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Distribution:
    """One leg's latency distribution in ms: `kind` and its parameters."""

    kind: str
    params: tuple[float, ...] = ()
    samples: tuple[float, ...] = ()  # the empirical list, for kind "emp"
    source: str = ""  # where an empirical list came from, for describe()

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        kind = self.kind
        if kind == "exp":
            return -self.params[0] * math.log(1.0 - u)
        if kind == "const":
            return self.params[0]
        if kind == "pareto":
            xm, alpha = self.params
            return float(xm / (1.0 - u) ** (1.0 / alpha))
        if kind == "uniform":
            lo, hi = self.params
            return lo + (hi - lo) * u
        samples = self.samples
        return samples[min(int(u * len(samples)), len(samples) - 1)]

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A no-argument drawer bound to `rng` (the predictor's inner loop calls it)."""
        draw = self.draw
        return lambda: draw(rng)

    @property
    def mean(self) -> float:
        if self.kind in ("exp", "const"):
            return self.params[0]
        if self.kind == "pareto":
            xm, alpha = self.params
            return math.inf if alpha <= 1 else alpha * xm / (alpha - 1)
        if self.kind == "uniform":
            return (self.params[0] + self.params[1]) / 2
        return sum(self.samples) / len(self.samples)

    def describe(self) -> str:
        if self.kind == "emp":
            return f"emp:{self.source}"
        return ":".join([self.kind, *(_fmt(p) for p in self.params)])


@dataclass(frozen=True, slots=True)
class Legs:
    """A distribution for each WARS leg."""

    w: Distribution
    a: Distribution
    r: Distribution
    s: Distribution

    def of(self, leg: str) -> Distribution:
        return {"W": self.w, "A": self.a, "R": self.r, "S": self.s}[leg]

    def describe(self) -> str:
        return ",".join(f"{leg}={self.of(leg).describe()}" for leg in LEGS)


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def _number(text: str, what: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LatencySpecError(f"{spec!r}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise LatencySpecError(f"{spec!r}: {what} must be finite, got {text!r}")
    return value


def read_samples(path: str) -> tuple[float, ...]:
    """The numbers (ms) of an empirical latency file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise LatencySpecError(f"emp:{path}: cannot read it ({exc.strerror or exc})") from None
    samples: list[float] = []
    for line in text.splitlines():
        for token in re.split(r"[\s,]+", line.partition("#")[0].strip()):
            if token:
                value = _number(token, "every sample", f"emp:{path}")
                if value < 0:
                    raise LatencySpecError(f"emp:{path}: negative sample {token}")
                samples.append(value)
    if not samples:
        raise LatencySpecError(f"emp:{path}: the file holds no samples")
    return tuple(samples)


def parse_distribution(spec: str,
                       load: Callable[[str], tuple[float, ...]] = read_samples) -> Distribution:
    """One distribution from `KIND:PARAMS` (see the module docstring)."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "file":
        kind = "emp"
    if kind not in KINDS or not sep:
        raise LatencySpecError(
            f"{spec!r}: expected exp:MEAN, pareto:XM:ALPHA, const:X, uniform:LO:HI or "
            f"emp:PATH")
    if kind == "emp":
        path = rest.strip()
        if not path:
            raise LatencySpecError(f"{spec!r}: emp needs a file name")
        return Distribution("emp", (), load(path), path)
    parts = rest.split(":")
    arity = {"exp": 1, "const": 1, "pareto": 2, "uniform": 2}[kind]
    if len(parts) != arity:
        raise LatencySpecError(f"{spec!r}: {kind} takes {arity} parameter(s), "
                               f"got {len(parts)}")
    if kind == "exp":
        mean = _number(parts[0], "the mean", spec)
        if mean <= 0:
            raise LatencySpecError(f"{spec!r}: the mean must be > 0")
        return Distribution("exp", (mean,))
    if kind == "const":
        x = _number(parts[0], "the value", spec)
        if x < 0:
            raise LatencySpecError(f"{spec!r}: a latency cannot be negative")
        return Distribution("const", (x,))
    if kind == "pareto":
        xm = _number(parts[0], "xm", spec)
        alpha = _number(parts[1], "alpha", spec)
        if xm <= 0 or alpha <= 0:
            raise LatencySpecError(f"{spec!r}: xm and alpha must be > 0")
        return Distribution("pareto", (xm, alpha))
    lo = _number(parts[0], "lo", spec)
    hi = _number(parts[1], "hi", spec)
    if not 0 <= lo <= hi:
        raise LatencySpecError(f"{spec!r}: need 0 <= lo <= hi")
    return Distribution("uniform", (lo, hi))


def parse_legs(spec: str,
               load: Callable[[str], tuple[float, ...]] = read_samples) -> Legs:
    """`W=...,A=...,R=...,S=...`: every leg exactly once, in any order."""
    found: dict[str, Distribution] = {}
    if not spec.strip():
        raise LatencySpecError("empty latency spec; expected W=...,A=...,R=...,S=...")
    for item in spec.split(","):
        leg, sep, dist = item.partition("=")
        leg = leg.strip().upper()
        if not sep:
            raise LatencySpecError(f"{item.strip()!r}: expected LEG=DISTRIBUTION, "
                                   f"e.g. W=exp:10")
        if leg not in LEGS:
            raise LatencySpecError(f"{item.strip()!r}: unknown leg {leg!r}; the legs are "
                                   f"W, A, R and S")
        if leg in found:
            raise LatencySpecError(f"leg {leg} given twice")
        found[leg] = parse_distribution(dist, load)
    missing = [leg for leg in LEGS if leg not in found]
    if missing:
        raise LatencySpecError(f"missing leg(s) {', '.join(missing)} "
                               f"(every one of W, A, R and S needs a distribution)")
    return Legs(found["W"], found["A"], found["R"], found["S"])
