"""`metrics.jsonl`: every logged metric, one JSON object per logging call, readable without
W&B (`{"step": 100, "train/loss": 2.31, ...}`). Written whatever the configured logger is.
`CsvLogger`: the same rows as `csv/metrics.csv` (logger=csv).

Rows are numbered by the step the runner passes (the optimizer step, 1 for the first update;
rizzrun.runner.task emits every row itself), so all loggers agree with each other and with the
checkpoints' step numbers; a resumed run drops the rows past its checkpoint and appends.
"""

from __future__ import annotations

import csv
import io
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
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items() if k != "epoch"}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CsvLogger(JsonlLogger):
    """`metrics.jsonl`'s rows as a CSV file (one column per metric, blank where a row lacks it).
    Rows are appended; the file is rewritten only when a new metric adds a column. On resume the
    rows up to the checkpoint's step are kept."""

    def __init__(self, path: Path, resume_step: int | None = None):
        super().__init__(path, resume_step=None)
        self.rows: list[dict] = []
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if r.get("step") in ("", None) or int(r["step"]) <= resume_step]
        self.keys = sorted({k for r in self.rows for k in r} - {"step"})
        self._rewrite()

    @property
    def name(self) -> str:
        return "csv"

    def _rewrite(self) -> None:
        from rizzrun.files import write_atomic

        write_atomic(self.path, self._csv(self.rows, header=True))

    def _csv(self, rows: list[dict], header: bool) -> str:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["step", *self.keys], lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return text.getvalue()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items() if k != "epoch"}}
        self.rows.append(row)
        if set(row) - {"step"} - set(self.keys):  # a new column: the header changes
            self.keys = sorted(set(self.keys) | set(row) - {"step"})
            self._rewrite()
            return
        with self.path.open("a") as f:
            f.write(self._csv([row], header=False))


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
