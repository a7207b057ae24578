"""`job=refine`: SPaR's refinement step (Cheng et al., arXiv 2412.11605) as a run — read an actor's
samples (a `job=sample` run's rollouts/<refine.split>.jsonl, `refine.rollouts`), take the failing ones
as roots, tree-search repairs of each with the refiner (`model.from_pretrained`: a run folder of a
model trained on the refiner's judge and fix documents, rizzrun.data.signed), and write, in its
own run folder:

    pairs/spar.jsonl         {"prompt", "chosen": y+, "rejected": y-, "distance": edit distance,
                              "chosen_right": the task's checker on y+, "expansions", "depth"}
    pairs/independent.jsonl  the control: {"prompt", "chosen": a right sample, "rejected": a failing
                              sample of the same prompt, "distance"} (rizzrun.selfplay.spar.independent_pairs)
    rft/train.jsonl          {"text": document}: the refiner's rejection-sampling fine-tuning set
    summary.json             counts, success rate, mean edit distances, the refiner's judging accuracy

Both pair files are read by `data=preference` (`data.path=<folder>/pairs/spar.jsonl`), the RFT file
by `data=text` (`data.train_files=<folder>/rft/train.jsonl`).

Which samples fail: the task's checker (`data.verify`, the data option of the run: e.g.
data=signed_prompts) with `refine.judge=checker`; the refiner's own judgment with
`refine.judge=refiner`, which also judges every child of the search (rizzrun.selfplay.spar). The
control's right / failing samples are always the checker's.

The refiner's RFT documents (rizzrun's reading of "RFT on its own successful judgments and
refinements", unconfirmed against the paper's code): the fix document root -> y+ of every search
whose y+ passes the checker, and the judge document (with the checker's answer) of every searched
node (roots and children) on which the refiner's own judgment agreed with the checker.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.errors import InputError

log = logging.getLogger("rizzrun")

JUDGES = ("checker", "refiner")


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def run_refine(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict:
    """The refine job in `run_dir` (locked and checked by rizzrun.runner.train.run)."""
    from hydra.utils import instantiate

    from rizzrun.data.signed import NO, YES, fix_prompt, judge_prompt
    from rizzrun.data.rollouts import read_rollouts
    from rizzrun.paths import cache_root
    from rizzrun.runner.build import build_decoder, build_model
    from rizzrun.runner.train import _environment, _write_summary, summary_written
    from rizzrun.selfplay.spar import LMRefiner, edit_distance, independent_pairs, tree_search

    started = time.perf_counter()
    rcfg = cfg.refine
    summary = {"run_dir": str(run_dir), "job": "refine", "status": "running"}
    _write_summary(run_dir, summary)
    with summary_written(run_dir, summary, started):
        if rcfg.judge not in JUDGES:
            raise InputError(f"refine.judge={rcfg.judge!r}: allowed: {', '.join(JUDGES)}")
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        (run_dir / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run_dir / layout.ENV).write_text(json.dumps(_environment(), indent=2) + "\n")
        rows = [r for r in read_rollouts(rcfg.rollouts, rcfg.split) if r["sample"] >= 0]
        tokenizer = instantiate(cfg.tokenizer)
        data = instantiate(cfg.data)
        if not hasattr(data, "verify"):
            raise InputError(f"job=refine: data {type(data).__name__} has no `verify`; the refine job checks answers "
                             "with the task's checker (e.g. data=signed_prompts)")
        tokenizer.prepare(data.train_texts, data.fingerprint)
        tokenizer.save(run_dir / layout.TOKENIZER)
        data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
        torch.manual_seed(int(cfg.seed))
        model = build_model(cfg, tokenizer).eval()
        decoder = build_decoder(cfg.decoder, tokenizer)
        refiner = LMRefiner(model, tokenizer, decoder)

        samples = [(r["prompt"], r["completion"].strip(), bool(data.verify(r["prompt"], r["completion"])))
                   for r in rows]
        refiner_says = refiner.judge_texts([judge_prompt(p, c) for p, c, _ in samples]) if samples else []
        failing = [(p, c, ok) for (p, c, ok), says in zip(samples, refiner_says)
                   if not (says if rcfg.judge == "refiner" else ok)]
        failing = failing[: rcfg.max_roots or None]
        spar, rft, searches = [], [], []
        judged = [(p, c, ok, says) for (p, c, ok), says in zip(samples, refiner_says)]  # (prompt, text, right, said)
        for prompt, root, _ in failing:
            def judge(texts, prompt=prompt):
                said = refiner.judge(prompt, texts)
                right = [bool(data.verify(prompt, t)) for t in texts]
                judged.extend((prompt, t, r, s) for t, r, s in zip(texts, right, said))
                return said if rcfg.judge == "refiner" else right

            result = tree_search(root, lambda text, k, prompt=prompt: refiner.refine(prompt, text, k), judge,
                                 k=int(rcfg.k), max_expansions=int(rcfg.max_expansions),
                                 max_depth=int(rcfg.max_depth), order=str(rcfg.order))
            searches.append(result)
            if result.refined is None:
                continue
            right = bool(data.verify(prompt, result.refined))
            spar.append({"prompt": prompt, "chosen": result.refined, "rejected": root,
                         "distance": edit_distance(result.refined, root), "chosen_right": right,
                         "expansions": result.expansions, "depth": result.found.depth})
            if right:
                rft.append(fix_prompt(prompt, root) + result.refined)
        rft += [judge_prompt(p, t) + (YES if r else NO) for p, t, r, s in judged if r == s]
        control = [{**pair, "distance": edit_distance(pair["chosen"], pair["rejected"])}
                   for pair in independent_pairs(samples)]

        for name, pairs in (("spar", spar), ("independent", control)):
            path = run_dir / "pairs" / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        (run_dir / "rft").mkdir(exist_ok=True)
        (run_dir / "rft" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rft))
        summary.update({
            "samples": len(samples), "right_samples": sum(ok for _, _, ok in samples),
            "roots": len(failing), "spar_pairs": len(spar), "independent_pairs": len(control),
            "search_success": len(spar) / max(len(failing), 1),
            "spar_chosen_right": _mean(p["chosen_right"] for p in spar),
            "spar_distance": _mean(p["distance"] for p in spar),
            "independent_distance": _mean(p["distance"] for p in control),
            "mean_expansions": _mean(s.expansions for s in searches),
            "refiner_judge_accuracy": _mean(r == s for _, _, r, s in judged),
            "rft_documents": len(rft), "judge": rcfg.judge, "status": "completed"})
        log.info("refine: %s", summary)
        if not spar or not control:
            log.warning("refine: %d SPaR pairs and %d independent pairs; DPO on an empty file fails: sample more "
                        "(sample.num_generations, max_prompts) or search longer (refine.max_expansions)",
                        len(spar), len(control))
    print(f"\nrun folder: {run_dir}\nrefine: {summary['roots']} roots -> {summary['spar_pairs']} SPaR pairs "
          f"(edit distance {summary['spar_distance']}), {summary['independent_pairs']} independent pairs "
          f"(edit distance {summary['independent_distance']})", flush=True)
    return summary
