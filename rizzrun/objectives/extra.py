"""Models an objective needs besides the policy (a frozen reference, later a teacher or a reward
model), as the objective receives them: `obj(model, batch, reference=...)`.

What the runner passes for a declared extra model (`extra_models = ("reference",)` on the
objective's class, built from `objective.models.NAME` by `rizzrun.runner.extra_models`) is either

- the frozen model itself (requires_grad False, eval mode, the policy's device and dtype), which
  the objective runs under `torch.no_grad()`, or
- a `Precomputed` table (`objective.precompute=[NAME]`): the objective's own
  `NAME_outputs(model, batch)` computed once for every pair of the data before training, looked
  up by the batch's `row` ids, so the model never has to be in memory while training.

`outputs_of(objective, name, source, batch)` is how an objective reads either.
"""

from __future__ import annotations

import torch

__all__ = ["Precomputed", "outputs_of"]


class Precomputed:
    """A (N, ...) float32 table of an objective's `NAME_outputs`, one row per pair of the data
    (row ids 0..N-1, unique across splits). `lookup(batch)` -> table[batch["row"]] on the batch's
    device. `digest`: what the table was computed from (recorded with the run)."""

    def __init__(self, table: torch.Tensor, digest: str = ""):
        self.table = table
        self.digest = digest

    def lookup(self, batch: dict) -> torch.Tensor:
        rows = batch["row"]
        if rows.numel() and int(rows.max()) >= self.table.shape[0]:
            raise ValueError(f"batch row {int(rows.max())} is outside the precomputed table of "
                             f"{self.table.shape[0]} rows: the table was computed for other data")
        return self.table[rows.long().cpu()].to(rows.device)

    def __repr__(self) -> str:
        return f"Precomputed(rows={self.table.shape[0]}, shape={tuple(self.table.shape[1:])})"


def outputs_of(objective, name: str, source, batch: dict) -> torch.Tensor:
    """`objective.<name>_outputs(source, batch)` under no_grad when `source` is a model, or the
    precomputed rows of `batch` when it is a `Precomputed` table."""
    if isinstance(source, Precomputed):
        return source.lookup(batch)
    if source is None:
        raise ValueError(f"{type(objective).__name__} needs the '{name}' model: pass {name}=<a frozen model> "
                         f"or {name}=Precomputed(...)")
    with torch.no_grad():
        return getattr(objective, f"{name}_outputs")(source, batch)
