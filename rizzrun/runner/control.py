"""What can end a run early, handled at optimizer-step boundaries so that it never leaves a
half-done step behind: a signal (SIGTERM from a scheduler's preemption, SIGINT from Ctrl-C)
and a non-finite loss or gradient (divergence).

Signals: `SignalStop` replaces the SIGTERM/SIGINT handlers for the run with one that only
records the signal. At the end of the step under way (after its validation, when one is due)
the runner writes a checkpoint (unless that step already has one), finishes its loggers and
ends with `RunEnded` (exit 128 + signal: 143 for SIGTERM, 130 for SIGINT). A second Ctrl-C
interrupts at once.

Divergence: `NonFiniteGuard.check` runs once per optimizer step, after backward and before
clipping and the update. `on_nonfinite="stop"` ends the run with `Diverged` (exit 3) before the
weights see the bad gradient; `"skip"` drops the step's gradients (the optimizer updates
nothing, the step still counts, like a GradScaler overflow) up to `max_skips` times over the
run, then stops. Under 16-bit mixed precision an infinite gradient is the GradScaler's business
(it skips the step itself), so only the loss is checked there.
"""

from __future__ import annotations

import math
import signal
from typing import Any

import lightning as L
import torch

from rizzrun.errors import RunEnded

EXIT_DIVERGED = 3
ON_NONFINITE = ("stop", "skip")


class Diverged(RunEnded):
    def __init__(self, message: str):
        super().__init__(message, status="diverged", exit_code=EXIT_DIVERGED)


class Stopped(RunEnded):
    def __init__(self, message: str, signum: int):
        super().__init__(message, status=f"stopped by {signal.Signals(signum).name}", exit_code=128 + signum)
        self.signum = signum


class NonFiniteGuard:
    def __init__(self, on_nonfinite: str = "stop", max_skips: int = 0, check_grads: bool = True):
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"trainer.on_nonfinite={on_nonfinite!r}: allowed: {', '.join(ON_NONFINITE)}")
        self.on_nonfinite, self.max_skips, self.check_grads = on_nonfinite, int(max_skips), check_grads
        self.skipped: list[int] = []  # the steps whose update was dropped

    def check(self, step: int, metrics: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
        keys = ["train/loss"] + (["train/grad_norm"] if self.check_grads else [])
        bad = [(k, float(metrics[k])) for k in keys if k in metrics and not math.isfinite(float(metrics[k]))]
        if not bad:
            return
        what = ", ".join(f"{k} = {v}" for k, v in bad)
        if self.on_nonfinite == "skip" and len(self.skipped) < self.max_skips:
            self.skipped.append(step)
            for p in model.parameters():
                p.grad = None
            return
        hint = ("lower optimizer.lr, or trainer.on_nonfinite=skip trainer.max_nonfinite_skips=N to skip such steps"
                if self.on_nonfinite == "stop" else
                f"{len(self.skipped)} steps were skipped already (trainer.max_nonfinite_skips={self.max_skips})")
        raise Diverged(f"diverged at step {step}: {what}; no update was made with it; {hint}")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = list(state.get("skipped", []))


def nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """Names of parameters holding a NaN or an infinity."""
    return [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]


class SignalStop(L.Callback):
    """Record SIGTERM/SIGINT; at the end of the optimizer step under way save a checkpoint
    (through the checkpointer) and raise `Stopped` before the next step starts. Installed when the run starts (`install`) and
    again when training starts, since Lightning puts its own SIGTERM handler in place (one that
    exits with status 0 and no checkpoint)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpointer, resume_hint: str):
        self.checkpointer, self.resume_hint = checkpointer, resume_hint
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    training = False  # outside training (setup, final evaluation) a signal ends the run at once
    finished = False

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
        if not self.training:
            saved = self.checkpointer.last_saved_step is not None
            raise Stopped(f"stopped by {signal.Signals(signum).name} "
                          f"{'after training ended' if self.finished else 'before training started'}; "
                          f"{self.resume_hint if saved else 'nothing to resume: run the command again'}", signum)

    def install(self) -> None:
        for sig in self.SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.install()
        self.training = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.training, self.finished = False, True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Save at the boundary the step just reached, unless a validation is due first (then
        # the checkpointer saves after it); the run ends when the next step would start, so the
        # step's metrics are logged first.
        if trainer.fit_loop._should_accumulate():
            return
        if trainer.world_size > 1:
            self._agree(trainer)
        if self.signum is not None:
            self.checkpointer.save_after_validation_or_now(trainer)

    def _agree(self, trainer) -> None:
        """In a run of several processes a signal may reach only some of them (`kill` of one
        process; a scheduler signals them all): at each step boundary every rank takes the signal
        any rank got (one all-reduce), so all save the same step and stop together."""
        mine = torch.tensor(float(self.signum or 0), device=trainer.lightning_module.device)
        agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if agreed and self.signum is None:
            self.signum = agreed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Stop only where the step just completed has its checkpoint (written at its end or after
        # its validation). A signal that came later, between that and here, lets this step run
        # and stops at its end: a checkpoint written from here would hold Lightning's loop state
        # mid-batch, and the resume would validate at once, off the uninterrupted run's cadence.
        if (self.signum is None or pl_module.micro_batches_in_step()
                or self.checkpointer.last_saved_step != trainer.global_step):
            return
        name = signal.Signals(self.signum).name
        raise Stopped(f"stopped by {name} at step {trainer.global_step}; checkpoint "
                      f"{self.checkpointer.last_saved_name}; {self.resume_hint}", self.signum)
