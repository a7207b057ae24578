"""A teacher's log-probabilities as a reward: how likely a frozen language model finds each completion
after its prompt (on-policy distillation by RL, e.g. GKD's reverse-KL view, arXiv 2306.13649, and
MiniLLM's sequence reward, arXiv 2306.08543, without their token-level terms).

    rewards:
      teacher:
        _target_: rizzrun.rewards.teacher.TeacherLogProb
        path: RUN_FOLDER            # a rizzrun run folder, or a Hugging Face Llama folder
        normalize: mean             # mean: nats per completion token; sum: log p(completion | prompt)

The teacher reads text, as TRL's reward models do: each (prompt, completion) pair is re-encoded with
the teacher's own tokenizer (the prompt as a `prompts` data option encodes it,
`rizzrun.data.prompts.encode_prompt`; the completion, then EOS when `include_eos`), so a teacher need
not share the policy's tokenizer. A chat prompt arrives as its rendered template text and is encoded
as plain text. The model loads on the first call (building the reward costs nothing), in float32 on
`device` (null: this rank's GPU when there is one, else the CPU), eval mode, no gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch

from rizzrun.errors import InputError

NORMALIZE = ("mean", "sum")


class TeacherLogProb:
    """reward_i = log p_teacher(completion_i | prompt_i): the sum over its tokens (normalize="sum") or
    the mean per token (normalize="mean", an empty completion without EOS: None, unscorable).
    path: a run folder (its trained policy) or a Hugging Face Llama folder; batch_size: pairs per
    teacher forward (right-padded, so a pair's value does not depend on the others)."""

    def __init__(self, path: str, normalize: Literal["mean", "sum"] = "mean", include_eos: bool = True,
                 batch_size: int = 32, device: str | None = None):
        if normalize not in NORMALIZE:
            raise InputError(f"normalize={normalize!r}: allowed are {', '.join(NORMALIZE)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be an integer >= 1")
        folder = Path(str(path)).expanduser()
        if not ((folder / "config.yaml").is_file() or (folder / "config.json").is_file()):
            why = "no such folder" if not folder.exists() else "neither a run folder (config.yaml) nor a Hugging " \
                                                               "Face folder (config.json)"
            raise InputError(f"path={path}: {why}; give the teacher's run folder or a Hugging Face Llama folder")
        self.path, self.normalize, self.include_eos = folder, normalize, bool(include_eos)
        from rizzrun.rewards.model import reward_device

        self.batch_size, self.device = batch_size, reward_device(device)
        self._model = self._tokenizer = None
        self.__name__ = "teacher_logprob"  # RewardSet names a bare callable by its __name__

    def _load(self):
        if self._model is None:
            if (self.path / "config.yaml").is_file():
                from rizzrun.runner.generate import load_run_model

                model, tokenizer = load_run_model(self.path)
            else:
                from rizzrun.models.hf_llama import load_llama
                from rizzrun.tokenizers.hf import HFTokenizer

                model, tokenizer = load_llama(self.path), HFTokenizer(str(self.path))
            self._model = model.float().to(self.device).eval().requires_grad_(False)
            self._tokenizer = tokenizer
        return self._model, self._tokenizer

    def pair_ids(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) as the teacher reads them (module docstring)."""
        from rizzrun.data.prompts import encode_prompt

        _, tokenizer = self._load()
        tail = [tokenizer.eos_id] if self.include_eos else []
        return encode_prompt(tokenizer, prompt), [*tokenizer.encode(completion), *tail]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **columns) -> list[float | None]:
        model, _ = self._load()
        pairs = [self.pair_ids(p, c) for p, c in zip(prompts, completions, strict=True)]
        out: list[float | None] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (p, c) in enumerate(chunk):
                ids[i, :len(p) + len(c)] = torch.tensor(p + c)
            logps = torch.log_softmax(model(ids.to(self.device)).float(), dim=-1)  # (b, width, V), causal
            for i, (p, c) in enumerate(chunk):
                if not c:
                    out.append(None if self.normalize == "mean" else 0.0)
                    continue
                # token p + k (the k-th completion token) is predicted at position p + k - 1
                picked = logps[i, len(p) - 1:len(p) + len(c) - 1].gather(-1, torch.tensor(c, device=logps.device)[:, None])
                total = float(picked.sum())
                out.append(total / len(c) if self.normalize == "mean" else total)
        return out

    def __repr__(self) -> str:
        return f"TeacherLogProb(path={str(self.path)!r}, normalize={self.normalize!r}, include_eos={self.include_eos})"
