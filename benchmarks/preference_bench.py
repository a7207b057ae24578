"""What a DPO step costs next to an SFT step on the same pairs. Part of `make bench`
(benchmarks/run.py; alone: `python benchmarks/run.py --only preference`, or
`python benchmarks/preference_bench.py` to print the section).

DPO (arXiv:2305.18290) runs the policy forward + backward over both completions, (2B, L) rows,
and a frozen reference forward over the same rows; with a `Precomputed` table of the
reference's log-probabilities (rizzrun.objectives.extra) only the policy pass is left, after a
one-off pass over the data. Counting a forward as 1 unit and a backward as 2 over the same rows,
DPO with a live reference costs 4/3 of an SFT step on both completions (2B rows) and DPO with a
precomputed table costs 1; against SFT on the chosen completions only (B rows) it is about twice
that. This measures how close the real steps come, so a reader sees whether per-op overhead or
the extra passes decide the cost.

Four full optimizer steps (forward, loss, backward, clip, AdamW step) on the same tiny Llama
(byte vocabulary) and the same preference batches, interleaved, best of `repeats` rounds (each
round: the median step time after a warm-up step, the variants taking turns step by step), on two workloads:

- "arithmetic": `ArithmeticPairs` batches of 16 pairs ("37+48=" -> "85"; ~10 tokens a row: the
  per-op overhead of a tiny step dominates);
- "long": synthetic pairs of 16 × (64-token prompt + 64-token completions), 127 positions a
  row, where the matmuls dominate.

Before timing: the DPO loss at step 0 is ln 2 with either reference (policy == reference), and
the policy log-probabilities DPO sums equal minus the token cross-entropy of the 2B-row SFT
step on the same weights (the two compute the same forward).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import matmul_gflops, train_flops_per_token  # noqa: E402

VARIANTS = ("sft chosen", "sft 2B", "dpo + reference", "dpo precomputed")
BATCH = 16
LONG = (64, 64)  # prompt, completion tokens of the synthetic long pairs
STEPS = {"arithmetic": (5, 1), "long": (3, 1)}  # measured steps, warm-up steps per round


def arithmetic_data(n_pairs: int = 256, cache: str | None = None):
    """(batches, example batches) of `ArithmeticPairs` through the byte tokenizer."""
    import datasets

    from rizzrun.data.arithmetic import ArithmeticPairs
    from rizzrun.tokenizers.byte import ByteTokenizer

    datasets.disable_progress_bars()
    data = ArithmeticPairs(n_train=n_pairs, n_val=0, batch_size=BATCH)
    data.setup(ByteTokenizer(), cache_dir=cache or tempfile.mkdtemp(prefix="rizzrun-bench-pairs-"))
    stream = data.train_batches()
    return [next(stream) for _ in range(4)], list(data.example_batches())


def long_data(n_pairs: int = 32, vocab: int = 256, seed: int = 0):
    """Synthetic `preference` batches: prompt, chosen, rejected of LONG tokens, all real."""
    g = torch.Generator().manual_seed(seed)
    P, C = LONG
    out = []
    for first in range(0, n_pairs, BATCH):
        ids = {k: torch.randint(0, vocab, (BATCH, n), generator=g) for k, n in
               (("prompt", P), ("chosen", C), ("rejected", C))}
        batch = {f"{k}_ids": v for k, v in ids.items()}
        batch.update({f"{k}_mask": torch.ones_like(v, dtype=torch.bool) for k, v in ids.items()})
        batch["row"] = torch.arange(first, first + BATCH)
        out.append(batch)
    return out[:4], out


def sft_batches(batch: dict, pad_id: int) -> tuple[dict, dict]:
    """The `lm` batches of an SFT step on the same pairs: prompt + chosen (B rows), and prompt +
    chosen / prompt + rejected (2B rows, DPO's policy rows); completion tokens are the labels."""
    from rizzrun.objectives.preference import join, pair_sequences

    ids, labels = join(batch["prompt_ids"], batch["prompt_mask"], batch["chosen_ids"], batch["chosen_mask"], pad_id)
    both_ids, both_labels = pair_sequences(batch, pad_id)
    return {"input_ids": ids, "labels": labels}, {"input_ids": both_ids, "labels": both_labels}


def precompute(dpo, reference, examples):
    """The reference's (N, 2) log-probabilities over every pair, as the runner builds it
    (rizzrun.runner.extra_models.precompute_outputs, without the file cache)."""
    from rizzrun.objectives.extra import Precomputed

    rows, values = [], []
    with torch.no_grad():
        for batch in examples:
            rows.append(batch["row"])
            values.append(dpo.reference_outputs(reference, batch).float())
    index, values = torch.cat(rows), torch.cat(values)
    table = torch.full((int(index.max()) + 1, 2), float("nan"))
    table[index] = values
    return Precomputed(table)


def workload(name: str, batches: list[dict], examples: list[dict], repeats: int, peak_gflops: float) -> dict:
    from rizzrun.models.llama import Llama
    from rizzrun.objectives.ce import CrossEntropy
    from rizzrun.objectives.dpo import DPO
    from rizzrun.optim import adamw
    from rizzrun.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    torch.manual_seed(0)
    init = Llama(tok.vocab_size, size="tiny")
    reference = copy.deepcopy(init).eval().requires_grad_(False)
    ce, dpo = CrossEntropy(), DPO(beta=0.1, pad_id=tok.pad_id)
    lm = [sft_batches(b, tok.pad_id) for b in batches]

    table = precompute(dpo, reference, examples)  # also its warm-up; timed in the rounds below

    losses = {
        "sft chosen": lambda m, i: ce(m, lm[i][0])[0],
        "sft 2B": lambda m, i: ce(m, lm[i][1])[0],
        "dpo + reference": lambda m, i: dpo(m, batches[i], reference=reference)[0],
        "dpo precomputed": lambda m, i: dpo(m, batches[i], reference=table)[0],
    }

    # Correctness guards on the initial weights (policy == reference), before any timing.
    with torch.no_grad():
        for v in ("dpo + reference", "dpo precomputed"):
            got = float(losses[v](init, 0))
            assert abs(got - math.log(2)) < 1e-4, \
                f"{name}: {v} loss at step 0 is {got}, expected ln 2 = {math.log(2):.6f} (policy == reference)"
        _, metrics = dpo(init, batches[0], reference=reference)
        sft_loss, sft_metrics = ce(init, lm[0][1])
        summed = float((metrics["logps/chosen"] + metrics["logps/rejected"]) * metrics["pairs"])
        expected = -float(sft_loss) * int(sft_metrics["tokens"])
        assert abs(summed - expected) <= 1e-4 * abs(expected), \
            f"{name}: DPO's policy log-probs sum to {summed}, the 2B-row SFT cross-entropy gives {expected}"

    models = {v: copy.deepcopy(init).train() for v in VARIANTS}
    opts = {v: adamw(models[v], lr=1e-4) for v in VARIANTS}
    steps, warmup = STEPS[name]
    best = {v: float("inf") for v in VARIANTS}
    best_precompute = float("inf")
    k = 0
    for _ in range(repeats):  # interleaved step by step (each on the same batch), the precompute pass last
        times = {v: [] for v in VARIANTS}
        for s in range(warmup + steps):
            i = (k + s) % len(batches)
            for v in VARIANTS:
                t = time.perf_counter()
                loss = losses[v](models[v], i)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(models[v].parameters(), 1.0)
                opts[v].step()
                opts[v].zero_grad(set_to_none=True)
                times[v].append(time.perf_counter() - t)
        for v in VARIANTS:
            best[v] = min(best[v], statistics.median(times[v][warmup:]))
        k += warmup + steps
        t = time.perf_counter()
        precompute(dpo, reference, examples)
        best_precompute = min(best_precompute, time.perf_counter() - t)

    # Work per step, averaged over the batches cycled through: positions through the policy, and
    # model FLOPs (a training pass per position, plus a third of it for a reference forward).
    def train_flops(ids):
        return ids.numel() * train_flops_per_token(init, ids.shape[1])

    positions = {"sft chosen": statistics.mean(b["input_ids"].numel() for b, _ in lm),
                 "sft 2B": statistics.mean(b["input_ids"].numel() for _, b in lm)}
    flops = {"sft chosen": statistics.mean(train_flops(b["input_ids"]) for b, _ in lm),
             "sft 2B": statistics.mean(train_flops(b["input_ids"]) for _, b in lm)}
    positions["dpo + reference"] = positions["dpo precomputed"] = positions["sft 2B"]
    flops["dpo precomputed"] = flops["sft 2B"]
    flops["dpo + reference"] = flops["sft 2B"] * 4 / 3
    pairs = sum(b["row"].numel() for b in examples)
    return {
        "workload": name, "batch": BATCH,
        "positions_per_row": {v: positions[v] / (BATCH if v == "sft chosen" else 2 * BATCH) for v in VARIANTS},
        "step_s": best,
        "tokens_per_s": {v: positions[v] / best[v] for v in VARIANTS},
        "pairs_per_s": {v: BATCH / best[v] for v in VARIANTS},
        "expected_vs_sft": {v: flops[v] / flops["sft chosen"] for v in VARIANTS},
        "mfu": {v: flops[v] / best[v] / (peak_gflops * 1e9) for v in VARIANTS},
        "precompute_s_per_pair": best_precompute / pairs, "precompute_pairs": pairs,
    }


def preference(repeats: int, cache: str | None = None) -> dict:
    """Both workloads, each with the machine's fp32 matmul rate measured in this run."""
    gflops = matmul_gflops()
    out = {"date": dt.date.today().isoformat(), "repeats": repeats, "gflops": gflops,
           "threads": torch.get_num_threads()}
    out["workloads"] = [workload("arithmetic", *arithmetic_data(cache=cache), repeats, gflops),
                        workload("long", *long_data(), repeats, gflops)]
    return out


def report(r: dict) -> str:
    lines = [
        f"## Preference training: DPO step cost against SFT (tiny Llama, batch {BATCH} pairs, fp32, "
        f"best of {r['repeats']} interleaved rounds)", "",
        f"Measured {r['date']} (`python benchmarks/run.py --only preference`; benchmarks/preference_bench.py), "
        f"{r['threads']} threads, dense fp32 matmul {r['gflops']:.0f} GFLOP/s in the same run. Full optimizer steps "
        "(forward, loss, backward, clip, AdamW) on the same weights and batches: SFT on prompt + chosen (B rows); "
        "SFT on both completions (2B rows, the size of DPO's policy pass); DPO with a live frozen reference (its "
        "forward under no_grad); DPO with the reference log-probs precomputed (`objective.precompute=[reference]`).",
        "",
        "| data | step | ms / step | pairs/s | tokens/s | vs SFT chosen | vs SFT 2B "
        "| expected (FLOPs) vs chosen, 2B | MFU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in r["workloads"]:
        s, e = w["step_s"], w["expected_vs_sft"]
        label = f"{w['workload']} ({w['positions_per_row']['sft 2B']:.0f} positions a row)"
        for v in VARIANTS:
            lines.append(
                f"| {label} | {v} | {s[v] * 1e3:.1f} | {w['pairs_per_s'][v]:.0f} | {w['tokens_per_s'][v]:.0f} | "
                f"{s[v] / s['sft chosen']:.2f}× | {s[v] / s['sft 2B']:.2f}× | "
                f"{e[v]:.2f}×, {e[v] / e['sft 2B']:.2f}× | "
                f"{w['mfu'][v]:.0%} |")
            label = ""
    lines += ["", "One-off cost of the precomputed table (one reference forward over every pair, no gradients):", ""]
    for w in r["workloads"]:
        s = w["step_s"]
        saved = (s["dpo + reference"] - s["dpo precomputed"]) / BATCH
        pays = f"repaid after {w['precompute_s_per_pair'] / saved:.2f} epochs" if saved > 0 else "never repaid here"
        lines.append(f"- {w['workload']}: {w['precompute_s_per_pair'] * 1e3:.2f} ms per pair over "
                     f"{w['precompute_pairs']} pairs, against {saved * 1e3:.2f} ms per pair saved each epoch "
                     f"by dropping the live reference ({pays}).")
    lines += [
        "",
        "Checked before timing: the DPO loss at step 0 is ln 2 with either reference (policy = reference), and the "
        "policy log-probabilities DPO sums equal minus the 2B-row SFT cross-entropy on the same weights. tokens/s = "
        "positions through the policy per second (padding included). Expected = model FLOPs (6·params + attention "
        "per position for forward + backward, a reference forward a third of that) relative to the SFT step: "
        "4/3 for DPO with a reference and 1 precomputed against SFT 2B. MFU counts the reference forward as work. "
        "A measured ratio above the expected one is per-op overhead (the loss's log-prob gathers, the pair join, "
        "the reference's extra kernel launches), which the short arithmetic rows expose and the long rows hide."
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(preference(repeats=2)))
