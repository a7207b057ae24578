"""The comparison table as data: one row per run or per seed group, with the differing config
keys, status and step, and for each metric its final and best value (mean and 95 % CI
half-width over a group's runs). Rendering is rizzrun.compare.render's job."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from rizzrun.compare.configs import MISSING, shown
from rizzrun.compare.runs import Run
from rizzrun.compare.stats import mean_ci

KINDS = ("final", "best")
# Metrics whose name says higher is better (the last part of `val/acc`, `eval/exact_match_rate`).
_HIGHER_IS_BETTER = re.compile(r"acc|accuracy|f1|bleu|rouge|match|reward|score|tokens_per_s|mfu|auc|precision|recall",
                               re.I)


def maximized(metric: str, maximize: tuple[str, ...] = ()) -> bool:
    """Whether `metric`'s best value is its largest: named by --maximize, or by its name."""
    return metric in maximize or bool(_HIGHER_IS_BETTER.search(metric.rsplit("/", 1)[-1]))


def final_and_best(run: Run, metric: str, maximize: tuple[str, ...] = ()) -> tuple[float, float] | None:
    """The metric's value at the run's last step and its best (min, or max when maximized, NaN
    ignored unless every value is NaN); None when the run never logged it."""
    points = run.history.get(metric)
    if not points:
        return None
    values = [v for _, v in points if not math.isnan(v)] or [math.nan]
    return points[-1][1], (max if maximized(metric, maximize) else min)(values)


@dataclass
class Cell:
    """A metric's value over a row's runs: mean, CI half-width (None for one value) and how
    many of the row's runs logged it."""

    mean: float
    ci: float | None
    count: int


@dataclass
class Row:
    label: str
    runs: list[Run]
    keys: dict[str, str]
    status: str
    step: str
    cells: dict[tuple[str, str], Cell | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class Table:
    keys: list[str]
    metrics: list[str]
    rows: list[Row]


def build_table(groups: list[list[Run]], keys: list[str], metrics: list[str],
                maximize: tuple[str, ...] = ()) -> Table:
    return Table(keys=keys, metrics=metrics, rows=[_row(group, keys, metrics, maximize) for group in groups])


def _row(runs: list[Run], keys: list[str], metrics: list[str], maximize: tuple[str, ...]) -> Row:
    first = runs[0]
    row = Row(label=group_label(runs), runs=runs,
              keys={k: shown(first.config[k]) if k in first.config else MISSING for k in keys},
              status=_status(runs), step=_steps(runs))
    for metric in metrics:
        found = [fb for fb in (final_and_best(run, metric, maximize) for run in runs) if fb is not None]
        for index, kind in enumerate(KINDS):
            values = [fb[index] for fb in found]
            row.cells[metric, kind] = Cell(*mean_ci(values), count=len(values)) if values else None
    return row


def group_label(runs: list[Run], width: int = 32) -> str:
    """The runs' names, joined; shortened to first,…,last when long."""
    names = [run.name or run.source for run in runs]
    joined = ",".join(names)
    return joined if len(joined) <= width or len(names) < 3 else f"{names[0]},…,{names[-1]}"


def _status(runs: list[Run]) -> str:
    counts = Counter(run.status or "?" for run in runs)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def _steps(runs: list[Run]) -> str:
    steps = sorted({run.step for run in runs if run.step is not None})
    if not steps:
        return "?"
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"


def sort_rows(table: Table, metric: str, maximize: tuple[str, ...] = ()) -> None:
    """Best first by the metric's best value (rows without it last)."""
    sign = -1.0 if maximized(metric, maximize) else 1.0

    def key(row: Row):
        cell = row.cells.get((metric, "best"))
        missing = cell is None or math.isnan(cell.mean)
        return (missing, 0.0 if missing else sign * cell.mean)

    table.rows.sort(key=key)
