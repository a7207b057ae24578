"""Extractable memorization (Carlini et al., arXiv 2202.07646; as measured for the goldfish
loss, Hans et al., arXiv 2406.10209): prompt with a document's first `prefix_len` tokens,
greedy-decode `continuation_len` tokens, compare them with the document's true continuation.

The metric is defined on greedy decoding (the papers' extraction), the default; another decoder
(`decoder=`, any `rizzrun.decoders.Decoder`) measures what that decoder extracts instead, which
is not the same number (a sampler with a seed: reproducible, one draw per document).

Per document: `exact` (all continuation tokens equal), `token_match` (fraction of positions
equal), `rougeL` (F-measure of the longest common subsequence of the two token sequences,
Lin 2004). Aggregates are means over documents. Documents shorter than prefix + continuation
are skipped and counted. The prompt starts with the EOS id, as every document does in the
packed training stream; EOS is not allowed to end the continuation early, so both sequences
always have `continuation_len` tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence, O(len(a)·len(b)) dynamic programme."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(generated: Sequence[int], reference: Sequence[int]) -> float:
    """ROUGE-L F1: P = LCS/len(generated), R = LCS/len(reference), F = 2PR/(P+R); 0 if empty."""
    lcs = lcs_length(generated, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(generated), lcs / len(reference)
    return 2 * p * r / (p + r)


def token_match(generated: Sequence[int], reference: Sequence[int]) -> float:
    """Fraction of reference positions where the generated token is the same."""
    if not reference:
        raise ValueError("token_match: the reference continuation is empty")
    return sum(g == r for g, r in zip(generated, reference)) / len(reference)


def memorization(
    model,
    tokenizer,
    documents: Sequence[str],
    prefix_len: int = 32,
    continuation_len: int = 64,
    batch_size: int = 32,
    decoder=None,
) -> dict:
    """Extraction on `documents` with `decoder` (None: greedy, which defines the metric), decoding
    exactly `continuation_len` tokens (its own max_new_tokens is not used). Returns aggregate
    metrics, counts and per-document rows."""
    from rizzrun.decoders.greedy import Greedy

    for name, value in (("prefix_len", prefix_len), ("continuation_len", continuation_len), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"memorization {name}={value!r}: must be an integer >= 1")
    max_len = model.config.max_seq_len
    if 1 + prefix_len + continuation_len > max_len:
        raise ValueError(
            f"memorization prefix_len={prefix_len} + continuation_len={continuation_len} (+1 EOS) "
            f"exceeds the model's max_seq_len={max_len}"
        )
    encoded = [tokenizer.encode(doc) for doc in documents]
    usable = [ids for ids in encoded if len(ids) >= prefix_len + continuation_len]
    decoder = Greedy(max_new_tokens=continuation_len) if decoder is None else decoder
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(usable), batch_size):
        chunk = usable[start : start + batch_size]
        prompts = torch.tensor([[tokenizer.eos_id, *ids[:prefix_len]] for ids in chunk], device=device)
        out = decoder.generate(model, prompts, eos_token_id=None,
                               max_new_tokens=continuation_len)[:, prompts.shape[1]:].tolist()
        for ids, generated in zip(chunk, out):
            reference = ids[prefix_len : prefix_len + continuation_len]
            rows.append({
                "exact": generated == reference,
                "token_match": token_match(generated, reference),
                "rougeL": rouge_l(generated, reference),
            })
    n = len(rows)
    mean = (lambda key: sum(float(r[key]) for r in rows) / n) if n else (lambda key: float("nan"))
    return {
        "exact_match_rate": mean("exact"),
        "exact_matches": sum(r["exact"] for r in rows),
        "token_match": mean("token_match"),
        "rougeL": mean("rougeL"),
        "documents": n,
        "skipped_short": len(encoded) - n,
        "prefix_len": prefix_len,
        "continuation_len": continuation_len,
        "rows": rows,
    }


@torch.no_grad()
def heldout_loss(model, batches) -> dict:
    """Token-weighted next-token cross-entropy (nats) and perplexity over `batches` of kind lm."""
    import math

    from rizzrun.objectives.ce import CrossEntropy

    ce, total, tokens = CrossEntropy(), 0.0, 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            loss, metrics = ce(model, batch)
            n = float(metrics["tokens"])
            total, tokens = total + float(loss) * n, tokens + n
    finally:
        model.train(was_training)
    if tokens == 0:
        return {"loss": float("nan"), "ppl": float("nan"), "tokens": 0}
    loss = total / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(tokens)}
