"""A pipeline's stages, planned and checked without torch (the validator's part of
rizzrun.runner.pipeline): names, `@NAME` references to earlier stages, and every stage composed and
validated as the run it will be."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rizzrun import layout


# Where `rizzrun validate` pretends a pipeline runs: its folder is not known yet, so every stage's
# folder is one still to be made (problems that only say such a folder is missing are not reported).
PLACEHOLDER_ROOT = Path("/pipeline-run-folder")


class StageError(ValueError):
    """A pipeline whose stages cannot be planned (a bad name or reference): one line."""


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_REF = re.compile(r"@([A-Za-z0-9][A-Za-z0-9_-]*)")


def stage_plan(cfg: DictConfig, run_dir: Path) -> list[tuple[str, list[str]]]:
    """[(stage name, its overrides with @NAME resolved)], checked: names unique and folder-safe,
    every @NAME an earlier stage. StageError naming the stage and what would be valid."""
    plan: list[tuple[str, list[str]]] = []
    stages = OmegaConf.to_container(cfg.stages, resolve=False)
    if not isinstance(stages, list) or not stages:
        raise StageError("stages: expected a list of {name, overrides} (one per run of the pipeline)")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or set(stage) - {"name", "overrides"} or "name" not in stage:
            raise StageError(f"stages[{i}]={stage!r}: expected {{name: NAME, overrides: [KEY=VALUE, ...]}}")
        name = str(stage["name"])
        if not _NAME.fullmatch(name):
            raise StageError(f"stages[{i}].name={name!r}: letters, digits, '_' and '-' only (it names a folder)")
        if name in [n for n, _ in plan]:
            raise StageError(f"stages[{i}].name={name}: a stage of that name comes earlier; give each stage its own name")
        overrides = [str(o) for o in (stage.get("overrides") or [])]
        done = [n for n, _ in plan]
        resolved = []
        for override in overrides:
            for ref in _REF.findall(override):
                if ref not in done:
                    raise StageError(f"stages[{i}] ({name}): {override}: @{ref} is not an earlier stage; "
                                     f"earlier stages: {', '.join(done) or 'none'}")
            resolved.append(_REF.sub(lambda m: str(run_dir / m.group(1)), override))
        plan.append((name, resolved))
    return plan


def shared_overrides(cfg: DictConfig) -> list[str]:
    """What every stage takes from the pipeline's own config: seed, cache_dir, output_root, the
    logger (by its kind) and trainer.num_threads."""
    out = [f"seed={cfg.seed}", f"cache_dir={cfg.cache_dir}", f"output_root={cfg.output_root}"]
    kind = OmegaConf.select(cfg, "logger.kind", default=None)
    if kind is not None:
        out.append(f"logger={kind}")
    threads = OmegaConf.select(cfg, "trainer.num_threads", default=None)
    if threads:
        out.append(f"trainer.num_threads={threads}")
    return out


def stage_problems(plan: list[tuple[str, list[str]]], run_dir: Path, shared: list[str]) -> list[str]:
    """Every stage composed and validated (torch-free), one line per problem headed by the stage's
    name; problems that only say a stage's folder (still to be made) is missing are left for when
    that stage runs, and a stage may not be a pipeline itself."""
    from rizzrun.config.check import check_job

    problems = []
    pending = [str(run_dir / other) for other, _ in plan if not (run_dir / other / layout.CONFIG).exists()]
    for name, overrides in plan:
        cfg, found = check_job([*overrides, *shared])
        problems += [f"stage {name}: {p}" for p in found if not any(path in p for path in pending)]
        if cfg is not None and cfg.get("stages"):
            problems.append(f"stage {name}: its config is a pipeline itself (stages); a stage is one run")
    return problems


