"""Direct Preference Optimization on preference pairs, with the IPO, cDPO, robust and hinge losses
and D²PO's temporal decay.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv:2305.18290. Variants: IPO (Azar et al., arXiv:2310.12036), cDPO (label smoothing, Mitchell
2023), robust DPO (Chowdhury et al., arXiv:2403.00409), hinge (SLiC, Zhao et al.,
arXiv:2305.10425), D²PO (Shao et al., arXiv:2502.14340). Spec: shared/methods/objectives/dpo.md
and dpo_temporal_decay.md. Formulas and logged metrics follow TRL's `DPOTrainer._compute_loss`.

With h = log pi(y|x) - log pi_ref(y|x) per completion (summed over its tokens, each token
weighted gamma ** t, t = 1, 2, ... from the completion's first token) and Delta = h_w - h_l:

    sigmoid   -(1 - eps) log sigma(beta Delta) - eps log sigma(-beta Delta)       (eps > 0: cDPO)
    robust    [-(1 - eps) log sigma(beta Delta) + eps log sigma(-beta Delta)] / (1 - 2 eps)
    hinge     max(0, 1 - beta Delta)
    ipo       (h_w / |y_w| - h_l / |y_l| - 1 / (2 beta))^2     (|y| = token count, clamped >= 1)

averaged over the pairs. Only the policy's log-probabilities carry gradients.
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch
import torch.nn.functional as F

from rizzrun.objectives.extra import outputs_of
from rizzrun.objectives.preference import (IGNORE, completion_lengths, decay_weights, pair_sequences, sequence_logps,
                                           token_logps)

__all__ = ["DPO", "dpo_loss", "LOSS_TYPES"]

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses (B,) and rewards beta * h_w (B,), beta * h_l (B,) (detached) from (B,)
    sequence log-probabilities of the policy and the reference (the formulas in the module doc).

    "ipo" needs the completions' token counts `chosen_lengths`, `rejected_lengths` (B,) (clamped to
    >= 1 here); the rewards are always the un-normalised beta * h, as TRL logs them."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not allowed: allowed are {', '.join(map(repr, LOSS_TYPES))}")
    h_w = chosen_logps - ref_chosen_logps
    h_l = rejected_logps - ref_rejected_logps
    z = beta * (h_w - h_l)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    else:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type='ipo' needs chosen_lengths and rejected_lengths (completion token counts)")
        delta = h_w / chosen_lengths.clamp(min=1) - h_l / rejected_lengths.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    return losses, beta * h_w.detach(), beta * h_l.detach()


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is not allowed: it must be a number")
    return float(value)


class DPO:
    """DPO (arXiv:2305.18290) and its IPO / cDPO / robust / hinge losses; gamma < 1 is D²PO
    (arXiv:2502.14340: `objective=dpo objective.gamma=0.98`).

    loss, metrics = DPO(beta=0.1)(model, batch, reference=frozen_model | Precomputed(...))
      batch: a `preference` batch of B pairs (rizzrun.objectives.preference); the policy and the
      reference each run one forward over the (2B, L) [chosen; rejected] sequences of
      `pair_sequences`. model(input_ids (N, T)) -> logits (N, T, V); log-probabilities in float32.
      reference: the frozen reference model (run under no_grad) or a `Precomputed` table of
      `reference_outputs`; None only with reference_free=True (then log pi_ref = 0).

    Arguments:
      beta=0.1           > 0; the KL strength (IPO's tau).
      loss_type="sigmoid"  "sigmoid" | "robust" | "hinge" | "ipo".
      label_smoothing=0.0  eps: the assumed fraction of flipped labels. "sigmoid": eps in [0, 0.5]
                         (cDPO; TRL >= 0.29 dropped it from its sigmoid loss, rizzrun keeps it),
                         "robust": eps in [0, 0.5); "hinge" and "ipo" take none (must be 0).
      gamma=1.0          in (0, 1]: D²PO's per-token weight gamma ** t, t counted from 1 at the
                         completion's first token, on the policy and the reference alike (their
                         code: the first token weighs gamma). 1 is plain DPO. With "ipo" the
                         weighted sum is divided by the unweighted token count.
      reference_free=False  true: log pi_ref = 0 (no reference model; `reference` must be None).
      rpo_alpha=None     > 0: add alpha * NLL of the chosen completions (token mean over the batch's
                         chosen completion tokens, unweighted), TRL's `rpo_alpha` (<= 0.28; RPO, Pang
                         et al. arXiv 2404.19733): keeps the chosen answers likely while the margin grows.
      pad_id=0           the id that pads the joined sequences (never a target; right padding).

    metrics (detached scalars; TRL's names):
      loss                     the mean loss over the pairs
      rewards/chosen, rewards/rejected  mean beta * h_w, beta * h_l (gamma-weighted when gamma < 1)
      rewards/accuracies       fraction of pairs with beta h_w > beta h_l (strict: ties count 0)
      rewards/margins          mean beta * (h_w - h_l)
      logps/chosen, logps/rejected  mean policy log pi(y|x) summed over completion tokens, always
                               unweighted (a true log-probability, comparable across gamma; the
                               loss uses the gamma-weighted sum)
      logits/chosen, logits/rejected  vocab-mean logit averaged over every chosen (rejected)
                               completion token of the batch (a token-level mean, as TRL's: long
                               completions weigh more); 0 when there is none
      pairs                    B, the weight to average these metrics across batches by
      tokens                   completion tokens in the batch, chosen plus rejected
      nll_loss                 with rpo_alpha: the chosen completions' NLL added (TRL's name)
    Every metric but `pairs` and `tokens` is a mean over the batch's pairs (or, for logits/*, its
    completion tokens); a batch of no pairs gives loss 0 (attached to the graph) and zeros.
    """

    batch_kind = "preference"
    extra_models = ("reference",)

    def __init__(self, beta: float = 0.1, loss_type: Literal["sigmoid", "robust", "hinge", "ipo"] = "sigmoid",
                 label_smoothing: float = 0.0, gamma: float = 1.0, reference_free: bool = False,
                 rpo_alpha: float | None = None, pad_id: int = 0):
        self.beta = _real("beta", beta)
        if not self.beta > 0:
            raise ValueError(f"beta={beta!r} is not allowed: it must be > 0")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={loss_type!r} is not allowed: allowed are "
                             + ", ".join(repr(t) for t in LOSS_TYPES))
        self.loss_type = loss_type
        eps = self.label_smoothing = _real("label_smoothing", label_smoothing)
        if loss_type == "sigmoid" and not 0 <= eps <= 0.5:
            raise ValueError(f"label_smoothing={label_smoothing!r} is not allowed with loss_type='sigmoid' (cDPO): "
                             "it must be in [0, 0.5]")
        if loss_type == "robust" and not 0 <= eps < 0.5:
            raise ValueError(f"label_smoothing={label_smoothing!r} is not allowed with loss_type='robust': "
                             "it must be in [0, 0.5)")
        if loss_type in ("hinge", "ipo") and eps != 0:
            raise ValueError(f"label_smoothing={label_smoothing!r} has no effect with loss_type={loss_type!r}: "
                             "it must be 0 (label smoothing applies to 'sigmoid' and 'robust')")
        self.gamma = _real("gamma", gamma)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={gamma!r} is not allowed: it must be in (0, 1] (1 = plain DPO, D²PO uses 0.98)")
        if not isinstance(reference_free, bool):
            raise ValueError(f"reference_free={reference_free!r} is not allowed: it must be true or false")
        self.reference_free = reference_free
        if rpo_alpha is not None and not _real("rpo_alpha", rpo_alpha) > 0:
            raise ValueError(f"rpo_alpha={rpo_alpha!r} is not allowed: it must be > 0, or null (off)")
        self.rpo_alpha = None if rpo_alpha is None else float(rpo_alpha)
        if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral) or pad_id < 0:
            raise ValueError(f"pad_id={pad_id!r} is not allowed: it must be an integer >= 0 (a token id)")
        self.pad_id = int(pad_id)

    def reference_outputs(self, reference_model, batch: dict) -> torch.Tensor:
        """(B, 2) float32 [log pi_ref(y_w|x), log pi_ref(y_l|x)], each summed over its completion
        with this objective's gamma weights: what a `Precomputed` reference table holds. The caller
        runs it under no_grad (`outputs_of`)."""
        input_ids, labels = pair_sequences(batch, self.pad_id)
        logps = sequence_logps(reference_model(input_ids), labels, "sum", self.gamma)
        return torch.stack(logps.chunk(2), dim=1)

    def _reference(self, reference, batch: dict, device) -> torch.Tensor:
        if self.reference_free:
            if reference is not None:
                raise ValueError(f"reference_free=True takes no reference, got {type(reference).__name__}: set "
                                 "objective.models.reference=null, or reference_free=false to use it")
            return torch.zeros(batch["row"].shape[0], 2, device=device)
        if reference is None:
            raise ValueError("DPO needs a reference model: set objective.models.reference (init = the policy's "
                             "starting weights, or a run / Hugging Face folder), or objective.reference_free=true")
        ref = outputs_of(self, "reference", reference, batch)
        if ref.shape != (batch["row"].shape[0], 2):
            raise ValueError(f"reference outputs of shape {tuple(ref.shape)}: expected (B, 2) = "
                             f"({batch['row'].shape[0]}, 2) [chosen, rejected] log-probabilities")
        return ref.to(device=device, dtype=torch.float32)

    def __call__(self, model, batch: dict, reference=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        input_ids, labels = pair_sequences(batch, self.pad_id)
        B = input_ids.shape[0] // 2
        logits = model(input_ids)
        lp = token_logps(logits, labels)  # (2B, T) float32, 0 off the completions
        weighted = (lp * decay_weights(labels, self.gamma)).sum(-1)
        ref = self._reference(reference, batch, lp.device)
        lengths = completion_lengths(labels)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            weighted[:B], weighted[B:], ref[:, 0], ref[:, 1], self.beta, self.loss_type, self.label_smoothing,
            lengths[:B], lengths[B:])
        pairs = max(B, 1)
        loss = losses.sum() / pairs  # the mean; 0 (still attached) for a batch of no pairs
        mask = labels != IGNORE
        if self.rpo_alpha is not None:
            nll = -lp[:B].sum() / mask[:B].sum().clamp(min=1)
            loss = loss + self.rpo_alpha * nll
        with torch.no_grad():
            logps = lp.detach().sum(-1)
            with torch.autocast(device_type=logits.device.type, enabled=False):
                vocab_mean = logits.detach().float().mean(-1) * mask
            metrics = {
                "loss": loss.detach(),
                "rewards/chosen": chosen_rewards.sum() / pairs,
                "rewards/rejected": rejected_rewards.sum() / pairs,
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum() / pairs,
                "rewards/margins": (chosen_rewards - rejected_rewards).sum() / pairs,
                "logps/chosen": logps[:B].sum() / pairs,
                "logps/rejected": logps[B:].sum() / pairs,
                "logits/chosen": vocab_mean[:B].sum() / mask[:B].sum().clamp(min=1),
                "logits/rejected": vocab_mean[B:].sum() / mask[B:].sum().clamp(min=1),
                "pairs": torch.tensor(B, device=lp.device),
                "tokens": mask.sum(),
            }
            if self.rpo_alpha is not None:
                metrics["nll_loss"] = nll.detach()
        return loss, metrics

    def evaluate(self, model, batch: dict, reference=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Validation: the same loss and metrics, without building a graph."""
        with torch.no_grad():
            return self(model, batch, reference)

    def __repr__(self) -> str:
        return (f"DPO(beta={self.beta}, loss_type={self.loss_type!r}, label_smoothing={self.label_smoothing}, "
                f"gamma={self.gamma}, reference_free={self.reference_free}, rpo_alpha={self.rpo_alpha}, "
                f"pad_id={self.pad_id})")
