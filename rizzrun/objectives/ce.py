"""Next-token cross-entropy, the standard language-modelling objective."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

__all__ = ["CrossEntropy"]


def lm_logits(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, T, V), labels (B, T)) of an "lm" batch, checked: the shared first step of
    every next-token objective."""
    missing = [k for k in ("input_ids", "labels") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}; an 'lm' batch has keys 'input_ids' and 'labels'")
    labels = batch["labels"]
    logits = model(batch["input_ids"])
    if logits.ndim != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}: expected logits (B, T, V) with labels (B, T)"
        )
    return logits, labels


class CrossEntropy:
    """Token-level mean cross-entropy over non-ignored targets.

    loss, metrics = CrossEntropy(ignore_index=-100)(model, batch)
      batch["input_ids"]: (B, T) long; batch["labels"]: (B, T) long, already shifted
      (labels[t] is the target of position t), ignore_index marks positions without a target.
      model(input_ids) -> logits (B, T, V); any dtype, the loss is computed in float32 with
      autocast disabled, since a bf16 log-softmax over a large vocabulary loses precision.
      loss = sum of -log softmax(logits)[label] over targets / number of targets, a scalar.
      metrics: {"loss", "ppl" = exp(loss), "tokens" = number of targets}, detached scalars.

    When every target of the batch is ignored, loss is 0.0 (still attached to the graph, so
    backward runs and yields zero gradients instead of NaN), ppl is 1.0 and tokens is 0.
    Aggregate loss across batches weighted by "tokens" so such batches count for nothing.
    """

    batch_kind = "lm"

    def __init__(self, ignore_index: int = -100):
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise ValueError(f"ignore_index={ignore_index!r} is not allowed: it must be an integer (usually -100)")
        self.ignore_index = int(ignore_index)

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, labels = lm_logits(model, batch)
        vocab = logits.shape[-1]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            # Sum then divide (rather than reduction="mean") so an all-ignored batch gives 0/1
            # instead of 0/0 = NaN.
            total = F.cross_entropy(
                logits.float().reshape(-1, vocab),
                labels.reshape(-1).long(),
                ignore_index=self.ignore_index,
                reduction="sum",
            )
        tokens = (labels != self.ignore_index).sum()
        loss = total / tokens.clamp(min=1)
        detached = loss.detach()
        return loss, {"loss": detached, "ppl": torch.exp(detached), "tokens": tokens.detach()}

    def __repr__(self) -> str:
        return f"CrossEntropy(ignore_index={self.ignore_index})"
