"""Lightning callbacks of the runner: periodic checkpoints and a plain-text progress line."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import lightning as L


class PeriodicCheckpoint(L.Callback):
    """Save `checkpoints/step-NNNNNN/` every `every` optimizer steps and at the end; keep the
    newest `keep` folders.

    A step that is also a validation step is saved after its validation, so a resumed run
    does not repeat or skip that validation (its metrics and RNG draws are already in the
    checkpoint).
    """

    def __init__(self, directory: Path, every: int, keep: int, val_every: int):
        self.directory = Path(directory)
        self.every, self.keep, self.val_every = every, keep, val_every
        self._pending = False

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.directory / f"step-{trainer.global_step:06d}", weights_only=False)
        folders = sorted(p for p in self.directory.glob("step-*") if p.is_dir())
        for old in folders[: max(0, len(folders) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not trainer.fit_loop._should_accumulate() and step % self.every == 0:
            if step % self.val_every == 0:
                self._pending = True
            else:
                self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._pending and not trainer.sanity_checking:
            self._pending = False
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)


class PrintProgress(L.Callback):
    """One line every `every` steps for non-interactive logs (CI, SLURM) where a live Rich
    bar would print garbage."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.fit_loop._should_accumulate() or step % self.every:
            return
        m = trainer.callback_metrics
        parts = [f"step {step}/{trainer.max_steps}"]
        for key, label in (("train/loss", "loss"), ("val/loss", "val"), ("perf/tokens_per_s", "tok/s")):
            if key in m:
                parts.append(f"{label} {float(m[key]):.4g}")
        print("  ".join(parts), file=sys.stderr, flush=True)


def interactive() -> bool:
    return sys.stderr.isatty()


def progress_callback(every: int) -> L.Callback:
    """Rich bar (loss and tokens/s) in a terminal, plain lines elsewhere."""
    if interactive():
        from lightning.pytorch.callbacks import RichProgressBar

        class StepBar(RichProgressBar):
            def _get_train_description(self, current_epoch: int) -> str:
                return "train"  # steps, not epochs: the data stream is endless

            def get_metrics(self, trainer, pl_module):
                metrics = super().get_metrics(trainer, pl_module)
                metrics.pop("v_num", None)
                return metrics

        return StepBar()
    return PrintProgress(every)


def quiet_lightning() -> None:
    """Lightning's start-up chatter (accelerator lines, tips) at WARNING, through the same
    handlers as everything else (Hydra's console + the run's log file), printed once."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed
