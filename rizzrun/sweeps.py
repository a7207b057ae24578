"""A sweep as a whole (torch-free): its job list known before Hydra starts, the folder
`rizzrun -m ... resume=true` continues, and the table printed when it ends.

Which folder a sweep resume continues: `hydra.sweep.dir=PATH resume=true` or `resume=PATH` names it;
`resume=true` takes the newest `<output_root>/multirun/<date>/<time>/` (the default hydra.sweep.dir)
whose `sweep.json` records the same job list. The job list must be the folder's, job by job (the
folder of job N is `<sweep>/N`): a command whose jobs differ is refused, naming the first job that
differs. Only a sweep whose jobs are known up front (Hydra's basic sweeper) can be resumed this
way; an optimising sweeper continues its own study.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rizzrun import job_status, layout
from rizzrun.errors import InputError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
NUM_SUBDIR = "${hydra.job.num}"


def planned_jobs(cfg: DictConfig, overrides: Sequence[str]) -> list[list[str]] | None:
    """Every job's overrides, as Hydra's basic sweeper will hand them to the task function (in
    job-number order, with Hydra's spelling: `key=value`, sweep values encoded); None when the
    sweep's jobs are not known up front (another sweeper: Optuna asks as it goes)."""
    from rizzrun.config import catalog
    from rizzrun.config.compose import parse_overrides

    if OmegaConf.select(cfg, "hydra.sweeper._target_", default=None) != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    lists: OrderedDict[str, list[str]] = OrderedDict()
    for o in parse_overrides(lines):
        if o.is_hydra_override():
            continue  # Hydra's own settings are not the job's task overrides
        key = o.get_key_element()
        if not o.is_sweep_override():
            lists[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.value_type.name == "GLOB_CHOICE_SWEEP":
            lists[key] = [f"{key}={v}" for v in o.value().filter(catalog.options(o.key_or_group))]
        elif o.is_discrete_sweep():
            lists[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            return None  # a sweep the basic sweeper refuses (interval): Hydra says so
    return [list(job) for job in itertools.product(*lists.values())]


def subdir_is_num(cfg: DictConfig) -> bool:
    """Whether a job's folder is `<sweep>/<job number>` (hydra.sweep.subdir, as conf/ sets it)."""
    sweep = OmegaConf.select(cfg, "hydra.sweep", default=None)
    return sweep is not None and OmegaConf.to_container(sweep, resolve=False).get("subdir") == NUM_SUBDIR


# --- which sweep folder a resume continues ---------------------------------------------------------------

def folder_to_resume(cfg: DictConfig, jobs: list[list[str]], resume, named_dir: Path | None) -> Path:
    """The sweep folder `rizzrun -m ... resume=...` continues (module docstring); InputError naming
    the first job that differs when the folder's job list is not this command's."""
    if resume is not True:
        folder = Path(str(resume)).expanduser()
        if named_dir is not None and folder.absolute() != named_dir.absolute():
            raise InputError(f"resume={resume}: names another folder than hydra.sweep.dir={named_dir}; give one of them")
        return _checked(folder, jobs, f"resume={resume}")
    if named_dir is not None:
        return _checked(named_dir, jobs, f"hydra.sweep.dir={named_dir}")
    root = Path(str(cfg.output_root)).expanduser() / "multirun"
    found = sorted(((_created(p.parent), p.parent) for p in root.glob(f"*/*/{layout.SWEEP}")), reverse=True)
    for _, folder in found:
        if differing_job(jobs, (job_status.sweep_manifest(folder) or {}).get("jobs")) is None:
            return folder.absolute()
    if not found:
        raise InputError(f"resume=true: no sweep under {root} (looked for {root}/<date>/<time>/{layout.SWEEP}); "
                         "name the sweep's folder: hydra.sweep.dir=PATH resume=true, or drop resume=true for a "
                         "new sweep")
    newest = found[0][1]
    raise InputError(f"resume=true: no sweep under {root} has this command's jobs; the newest, {newest}, differs: "
                     f"{differing_job(jobs, (job_status.sweep_manifest(newest) or {}).get('jobs'))}; "
                     "give the sweep's own overrides, or name its folder: hydra.sweep.dir=PATH resume=true")


def _checked(folder: Path, jobs: list[list[str]], key: str) -> Path:
    manifest = job_status.sweep_manifest(folder)
    if not folder.is_dir():
        raise InputError(f"{key}: no such sweep folder ({folder.absolute()}); give a sweep's folder "
                         f"(<output_root>/multirun/<date>/<time>), or resume=true for the newest")
    if manifest is None or not isinstance(manifest.get("jobs"), list):
        raise InputError(f"{key}: {folder} holds no {layout.SWEEP} with a job list, so it is not a sweep rizzrun "
                         "can resume (only a basic sweep started by rizzrun can); start a new sweep")
    problem = differing_job(jobs, manifest["jobs"])
    if problem is not None:
        raise InputError(f"{key}: this command's jobs differ from the sweep's: {problem}; resume with the "
                         "sweep's own overrides, or start a new sweep without resume=")
    return folder.absolute()


def differing_job(mine: list[list[str]], theirs) -> str | None:
    """The first job that differs between two job lists, in words; None when they are the same."""
    if not isinstance(theirs, list):
        return "the folder records no job list"
    for num, (a, b) in enumerate(zip(mine, theirs)):
        if not job_status.same_job(b, a):
            return f"job {num} is `{' '.join(a)}` here but `{' '.join(map(str, b))}` in the folder"
    if len(mine) != len(theirs):
        num = min(len(mine), len(theirs))
        extra = mine[num] if len(mine) > len(theirs) else theirs[num]
        where = "here only" if len(mine) > len(theirs) else "in the folder only"
        return f"{len(mine)} jobs here, {len(theirs)} in the folder (job {num}, `{' '.join(map(str, extra))}`, {where})"
    return None


def _created(folder: Path) -> str:
    return str((job_status.sweep_manifest(folder) or {}).get("created") or "")


# --- the table at the end ---------------------------------------------------------------------------

def varying_overrides(rows: list[dict]) -> list[str]:
    """The override keys whose value differs between the jobs (what tells them apart)."""
    values: dict[str, set] = {}
    for row in rows:
        for line in row.get("overrides") or []:
            key, _, value = str(line).partition("=")
            values.setdefault(key, set()).add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or any(k not in _keys(r) for r in rows)]
    return keys or list(values)


def _keys(row: dict) -> set[str]:
    return {str(line).partition("=")[0] for line in row.get("overrides") or []}


def table(sweep_dir: Path, rows: list[dict]) -> str:
    """Plain text, one row per job: num, status, the overrides that differ between jobs, final val
    loss, and for a failed job why (exception / diverged / stopped by SIGTERM / killed), its
    one-line error and where its traceback is."""
    keys = varying_overrides(rows)
    lines = [("job", "status", "overrides", "val loss", "error")]
    for row in rows:
        shown = " ".join(o for o in row.get("overrides") or [] if str(o).partition("=")[0] in keys)
        loss = row.get("val_loss")
        status = row.get("status", "?")
        why = ""
        if status == job_status.FAILED:
            reason, error = row.get("reason", "exception"), str(row.get("error", ""))
            why = error if error.startswith(reason) else f"{reason}: {error}"
            if row.get("reason") != job_status.KILLED and row.get("traceback"):
                why += f" (traceback: {row['traceback']})"
        elif status == job_status.PENDING:
            why = "never started"
        lines.append((str(row.get("job", Path(row["dir"]).name)), status, shown or "-",
                      f"{loss:.4f}" if isinstance(loss, int | float) else "-", why))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    body = ["  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths)) + ("  " + line[4] if line[4] else "")
            for line in lines]
    counts = {s: sum(r.get("status") == s for r in rows) for s in (job_status.DONE, job_status.FAILED,
                                                                   job_status.PENDING, job_status.RUNNING)}
    head = f"sweep {sweep_dir}: {len(rows)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join([head, *(line.rstrip() for line in body)])


def unfinished(rows: list[dict]) -> bool:
    return any(row.get("status") != job_status.DONE for row in rows)
