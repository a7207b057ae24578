"""Runs read from the W&B public API (`rizzrun compare --wandb ENTITY/PROJECT`) into the same
`Run` records as folders give. Uses only `wandb.Api().runs(path, filters=...)` and, per run,
`.id`, `.name`, `.state`, `.config`, `.summary` and `.scan_history(keys=[...])`, so a test can
hand in an object with just these. rizzrun logs each row with `trainer/global_step` (the
optimizer step, as metrics.jsonl's `step`); W&B's own `_step` is the fallback."""

from __future__ import annotations

import json
from contextlib import contextmanager

from rizzrun.compare.runs import Run, flatten, history_from_rows
from rizzrun.errors import InputError

STEP_KEYS = ("trainer/global_step", "_step")


def parse_filters(filters: list[str], group: str | None) -> dict:
    """`--filter KEY=VALUE` (KEY as W&B's filter names it: `state`, `config.optimizer.lr`,
    `tags`; VALUE read as JSON when it parses, else kept as text) or a whole MongoDB-style JSON
    object, and `--group NAME`, as one W&B filter dict."""
    query: dict = {}
    for text in filters:
        if text.lstrip().startswith("{"):
            try:
                extra = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"--filter {text}: not a JSON object ({e}); give KEY=VALUE or a JSON object") from None
            query.update(extra)
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--filter {text}: not KEY=VALUE; e.g. --filter state=finished or "
                             "--filter config.optimizer.lr=0.001, or a JSON object")
        try:
            query[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            query[key.strip()] = value
    if group is not None:
        query["group"] = group
    return query


def check_project(path: str) -> None:
    parts = path.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise InputError(f"--wandb {path}: not ENTITY/PROJECT; e.g. --wandb my-team/rizzrun")


def load_wandb(path: str, metrics: list[str], filters: dict | None = None, api=None) -> list[Run]:
    """The runs of W&B project `path` matching `filters`, with the history of `metrics`.
    `api`: an object with wandb.Api's `runs`; None makes a wandb.Api() (needs network and login)."""
    check_project(path)
    with _api_errors(path):
        if api is None:
            import wandb

            api = wandb.Api()
        found = list(api.runs(path, filters=filters or {}))
        if not found:
            shown = f" the filters {json.dumps(filters)}" if filters else ""
            raise InputError(f"--wandb {path}: no run matches{shown}; check the project name and the filters")
        runs = [_from_api(run, metrics, path) for run in found]
    _label(runs, found)
    return runs


@contextmanager
def _api_errors(path: str):
    """Whatever the W&B client raises (no login, no network, no such project) as one line."""
    try:
        yield
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the client's errors have no common base
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise InputError(f"--wandb {path}: cannot read the runs from W&B ({type(e).__name__}: {detail}); "
                         "check the name, `wandb login` and the network, or compare run folders instead") from None


def _from_api(api_run, metrics: list[str], path: str) -> Run:
    config = {k: v for k, v in dict(api_run.config).items() if not str(k).startswith("_")}
    history = {}
    for metric in metrics:
        history.update(history_from_rows(_metric_rows(api_run, metric)))
    summary = api_run.summary  # W&B's summary object: dict-like, with .get
    found = [summary.get(k) for k in STEP_KEYS] if summary is not None else []
    step = next((v for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)), None)
    if step is None:
        step = max((points[-1][0] for points in history.values() if points), default=None)
    return Run(source=f"{path}/{api_run.id}", config=flatten(config), overrides=[], history=history,
               status=api_run.state, step=int(step) if step is not None else None)


def _metric_rows(api_run, metric: str) -> list[dict]:
    """`metric`'s rows as {"step", metric}: scan_history returns only rows holding every key asked
    for, so the step axis is asked for with it, rizzrun's first, then W&B's own."""
    for step_key in STEP_KEYS:
        rows = [{"step": row[step_key], metric: row[metric]} for row in api_run.scan_history(keys=[metric, step_key])]
        if rows:
            return rows
    return []


def _label(runs: list[Run], api_runs) -> None:
    """A run's W&B name; with its id where two runs share a name."""
    names = [str(r.name or r.id) for r in api_runs]
    for run, api_run, name in zip(runs, api_runs, names):
        run.name = name if names.count(name) == 1 else f"{name} ({api_run.id})"
