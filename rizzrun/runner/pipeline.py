"""A pipeline: several runs one after another, each reading the folders of the runs before it — the
self-improvement loops that alternate generating data with the model (a `job=sample` run) and
training on it (ReST's Grow and Improve steps, arXiv 2308.08998; recipes/rest_tiny.yaml).

A config with `stages` is a pipeline (`rizzrun +recipe=rest_tiny`):

    stages:
      - name: sft                       # the stage's folder: <the pipeline's run folder>/sft
        overrides: [+recipe=sft_tiny]
      - name: grow1
        overrides: [+recipe=rest_grow_tiny, model.from_pretrained=@sft]   # @NAME: that stage's folder

Each stage is composed from its own overrides (with `@NAME` replaced by the folder of an earlier stage)
plus the pipeline's `seed`, `cache_dir`, `output_root` and logger, and validated; all stages are
composed and validated before the first one runs (a problem that only says an earlier stage's folder
does not exist yet is left for when it does). Stages run in order in this process. A stage whose
summary.json says completed is not run again, an interrupted one is resumed (`resume=<its folder>`),
so `resume=<the pipeline's folder>` continues a stopped pipeline where it stopped; a stage that
ended before saving anything to resume from (bad input, a crash before its first checkpoint) has its
files moved to <stage>/attempts/N/ and starts again.
pipeline.json (and summary.json) in the pipeline's folder: each stage's folder, status and summary.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.config.stages import StageError, shared_overrides, stage_problems
from rizzrun.config.stages import stage_plan as plan_stages
from rizzrun.errors import InputError

PIPELINE = "pipeline.json"


def stage_plan(cfg: DictConfig, run_dir: Path) -> list[tuple[str, list[str]]]:
    """[(stage name, its overrides with @NAME resolved)] (rizzrun.config.stages.stage_plan), or an
    InputError naming the stage and what would be valid."""
    try:
        return plan_stages(cfg, run_dir)
    except StageError as e:
        raise InputError(str(e)) from None
def _status(folder: Path) -> str | None:
    path = folder / layout.SUMMARY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("status")
    except json.JSONDecodeError:
        return None


def _resumable(folder: Path) -> bool:
    from rizzrun.config.resume import resumable

    return folder.is_dir() and resumable(folder)


def compose_stage(overrides: list[str], folder: Path, shared: list[str], resume: bool) -> DictConfig:
    from rizzrun.config import ConfigError, load

    try:
        return load([*overrides, *shared, *([f"resume={folder}"] if resume else [])])
    except ConfigError as e:
        raise InputError(f"stage {folder.name}: {e}") from None


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the pipeline's stages in `run_dir` (module docstring); the pipeline's summary."""
    from rizzrun.files import write_atomic
    from rizzrun.runner.train import _write_summary, run

    run_dir = Path(run_dir)
    plan = stage_plan(cfg, run_dir)
    shared = shared_overrides(cfg)
    (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    summary = {"run_dir": str(run_dir), "job": "pipeline", "status": "running",
               "stages": [{"name": n, "folder": str(run_dir / n), "status": _status(run_dir / n)} for n, _ in plan]}
    _write_summary(run_dir, summary)
    write_atomic(run_dir / PIPELINE, json.dumps(summary, indent=2) + "\n")
    try:
        problems = stage_problems(plan, run_dir, shared)
        if problems:
            raise InputError("pipeline: " + "; ".join(problems))
        for entry, (name, overrides) in zip(summary["stages"], plan):
            folder = run_dir / name
            if _status(folder) == "completed":
                entry["status"] = "completed (earlier)"
                continue
            resume = _resumable(folder)
            if not resume and (folder / layout.CONFIG).exists():  # an attempt that saved nothing to resume
                from rizzrun.job_status import move_attempt_aside

                entry["earlier_attempt"] = str(move_attempt_aside(folder))
            stage_cfg = compose_stage(overrides, folder, shared, resume=resume)
            entry["status"] = "running"
            write_atomic(run_dir / PIPELINE, json.dumps(summary, indent=2, default=str) + "\n")
            result = run(stage_cfg, folder)
            entry.update(status=result.get("status"), summary={k: v for k, v in result.items() if k != "samples"})
            write_atomic(run_dir / PIPELINE, json.dumps(summary, indent=2, default=str) + "\n")
        summary["status"] = "completed"
    except BaseException as e:
        summary.update(status=getattr(e, "status", None) or ("bad input" if isinstance(e, InputError) else "crashed"),
                       error=f"{type(e).__name__}: {e}")
        raise
    finally:
        _write_summary(run_dir, summary)
        write_atomic(run_dir / PIPELINE, json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\npipeline folder: {run_dir}\n" + "\n".join(f"  {s['name']}: {s['status']}" for s in summary["stages"]))
    return summary
