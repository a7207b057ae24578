"""Lightning callbacks of the runner: periodic checkpoints and a plain-text progress line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L

from rizzrun.layout import step_dir_name
from rizzrun.runner.checkpoint import prune_checkpoints
from rizzrun.runner.control import Diverged, nonfinite_weights


class PeriodicCheckpoint(L.Callback):
    """Save `checkpoints/step-NNNNNN/` every `every` optimizer steps and at the end; keep the
    newest `keep` folders (`prune_checkpoints`: by step number, valid ones, never the one
    `latest` names).

    A step that is also a validation step is saved after its validation, so a resumed run
    does not repeat or skip that validation (its metrics and RNG draws are already in the
    checkpoint). A step is saved at most once. Weights holding a NaN or an infinity are never
    saved: that raises `Diverged`, and `latest` keeps naming the last good checkpoint.
    """

    def __init__(self, directory: Path, every: int, keep: int, val_every: int):
        self.directory = Path(directory)
        self.every, self.keep, self.val_every = every, keep, val_every
        self._pending = False
        self.last_saved_step: int | None = None

    @property
    def last_saved_name(self) -> str:
        return step_dir_name(self.last_saved_step) if self.last_saved_step is not None else "(none)"

    def save_once(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        if step == self.last_saved_step:
            return
        bad = nonfinite_weights(trainer.lightning_module.model)
        if bad:
            raise Diverged(f"diverged by step {step}: non-finite weights ({', '.join(bad[:3])}"
                           f"{', ...' if len(bad) > 3 else ''}); not saved; lower optimizer.lr")
        trainer.save_checkpoint(self.directory / step_dir_name(step), weights_only=False)
        self.last_saved_step = step
        if trainer.is_global_zero:  # the one process that writes checkpoints
            prune_checkpoints(self.directory, self.keep)

    def save_after_validation_or_now(self, trainer: L.Trainer) -> None:
        """At a step boundary: save now, or after this step's validation when one is due."""
        if trainer.global_step % self.val_every == 0:
            self._pending = True
        else:
            self.save_once(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.fit_loop._should_accumulate() and trainer.global_step % self.every == 0:
            self.save_after_validation_or_now(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._pending and not trainer.sanity_checking:
            self._pending = False
            self.save_once(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save_once(trainer)


class PrintProgress(L.Callback):
    """One line every `every` steps for non-interactive logs (CI, SLURM) where a live Rich
    bar would print garbage."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.fit_loop._should_accumulate() or step % self.every or not trainer.is_global_zero:
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
    # The task logs values it already summed over the ranks (rizzrun.runner.task._summed).
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed
