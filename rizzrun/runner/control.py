"""What can end a run early, handled at optimizer-step boundaries so that it never leaves a
half-done step behind: a signal (SIGTERM from a scheduler's preemption, SIGINT from Ctrl-C)
and a non-finite loss or gradient (divergence).

Signals: `SignalStop` replaces the SIGTERM/SIGINT handlers, and that of submitit's preemption
signal (SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL names another: sent before a SLURM job's time
limit and on preemption), for the run with one that only records the signal. At the end of the
step under way (after its validation, when one is due) the runner writes a checkpoint (unless
that step already has one), finishes its loggers and ends with `RunEnded` (exit 128 + signal:
143 for SIGTERM, 130 for SIGINT, 140 for SIGUSR2). A second Ctrl-C interrupts at once. With
several processes (DDP) the ranks agree at every step boundary on whether one of them got a
signal, so they all save and stop at the same step.

Requeue has one owner: the handler that was in place before the run (submitit's, in a job it
launched) gets the signal after the run has ended cleanly (`SignalStop.hand_over`): submitit
then requeues the job, which resumes from the checkpoint just written. The run itself never
requeues anything.

Divergence: `NonFiniteGuard.check` runs once per optimizer step, after backward and before
clipping and the update. `on_nonfinite="stop"` ends the run with `Diverged` (exit 3) before the
weights see the bad gradient; `"skip"` drops the step's gradients (the optimizer updates
nothing, the step still counts, like a GradScaler overflow) up to `max_skips` times over the
run, then stops. Under 16-bit mixed precision an infinite gradient is the GradScaler's business
(it skips the step itself), so only the loss is checked there.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import lightning as L
import torch

from rizzrun.errors import InputError, RunEnded

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


PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's own setting (submitit/core/job_environment.py)


def preempt_signal() -> signal.Signals:
    """The signal submitit sends before the time limit and on preemption: SIGUSR2 unless
    $SUBMITIT_PREEMPT_SIGNAL names another (as submitit reads it)."""
    name = os.environ.get(PREEMPT_SIGNAL_ENV, "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise InputError(f"${PREEMPT_SIGNAL_ENV}={name!r}: not a signal name; "
                         "e.g. USR2 (submitit's default) or HUP") from None


class SignalStop(L.Callback):
    """Record SIGTERM/SIGINT/the preemption signal; at the end of the optimizer step under way
    save a checkpoint (through the checkpointer) and raise `Stopped` before the next step starts.
    Installed when the run starts (`install`) and again when training starts, since Lightning
    puts its own SIGTERM handler in place (one that exits with status 0 and no checkpoint).
    `hand_over` passes the signals on to the handlers that were there before the run."""

    def __init__(self, checkpointer, resume_hint: str):
        self.checkpointer, self.resume_hint = checkpointer, resume_hint
        self.signals = (signal.SIGTERM, signal.SIGINT, preempt_signal())
        self.signum: int | None = None  # the first signal: the one the run's status names
        self.received: list[int] = []  # every signal received, in order
        self._agreed: int | None = None  # the signal all ranks stop for (the max of theirs)
        self._previous: dict[int, Any] = {}  # the handlers `restore` puts back
        self._owners: dict[int, Any] = {}  # the handlers before the run: `hand_over` calls them
        self._held: dict[int, Any] = {}  # handlers `restore` left recording, put back by `hand_over`

    training = False  # outside training (setup, final evaluation) a signal ends the run at once
    finished = False

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
        if signum not in self.received:
            self.received.append(signum)
        if not self.training:
            saved = self.checkpointer.last_saved_step is not None
            raise Stopped(f"stopped by {signal.Signals(signum).name} "
                          f"{'after training ended' if self.finished else 'before training started'}; "
                          f"{self.resume_hint if saved else 'nothing to resume: run the command again'}", signum)

    def install(self) -> None:
        for sig in self.signals:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
            self._owners.setdefault(sig, previous)

    def restore(self) -> None:
        """Put back the handlers from before the run. Once a signal came, those of the signals
        an earlier owner handles (submitit's) keep only recording until `hand_over`: one that
        arrives while the run winds down then waits for summary.json instead of ending the
        process midway."""
        for sig, previous in self._previous.items():
            if self.received and self._owned(sig):
                signal.signal(sig, self._record)
                self._held[sig] = previous
            else:
                signal.signal(sig, previous)
        self._previous = {}

    def _record(self, signum, frame) -> None:
        if signum not in self.received:
            self.received.append(signum)

    def _owned(self, signum: int) -> bool:
        owner = self._owners.get(signum)
        return callable(owner) and owner is not signal.default_int_handler

    def hand_over(self, ended: BaseException | None) -> None:
        """Once a run stopped by signals has ended (checkpoint, loggers, summary.json), put the
        held handlers back and call the handler each signal had before the run, when it was a
        Python function: under submitit, its preemption handler requeues the job and exits the
        process (SystemExit), its SIGTERM handler only logs. Nothing is called for other ends (a
        diverged run must not come back), nor for the default handlers: the run's exit code
        (128 + signal) already says what happened."""
        held, self._held = self._held, {}
        for sig, previous in held.items():
            signal.signal(sig, previous)
        if not isinstance(ended, Stopped):
            return
        for signum in self.received:
            if self._owned(signum):
                self._owners[signum](signum, None)

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
        self._agreed = self._agree(trainer, pl_module)
        if self._agreed is not None:
            if self.signum is None:  # another rank's signal: this rank stops for it too
                self.signum = self._agreed
            self.checkpointer.save_after_validation_or_now(trainer)

    def _agree(self, trainer, pl_module) -> int | None:
        """The signal to stop for at this step boundary: this process's, or with several ranks
        the largest signal number any rank got (one collective per optimizer step), so that
        all ranks save the same step and stop together."""
        if trainer.world_size <= 1:
            return self.signum
        mine = torch.tensor(self.signum or 0, device=pl_module.device)
        agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
        return agreed or None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Stop only where the step just completed has its checkpoint (written at its end or after
        # its validation). A signal that came later, between that and here, lets this step run
        # and stops at its end: a checkpoint written from here would hold Lightning's loop state
        # mid-batch, and the resume would validate at once, off the uninterrupted run's cadence.
        # With several ranks, only the signal agreed at the boundary counts (the same on all).
        stop = self.signum if trainer.world_size <= 1 else self._agreed
        if (stop is None or pl_module.micro_batches_in_step()
                or self.checkpointer.last_saved_step != trainer.global_step):
            return
        name = signal.Signals(self.signum).name
        raise Stopped(f"stopped by {name} at step {trainer.global_step}; checkpoint "
                      f"{self.checkpointer.last_saved_name}; {self.resume_hint}", self.signum)
