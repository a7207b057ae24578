"""SPaR's tree-search refinement (Cheng et al., "SPaR: Self-Play with Tree-Search Refinement",
arXiv 2412.11605), as plain functions: a refiner's minimal repairs of a failing response, searched
until one is judged right, give a DPO pair (refined >- failing) that differs only where the repair
changed it; pairs of independent samples (a right one >- a wrong one) are the control.

The search (`tree_search`), rizzrun's choices where the paper's defaults are unconfirmed (the spec,
spar.md, marks them so; they were not checked against github.com/thu-coai/SPaR):
- the root is the failing response y-, never judged again (it was judged failing to become a root);
- expanding a node asks the refiner for `k` refinements of it (default 3), each a child one level
  deeper; every child is judged as it comes, and the search stops at the first child judged right
  (in the order the refiner returned them), which is y+;
- `order`: "bfs" (default: the shallowest nodes first, so the first y+ found is among the fewest
  successive repairs) or "dfs" (the newest child first, its first child before its siblings);
- `max_expansions` (default 4) bounds the refiner calls per root; `max_depth` (default 3) the repairs
  in a row: a node at depth max_depth is never expanded;
- a child whose text equals its parent's or an earlier node's is judged like any child but never
  expanded (it would spend budget on a subtree already searched);
- no y+ within the budget: no pair from that root.

Judges: any callable texts -> bools. In the tiny setup (recipes/spar_tiny.yaml) either the task's
checker or the learned refiner's own judgment (`LMRefiner.judge`: the model's next-token preference
of "yes" over "no" after "judge:<prompt><response>?", rizzrun.data.signed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from rizzrun.objectives.score import edit_distance  # Levenshtein over characters: chosen vs rejected

__all__ = ["LMRefiner", "Node", "SearchResult", "edit_distance", "independent_pairs", "tree_search"]

ORDERS = ("bfs", "dfs")


@dataclass
class Node:
    """A searched text: its depth (root 0), its parent's index in SearchResult.nodes (-1: the root),
    the judge's verdict (None: the root, never judged) and whether it was expanded."""

    text: str
    depth: int
    parent: int
    verdict: bool | None = None
    expanded: bool = False


@dataclass
class SearchResult:
    """refined: the first node judged right (None: none within the budget); nodes: every node in
    the order made; expansions: refiner calls spent."""

    refined: str | None
    nodes: list[Node] = field(default_factory=list)
    expansions: int = 0

    @property
    def found(self) -> Node | None:
        return next((n for n in self.nodes if n.verdict and n.text == self.refined), None)


def tree_search(root: str, refine: Callable[[str, int], Sequence[str]], judge: Callable[[Sequence[str]], Sequence[bool]],
                k: int = 3, max_expansions: int = 4, max_depth: int = 3, order: str = "bfs") -> SearchResult:
    """Search refinements of the failing `root` (module docstring). refine(text, k) -> k texts;
    judge(texts) -> one bool per text (True: follows the instruction)."""
    for key, value, low in (("k", k, 1), ("max_expansions", max_expansions, 1), ("max_depth", max_depth, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key}={value!r}: must be an integer >= {low}")
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: allowed: {', '.join(ORDERS)}")
    nodes = [Node(root, 0, -1)]
    seen = {root}
    frontier = [0]  # indices of nodes still to expand
    expansions = 0
    while frontier and expansions < max_expansions:
        index = frontier.pop(0) if order == "bfs" else frontier.pop()
        node = nodes[index]
        if node.depth >= max_depth:
            continue
        children = list(refine(node.text, k))
        node.expanded = True
        expansions += 1
        verdicts = list(judge(children))
        if len(verdicts) != len(children):
            raise ValueError(f"judge returned {len(verdicts)} verdicts for {len(children)} texts")
        fresh = []
        for text, verdict in zip(children, verdicts):
            nodes.append(Node(text, node.depth + 1, index, bool(verdict)))
            if verdict:
                return SearchResult(text, nodes, expansions)
            if text not in seen:
                seen.add(text)
                fresh.append(len(nodes) - 1)
        # dfs pops from the end: push the children reversed so the first child is expanded next
        frontier += fresh if order == "bfs" else fresh[::-1]
    return SearchResult(None, nodes, expansions)


def independent_pairs(samples: Sequence[tuple[str, str, bool]]) -> list[dict]:
    """The control of SPaR's pairs: pairs of independent samples of one prompt. samples: (prompt,
    completion, right) in order; for every wrong completion of a prompt that has a right one, a pair
    {"prompt", "chosen": a right completion of that prompt (cycling through them in order),
    "rejected": the wrong one}. One pair per wrong sample, as SPaR makes at most one per wrong sample."""
    right: dict[str, list[str]] = {}
    for prompt, completion, ok in samples:
        if ok:
            right.setdefault(prompt, []).append(completion)
    used: dict[str, int] = {}
    pairs = []
    for prompt, completion, ok in samples:
        if ok or prompt not in right:
            continue
        i = used.get(prompt, 0)
        used[prompt] = i + 1
        pairs.append({"prompt": prompt, "chosen": right[prompt][i % len(right[prompt])], "rejected": completion})
    return pairs


class LMRefiner:
    """A language model as SPaR's refiner, on the signed reversal task's text formats
    (rizzrun.data.signed: judge_prompt, fix_prompt).

    model: input_ids (B, T) [, key_padding_mask] -> logits (B, T, V), in eval mode. tokenizer: encode,
    decode, eos_id (prompts are read as EOS + text, as the SFT documents were packed). decoder: the
    sampler of refinements (rizzrun.decoders, e.g. Sample at T=1; its max_new_tokens bounds a repair).
    """

    def __init__(self, model, tokenizer, decoder, yes: str = "yes", no: str = "no"):
        self.model, self.tokenizer, self.decoder = model, tokenizer, decoder
        self.yes_id, self.no_id = tokenizer.encode(yes)[0], tokenizer.encode(no)[0]
        if self.yes_id == self.no_id:
            raise ValueError(f"LMRefiner: {yes!r} and {no!r} start with the same token; the judgment reads one token")

    def _ids(self, texts: Sequence[str]) -> dict:
        import torch

        from rizzrun.data.prompts import left_padded

        device = next(self.model.parameters()).device
        batch = left_padded([[self.tokenizer.eos_id, *self.tokenizer.encode(t)] for t in texts])
        return {"prompt_ids": batch["prompt_ids"].to(device), "prompt_mask": batch["prompt_mask"].to(device),
                "row": torch.arange(len(texts), device=device)}

    def judge_texts(self, texts: Sequence[str]) -> list[bool]:
        """For judge prompts: True where the next-token logit of "yes" beats that of "no"."""
        import torch

        batch = self._ids(texts)
        with torch.no_grad():
            logits = self.model(batch["prompt_ids"], key_padding_mask=batch["prompt_mask"])[:, -1]
        return (logits[:, self.yes_id] > logits[:, self.no_id]).tolist()

    def judge(self, prompt: str, responses: Sequence[str]) -> list[bool]:
        from rizzrun.data.signed import judge_prompt

        return self.judge_texts([judge_prompt(prompt, r) for r in responses])

    def refine(self, prompt: str, response: str, k: int) -> list[str]:
        """k sampled repairs of `response` (decoded up to EOS, stripped)."""
        from rizzrun.data.signed import fix_prompt
        from rizzrun.rollouts.sample import completion_texts, sample_rollout

        rollout = sample_rollout(self.model, self.decoder, self._ids([fix_prompt(prompt, response)]), k,
                                 self.tokenizer.eos_id)
        return [t.strip() for t in completion_texts(rollout, self.tokenizer)]
