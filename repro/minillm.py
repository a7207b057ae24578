"""`make repro-minillm`: MiniLLM (reverse-KL distillation, arXiv 2306.08543) against forward-KL
word-level distillation on the teacher's samples, on the built-in 2-digit addition task.

The teacher (`sft_teacher_tiny`: a larger tiny Llama, 6 x 192, trained from scratch on the same SFT data; one
teacher, seed --teacher-seed, for every student unless --teacher-per-seed), and per seed: the student SFT
(`sft_tiny`, 4 x 192; repro/preference.py's finished run is read instead of retrained) and from the student,
with that teacher, under the same budget (the same steps, prompts and samples per step, lr):
  minillm   `minillm_tiny` (PG on r_t = log p - log q + exact single-step KL, teacher-mixed
            sampling alpha 0.2, 4 PPO steps per rollout)
  fkl       `minillm_tiny objective.variant=token_fkl objective.teacher_mix_alpha=1.0`: word-level
            KD sum_v p log(p/q) on completions sampled from the teacher (the paper's "KD" baseline)
  rkl       `minillm_tiny objective.variant=token_rkl objective.teacher_mix_alpha=0`: the exact per-token
            reverse KL on the student's own samples, MiniLLM without its PG term (ablation)
Read: held-out greedy accuracy (eval.json task.correct_rate, 200 prompts never trained on), and
computed here on the same held-out prompts, 4 samples each (T = 1, 6 new tokens):
  rkl       the student's sequence reverse KL to the teacher, E_{y~q} sum_t KL(q(.|y<t) || p(.|y<t))
            (exact per-token KL summed along student samples: the chain rule's estimate of KL(q||p))
  fkl_t     the same with the roles swapped on teacher samples: E_{y~p} sum_t KL(p || q) (coverage)
  t_nll     the teacher's NLL of the student's samples per sequence, -E_{y~q} log p(y) (quality)
Every run uses one torch thread and logger=none.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import mean_sd, record  # noqa: E402
from runs import ROOT, finished_sft, run_into  # noqa: E402

sys.path.insert(0, str(ROOT))
COMMON = ["logger=none", "trainer.num_threads=1"]
FKL = ["objective.variant=token_fkl", "objective.teacher_mix_alpha=1.0"]
RKL = ["objective.variant=token_rkl", "objective.teacher_mix_alpha=0.0"]
SAMPLES = 4


def run(recipe: str, overrides: list[str], seed: int, out: Path, key: str | None = None) -> Path:
    """One run's folder (`out/<key or recipe>-s<seed>`): reused when finished, resumed when stopped."""
    return run_into([f"+recipe={recipe}", *overrides, f"seed={seed}"], out / f"{key or recipe}-s{seed}", COMMON)


def kl_metrics(student_dir: Path, teacher_dir: Path, seed: int, out: Path) -> dict:
    """rkl, fkl_t, t_nll (module docstring) of a student run against the teacher run, on the held-out
    addition prompts (cached in `out`, never in a reused run's folder)."""
    cache = out / f"kl-{student_dir.name}--{teacher_dir.name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import torch

    from rizzrun.decoders.sample import Sample
    from rizzrun.objectives.minillm import completion_log_softmax, exact_kl
    from rizzrun.paths import cache_root
    from rizzrun.rollouts import sample_rollout
    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    cfg, tokenizer, student = load_run(student_dir)
    _, teacher_tok, teacher = load_run(teacher_dir)
    assert teacher_tok.fingerprint == tokenizer.fingerprint, "teacher and student tokenizers differ"
    from rizzrun.data.arithmetic import ArithmeticPrompts

    data = ArithmeticPrompts(batch_size=50, seed=seed)
    data.setup(tokenizer, cache_dir=str(cache_root(cfg.cache_dir)))
    student.eval()
    teacher.eval()
    sums = {"rkl": 0.0, "fkl_t": 0.0, "t_nll": 0.0}
    n = 0
    with torch.no_grad():
        for i, prompts in enumerate(data.val_batches()):
            for key, sampler, other in (("rkl", student, teacher), ("fkl_t", teacher, student)):
                decoder = Sample(max_new_tokens=6, temperature=1.0, top_p=1.0, seed=1000 * seed + i)
                rollout = sample_rollout(sampler, decoder, prompts, SAMPLES, tokenizer.eos_id)
                m = rollout["completion_mask"].float()
                log_a = completion_log_softmax(sampler, rollout)
                log_b = completion_log_softmax(other, rollout)
                sums[key] += float((exact_kl(log_a, log_b) * m).sum())
                if key == "rkl":
                    C = m.shape[1]
                    picked = log_b.gather(-1, rollout["input_ids"][:, -C:].unsqueeze(-1)).squeeze(-1)
                    sums["t_nll"] -= float((picked * m).sum())
                    n += m.shape[0]
    out = {k: v / n for k, v in sums.items()}
    cache.write_text(json.dumps(out, indent=1))
    return out


def teacher_entropy(teacher_dir: Path, out: Path) -> float:
    """The teacher's mean next-token entropy (nats per completion token) along its own samples of the held-out
    prompts (4 each, T = 1): how far from one-hot the distributions being distilled are."""
    cache = out / f"entropy-{teacher_dir.name}.json"
    if cache.exists():
        return json.loads(cache.read_text())["entropy"]
    import torch

    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.decoders.sample import Sample
    from rizzrun.objectives.minillm import completion_log_softmax
    from rizzrun.paths import cache_root
    from rizzrun.rollouts import sample_rollout
    from rizzrun.runner.generate import load_run

    torch.set_num_threads(1)
    cfg, tokenizer, teacher = load_run(teacher_dir)
    data = ArithmeticPrompts(batch_size=50, seed=0)
    data.setup(tokenizer, cache_dir=str(cache_root(cfg.cache_dir)))
    teacher.eval()
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for i, prompts in enumerate(data.val_batches()):
            decoder = Sample(max_new_tokens=6, temperature=1.0, top_p=1.0, seed=i)
            rollout = sample_rollout(teacher, decoder, prompts, SAMPLES, tokenizer.eos_id)
            log_p = completion_log_softmax(teacher, rollout)
            m = rollout["completion_mask"].float()
            total += float((-(log_p.exp() * log_p).sum(-1) * m).sum())
            tokens += float(m.sum())
    cache.write_text(json.dumps({"entropy": total / tokens}))
    return total / tokens


def collect(folder: Path, teacher: Path | None, seed: int, out: Path) -> dict:
    ev = json.loads((folder / "eval.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    row = {"seconds": summary["seconds"], "correct": ev["task"]["correct_rate"]}
    if teacher is not None:
        row.update(kl_metrics(folder, teacher, seed, out))
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "repro" / "minillm")
    parser.add_argument("--teacher-seed", type=int, default=0,
                        help="the seed of the one teacher distilled into every seed's student")
    parser.add_argument("--teacher-per-seed", action="store_true",
                        help="train a teacher per seed (its seed = the student's) instead of one")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()

    found: dict[str, list[dict]] = {}
    teacher_dirs: list[str] = []
    for seed in args.seeds:
        sft = finished_sft(seed) or run("sft_tiny", [], seed, args.out)
        teacher = run("sft_teacher_tiny", [], seed if args.teacher_per_seed else args.teacher_seed, args.out)
        teacher_dirs.append(str(teacher))
        start = [f"model.from_pretrained={sft}", f"objective.models.teacher={teacher}"]
        found.setdefault("teacher", []).append(collect(teacher, None, seed, args.out))
        found.setdefault("sft", []).append(collect(sft, teacher, seed, args.out))
        minillm = run("minillm_tiny", start, seed, args.out)
        found.setdefault("minillm", []).append(collect(minillm, teacher, seed, args.out))
        fkl = run("minillm_tiny", [*start, *FKL], seed, args.out, key="fkl_tiny")
        found.setdefault("fkl", []).append(collect(fkl, teacher, seed, args.out))
        rkl = run("minillm_tiny", [*start, *RKL], seed, args.out, key="rkl_tiny")
        found.setdefault("rkl", []).append(collect(rkl, teacher, seed, args.out))

    n = len(args.seeds)
    seeds = " ".join(map(str, args.seeds))
    seeds += " --teacher-per-seed" if args.teacher_per_seed else f" --teacher-seed {args.teacher_seed}"
    teachers = "a teacher per seed" if args.teacher_per_seed else f"one teacher (seed {args.teacher_seed}) for every seed"
    found["teacher"] = list({json.dumps(r, sort_keys=True): r for r in found["teacher"]}.values())
    minutes = sum(r["seconds"] for rs in found.values() for r in rs) / 60
    cell = lambda key, get, fmt=".3f": mean_sd([float(get(r)) for r in found[key]], fmt)  # noqa: E731
    heading = "## MiniLLM: reverse-KL distillation (arXiv 2306.08543)"
    with record(args.results, "minillm", heading):
        print(f"""Here: `make repro-minillm` (`python repro/minillm.py --seeds {seeds}`), the built-in 2-digit addition task.
Student `sft_tiny` (Llama 4 × 192, 1.62 M parameters, 800 SFT steps at 1e-3); teacher `sft_teacher_tiny` (a larger
Llama, 6 × 192, 2.41 M parameters, 1500 SFT steps at 1e-3 from scratch on the same data); from the student, 200 steps
each with the same prompts per step (16 × 4 completions), lr 1e-5, 4 optimizer
steps per rollout: `minillm_tiny` (MiniLLM: PG on r_t = log p − log q, exact single-step KL, teacher-mixed sampling
α = 0.2) and the forward-KL word-level KD baseline on the teacher's samples (`objective.variant=token_fkl
objective.teacher_mix_alpha=1.0`), and the ablation without the PG term, exact per-token reverse KL on the
student's own samples (`objective.variant=token_rkl objective.teacher_mix_alpha=0`). "correct": greedy answers to the 200 held-out prompts the verifier accepts
(eval.json `task.correct_rate`); on the same prompts, 4 samples each at T = 1: "RKL" = E_(y~q) Σ_t KL(q‖p) (nats per
completion, exact per-token KL summed along the student's samples), "FKL" = E_(y~p) Σ_t KL(p‖q) on the teacher's
samples, "teacher NLL" = −E_(y~q) log p(y) of the student's samples. Mean ± sd over {n} student seed(s), {teachers}; {minutes:.1f} min of
training in all (1 torch thread per run, a shared 2-core machine).

Claim (paper, spec): the reverse-KL student is mode-seeking: lower RKL to the teacher and higher quality of its own
generations (teacher NLL, accuracy) than forward-KL KD; KD keeps lower FKL (coverage).

| model | correct | RKL (q‖p) | FKL (p‖q) | teacher NLL | seconds |
|---|---|---|---|---|---|""")
        print(f"| teacher `sft_teacher_tiny` | {cell('teacher', lambda r: r['correct'])} | 0 | 0 | — | "
              f"{cell('teacher', lambda r: r['seconds'], '.0f')} |")
        for key, name in (("sft", "student SFT `sft_tiny` (start)"), ("minillm", "MiniLLM `minillm_tiny`"),
                          ("fkl", "forward-KL KD on teacher samples"),
                          ("rkl", "token-level reverse KL on student samples (no PG)")):
            print(f"| {name} | {cell(key, lambda r: r['correct'])} | {cell(key, lambda r: r['rkl'])} | "
                  f"{cell(key, lambda r: r['fkl_t'])} | {cell(key, lambda r: r['t_nll'])} | "
                  f"{cell(key, lambda r: r['seconds'], '.0f')} |")
        entropy = mean_sd([teacher_entropy(Path(t), args.out) for t in dict.fromkeys(teacher_dirs)])
        gains = {k: [r["correct"] - r0["correct"] for r, r0 in zip(found[k], found["sft"])] for k in ("minillm", "fkl")}
        gap = [a - b for a, b in zip(gains["minillm"], gains["fkl"])]
        print(f"""
Reading: MiniLLM's accuracy gain over the start minus KD's, per seed: {", ".join(f"{g:+.3f}" for g in gap)} (mean
{mean_sd(gap)}); its RKL to the teacher {cell("minillm", lambda r: r["rkl"])} vs KD's {cell("fkl", lambda r: r["rkl"])}.
Every distillation moves the student the same way (accuracy, RKL and teacher NLL alike) and KD keeps the
lower FKL, as the paper's coverage argument says, but reverse KL does not pull ahead: each answer is 2-4
tokens with one right value and the teacher's next-token distributions are nearly one-hot (entropy {entropy}
nats per token along its own samples), so a student short of the teacher has no spread of modes to choose
from and the mode-seeking and the mode-covering fit coincide; MiniLLM's gains come from long open-ended
responses, where a mode-covering student spreads its mass over many of the teacher's modes. The 200 steps at lr 1e-5 close
little of the gap (the teacher is far off: RKL {cell("sft", lambda r: r["rkl"])} nats at the start); at lr 1e-4
(seed 0, outside this table) both collapse (MiniLLM 0.11, KD 0.195 correct).""")


if __name__ == "__main__":
    main()
