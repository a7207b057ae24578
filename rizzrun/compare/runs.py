"""One run as `rizzrun compare` sees it (`Run`), and reading runs from folders: a run folder
(metrics.jsonl or config.yaml), a sweep folder (numbered job folders) or any folder of runs
below it. Torch-free; reads only JSON and YAML (rizzrun/layout.py names the files)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rizzrun import layout
from rizzrun.errors import InputError

STEP = "step"


@dataclass
class Run:
    """What compare needs of one run, whichever store it came from.

    name: a short label (set by `label_runs`); source: the folder or the W&B run path;
    config: the resolved config, flattened to dotted keys (`optimizer.lr`); overrides: the
    command line's overrides (.hydra/overrides.yaml; [] from W&B); history: metric -> [(step,
    value)] sorted by step, one value per step (the last logged); status and step: how the run
    ended (summary.json, or W&B's state), None when unknown."""

    source: str
    config: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    history: dict = field(default_factory=dict)
    status: str | None = None
    step: int | None = None
    name: str = ""

    def has_config(self) -> bool:
        return bool(self.config)


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]} (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def history_from_rows(rows) -> dict:
    """metric -> [(step, value)] from logged rows ({"step": N, metric: value, ...}), sorted by
    step; a metric logged twice at one step keeps its last value; non-numbers are dropped."""
    by_metric: dict[str, dict[int, float]] = {}
    for row in rows:
        step = row.get(STEP)
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        for key, value in row.items():
            if key != STEP and isinstance(value, (int, float)) and not isinstance(value, bool):
                by_metric.setdefault(key, {})[int(step)] = float(value)
    return {metric: sorted(points.items()) for metric, points in by_metric.items()}


def is_run_folder(folder: Path) -> bool:
    return (folder / layout.METRICS).is_file() or (folder / layout.CONFIG).is_file()


def find_run_folders(path: Path) -> list[Path]:
    """The run folders at or below `path` (not below a run folder; hidden folders skipped), in
    natural order (job 10 after job 9)."""
    if is_run_folder(path):
        return [path]
    found = []
    for root, dirs, _ in os.walk(path):
        here = Path(root)
        if here != path and is_run_folder(here):
            found.append(here)
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def load_folders(paths: list[Path]) -> list[Run]:
    """Every run at or below each path, each once; an InputError naming the first path that is
    not a folder or holds no run."""
    folders: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such folder; give a run folder, a sweep folder or a folder of runs")
        if not path.is_dir():
            raise InputError(f"{path}: not a folder; give a run folder, a sweep folder or a folder of runs")
        found = find_run_folders(path)
        if not found:
            raise InputError(f"{path}: holds no run (no {layout.METRICS} or {layout.CONFIG} in it or below it); "
                             "give a run folder, a sweep folder or a folder of runs")
        for folder in found:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                folders.append(folder)
    runs = [load_folder(folder) for folder in folders]
    label_runs(runs)
    return runs


def load_folder(folder: Path) -> Run:
    """One run folder: its resolved config (config.yaml, else .hydra/config.yaml), overrides,
    metrics.jsonl and summary.json."""
    config = _read_yaml(folder / layout.CONFIG)
    if config is None:
        config = _read_yaml(folder / layout.HYDRA_CONFIG)
    overrides = _read_yaml(folder / layout.HYDRA_OVERRIDES)
    history = history_from_rows(_read_jsonl(folder / layout.METRICS))
    summary = _read_json(folder / layout.SUMMARY) or {}
    step = summary.get("step")
    if not isinstance(step, int):
        step = max((points[-1][0] for points in history.values() if points), default=None)
    return Run(source=str(folder), config=flatten(config if isinstance(config, dict) else {}),
               overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
               history=history, status=summary.get("status"), step=step)


def label_runs(runs: list[Run]) -> None:
    """Each folder run's name: its path below the runs' common parent (`3` for job 3 of a
    sweep, `2026-12-01/10-00-00-tiny` for runs of several days), so names stay short and unique."""
    folders = [Path(run.source).resolve() for run in runs]
    if not folders:
        return
    common = Path(os.path.commonpath([f.parent for f in folders]))
    for run, folder in zip(runs, folders):
        run.name = str(folder.relative_to(common))


def _read_yaml(path: Path):
    if not path.is_file():
        return None
    import yaml

    try:
        return yaml.load(path.read_text(), Loader=_yaml_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); "
                         "it should be the config the run wrote") from None


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}); it should be the summary the run wrote") from None


def _read_jsonl(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a last line cut short by a killed run is dropped, any other bad line
    is an error naming it."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise InputError(f"{path}:{number}: not a JSON object; every line of {layout.METRICS} "
                             "should be one, as the runner writes it") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


@lru_cache(maxsize=1)
def _yaml_loader():
    """PyYAML's safe loader reading `1e-3` as a float, as OmegaConf (which wrote the file) does."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader

