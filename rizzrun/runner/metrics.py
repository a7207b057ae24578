"""`metrics.jsonl`: every logged metric, one JSON object per logging call, readable without
W&B (`{"step": 100, "train/loss": 2.31, ...}`). Written whatever the configured logger is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class JsonlLogger(Logger):
    def __init__(self, path: Path, resume_step: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_after(self.path, resume_step)
        self._file = None
        self.trainer = None  # set by the runner: rows carry the optimizer step, `trainer.global_step`

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args, **kwargs) -> None:
        pass  # the resolved config is in .hydra/ and config.yaml beside this file

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._file is None:
            self._file = self.path.open("a")
        if self.trainer is not None:
            step = self.trainer.global_step
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items() if k != "epoch"}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after `step`: a resumed run re-logs them from its checkpoint, and a
    metric must not appear twice for one step."""
    rows = read_metrics(path)
    kept = [r for r in rows if r.get("step") is None or r["step"] <= step]
    if len(kept) != len(rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
