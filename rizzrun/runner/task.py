"""The one LightningModule: a policy model trained by an objective, evaluated by validation
loss, with a few sampled continuations at each validation.

Components arrive built (plain PyTorch objects); this module only wires them to Lightning:
optimizer + scheduler factories, logging, sampling, and the extra state a checkpoint needs
(RNG states and the position in the data stream) so that a resumed run is bit-identical.

The objective may need models besides the policy (`extra_models`: a frozen reference, or a
`Precomputed` table of its outputs); they are handed to every objective call as keywords, kept
on the policy's device and dtype, and never registered as submodules, so no checkpoint holds
them (the checkpoint records where each came from and its digest: `extra_records`). An
objective that is an `nn.Module` with parameters (a reward model's scalar head) is trained with
the policy and saved in the checkpoint's extra state.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch


class LanguageModelTask(L.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        objective: Callable,
        optimizer: Callable,
        scheduler: Callable | None,
        decoder: Any = None,
        tokenizer: Any = None,
        prompts: Sequence[str] = (),
        samples_per_val: int = 0,
        samples_path: Path | None = None,
        seed: int = 0,
        accumulate: int = 1,
        log_every: int = 1,
        guard: Any = None,
        extra_models: dict[str, Any] | None = None,
        extra_records: dict[str, dict] | None = None,
        on_policy: Any = None,
    ):
        super().__init__()
        self.model = model
        self.objective = objective
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.samples_per_val = samples_per_val
        self.samples_path = Path(samples_path) if samples_path else None
        self.seed = seed
        self.accumulate = accumulate
        self.log_every = log_every
        self.guard = guard  # rizzrun.runner.control.NonFiniteGuard, or None
        # A plain dict, not a ModuleDict: extra models are no submodules (never in a checkpoint).
        self.extra_models = dict(extra_models or {})
        self.extra_records = dict(extra_records or {})
        self.on_policy = on_policy  # rizzrun.runner.on_policy.OnPolicy for a `prompts` objective
        self.weight_key = batch_weight_key(getattr(objective, "batch_kind", "lm"))
        self._rollout_seconds = 0.0
        self._window: list[dict[str, torch.Tensor]] = []
        self._step_started: float | None = None
        self._val_sums: dict[str, float] = {}
        self._tokens_in_window = 0
        self.last_samples: list[dict] = []

    # --- optimization -------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under trainer.strategy=fsdp (a device mesh): shard the model (rizzrun.runner.distributed)."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is not None and not getattr(self, "_sharded", False):
            from rizzrun.runner.distributed import shard_model

            shard_model(self.model, mesh)
            self._sharded = True

    def trainable(self) -> torch.nn.Module:
        """What the optimizer updates: the policy, plus the objective when it has parameters of
        its own (a reward model's head), the policy's parameters first."""
        if isinstance(self.objective, torch.nn.Module) and any(True for _ in self.objective.parameters()):
            return torch.nn.ModuleList([self.model, self.objective])
        return self.model

    def on_fit_start(self) -> None:
        """Extra models follow the policy: its device, and its dtype under a true-precision
        trainer (bf16-true); mixed precision runs them under the same autocast."""
        dtype = next(self.model.parameters()).dtype
        for name, extra in self.extra_models.items():
            if isinstance(extra, torch.nn.Module):
                self.extra_models[name] = extra.to(device=self.device, dtype=dtype)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if hasattr(self.objective, "set_step"):  # e.g. SMPO's margin schedule: optimizer steps done
            self.objective.set_step(self.trainer.global_step)
        rollout_metrics = {}
        if self.on_policy is not None:  # prompts -> scored, prepared rollouts (made or reused)
            batch, rollout_metrics, seconds = self.on_policy.batch_for(
                self.model, batch, self.trainer.global_step, len(self._window), self.global_rank, self.extra_models)
            self._rollout_seconds += seconds
            self._tokens_in_window += batch_tokens(batch)
        loss, metrics = self.objective(self.model, batch, **self.extra_models)
        self._window.append({"loss": loss.detach().float(), **{k: v.detach().float() for k, v in metrics.items()},
                             **{k: v.detach().float().to(loss.device) for k, v in rollout_metrics.items()}})
        # Lightning divides by `accumulate_grad_batches` itself.
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Once per optimizer step, after every micro-batch's backward and before clipping and
        the update: the non-finite guard (which may raise, or drop this step's gradients so that
        nothing non-finite reaches the weights), then the step's metrics with its gradient norm
        and throughput, on steps that are multiples of `log_every` (decided by the step number
        alone, so a resumed run logs the same rows as an uninterrupted one)."""
        step = self.trainer.global_step + 1  # the step this update makes
        grads = [p.grad for p in self.trainable().parameters() if p.grad is not None]
        now, started = time.perf_counter(), self._step_started
        rate = self._tokens_in_window / max(now - started, 1e-9)
        self._step_started, self._tokens_in_window = now, 0
        metrics = self._window_metrics(rate)
        if self.on_policy is not None:  # generation (and scoring, prepare) vs the rest of the step
            metrics["perf/rollout_s"] = torch.tensor(self._rollout_seconds)
            metrics["perf/update_s"] = torch.tensor(max(now - started - self._rollout_seconds, 0.0))
            self._rollout_seconds = 0.0
        metrics["train/grad_norm"] = full_value(torch.nn.utils.get_total_norm(grads)) if grads else torch.zeros(())
        if self.guard is not None:
            self.guard.check(step, metrics, self.model)
        if step % self.log_every == 0:
            self._emit(metrics, step, prog_bar=("train/loss", "perf/tokens_per_s"))

    def _emit(self, metrics: dict[str, Any], step: int, prog_bar: Sequence[str] = ()) -> None:
        """One row to every logger, numbered by the optimizer step (the loggers take the step as
        given: Lightning's own logging counter starts at 0 and lags after validation). `self.log`
        only feeds the progress display and `trainer.callback_metrics`."""
        row = {k: float(v) for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(row, step=step)
        in_training = self.trainer.training
        for key, value in row.items():
            self.log(key, value, prog_bar=key in prog_bar, logger=False, on_step=in_training, on_epoch=not in_training)

    def micro_batches_in_step(self) -> int:
        """Micro-batches of the current optimizer step already trained on (0 at a step boundary)."""
        return len(self._window)

    def _window_metrics(self, tokens_per_s: float) -> dict[str, torch.Tensor]:
        """One value per optimizer step: weighted over the accumulated micro-batches of every
        rank by the batch kind's count (`tokens` for lm, `pairs` for preference: what the
        objective's means are over), so several processes log what one would with their global
        batch; counts are summed; and the throughput of all ranks together. The gradient norm
        is the same on every rank (taken after DDP averaged the gradients)."""
        window, self._window = self._window, []
        weights = torch.stack([m.get(self.weight_key, torch.ones(())) for m in window]).float()
        keys = list(window[0])
        weighted = [torch.stack([m[k] for m in window]).sum() if k in COUNT_KEYS else
                    (torch.stack([m[k] for m in window]) * weights).sum() for k in keys]
        total, rate, *weighted = self._summed([weights.sum(), torch.tensor(tokens_per_s), *weighted])
        logged = {f"train/{k}": (v if k in COUNT_KEYS else v / total.clamp_min(1)) for k, v in zip(keys, weighted)}
        if "train/loss" in logged and "train/ppl" in logged:
            logged["train/ppl"] = torch.exp(logged["train/loss"])
        logged["train/lr"] = torch.tensor(self.trainer.optimizers[0].param_groups[0]["lr"])
        logged["perf/tokens_per_s"] = rate
        return logged

    def _summed(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each value summed over the ranks of a distributed run (one all-reduce); as given in
        a run of one process."""
        if self.trainer.world_size == 1:
            return values
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in values]).to(self.device)
        return list(self.trainer.strategy.reduce(stacked, reduce_op="sum").cpu().unbind())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """After the micro-batch that completed an optimizer step: the objective's `after_step(model)`
        (e.g. WARP's EMA anchor follows the policy), once per step, resumed runs included."""
        after = getattr(self.objective, "after_step", None)
        if after is not None and self.trainer.global_step > self._steps_seen:
            after(self.model)
        self._steps_seen = self.trainer.global_step

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._step_started is None:
            self._step_started = time.perf_counter()
        self._tokens_in_window += batch_tokens(batch)

    # --- validation ---------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if batch_rows(batch) == 0:  # this rank's share of a last, small batch
            return
        if self.on_policy is not None:  # a prompts objective is judged by the rewards of its completions
            metrics = self.on_policy.validate(self.model, batch, self.trainer.global_step, batch_idx, self.global_rank)
            accumulate_means(self._val_sums, metrics, self.weight_key)
            return
        evaluate = getattr(self.objective, "evaluate", self.objective)
        with torch.no_grad():
            loss, metrics = evaluate(self.model, batch, **self.extra_models)
        accumulate_means(self._val_sums, {"loss": loss, **metrics}, self.weight_key)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        keys = sorted(self._val_sums)
        if self.trainer.world_size > 1:  # a rank whose share of every batch was empty has no keys yet
            found: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(found, keys)
            keys = sorted(set().union(*found))
        sums = dict(zip(keys, (float(v) for v in self._summed([torch.tensor(self._val_sums.get(k, 0.0),
                                                                            dtype=torch.float64) for k in keys]))))
        self._emit(validation_metrics(sums, self.weight_key), self.trainer.global_step, prog_bar=("val/loss",))
        self._write_samples()

    def on_validation_end(self) -> None:
        self._step_started = time.perf_counter()  # tokens/s counts training time only

    def _write_samples(self) -> None:
        if not (self.decoder and self.tokenizer and self.prompts and self.samples_per_val):
            return
        step = self.trainer.global_step
        rows = [
            {"step": step, "prompt": prompt, "text": text}
            for prompt, text in zip(
                self.prompts[: self.samples_per_val],
                sample_texts(self.model, self.decoder, self.tokenizer, self.prompts[: self.samples_per_val], seed=self.seed * 1_000_003 + step),
            )
        ]
        self.last_samples = rows
        for logger in self.loggers:
            if hasattr(logger, "log_text"):  # W&B: a table of samples per validation
                logger.log_text(key="samples", columns=["step", "prompt", "text"], data=[list(r.values()) for r in rows],
                                step=step)
        if self.samples_path is not None:
            with self.samples_path.open("a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")

    # --- checkpoint extras --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        checkpoint["rizzrun"] = {"data_position": self.trainer.global_step * self.accumulate,
                                 "processes": self.trainer.world_size}  # the position counts global batches
        if self.extra_records:  # where each extra model came from and its digest (also in meta.json)
            checkpoint["rizzrun"]["extra_models"] = self.extra_records
        if not isinstance(self.objective, torch.nn.Module):  # a module's state is in the task's state_dict
            checkpoint["objective"] = self.objective.state_dict() if hasattr(self.objective, "state_dict") else {}
        if self.guard is not None:
            checkpoint["guard"] = self.guard.state_dict()
        if self.on_policy is not None:  # rollouts a resume inside a block of num_iterations steps reuses
            held = self.on_policy.state_dict(self.trainer.global_step)
            if held:
                checkpoint["rollouts"] = held

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng")
        if hasattr(self.objective, "load_state_dict") and not isinstance(self.objective, torch.nn.Module):
            self.objective.load_state_dict(checkpoint.get("objective", {}))
        if self.guard is not None:
            self.guard.load_state_dict(checkpoint.get("guard", {}))
        if self.on_policy is not None:
            self.on_policy.load_state_dict(checkpoint.get("rollouts", {}), rank=self.global_rank)

    def on_train_start(self) -> None:
        self._steps_seen = self.trainer.global_step  # optimizer steps done (a resume starts past 0)
        rng = getattr(self, "_rng_to_restore", None)
        if rng:
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            self._rng_to_restore = None


# Metrics that are counts (summed over micro-batches, ranks and validation batches), not means.
COUNT_KEYS = ("tokens", "pairs", "contexts", "completions")


def batch_weight_key(kind: str) -> str:
    """The count an objective's per-batch means are over, by its batch kind: an lm objective's
    loss is a mean over target tokens, a preference objective's metrics are means over pairs, a
    diversity objective's (the DDS head) over contexts, an on-policy objective's over completions."""
    return {"preference": "pairs", "diversity": "contexts", "prompts": "completions"}.get(kind, "tokens")


def batch_rows(batch: dict) -> int:
    """Examples in a batch (rows of an lm batch, pairs of a preference batch)."""
    if "input_ids" in batch:
        return int(batch["input_ids"].shape[0])
    return int(batch["row"].shape[0])


def batch_tokens(batch: dict) -> int:
    """Tokens the policy reads for a batch (the throughput's numerator): every position of an lm
    batch; for a preference batch the real tokens of prompt + chosen and prompt + rejected; for a
    rollout the real tokens of every prompt ++ completion (a prompts batch counts none: its rollout
    is counted once made)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "prompt_ids" in batch and "chosen_mask" not in batch:
        return 0
    if "input_ids" in batch:
        return int(batch["input_ids"].numel())
    prompt = int(batch["prompt_mask"].sum())
    return 2 * prompt + int(batch["chosen_mask"].sum()) + int(batch["rejected_mask"].sum())


def accumulate_means(sums: dict[str, float], metrics: dict, weight_key: str) -> None:
    """Add one batch's metrics to running sums: means weighted by the batch's `weight_key` count,
    counts summed (`validation_metrics` turns the sums back into means)."""
    weight = float(metrics.get(weight_key, 1.0))
    sums["_weight"] = sums.get("_weight", 0.0) + weight
    for key, value in metrics.items():
        value = float(value)
        sums[key] = sums.get(key, 0.0) + (value if key in COUNT_KEYS else value * weight)


def validation_metrics(sums: dict[str, float], weight_key: str) -> dict[str, float]:
    """`val/<metric>` means from `accumulate_means` sums; lm runs log val/loss and val/ppl (the
    token-weighted mean loss and its exponential), other kinds every metric of the objective."""
    weight = max(sums.get("_weight", 0.0), 1.0)
    loss = sums.get("loss", 0.0) / weight
    if weight_key == "tokens":
        return {"val/loss": loss, "val/ppl": math.exp(min(loss, 50.0))}
    return {f"val/{k}": (v if k in COUNT_KEYS else v / weight) for k, v in sums.items() if k != "_weight"}


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a (possibly sharded) DTensor result, e.g. the norm of sharded gradients."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def sample_texts(model, decoder, tokenizer, prompts: Sequence[str], seed: int) -> list[str]:
    """Continue each prompt with `decoder`. Prompts start after an EOS, as documents do in the
    packed training stream. The decoder's RNG is seeded per call, so samples do not depend on
    (or disturb) the global RNG and a resumed run samples the same text."""
    device = next(model.parameters()).device
    previous = getattr(decoder, "seed", None)
    texts = []
    for i, prompt in enumerate(prompts):
        if hasattr(decoder, "seed") and previous is None:
            decoder.seed = seed + i  # one stream per prompt, not the same draws for all
        ids = torch.tensor([[tokenizer.eos_id, *tokenizer.encode(prompt)]], device=device)
        out = decoder.generate(model, ids, eos_token_id=tokenizer.eos_id)
        # A model's vocabulary may be padded past the tokenizer's: such ids have no text.
        new = [i for i in out[0, ids.shape[1]:].tolist() if i < tokenizer.vocab_size]
        texts.append(prompt + tokenizer.decode(new))
    if hasattr(decoder, "seed"):
        decoder.seed = previous
    return texts
