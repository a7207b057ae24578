"""Evaluation of a verifiable task (the built-in arithmetic data): greedy answers to held-out
prompts checked by the data's own verifier, and an objective's metrics over sets of pairs.

`task_accuracy` is what "DPO raises the rate of correct answers over the SFT model" is measured
with; `objective_metrics` is held-out preference accuracy (DPO's `rewards/accuracies`, a reward
model's accuracy) on any iterable of batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def prompt_ids(data: Any, tokenizer: Any, text: str) -> list[int]:
    """The ids a prompt is given to the model as: the data's own rule (`data.prompt_ids`), else as
    a document starts in rizzrun's packed stream (after an EOS)."""
    rule = getattr(data, "prompt_ids", None)
    return list(rule(tokenizer, text)) if rule is not None else [tokenizer.eos_id, *tokenizer.encode(text)]


@torch.no_grad()
def task_accuracy(model, tokenizer, data: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 64) -> dict:
    """Greedy completions of `prompts`, each checked by `data.verify(prompt, completion)`.

    Returns correct_rate (fraction verified), eos_rate (fraction that stopped with EOS within
    max_new_tokens), mean_new_tokens (tokens before EOS), n, and the first rows as examples."""
    from rizzrun.decoders.greedy import Greedy

    decoder = Greedy(max_new_tokens=max_new_tokens)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            ids = [prompt_ids(data, tokenizer, p) for p in chunk]
            out = decoder.generate(model, ids, eos_token_id=tokenizer.eos_id)
            width = max(len(i) for i in ids)
            for text, generated in zip(chunk, out[:, width:].tolist()):
                stopped = tokenizer.eos_id in generated
                new = generated[:generated.index(tokenizer.eos_id)] if stopped else generated
                completion = tokenizer.decode([i for i in new if i < tokenizer.vocab_size])
                rows.append({"prompt": text, "completion": completion, "correct": bool(data.verify(text, completion)),
                             "eos": stopped, "new_tokens": len(new)})
    finally:
        model.train(was_training)
    n = len(rows)
    mean = (lambda key: sum(float(r[key]) for r in rows) / n) if n else (lambda key: float("nan"))
    return {"correct_rate": mean("correct"), "eos_rate": mean("eos"), "mean_new_tokens": mean("new_tokens"), "n": n,
            "examples": rows[:8]}


@torch.no_grad()
def objective_metrics(objective, model, batches: Iterable[dict], extra_models: dict | None = None) -> dict:
    """The objective's validation metrics (`objective.evaluate`, else the objective itself) over
    `batches`, averaged as the runner's validation averages them (rizzrun.runner.task)."""
    from rizzrun.runner.task import accumulate_means, batch_rows, batch_weight_key, validation_metrics

    evaluate = getattr(objective, "evaluate", objective)
    key = batch_weight_key(getattr(objective, "batch_kind", "lm"))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    try:
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if batch_rows(batch):
                loss, metrics = evaluate(model, batch, **(extra_models or {}))
                accumulate_means(sums, {"loss": loss, **metrics}, key)
    finally:
        model.train(was_training)
    return {k[len("val/"):]: v for k, v in validation_metrics(sums, key).items()}
