"""Stands in for `rizzrun.runner.train` in CLI tests: records what each job received, and fails
for seed 13 so that tests can watch a sweep survive a failing job."""

from __future__ import annotations

import json
from pathlib import Path

FAIL_SEED = 13


def run(cfg, run_dir: Path) -> dict:
    record = {"name": cfg.name, "seed": cfg.seed, "resume": cfg.resume, "run_dir": str(run_dir),
              "run_dir_type": type(run_dir).__name__, "has_hydra_node": "hydra" in cfg,
              "model_target": cfg.model._target_}
    (run_dir / "fake_run.json").write_text(json.dumps(record))
    if cfg.seed == FAIL_SEED:
        raise RuntimeError(f"fake failure for seed {FAIL_SEED}")
    return {"ok": True}
