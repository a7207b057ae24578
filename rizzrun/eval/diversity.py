"""Diversity of replies: the BERT-free DDS label and distinct-n.

The DDS paper (Li et al., arXiv 2406.07850) labels a context by sampling N replies from the dialogue
model and taking d* = 1 - mean pairwise BERTScore. Here (the spec's BERT-free proposal) the
similarity is a pure-Python one over whitespace words:

    rouge_l      ROUGE-L F1 (Lin, 2004): LCS(a, b) = l, P = l / |a|, R = l / |b|, F1 = 2PR / (P + R)
                 (symmetric; two empty replies are identical: 1)
    bigram_jaccard  |B(a) & B(b)| / |B(a) | B(b)| over the word bigrams of <s> a </s> (so a one-word
                 reply has bigrams too and identical replies score 1)

    diversity_label(replies) = 1 - mean_{i<j} sim(r_i, r_j)      identical replies -> 0, disjoint -> 1

distinct-n (Li et al., arXiv 1510.03055): distinct n-grams / all n-grams over a set of replies.
`label_contexts` samples the N replies at T = 1 and returns rows for `rizzrun.data.contexts.
DiversityLabels` (write them with `write_label_rows`).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

from rizzrun.eval.memorization import lcs_length

__all__ = ["rouge_l", "bigram_jaccard", "diversity_label", "distinct_n", "label_contexts", "SIMILARITIES"]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts over whitespace words (module docstring), in [0, 1]."""
    x, y = a.split(), b.split()
    if not x and not y:
        return 1.0
    lcs = lcs_length(x, y)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(x), lcs / len(y)
    return 2 * p * r / (p + r)


def bigram_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the word bigrams of <s> a </s> and <s> b </s>, in [0, 1]."""
    def bigrams(t: str) -> set:
        w = ["<s>", *t.split(), "</s>"]
        return set(zip(w, w[1:]))

    x, y = bigrams(a), bigrams(b)
    return len(x & y) / len(x | y)


SIMILARITIES: dict[str, Callable[[str, str], float]] = {"rouge_l": rouge_l, "bigram_jaccard": bigram_jaccard}


def diversity_label(replies: Sequence[str], similarity: str = "rouge_l") -> float:
    """d* = 1 - mean pairwise similarity of >= 2 replies (module docstring), in [0, 1]."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity={similarity!r} is not allowed: allowed are "
                         + ", ".join(map(repr, SIMILARITIES)))
    if isinstance(replies, str) or len(replies) < 2:
        raise ValueError(f"replies={replies!r:.80} is not allowed: give a list of at least 2 replies")
    sim = SIMILARITIES[similarity]
    pairs = list(combinations(replies, 2))
    return 1.0 - sum(sim(a, b) for a, b in pairs) / len(pairs)


def distinct_n(replies: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / n-grams over all replies' whitespace words (0 when there is none)."""
    if n < 1:
        raise ValueError(f"n={n!r} is not allowed: it must be an integer >= 1")
    grams = [tuple(w[i:i + n]) for w in (r.split() for r in replies) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def label_contexts(model, tokenizer, contexts: Sequence[str], n: int = 5, max_new_tokens: int = 16, seed: int = 0,
                   similarity: str = "rouge_l") -> list[dict]:
    """Sampled-proxy DDS labels: for each context, n replies sampled from `model` at T = 1 (stopping
    at EOS; the context starts after an EOS, as the runner's prompts do) and d* =
    diversity_label(replies). Returns rows {"text": context, "diversity": d*, "reply": the first
    reply, "replies": all n}, the format `rizzrun.data.contexts.DiversityLabels` reads."""
    import torch

    from rizzrun.decoders.sample import Sample

    if n < 2:
        raise ValueError(f"n={n!r} is not allowed: a label needs at least 2 replies")
    decoder = Sample(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
    device = next(model.parameters()).device
    rows = []
    for context in contexts:
        ids = torch.tensor([[tokenizer.eos_id, *tokenizer.encode(context)]] * n, device=device)
        out = decoder.generate(model, ids, eos_token_id=tokenizer.eos_id)
        replies = []
        for row in out[:, ids.shape[1]:].tolist():
            row = row[:row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
            replies.append(tokenizer.decode([i for i in row if i < tokenizer.vocab_size]))
        rows.append({"text": context, "diversity": diversity_label(replies, similarity), "reply": replies[0],
                     "replies": replies})
    return rows
