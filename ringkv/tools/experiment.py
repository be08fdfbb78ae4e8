"""`ringkv experiment`: measure and predict staleness (PBS, Bailis et al. VLDB 2012).

    ringkv experiment staleness --sim --n 3 --r 1 --w 1 \\
        --latency W=exp:10,A=exp:1,R=exp:1,S=exp:1 --t 0,10,65 --trials 5000 --json PATH
    ringkv experiment staleness --live --node http://127.0.0.1:8001 --r 1 --w 1 ...
    ringkv experiment predict --n 3 --r 1 --w 1 --latency ... --t 0,10,65
    ringkv experiment plot RUN.json [RUN.json ...] --out curves.png

Job: the command-line face of `pbs` (the WARS predictor), `sim.staleness` (trials in
the deterministic simulation) and `ringkv.tools.live_staleness` (trials against a cluster
started with `--inject-latency`): run the trials with a progress bar (trials done, time
elapsed and remaining; on stderr, only while it is a terminal), print measured against
predicted with the RMSE, write JSON, draw PNG plots.

The JSON of `staleness` always has `{"measured": {"<t>": p}, "predicted": {"<t>": p},
"rmse": x}` (t in ms as text, p in [0, 1]) plus the run's settings, k-staleness, and in
live mode the prediction from the delays the nodes recorded, evaluated at each read's
own start (t plus the client's measured lateness; `predicted_nominal` is at t itself).
The prediction uses the "replica" topology of `pbs.model` (ringkv coordinates a write
on a replica, which applies it locally); `predicted_wars` is the paper's model, for
comparison. `rmse_sampling_floor` is the RMSE that sampling error alone would give
(sqrt of the mean of p(1-p)/trials): a measured RMSE near it means no visible bias.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pbs.closed_form import p_nonintersect, rmse
from pbs.distributions import LatencySpecError, Legs, parse_legs
from pbs.model import (
    TOPOLOGIES,
    predict_k_staleness,
    predict_t_visibility,
    visibility_at,
    visibility_thresholds,
)
from ringkv.tools.progress import show_progress

PREDICT_TRIALS = 100_000


def t_key(t: float) -> str:
    """t in ms as a JSON key: "0", "10", "2.5"."""
    return str(int(t)) if t == int(t) else repr(t)


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...]:
    if value is None or not value.strip():
        return ()
    try:
        out = tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if any(x < 0 for x in out):
        raise click.BadParameter("values must be >= 0")
    return out


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if value is None or not value.strip():
        return ()
    try:
        out = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}") \
            from None
    if any(x < 1 for x in out):
        raise click.BadParameter("values must be >= 1")
    return out


def _legs(ctx: click.Context, param: click.Parameter, value: str | None) -> Legs | None:
    if value is None:
        return None
    try:
        return parse_legs(value)
    except LatencySpecError as exc:
        raise click.BadParameter(str(exc)) from None


@contextmanager
def _progress(console: Console, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Trials done of `total`, elapsed and remaining time, on stderr while it is a
    terminal (`ringkv.tools.progress.show_progress`); nothing otherwise."""
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(),
                  console=console, transient=True, disable=not show_progress(None)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def predict(n: int, r: int, w: int, legs: Legs, ts: tuple[float, ...], ks: tuple[int, ...],
            trials: int, seed: int, topology: str) -> tuple[dict[str, float], dict[str, float]]:
    """Predicted t-visibility and k-staleness, keyed as in the JSON."""
    rng = random.Random(seed)
    tv = predict_t_visibility(n, r, w, legs, ts, trials=trials, rng=rng, topology=topology)
    kv = predict_k_staleness(n, r, w, legs, ks, trials=trials, rng=rng, topology=topology) \
        if ks else {}
    return ({t_key(t): p for t, p in tv.items()}, {str(k): p for k, p in kv.items()})


def sampling_floor(predicted: dict[str, float], measured: dict[float, float],
                   trials: int) -> float:
    """The RMSE expected from sampling error alone, with `trials` reads per point."""
    ps = [predicted[t_key(t)] for t in measured if t_key(t) in predicted]
    return math.sqrt(sum(p * (1 - p) for p in ps) / len(ps) / trials) if ps else 0.0


def _table(title: str, rows: list[tuple[str, float | None, float]], head: str) -> Table:
    table = Table(title=title)
    table.add_column(head, justify="right")
    table.add_column("measured", justify="right")
    table.add_column("predicted", justify="right")
    table.add_column("diff (points)", justify="right")
    for label, m, p in rows:
        if m is None:
            table.add_row(label, "-", f"{p:.4f}", "-")
        else:
            table.add_row(label, f"{m:.4f}", f"{p:.4f}", f"{100 * (m - p):+.2f}")
    return table


def _report(console: Console, doc: dict[str, Any]) -> None:
    title = (f"N={doc['n']} R={doc['r']} W={doc['w']}  {doc['mode']}  "
             f"latency {doc['latency'] or 'recorded'}")
    rows = [(t, doc["measured"].get(t), p) for t, p in doc["predicted"].items()]
    console.print(_table(f"t-visibility: {title}", rows, "t (ms)"))
    if doc.get("predicted_k"):
        krows = [(k, doc["measured_k"].get(k), p) for k, p in doc["predicted_k"].items()]
        console.print(_table("k-staleness: P(read returns one of the last k writes)",
                             krows, "k"))
    console.print(f"RMSE {100 * doc['rmse']:.3f} points (the paper's mark: 0.28; sampling "
                  f"error alone: {100 * doc['rmse_sampling_floor']:.3f})  "
                  f"trials per point {doc['trials']}, failed {doc['failed']}")


PLOTS_MISSING = "drawing plots needs matplotlib: pip install 'ringkv[plots]'"


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, imported here and only here:
    matplotlib is the optional extra `plots`, so every other command (and a node's
    image, which has no matplotlib) starts without it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise click.ClickException(PLOTS_MISSING) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(docs: list[dict[str, Any]], out: str, title: str | None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, doc in enumerate(docs):
        colour = f"C{i}"
        label = f"R={doc['r']}, W={doc['w']}"
        curve = doc.get("predicted_curve") or doc["predicted"]
        pts = sorted((float(t), p) for t, p in curve.items())
        ax.plot([t for t, _ in pts], [p for _, p in pts], "-", color=colour,
                label=f"{label} predicted")
        meas = sorted((float(t), p) for t, p in doc["measured"].items())
        ax.plot([t for t, _ in meas], [p for _, p in meas], "o", color=colour,
                label=f"{label} measured ({doc['mode']})")
    ax.set_xlabel("t: ms after the write commits")
    ax.set_ylabel("P(consistent read)")
    ax.set_ylim(min(0.3, ax.get_ylim()[0]), 1.01)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or (f"N={docs[0]['n']}, latency {docs[0]['latency']}"), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@click.group()
def experiment() -> None:
    """Tunable-consistency experiments: measure and predict staleness (PBS)."""


@experiment.command()
@click.option("--sim", "sim_mode", is_flag=True, help="Run the trials in the simulation.")
@click.option("--live", "live_mode", is_flag=True, help="Run the trials against a cluster.")
@click.option("--node", "nodes", multiple=True, metavar="URL",
              help="Live mode: a node's URL (repeat, or one node to use every member).")
@click.option("--n", "n", type=click.IntRange(2, 9), default=3, show_default=True,
              help="Replicas per key (sim; a live cluster's own N is used).")
@click.option("--r", "r", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--w", "w", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--latency", callback=_legs, metavar="SPEC",
              help="W=...,A=...,R=...,S=... in ms (exp:MEAN, pareto:XM:ALPHA, const:X, "
                   "uniform:LO:HI, emp:FILE). Required with --sim.")
@click.option("--t", "ts", callback=_floats, default="0,10,65", show_default=True,
              help="Comma-separated ms after commit at which reads start.")
@click.option("--k", "ks", callback=_ints, default=None,
              help="Also measure k-staleness for these k (comma-separated).")
@click.option("--trials", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Trials per t (and per k).")
@click.option("--predict-trials", type=click.IntRange(min=1), default=PREDICT_TRIALS,
              show_default=True, help="Monte Carlo trials of the prediction.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Live mode: trials in flight at once.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Sim mode: processes running batches (the result does not change).")
@click.option("--json", "json_path", metavar="PATH", help="Write the results as JSON.")
@click.option("--plot", "plot_path", metavar="PNG", help="Draw measured vs predicted.")
def staleness(sim_mode: bool, live_mode: bool, nodes: tuple[str, ...], n: int, r: int, w: int,
              latency: Legs | None, ts: tuple[float, ...], ks: tuple[int, ...], trials: int,
              predict_trials: int, seed: int, concurrency: int, jobs: int,
              json_path: str | None, plot_path: str | None) -> None:
    """Write, wait t ms, read from another coordinator: how often is the read fresh?"""
    console = Console(stderr=True)
    if sim_mode == live_mode:
        raise click.UsageError("give exactly one of --sim and --live")
    if not ts:
        raise click.UsageError("--t needs at least one value")
    if plot_path:
        _pyplot()  # missing matplotlib fails now, not after every trial has run
    began = time.perf_counter()
    extra: dict[str, Any] = {}
    total = trials * (len(ts) + len(ks))
    if sim_mode:
        if latency is None:
            raise click.UsageError("--sim needs --latency (W=...,A=...,R=...,S=...)")
        if not (r <= n and w <= n):
            raise click.UsageError(f"--r and --w must be at most --n ({n})")
        from sim.staleness import StalenessSetup

        setup = StalenessSetup(n, r, w, latency, ts, trials, ks, seed)
        with _progress(console, total, "simulated trials") as advance:
            sim_result = _run_sim(setup, jobs, advance)
        measured, measured_k = sim_result.measured(), sim_result.k_measured()
        failed = sim_result.failed
        legs = latency
        extra["sim_seconds"] = round(sim_result.sim_seconds, 3)
    else:
        if not nodes:
            raise click.UsageError("--live needs --node URL")
        from ringkv.tools.live_staleness import describe, run_live

        urls = [u for arg in nodes for u in arg.split(",") if u.strip()]
        with _progress(console, total, "live trials") as advance:
            try:
                live = run_live(urls, r, w, ts, trials, ks, concurrency, seed, advance)
            except Exception as exc:  # noqa: BLE001 - any failure ends the run with one line
                console.print(f"error: live experiment failed: {exc}")
                sys.exit(4)
        n = live.n
        measured, measured_k = live.measured(), live.k_measured()
        failed = live.failed
        extra["live"] = describe(live)
        recorded = live.recorded_legs()
        if recorded is None and latency is None:
            console.print("error: the nodes recorded no injected latency (were they started "
                          "with --inject-latency and --experimental?) and no --latency was "
                          "given to predict from")
            sys.exit(4)
        legs = recorded if recorded is not None else latency  # type: ignore[assignment]
        if recorded is not None and latency is not None:
            extra["predicted_from_spec"], _ = predict(n, r, w, latency, ts, (),
                                                      predict_trials, seed, "replica")
    assert legs is not None
    predicted, predicted_k = predict(n, r, w, legs, ts, ks, predict_trials, seed, "replica")
    if live_mode:
        # Each live read started late by its own measured offset: predict at t + offset.
        extra["predicted_nominal"] = predicted
        thresholds = visibility_thresholds(n, r, w, legs, trials=predict_trials,
                                           rng=random.Random(seed), topology="replica")
        predicted = {t_key(t): sum(visibility_at(thresholds, t + x) for x in offs) / len(offs)
                     for t, offs in sorted(live.offsets.items()) if offs}
    wars, _ = predict(n, r, w, legs, ts, (), predict_trials, seed + 1, "wars")
    m = {t_key(t): p for t, p in measured.items()}
    mk = {str(k): p for k, p in measured_k.items()}
    doc: dict[str, Any] = {
        "measured": m, "predicted": predicted, "rmse": rmse(m, predicted) if m else None,
        "mode": "sim" if sim_mode else "live", "n": n, "r": r, "w": w,
        "latency": latency.describe() if latency else None,
        "predicted_from": "spec" if sim_mode or legs is latency else "recorded",
        "trials": trials, "predict_trials": predict_trials, "seed": seed, "failed": failed,
        "rmse_sampling_floor": sampling_floor(predicted, measured, trials) if m else None,
        "measured_k": mk, "predicted_k": predicted_k,
        "predicted_wars": wars, "p_nonintersect": p_nonintersect(n, r, w),
        "wall_seconds": round(time.perf_counter() - began, 3), **extra,
    }
    if m and doc["rmse"] is not None:
        _report(console, doc)
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
    if plot_path:
        doc["predicted_curve"] = predict(n, r, w, legs, _curve_ts(ts), (), 20_000, seed,
                                         "replica")[0]
        _plot([doc], plot_path, None)
    if not json_path:
        click.echo(json.dumps({"measured": m, "predicted": predicted, "rmse": doc["rmse"]}))


def _batch(args: tuple[Any, int, list[Any]]) -> Any:
    from sim.staleness import run_batch

    return run_batch(*args), len(args[2])


def _run_sim(setup: Any, jobs: int, advance: Callable[[int], None]) -> Any:
    """The simulated trials, batch by batch, in `jobs` processes."""
    from sim.staleness import batches, merge

    work = [(setup, number, chunk) for number, chunk in batches(setup)]
    parts = []
    if jobs <= 1 or len(work) <= 1:
        for item in work:
            part, size = _batch(item)
            parts.append(part)
            advance(size)
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for part, size in pool.imap(_batch, work):
                parts.append(part)
                advance(size)
    return merge(setup, parts)


def _curve_ts(ts: tuple[float, ...]) -> tuple[float, ...]:
    """A dense grid up to the largest t asked for, for smooth predicted curves."""
    top = max(max(ts), 1.0)
    return tuple(sorted({*ts, *(top * i / 100 for i in range(101))}))


@experiment.command("predict")
@click.option("--n", "n", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--r", "r", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--w", "w", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--latency", callback=_legs, required=True, metavar="SPEC",
              help="W=...,A=...,R=...,S=... in ms; emp:FILE reads recorded delays.")
@click.option("--t", "ts", callback=_floats, default="0,10,65", show_default=True)
@click.option("--k", "ks", callback=_ints, default=None, help="k-staleness for these k.")
@click.option("--trials", type=click.IntRange(min=1), default=PREDICT_TRIALS,
              show_default=True)
@click.option("--topology", type=click.Choice(TOPOLOGIES), default="wars", show_default=True,
              help="wars: the paper's model; replica: the coordinator is a replica.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "json_path", metavar="PATH")
def predict_command(n: int, r: int, w: int, latency: Legs, ts: tuple[float, ...],
                    ks: tuple[int, ...], trials: int, topology: str, seed: int,
                    json_path: str | None) -> None:
    """The WARS Monte Carlo: P(consistent read) t ms after commit, and k-staleness."""
    if not (r <= n and w <= n):
        raise click.UsageError(f"--r and --w must be at most --n ({n})")
    predicted, predicted_k = predict(n, r, w, latency, ts, ks, trials, seed, topology)
    doc = {"n": n, "r": r, "w": w, "latency": latency.describe(), "topology": topology,
           "trials": trials, "predicted": predicted, "predicted_k": predicted_k,
           "p_nonintersect": p_nonintersect(n, r, w)}
    console = Console()
    table = Table(title=f"WARS prediction N={n} R={r} W={w} ({topology}) "
                        f"{latency.describe()}")
    table.add_column("t (ms)", justify="right")
    table.add_column("P(consistent)", justify="right")
    for t, p in predicted.items():
        table.add_row(t, f"{p:.4f}")
    console.print(table)
    for k, p in predicted_k.items():
        console.print(f"k={k}: P(read returns one of the last {k} writes) = {p:.4f}")
    console.print(f"closed form: P(random quorums miss) = C(N-W,R)/C(N,R) = "
                  f"{doc['p_nonintersect']:.4f}")
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")


@experiment.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, metavar="PNG")
@click.option("--title", default=None)
@click.option("--seed", type=int, default=1, show_default=True)
def plot_command(runs: tuple[str, ...], out: str, title: str | None, seed: int) -> None:
    """One PNG from several `staleness --json` runs: one curve per (R, W)."""
    _pyplot()  # before the predictions below, which take a while
    docs = [json.loads(Path(p).read_text()) for p in runs]
    for doc in docs:
        if doc.get("latency") and "predicted_curve" not in doc:
            ts = tuple(float(t) for t in doc["measured"])
            legs = parse_legs(doc["latency"])
            doc["predicted_curve"] = predict(doc["n"], doc["r"], doc["w"], legs,
                                             _curve_ts(ts), (), 20_000, seed, "replica")[0]
    _plot(docs, out, title)
    click.echo(out)
