"""`job=sample` (rizzrun.runner.sample_job) and `data=rollouts` (rizzrun.data.rollouts), against their
module docstrings: the rollout files hold N prompts x G completions (+ references) with every field,
rewards recomputed here by the task's verifier and completions regenerated here from the seed of each
batch; a job cut mid-batch (by hand, and a real process killed with SIGKILL) resumes to the same file;
the validator refuses bad sample settings before torch; filter_rollouts against hand-made rows and
numpy.quantile; an SFT run on the filtered rollouts trains and is judged by the source task."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rizzrun import layout
from rizzrun.config import ConfigError, compose, load
from rizzrun.errors import InputError, RunFolderBusy
from rizzrun.runner.train import run

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
         "tokenizer=byte", "logger=none", "trainer.num_threads=1"]
# The arithmetic prompts (24 train, 6 val) sampled by `decoder=sample`, 4 new tokens.
PROMPTS = ["data=arithmetic_prompts", "data.n_train=24", "data.n_val=6", "data.batch_size=3", "decoder=sample",
           "decoder.max_new_tokens=4", "job=sample"]
FIELDS = {"batch", "row", "sample", "prompt", "completion", "reward", "rewards", "truncated", "tokens", "answer"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, shared_cache):
    """The sampled model: a tiny model trained 2 steps on the arithmetic SFT corpus."""
    run_dir = tmp_path_factory.mktemp("sft") / "sft"
    cfg = compose([*MODEL, f"cache_dir={shared_cache}", "data=arithmetic_sft", "data.n_train=48", "data.n_val=8",
                   "data.batch_size=4", "data.seq_len=32", "trainer.max_steps=2", "trainer.val_every=2",
                   "trainer.val_batches=1", "trainer.samples_per_val=0", "optimizer.lr=1e-3"])
    assert run(cfg, run_dir)["status"] == "completed"
    return run_dir


def sample(run_dir: Path, sft: Path, *overrides: str, cache) -> dict:
    return run(compose([*MODEL, *PROMPTS, f"cache_dir={cache}", f"model.from_pretrained={sft}", *overrides]), run_dir)


# --- 1. what a sample job writes ------------------------------------------------------------------------

JOB = ["sample.num_generations=3", "sample.splits=[train,val]", "sample.max_prompts=7", "sample.batch_size=2",
       "sample.include_reference=true"]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, sft, shared_cache):
    run_dir = tmp_path_factory.mktemp("sample") / "sample"
    summary = sample(run_dir, sft, *JOB, cache=shared_cache)
    return run_dir, summary


def regenerate(sft: Path, split: str, rows: list[int], G: int, seed: int, batch: int) -> list[tuple]:
    """(completion, truncated, tokens) of one batch's completions, made here: the run's model and
    tokenizer loaded from its checkpoint, the task's prompts built anew, sample_rollout from the
    batch's seed (a function of the run seed, the split and the batch)."""
    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.rollouts.sample import completion_texts, sample_rollout
    from rizzrun.runner.build import build_decoder
    from rizzrun.runner.generate import load_run
    from rizzrun.runner.on_policy import rollout_seed

    _, tokenizer, model = load_run(sft)
    data = ArithmeticPrompts(n_train=24, n_val=6, batch_size=3)
    data.setup(tokenizer)
    decoder = build_decoder(compose(["decoder=sample", "decoder.max_new_tokens=4"]).decoder, tokenizer)
    decoder.seed = rollout_seed(seed, 0, batch, 0, f"sample:{split}")
    rollout = sample_rollout(model, decoder, data.batch_of_rows(rows), G, tokenizer.eos_id)
    return list(zip(completion_texts(rollout, tokenizer), rollout["truncated"].tolist(),
                    rollout["completion_mask"].sum(dim=1).tolist()))


def test_a_sample_job_writes_every_completion_scored_by_the_task(sampled, sft):
    from rizzrun.rewards.verifiable import leading_integer_match

    run_dir, summary = sampled
    assert summary["status"] == "completed" and summary["job"] == "sample"
    assert json.loads((run_dir / layout.SUMMARY).read_text())["status"] == "completed"
    G = 3
    for split, n_prompts in (("train", 7), ("val", 6)):  # max_prompts=7 cuts train (24), not val (6)
        got = lines(run_dir / "rollouts" / f"{split}.jsonl")
        assert len(got) == n_prompts * (G + 1)  # G samples + the reference per prompt
        for line in got:
            assert FIELDS <= set(line) and set(line) - FIELDS <= {"end"}
            assert set(line["rewards"]) == {"correct"}
        first = 0 if split == "train" else 24  # row ids run over the splits (train, then val)
        rows = sorted({line["row"] for line in got})
        assert rows == list(range(first, first + n_prompts))
        # batch_size=2: rows 2b, 2b+1 in batch b, each batch's samples then its references, "end" on its last line
        for b in range(math.ceil(n_prompts / 2)):
            batch = [line for line in got if line["batch"] == b]
            chunk = rows[2 * b:2 * b + 2]
            assert [(x["row"], x["sample"]) for x in batch] == \
                [(r, g) for r in chunk for g in range(G)] + [(r, -1) for r in chunk]
            assert [bool(x.get("end")) for x in batch] == [False] * (len(batch) - 1) + [True]
            made = regenerate(sft, split, chunk, G, seed=0, batch=b)
            assert [(x["completion"], x["truncated"], x["tokens"]) for x in batch if x["sample"] >= 0] == made
        assert got == sorted(got, key=lambda x: x["batch"])
        for line in got:
            assert line["prompt"].endswith("=") and int(line["answer"]) == sum(map(int, line["prompt"][:-1].split("+")))
            want = leading_integer_match([line["prompt"]], [line["completion"]], answer=[line["answer"]])[0]
            assert line["reward"] == want and line["rewards"]["correct"] == want
            if line["sample"] == -1:
                assert line["completion"] == str(line["answer"]) and line["reward"] == 1.0
                assert line["truncated"] is False and line["tokens"] is None
            else:
                assert 1 <= line["tokens"] <= 4 and (line["tokens"] == 4 or not line["truncated"])
        samples = [x for x in got if x["sample"] >= 0]
        done = summary["splits"][split]
        assert done["prompts"] == n_prompts and done["completions"] == n_prompts * G
        assert done["reward"] == pytest.approx(np.mean([x["reward"] for x in samples]))
        assert done["truncated"] == pytest.approx(np.mean([x["truncated"] for x in samples]))
    assert sum(x["truncated"] for x in lines(run_dir / "rollouts" / "train.jsonl")) > 0  # the flag is exercised


def test_weighted_rewards_are_each_functions_value_and_their_weighted_sum(tmp_path, sft, shared_cache):
    """Two reward functions with weights: `rewards` holds each, `reward` their weighted sum (combine.py)."""
    from rizzrun.rewards.verifiable import format_match, leading_integer_match

    rewards = ("rewards={correct: {_target_: rizzrun.rewards.verifiable.leading_integer_match, _partial_: true}, "
               "plain: {_target_: rizzrun.rewards.verifiable.format_match, _partial_: true, "
               "pattern: '[a-z]*', strip: false, weight: 0.5}}")
    summary = sample(tmp_path / "run", sft, rewards, "sample.num_generations=4", "sample.include_reference=true",
                     cache=shared_cache)
    assert summary["status"] == "completed"
    got = lines(tmp_path / "run" / "rollouts" / "train.jsonl")
    assert len(got) == 24 * 5 and {x["batch"] for x in got} == set(range(8))  # data.batch_size=3 by default
    for x in got:
        correct = leading_integer_match([x["prompt"]], [x["completion"]], answer=[x["answer"]])[0]
        plain = format_match([x["prompt"]], [x["completion"]], pattern="[a-z]*", strip=False)[0]
        assert x["rewards"] == {"correct": correct, "plain": plain}
        assert x["reward"] == pytest.approx(correct + 0.5 * plain)
    assert {x["rewards"]["plain"] for x in got} == {0.0, 1.0}  # both values occur


# --- 2. resume after a kill -------------------------------------------------------------------------------

def test_a_job_cut_mid_batch_resumes_to_the_uninterrupted_file(tmp_path, sft, shared_cache):
    """rollouts/train.jsonl cut inside batch 3 (two of its lines whole, the third cut in half) and
    val.jsonl never written: resume=<folder> completes both as an uninterrupted job writes them."""
    job = ["sample.num_generations=2", "sample.splits=[train,val]"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert sample(whole, sft, *job, cache=shared_cache)["status"] == "completed"
    assert sample(cut, sft, *job, cache=shared_cache)["status"] == "completed"
    train, val = (cut / "rollouts" / f"{s}.jsonl" for s in ("train", "val"))
    text = train.read_text().splitlines(keepends=True)
    first = [i for i, line in enumerate(text) if json.loads(line)["batch"] == 3][0]
    assert first == 3 * 3 * 2  # 3 prompts x 2 completions a batch
    train.write_text("".join(text[:first + 2]) + text[first + 2][:25])
    val.unlink()
    summary = sample(cut, sft, *job, f"resume={cut}", cache=shared_cache)
    assert summary["status"] == "completed"
    for s in ("train", "val"):
        assert (cut / "rollouts" / f"{s}.jsonl").read_bytes() == (whole / "rollouts" / f"{s}.jsonl").read_bytes()
    assert {s: {k: v for k, v in d.items() if k != "seconds"} for s, d in summary["splits"].items()} == \
        {s: {k: v for k, v in d.items() if k != "seconds"}
         for s, d in json.loads((whole / layout.SUMMARY).read_text())["splits"].items()}
    # cut just before the newline of batch 5's last line (what is left of it parses): batch 5 is
    # written again, not appended to; a finished job resumed again writes nothing more
    text = train.read_text().splitlines(keepends=True)
    last = [i for i, line in enumerate(text) if json.loads(line)["batch"] == 5][-1]
    train.write_text("".join(text[:last + 1])[:-1])
    assert sample(cut, sft, *job, f"resume={cut}", cache=shared_cache)["status"] == "completed"
    assert sample(cut, sft, *job, f"resume={cut}", cache=shared_cache)["status"] == "completed"
    assert train.read_bytes() == (whole / "rollouts" / "train.jsonl").read_bytes()
    # a resume that would write the rest by other settings is refused, the file left as it was
    train.write_text("".join(text[:first + 2]))
    for change, named in (("sample.num_generations=3", "sample.num_generations 2 -> 3"),
                          ("decoder.temperature=0.5", "decoder.temperature 0.8 -> 0.5")):
        with pytest.raises(InputError, match=re.escape(f"resume={cut}: this sample job changes {named}")):
            sample(cut, sft, *job, change, f"resume={cut}", cache=shared_cache)
    assert train.read_text() == "".join(text[:first + 2])
    # a fresh job never writes into (and so never empties) a folder holding one
    with pytest.raises(RunFolderBusy, match="holds another run"):
        sample(whole, sft, *job, cache=shared_cache)
    # a fresh (not resumed) job in a folder of its own starts the file anew
    again = tmp_path / "again"
    assert sample(again, sft, *job, cache=shared_cache)["status"] == "completed"
    assert (again / "rollouts" / "train.jsonl").read_bytes() == (whole / "rollouts" / "train.jsonl").read_bytes()


def env(cache: Path) -> dict:
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}


def test_a_process_killed_while_sampling_resumes_in_a_second_process(tmp_path, sft, shared_cache):
    """A real `rizzrun job=sample` killed with SIGKILL after its first whole batches, resumed by
    `rizzrun ... resume=<folder>`: the file an uninterrupted job writes."""
    job = [*MODEL, *PROMPTS, f"model.from_pretrained={sft}", "data.n_train=150", "data.n_val=3",
           "sample.num_generations=2"]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([RIZZRUN, *job, f"hydra.run.dir={run_dir}"], env=env(shared_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    path = run_dir / "rollouts" / "train.jsonl"
    deadline = time.time() + 180
    try:
        while not (path.exists() and path.read_text().count('"end": true') >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.02)
    finally:  # SIGKILL, also when the wait failed (no process left behind)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / layout.SUMMARY).read_text())["status"] == "running"  # killed while sampling
    written = path.read_text().count('"end": true')
    assert 2 <= written < 50, written
    done = subprocess.run([RIZZRUN, *job, f"resume={run_dir}"], env=env(shared_cache), capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / layout.SUMMARY).read_text())["status"] == "completed"
    reference = tmp_path / "reference"
    assert run(compose([*job, f"cache_dir={shared_cache}"]), reference)["status"] == "completed"
    assert path.read_bytes() == (reference / "rollouts" / "train.jsonl").read_bytes()
    assert len(lines(path)) == 150 * 2


# --- 3. refused before torch ------------------------------------------------------------------------------

def test_sample_settings_are_checked_by_the_validator():
    reward = "rewards={c: {_target_: rizzrun.rewards.verifiable.exact_match, _partial_: true}}"
    with pytest.raises(ConfigError) as e:
        load(["job=sample", "data=arithmetic_sft"])
    assert "job=sample, data=arithmetic_sft: data 'arithmetic_sft' produces 'lm' batches" in str(e.value)
    assert "pick data=arithmetic_prompts" in str(e.value)
    cfg = load(["job=sample", "data=arithmetic_prompts", reward])  # the default objective (ce, lm) is not used
    assert cfg.job == "sample" and cfg.rewards.c._target_ == "rizzrun.rewards.verifiable.exact_match"
    with pytest.raises(ConfigError) as e:
        load(["data=arithmetic_sft", reward])
    assert "rewards: rizzrun.objectives.ce.CrossEntropy trains on 'lm' batches" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load(["job=sample", "data=arithmetic_prompts", "sample.num_generations=0"])
    assert "sample.num_generations=0: out of range" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load(["job=sampel", "data=arithmetic_prompts"])
    assert "did you mean 'sample'" in str(e.value)


def test_a_split_the_data_lacks_is_one_input_error(tmp_path, sft, shared_cache):
    with pytest.raises(InputError, match="sample.splits: data ArithmeticPrompts has no 'test' split"):
        sample(tmp_path / "run", sft, "sample.splits=[test]", cache=shared_cache)
    assert json.loads((tmp_path / "run" / layout.SUMMARY).read_text())["status"] == "bad input"


# --- 4. filter_rollouts -----------------------------------------------------------------------------------

def row(r: int, g: int, completion: str, reward, truncated: bool = False) -> dict:
    return {"batch": 0, "row": r, "sample": g, "prompt": f"p{r}=", "completion": completion, "reward": reward,
            "rewards": {"c": reward}, "truncated": truncated, "tokens": 3, "answer": r}


# 4 prompts; -1: the reference. Row 0 repeats "12" (and its reference is "12" too), row 1 also says
# "12" (another prompt: not a duplicate); None: unscorable.
ROWS = [row(0, 0, "12", 1.0), row(0, 1, "12", 1.0), row(0, 2, "1", 0.0), row(0, 3, "12x", 1.0, truncated=True),
        row(0, -1, "12", 1.0),
        row(1, 0, "5", 0.5), row(1, 1, "12", 0.5), row(1, 2, "?", None), row(1, -1, "7", 1.0),
        row(2, 0, "a", 0.0), row(2, 1, "b", 0.0),
        row(3, 0, "z", None), row(3, 1, "y", 0.25)]


def keys(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r["row"], r["sample"]) for r in rows]


def test_filter_rollouts_by_the_rules():
    from rizzrun.data.rollouts import filter_rollouts

    # no threshold: drop references, the truncated (0,3), the duplicate (0,1), the unscorable
    kept, stats = filter_rollouts(ROWS)
    assert keys(kept) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 1)]
    rewards = [1.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.25]  # the 9 candidates' scored rewards
    assert stats == {"rows": 13, "candidates": 9, "kept": 7, "kept_fraction": 7 / 9, "threshold": None,
                     "prompts": 4, "prompts_with_zero_kept": 0, "reward_before": pytest.approx(sum(rewards) / 7),
                     "reward_kept": pytest.approx(sum(rewards) / 7)}
    # reward > 0.5, strictly: 0.5 is dropped
    kept, stats = filter_rollouts(ROWS, min_reward=0.5)
    assert keys(kept) == [(0, 0)]
    assert stats["threshold"] == 0.5 and stats["kept_fraction"] == 1 / 9 and stats["prompts_with_zero_kept"] == 3
    assert stats["reward_kept"] == 1.0 and stats["reward_before"] == pytest.approx(sum(rewards) / 7)
    assert keys(filter_rollouts(ROWS, min_reward=0.4)[0]) == [(0, 0), (1, 0), (1, 1)]
    # references: (0,-1) is a duplicate of (0,0); (1,-1) passes
    kept, stats = filter_rollouts(ROWS, min_reward=0.5, references=True)
    assert keys(kept) == [(0, 0), (1, -1)] and stats["candidates"] == 10 and stats["prompts_with_zero_kept"] == 2
    assert keys(filter_rollouts(ROWS, min_reward=0.5, references=True, dedupe=False)[0]) == \
        [(0, 0), (0, 1), (0, -1), (1, -1)]
    assert keys(filter_rollouts(ROWS, min_reward=0.5, drop_truncated=False)[0]) == [(0, 0), (0, 3)]
    kept, stats = filter_rollouts(ROWS, min_reward=0.5, dedupe=False, drop_truncated=False)
    assert keys(kept) == [(0, 0), (0, 1), (0, 3)] and stats["candidates"] == 11  # every sample
    # per_prompt: the best first; an unscorable one never (row 3 keeps y, not z)
    kept, stats = filter_rollouts(ROWS, per_prompt=1)
    assert [(r["row"], r["reward"]) for r in kept] == [(0, 1.0), (1, 0.5), (2, 0.0), (3, 0.25)]
    assert keys(filter_rollouts(ROWS, per_prompt=2, references=True, dedupe=False)[0]) == \
        [(0, 0), (0, 1), (1, -1), (1, 0), (2, 0), (2, 1), (3, 1)]
    # nothing scorable passes: every prompt has zero kept, means of nothing are nan
    kept, stats = filter_rollouts([row(0, 0, "a", None), row(1, 0, "b", 0.0, truncated=True)])
    assert kept == [] and stats["kept"] == 0 and stats["prompts_with_zero_kept"] == 2
    assert math.isnan(stats["reward_before"]) and math.isnan(stats["reward_kept"])


@pytest.mark.parametrize("q", [0.0, 0.1, 0.3, 0.5, 0.75, 0.9, 0.95])
def test_the_quantile_threshold_is_numpys(q):
    from rizzrun.data.rollouts import filter_rollouts

    rng = np.random.default_rng(int(q * 100))
    rows = [row(i // 4, i % 4, f"c{i}", float(v) if i % 7 else None, truncated=i % 11 == 0)
            for i, v in enumerate(np.round(rng.random(60), 2))]  # 2 decimals: some ties
    candidates = [r for r in rows if not r["truncated"]]
    scored = [r["reward"] for r in candidates if r["reward"] is not None]
    tau = float(np.quantile(scored, q))
    kept, stats = filter_rollouts(rows, quantile=q)
    assert stats["threshold"] == pytest.approx(tau, abs=1e-12)
    assert kept == [r for r in candidates if r["reward"] is not None and r["reward"] >= tau]  # ties kept
    assert kept and stats["reward_kept"] == pytest.approx(np.mean([r["reward"] for r in kept]))


def test_a_high_quantile_of_discrete_rewards_keeps_the_best_not_nothing():
    """Character accuracy takes values k/6: when over 10% of the samples are perfect, the 0.9 quantile is
    1.0, and a strict '> tau' would keep nothing (ReST's third Improve step failed so); the best are kept."""
    from rizzrun.data.rollouts import filter_rollouts

    rewards = [1.0] * 3 + [5 / 6] * 4 + [0.5] * 3
    rows = [row(i, 0, f"c{i}", v) for i, v in enumerate(rewards)]
    kept, stats = filter_rollouts(rows, quantile=0.9)
    assert stats["threshold"] == 1.0 and [r["reward"] for r in kept] == [1.0] * 3
    kept, _ = filter_rollouts(rows, min_reward=1.0)  # an absolute threshold stays strict (ReST's R > tau)
    assert kept == []


# --- 5. data=rollouts ------------------------------------------------------------------------------------

def test_rollout_documents_are_prompt_plus_the_kept_completions(sampled):
    from rizzrun.data.rollouts import RolloutSFT
    from rizzrun.tokenizers import load_tokenizer

    run_dir, _ = sampled
    data = RolloutSFT(path=str(run_dir), min_reward=0.5, references=True, seq_len=16, batch_size=2)
    data.setup(load_tokenizer(run_dir / layout.TOKENIZER))
    for split in ("train", "val"):
        got = lines(run_dir / "rollouts" / f"{split}.jsonl")
        seen, want = set(), []
        for x in got:  # by hand: untruncated, distinct per prompt, reward > 0.5
            if not x["truncated"] and (x["row"], x["completion"]) not in seen and (x["reward"] or 0) > 0.5:
                want.append(x["prompt"] + x["completion"])
            seen.add((x["row"], x["completion"]))
        assert data.documents(split) == want and len(want) >= (7 if split == "train" else 6)  # the references
        assert data.stats["rollouts"][split]["kept"] == len(want)
    # the task answers through the sample run's data: its verifier and held-out prompts
    from rizzrun.data.arithmetic import verify

    assert data.prompts("val") == [x["prompt"] for x in lines(run_dir / "rollouts" / "val.jsonl") if x["sample"] == -1]
    assert data.verify("12+34=", "46") and not data.verify("12+34=", "47") and verify("12+34=", "46")


def test_an_sft_run_on_rollouts_trains_and_is_judged_by_the_task(tmp_path, sampled, shared_cache):
    from rizzrun.data.arithmetic import verify

    run_dir, _ = sampled
    out = tmp_path / "rest"
    summary = run(compose([*MODEL, f"cache_dir={shared_cache}", "data=rollouts", f"data.path={run_dir}",
                           "data.min_reward=0.5", "data.references=true", "data.seq_len=16", "data.batch_size=2",
                           "trainer.max_steps=2", "trainer.val_every=2", "trainer.val_batches=1",
                           "trainer.samples_per_val=0", "eval.at_end=true", "eval.continuation_len=4"]), out)
    assert summary["status"] == "completed" and summary["step"] == 2
    judged = json.loads((out / layout.EVAL).read_text())["task"]
    val_prompts = [x["prompt"] for x in lines(run_dir / "rollouts" / "val.jsonl") if x["sample"] == -1]
    assert judged["n"] == 6 and [r["prompt"] for r in judged["examples"]] == val_prompts
    assert judged["correct_rate"] == pytest.approx(np.mean([verify(r["prompt"], r["completion"])
                                                            for r in judged["examples"]]))


def test_rollout_data_that_cannot_be_used_is_one_line(tmp_path, sampled, shared_cache):
    run_dir, _ = sampled
    with pytest.raises(InputError) as e:
        run(compose([*MODEL, f"cache_dir={shared_cache}", "data=rollouts", f"data.path={run_dir}",
                     "data.min_reward=1.0", "data.references=true", "trainer.max_steps=2"]), tmp_path / "empty")
    text = str(e.value)
    assert f"data.path={run_dir}" in text and "threshold 1.0" in text and "\n" not in text
    assert json.loads((tmp_path / "empty" / layout.SUMMARY).read_text())["status"] == "bad input"
    with pytest.raises(ConfigError) as e:
        load(["data=rollouts", f"data.path={run_dir}", "data.min_reward=0.5", "data.quantile=0.5"])
    assert "data.min_reward=0.5, data.quantile=0.5: two thresholds" in str(e.value)
    assert load(["data=rollouts", f"data.path={run_dir}", "data.quantile=0.5"]).data.quantile == 0.5
    (tmp_path / "no-rollouts").mkdir()
    for folder, why in ((tmp_path / "no-rollouts", "no rollouts/train.jsonl in it"),
                        (tmp_path / "nowhere", "no such folder")):
        with pytest.raises(ConfigError) as e:
            load(["data=rollouts", f"data.path={folder}"])
        assert f"data.path={folder}: {why}" in str(e.value)
