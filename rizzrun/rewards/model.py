"""A trained reward model as a reward function: the scalar reward of a run folder that
objective=reward_model trained (rizzrun.objectives.reward_model.BradleyTerry: its `as_model`),
with the TRL reward-function signature, so it serves as one of `rewards`:

    rewards:
      rm: {_target_: rizzrun.rewards.model.RunRewardModel, path: RUN_DIR}

Each (prompt, completion) is re-encoded with that run's own tokenizer exactly as its preference
pairs were encoded (rizzrun.data.pairs: a plain prompt with rizzrun's own tokenizers is [EOS] +
encode(prompt), a completion encode(text) + [EOS]), so the policy may use another tokenizer. The
reward is read at the completion's EOS, as in training; a completion cut at max_new_tokens gets
that EOS too (the text carries no trace of the cut).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rizzrun.errors import InputError

__all__ = ["RunRewardModel", "reward_device"]


def reward_device(device: str | None):
    """Where a model-based reward runs: `device` as given, else this process's GPU (cuda:LOCAL_RANK,
    so each rank of a distributed run uses its own) when there is one, else the CPU."""
    import os

    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


class RunRewardModel:
    """fn(prompts, completions, **columns) -> list[float]: the reward model of run folder `path`
    (its latest checkpoint, or `checkpoint`: a step-N folder name or a step number).

    batch_size: rows per forward. device: where the model runs (null: this rank's GPU, else the CPU).
    The model is frozen (eval mode, no gradients) and loaded once, when the reward is built.
    """

    def __init__(self, path: str, checkpoint: str | int | None = None, batch_size: int = 64,
                 device: str | None = None):
        import torch

        from rizzrun.runner.generate import load_run_model

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"RunRewardModel batch_size={batch_size!r}: must be an integer >= 1")
        self.path = Path(str(path)).expanduser()
        model, tokenizer = load_run_model(self.path, None if checkpoint is None else str(checkpoint))
        if not hasattr(model, "score") or not hasattr(model, "head"):
            raise InputError(f"RunRewardModel path={path}: that run trained {type(model).__name__}, not a reward "
                             "model; give a run of objective=reward_model")
        self.device = reward_device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        from rizzrun.data.pairs import _Tokenize

        self._tokenize = _Tokenize(tokenizer, None, None, "keep_start")

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(prompt ids, completion ids) as the run's preference data encoded them."""
        n = len(completions)
        out = self._tokenize({"prompt": list(prompts), "chosen": list(completions), "rejected": list(completions),
                              "chat": [False] * n, "source": list(range(n))})
        return out["prompt_ids"], out["chosen_ids"]

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **columns: Any) -> list[float]:
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        p_ids, c_ids = self.encode(prompts, completions)
        out: list[float] = []
        for i in range(0, len(completions), self.batch_size):
            p, c = p_ids[i:i + self.batch_size], c_ids[i:i + self.batch_size]
            out += self._score(p, c, torch)
        return out

    def _score(self, p: list[list[int]], c: list[list[int]], torch) -> list[float]:
        rows = [a + b for a, b in zip(p, c)]
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        ids = torch.full((len(rows), int(lengths.max())), self.model.pad_id, dtype=torch.long, device=self.device)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r, device=self.device)
        with torch.no_grad():
            return self.model(ids, lengths).float().cpu().tolist()

    def __repr__(self) -> str:
        return f"RunRewardModel(path={str(self.path)!r})"
