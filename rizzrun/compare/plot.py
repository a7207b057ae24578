"""`rizzrun compare --plot METRIC --out FILE.png`: the metric against the step, one line per
run or seed group. A group's line is the mean over its runs at the steps they all logged, with
the 95 % CI band (t-distribution, as in the table) shaded; a group whose runs share no step is
drawn run by run. matplotlib with the Agg canvas, never pyplot's global state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rizzrun.compare.runs import Run
from rizzrun.compare.stats import mean_ci


@dataclass
class Curve:
    """One line: `mean[i]` at `steps[i]`; `half_width` the CI band (None: no band)."""

    label: str
    steps: list[int]
    mean: list[float]
    half_width: list[float] | None


def group_curves(runs: list[Run], metric: str, label: str) -> list[Curve]:
    """The curves of one row of the table (a run, or a seed group)."""
    series = [dict(run.history[metric]) for run in runs if run.history.get(metric)]
    if not series:
        return []
    if len(series) == 1:
        steps = sorted(series[0])
        return [Curve(label, steps, [series[0][s] for s in steps], None)]
    shared = sorted(set.intersection(*(set(s) for s in series)))
    if not shared:
        return [Curve(f"{label} [{run.name}]", [s for s, _ in run.history[metric]], [v for _, v in run.history[metric]], None)
                for run in runs if run.history.get(metric)]
    stats = [mean_ci([s[step] for s in series]) for step in shared]
    return [Curve(f"{label} (n={len(series)})", shared, [m for m, _ in stats], [h for _, h in stats])]


def draw(curves: list[Curve], metric: str, out: Path):
    """Plot `curves` and write the PNG to `out`; the matplotlib Figure (its first axes holds one
    line per curve, in order, and one band per curve with a half-width)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        marker = "o" if len(curve.steps) <= 30 else None  # a few validations: show where they are
        (line,) = axes.plot(curve.steps, curve.mean, label=curve.label, linewidth=1.5, marker=marker, markersize=3)
        if curve.half_width is not None:
            low = [m - h for m, h in zip(curve.mean, curve.half_width)]
            high = [m + h for m, h in zip(curve.mean, curve.half_width)]
            axes.fill_between(curve.steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out, format="png")
    return figure
