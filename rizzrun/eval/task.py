"""Evaluation of a verifiable task (the built-in arithmetic data): greedy answers to held-out
prompts checked by the data's own verifier, and an objective's metrics over sets of pairs.
The accuracy is defined on greedy answers, the default; `task_accuracy(decoder=...)` measures
another decoder's answers instead (a different number).

`task_accuracy` is what "DPO raises the rate of correct answers over the SFT model" is measured
with; `objective_metrics` is held-out preference accuracy (DPO's `rewards/accuracies`, a reward
model's accuracy) on any iterable of batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def held_out_prompts(data: Any, tokenizer: Any, n: int) -> list[tuple[str, list[int]]]:
    """The first `n` held-out prompts as (text, ids): the ids the data gives them to the model
    (`prompt_token_ids`: pairs, specials and chat template included), else as a document starts in
    rizzrun's packed stream (after an EOS)."""
    texts = list(data.prompts("val"))[:n]
    if hasattr(data, "prompt_token_ids"):
        return list(zip(texts, data.prompt_token_ids("val")[:n]))
    return [(t, [tokenizer.eos_id, *tokenizer.encode(t)]) for t in texts]


@torch.no_grad()
def task_accuracy(model, tokenizer, data: Any, prompts: list[tuple[str, list[int]]], max_new_tokens: int,
                  batch_size: int = 64, decoder=None) -> dict:
    """Completions of `prompts` ((text, ids) pairs, `held_out_prompts`) by `decoder` (None: greedy,
    which defines the metric; any `rizzrun.decoders.Decoder`, with max_new_tokens new tokens at
    most whatever its own says), each checked by `data.verify(text, completion)`.

    Returns correct_rate (fraction verified), eos_rate (fraction that stopped with EOS within
    max_new_tokens), mean_new_tokens (tokens before EOS), extra_text_rate (fraction with text after
    the answer, when the data can tell: `data.extra_text`), n, and the first rows as examples."""
    from rizzrun.decoders.greedy import Greedy

    decoder = Greedy(max_new_tokens=max_new_tokens) if decoder is None else decoder
    was_training = model.training
    model.eval()
    rows = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            ids = [list(i) for _, i in chunk]
            out = decoder.generate(model, ids, eos_token_id=tokenizer.eos_id, max_new_tokens=max_new_tokens)
            width = max(len(i) for i in ids)
            for (text, _), generated in zip(chunk, out[:, width:].tolist()):
                stopped = tokenizer.eos_id in generated
                new = generated[:generated.index(tokenizer.eos_id)] if stopped else generated
                completion = tokenizer.decode([i for i in new if i < tokenizer.vocab_size])
                extra = getattr(data, "extra_text", None)
                rows.append({"prompt": text, "completion": completion, "correct": bool(data.verify(text, completion)),
                             "eos": stopped, "new_tokens": len(new), **({"extra_text": bool(extra(completion))}
                                                                         if extra else {})})
    finally:
        model.train(was_training)
    n = len(rows)
    mean = (lambda key: sum(float(r[key]) for r in rows) / n) if n else (lambda key: float("nan"))
    out = {"correct_rate": mean("correct"), "eos_rate": mean("eos"), "mean_new_tokens": mean("new_tokens")}
    if rows and "extra_text" in rows[0]:
        out["extra_text_rate"] = mean("extra_text")
    return {**out, "n": n, "examples": rows[:8]}


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


@torch.no_grad()
def reward_metrics(model, decoder, tokenizer, data: Any, rewards, max_prompts: int, batch_size: int = 64) -> dict:
    """Rewards of one completion by `decoder` for each of the first `max_prompts` validation prompts of
    `prompts` data, scored by `rewards` (a RewardSet): the rollout metrics (rizzrun.rollouts.
    rollout_metrics) averaged over prompts, plus `completions` (how many)."""
    from rizzrun.data.prompts import left_padded
    from rizzrun.rollouts.sample import rollout_metrics, sample_rollout, score_rollout

    rows = list(data.split_rows("val"))[:max_prompts]
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    for start in range(0, len(rows), batch_size):
        chunk = torch.tensor(rows[start:start + batch_size])
        ids = [data.prompt_token_ids("val")[r - rows[0]] for r in chunk.tolist()]
        batch = {k: v.to(device) for k, v in left_padded(ids).items()} | {"row": chunk.to(device)}
        rollout = sample_rollout(model, decoder, batch, 1, tokenizer.eos_id)
        texts, cols = data.columns(chunk)
        score_rollout(rollout, tokenizer, rewards, texts, cols)
        for key, value in rollout_metrics(rollout, rewards.names, 1).items():
            if key in ("reward_std", "frac_reward_zero_std") or key.endswith("/std"):
                continue  # one completion per prompt: no group statistics
            sums[key] = sums.get(key, 0.0) + float(value) * len(chunk)
    n = len(rows)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, "completions": n}
