"""The layout of one run folder, defined once. Torch-free: the launcher (before torch), the
runner, checkpoints, resume, generate, eval and export all read their paths from here.

    <run>/
      .hydra/              Hydra's composed config, the overrides
      config.yaml          the resolved config
      env.json             library versions, git commit, machine, argv
      run.lock             held (flock) by the process writing into the folder
      tokenizer/           what `generate` needs to decode
      metrics.jsonl        every logged metric
      samples.jsonl        sampled continuations at each validation
      summary.json         how the run ended (status), final step and losses
      status.json          where the job stands: pending/running/done/failed (rizzrun.job_status)
      attempts/N/          an earlier attempt's files, moved aside when a sweep job restarts
      error.txt            the traceback of a failed run
      eval.json            `rizzrun eval` / `eval.at_end`
      checkpoints/         step-NNNNNN/{model.safetensors, state.pt, meta.json}, latest
      wandb/, wandb_id.txt the W&B run and its id
      csv/                 the CSV logger's metrics.csv

    <sweep>/sweep.json     a sweep's overrides and job list; its jobs are <sweep>/<job number>/
"""

from __future__ import annotations

import re
from pathlib import Path

HYDRA_DIR = ".hydra"
CONFIG = "config.yaml"
HYDRA_CONFIG = Path(HYDRA_DIR) / "config.yaml"
HYDRA_OVERRIDES = Path(HYDRA_DIR) / "overrides.yaml"
HYDRA_SETTINGS = Path(HYDRA_DIR) / "hydra.yaml"  # Hydra's own settings; runtime.choices: each group's option
ENV = "env.json"
LOCK = "run.lock"
TOKENIZER = "tokenizer"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
ERROR = "error.txt"
EVAL = "eval.json"
WANDB_ID = "wandb_id.txt"
STATUS = "status.json"
ATTEMPTS = "attempts"
SWEEP = "sweep.json"
CSV_DIR = "csv"

CHECKPOINTS = "checkpoints"
LATEST_NAME = "latest"
LATEST = Path(CHECKPOINTS) / LATEST_NAME
WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"

_STEP_DIR = re.compile(r"step-(\d+)")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(folder: Path | str) -> int | None:
    """The step a checkpoint folder's name says (`step-000060` -> 60), or None for other names."""
    match = _STEP_DIR.fullmatch(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS

# What a checkpoint write in progress leaves in checkpoints/ if the process dies: the folder
# being written (`.tmp-step-NNNNNN-XXXX`), the previous copy of a step written again
# (`.old-step-NNNNNN`), and the `latest` pointer's temp file (`.latest.XXXX.tmp`, write_atomic).
CHECKPOINT_TMP_PREFIX = ".tmp-"
CHECKPOINT_OLD_PREFIX = ".old-"
LATEST_TMP_GLOB = f".{LATEST_NAME}.*.tmp"
