"""Where metrics go: `metrics.jsonl` always, plus W&B (offline unless told), CSV, or nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rizzrun.layout import CSV_DIR, METRICS, WANDB_ID
from rizzrun.runner.metrics import CsvLogger, JsonlLogger

MAX_TAG = 64  # W&B refuses longer tags
MAX_GROUP = 128  # and longer group names


def wandb_run_id(run_dir: Path) -> str:
    """One W&B id per run folder, kept in the folder so `resume=true` continues the same run."""
    path = Path(run_dir) / WANDB_ID
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    path.write_text(run_id + "\n")
    return run_id


def sweep_job(cfg: DictConfig, run_dir: Path) -> dict:
    """What W&B is told about a job of a sweep (read from the job's status.json, rizzrun.job_status):
    `group` the sweep (its folder, relative to output_root when under it), `name` `<sweep>/<job>`,
    `tags` the job's overrides (`key=value`, cut to W&B's 64 characters), and `config` entries
    `overrides`, `sweep`, `job_num`, so a dashboard groups a sweep's runs and filters them by
    override. Empty for a single run."""
    from rizzrun.job_status import read_status

    record = read_status(run_dir) or {}
    if not record.get("sweep"):
        return {}
    sweep = Path(record["sweep"])
    try:
        group = str(sweep.relative_to(Path(str(cfg.output_root)).expanduser().absolute()))
    except (ValueError, KeyError, TypeError):
        group = str(sweep)
    group = group[-MAX_GROUP:]
    overrides = [str(o) for o in record.get("overrides") or []]
    tags = list(dict.fromkeys(o if len(o) <= MAX_TAG else o[:MAX_TAG - 3] + "..." for o in overrides))
    num = record.get("job")
    return {"group": group, "name": f"{sweep.name}/{num}", "tags": tags,
            "config": {"overrides": overrides, "sweep": group, "job_num": num}}


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> list:
    """metrics.jsonl, plus the configured logger; each takes the step it is given (the optimizer
    step: W&B's `trainer/global_step` axis, the CSV's `step` column)."""
    loggers = [JsonlLogger(Path(run_dir) / METRICS, resume_step=resume_step)]
    lcfg = cfg.logger
    if lcfg.kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        job = sweep_job(cfg, run_dir)
        loggers.append(
            WandbLogger(
                project=lcfg.project,
                entity=lcfg.entity,
                name=lcfg.name or job.get("name") or Path(run_dir).name,
                group=lcfg.group or job.get("group"),
                tags=[*(lcfg.tags or []), *job.get("tags", [])],
                save_dir=str(run_dir),
                id=wandb_run_id(run_dir),
                mode=lcfg.mode,
                resume="allow",  # the same id again after a resume: one run, continued
                config={**OmegaConf.to_container(cfg, resolve=True), **job.get("config", {})},
            )
        )
    elif lcfg.kind == "csv":
        loggers.append(CsvLogger(Path(run_dir) / CSV_DIR / "metrics.csv", resume_step=resume_step))
    return loggers


def finish_loggers(loggers: list, failed: bool) -> None:
    """Close every logger; `wandb.finish` runs even when training crashed, with its exit code."""
    for logger in loggers:
        try:
            logger.finalize("failed" if failed else "success")
        except Exception:
            pass
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
