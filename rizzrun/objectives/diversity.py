"""Training the DDS diversity head (Li et al., arXiv 2406.07850): regress the head's d on a
diversity label d* per context (MSE), the language model frozen by default.

Batch kind "diversity" (rizzrun.data.contexts; docs/contracts.md "Batch kinds"):
    input_ids (B, L) long: a context ++ a reply, right-padded with 0
    prompt_mask (B, L) bool: the context's tokens (what the sequence-level head pools)
    reply_mask (B, L) bool: the reply's tokens (may be empty)
    diversity (B,) float32: the label d* in [0, 1]
    row (B,) long: the context's id

Decisions (the spec marks them unconfirmed):
- sequence level: d = head(mean of the final-norm hidden states over the context's tokens), as
  `DynamicTemperature` pools a prompt; token level: d_t = head(h_t) at every position whose logits
  predict a reply token (the context's last position, then every reply position but the last), each
  with its context's label: the positions `DynamicTemperature(granularity="token")` reads while
  generating that reply. A context with an empty reply gives its last position only.
- loss: mean over contexts of (d - d*)^2 (token level: each context's mean over its positions, so
  every context weighs the same at both levels); granularity="both" averages the two losses, and one
  head then serves both decoders.
- freeze_backbone=True: the hidden states are computed under torch.no_grad(), so the policy gets no
  gradient and the optimizer leaves it unchanged (AdamW skips parameters without a gradient; weight
  decay included); False: the MSE trains the backbone too.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Literal, Optional

import torch
from torch import nn

from rizzrun.decoders.dynamic_temperature import DiversityHead, pool_prompt

__all__ = ["DiversityRegression", "GRANULARITIES", "check_diversity_batch", "predicting_positions"]

GRANULARITIES = ("sequence", "token", "both")
_KEYS = ("input_ids", "prompt_mask", "reply_mask", "diversity", "row")


def check_diversity_batch(batch: dict) -> None:
    """ValueError unless `batch` is a `diversity` batch (keys and shapes of the module docstring)."""
    missing = [k for k in _KEYS if k not in batch]
    if missing:
        raise ValueError(f"a diversity batch needs keys {list(_KEYS)}; missing {missing} (got {sorted(batch)})")
    ids = batch["input_ids"]
    if ids.ndim != 2 or batch["prompt_mask"].shape != ids.shape or batch["reply_mask"].shape != ids.shape:
        raise ValueError(f"input_ids {tuple(ids.shape)}, prompt_mask {tuple(batch['prompt_mask'].shape)} and "
                         f"reply_mask {tuple(batch['reply_mask'].shape)} must all be (B, L)")
    if batch["diversity"].shape != (ids.shape[0],):
        raise ValueError(f"diversity {tuple(batch['diversity'].shape)} must be (B,) = ({ids.shape[0]},)")
    if not bool(batch["prompt_mask"].any(dim=1).all()):
        raise ValueError("a row of prompt_mask has no token: every context needs at least one")


def predicting_positions(prompt_mask: torch.Tensor, reply_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions whose logits predict a reply token (position p with reply token
    p + 1), or the context's last position where the reply is empty."""
    out = torch.zeros_like(reply_mask)
    out[:, :-1] = reply_mask[:, 1:]
    last = prompt_mask.long().cumsum(1).argmax(1)  # the context's last position (real tokens first)
    empty = ~out.any(1)
    out[empty, last[empty]] = True
    return out


class DiversityRegression(nn.Module):
    """MSE of the DDS diversity head against the labels of a `diversity` batch (module docstring).
    An nn.Module: it owns the head (`self.head`, a `DiversityHead`), saved in the run's checkpoint as
    `objective.head.*`, which `decoder=dynamic_temperature decoder.head=RUN_DIR` loads.

    loss, metrics = DiversityRegression(d_model, ...)(model, batch)
      model: anything with hidden_states(input_ids) -> (B, L, d_model) (the final-norm states).
      metrics: loss; mse/sequence and mse/token (with granularity both); diversity/predicted (the
        sequence-level d, or the token-level mean, over contexts), diversity/target (mean d*),
        accuracy (share of contexts with (d > 0.5) == (d* > 0.5)); contexts (B, the weight of
        every mean).

    Arguments:
      d_model: the model's hidden size (the runner gives it).
      granularity: "sequence" | "token" | "both" (default: one head for both decoders).
      hidden: the head's hidden width (None: d_model).
      freeze_backbone: True: the language model is not trained (module docstring).
    """

    batch_kind = "diversity"

    def __init__(self, d_model: Optional[int] = None, granularity: Literal["sequence", "token", "both"] = "both",
                 hidden: Optional[int] = None, freeze_backbone: bool = True):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, numbers.Integral) or d_model < 1:
            raise ValueError(f"d_model={d_model!r} is not allowed: it must be the model's hidden size, an integer "
                             ">= 1 (the runner sets it from the model)")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity={granularity!r} is not allowed: allowed are "
                             + ", ".join(map(repr, GRANULARITIES)))
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or hidden < 1):
            raise ValueError(f"hidden={hidden!r} is not allowed: it must be null or an integer >= 1")
        if not isinstance(freeze_backbone, bool):
            raise ValueError(f"freeze_backbone={freeze_backbone!r} is not allowed: it must be true or false")
        self.d_model, self.granularity, self.freeze_backbone = int(d_model), granularity, freeze_backbone
        self.head = DiversityHead(self.d_model, hidden)

    def scores(self, model, batch) -> dict[str, torch.Tensor]:
        """{"sequence": (B,) d of each pooled context, "token": (B, L) d_t (valid where
        `predicting_positions`)} for this granularity."""
        check_diversity_batch(batch)
        frozen = torch.no_grad() if self.freeze_backbone else contextlib.nullcontext()
        with frozen:
            hidden = model.hidden_states(batch["input_ids"])
        if self.freeze_backbone:
            hidden = hidden.detach()
        out = {}
        if self.granularity in ("sequence", "both"):
            out["sequence"] = self.head(pool_prompt(hidden, batch["prompt_mask"]))
        if self.granularity in ("token", "both"):
            out["token"] = self.head(hidden)
        return out

    def forward(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = self.scores(model, batch)
        target = batch["diversity"].float()
        losses, per_context = {}, {}
        if "sequence" in scores:
            per_context["sequence"] = scores["sequence"]
            losses["sequence"] = (scores["sequence"] - target).square().mean()
        if "token" in scores:
            where = predicting_positions(batch["prompt_mask"], batch["reply_mask"]).float()
            count = where.sum(1)
            per_context["token"] = (scores["token"] * where).sum(1) / count
            errors = ((scores["token"] - target[:, None]).square() * where).sum(1) / count
            losses["token"] = errors.mean()
        loss = sum(losses.values()) / len(losses)
        predicted = (per_context.get("sequence", per_context.get("token"))).detach()
        metrics = {"loss": loss.detach()}
        if len(losses) > 1:
            metrics.update({f"mse/{k}": v.detach() for k, v in losses.items()})
        metrics.update({
            "diversity/predicted": predicted.mean(),
            "diversity/target": target.mean(),
            "accuracy": ((predicted > 0.5) == (target > 0.5)).float().mean(),
            "contexts": torch.tensor(target.shape[0], device=target.device),
        })
        return loss, metrics

    def evaluate(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The same loss and metrics (validation)."""
        return self(model, batch)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, granularity={self.granularity!r}, freeze_backbone={self.freeze_backbone}"
