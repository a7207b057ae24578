"""`rizzrun compare PATH... | --wandb ENTITY/PROJECT`: check the options, read the runs, print the
table, write the plot. Every bad input is an InputError (one line), found before any run is read
where it can be."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rizzrun.compare import configs, plot, render, table
from rizzrun.compare.runs import Run, load_folders
from rizzrun.errors import InputError

DEFAULT_METRICS = ("val/loss", "train/loss")


@dataclass
class Options:
    paths: list[Path] = field(default_factory=list)
    wandb: str | None = None
    filters: list[str] = field(default_factory=list)
    group: str | None = None
    metrics: list[str] = field(default_factory=list)  # empty: DEFAULT_METRICS
    maximize: tuple[str, ...] = ()
    sort: str | None = None
    fmt: str | None = None  # None: rich on a terminal, else markdown
    plot: str | None = None
    out: Path | None = None
    per_run: bool = False
    ignore: tuple[str, ...] = ()


def check(options: Options) -> None:
    """The options alone, before any run is read."""
    if bool(options.paths) == bool(options.wandb):
        raise InputError("give run folders (PATH...) or --wandb ENTITY/PROJECT, not both or neither")
    if (options.filters or options.group) and not options.wandb:
        raise InputError("--filter/--group select W&B runs: only with --wandb ENTITY/PROJECT")
    if options.fmt is not None and options.fmt not in render.FORMATS:
        raise InputError(f"--format {options.fmt}: not a format; allowed: {', '.join(render.FORMATS)}")
    if (options.plot is None) != (options.out is None):
        raise InputError("--plot METRIC and --out FILE.png go together: give both to write a plot")
    if options.out is not None:
        out = Path(options.out)
        if out.suffix.lower() != ".png":
            raise InputError(f"--out {out}: the plot is a PNG; give a file name ending in .png")
        parent = out.absolute().parent
        if not parent.is_dir():
            raise InputError(f"--out {out}: no folder {parent}; give a file in an existing folder")
        if not os.access(parent, os.W_OK):
            raise InputError(f"--out {out}: cannot write into {parent}; give a folder you can write to")


def compare(options: Options, file=None, api=None):
    """Print the table of `options`' runs to `file` (stdout) and write the plot; returns (the
    Table, the plot's Figure or None). `api`: a W&B API object (tests); None: wandb.Api()."""
    file = sys.stdout if file is None else file
    check(options)
    metrics = list(dict.fromkeys(options.metrics or DEFAULT_METRICS))
    wanted = list(dict.fromkeys([*metrics, *(m for m in (options.sort, options.plot) if m)]))
    runs = _load(options, wanted, api)
    metrics = _present(runs, metrics, explicit=bool(options.metrics), flag="--metric")
    for flag, metric in (("--sort", options.sort), ("--plot", options.plot)):
        if metric is not None:
            _present(runs, [metric], explicit=True, flag=flag)
            if flag == "--sort" and metric not in metrics:
                metrics.append(metric)
    keys = configs.differing_keys(runs, options.ignore)
    if options.per_run:
        groups = [[run] for run in runs]
    else:
        groups = configs.group_runs(runs, keys)
        keys = [key for key in keys if not configs.is_seed(key)]
    result = table.build_table(groups, keys, metrics, options.maximize)
    if options.sort:
        table.sort_rows(result, options.sort, options.maximize)
    fmt = options.fmt or ("rich" if file.isatty() else "markdown")
    render.render(result, fmt, file)
    figure = None
    if options.plot:
        curves = [c for row in result.rows for c in plot.group_curves(row.runs, options.plot, _plot_label(row, keys))]
        figure = plot.draw(curves, options.plot, Path(options.out))
        print(f"plot: {options.out}", file=sys.stderr)
    return result, figure


def _load(options: Options, metrics: list[str], api) -> list[Run]:
    if options.wandb:
        from rizzrun.compare.wandb_runs import load_wandb, parse_filters

        return load_wandb(options.wandb, metrics, parse_filters(options.filters, options.group), api=api)
    return load_folders([Path(p) for p in options.paths])


def _present(runs: list[Run], metrics: list[str], explicit: bool, flag: str) -> list[str]:
    """The metrics some run logged. An explicit one no run logged is an error listing those
    that exist; a default one is left out."""
    logged = sorted({m for run in runs for m in run.history})
    for metric in metrics:
        if explicit and metric not in logged:
            raise InputError(f"{flag} {metric}: no run logged it; logged metrics: {', '.join(logged) or 'none'}")
    return [m for m in metrics if m in logged]


def _plot_label(row: table.Row, keys: list[str]) -> str:
    return " ".join(f"{k}={row.keys[k]}" for k in keys) or row.label
