"""rizzrun.rewards.teacher.TeacherLogProb: a teacher run's log-probabilities of each completion after
its prompt, checked against the teacher's own step-by-step next-token distributions (one unpadded row at a
time), and used as the reward of a GRPO run."""

from __future__ import annotations

import math

import pytest
import torch

from rizzrun import layout
from rizzrun.config import compose
from rizzrun.errors import InputError
from rizzrun.rewards.teacher import TeacherLogProb
from rizzrun.runner.generate import load_run_model
from rizzrun.runner.metrics import read_metrics
from rizzrun.runner.train import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler=constant", "optimizer.lr=1e-3",
        "trainer.num_threads=1", "trainer.samples_per_val=0", "trainer.val_every=2", "trainer.checkpoint_every=2"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, shared_cache):
    folder = tmp_path_factory.mktemp("teacher") / "run"
    run(compose([*TINY, "data=arithmetic_sft", "data.n_train=24", "data.n_val=6", "data.batch_size=4",
                 "trainer.max_steps=2", f"cache_dir={shared_cache}"]), folder)
    return folder


def step_by_step(model, ids: list[int], first: int) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= first, each from a forward over the prefix alone."""
    out = []
    for t in range(first, len(ids)):
        logits = model(torch.tensor([ids[:t]]))[0, -1].float()
        out.append(float(torch.log_softmax(logits, -1)[ids[t]]))
    return out


def test_rewards_are_the_teachers_log_probabilities(teacher):
    prompts = ["12+7=", "3+45=", "12+7="]
    completions = ["19", "48 and more", ""]
    model, tokenizer = load_run_model(teacher)
    model.eval()
    for normalize in ("mean", "sum"):
        reward = TeacherLogProb(str(teacher), normalize=normalize, batch_size=2)  # two forwards, padded rows
        got = reward(prompts, completions, answer=[19, 48, 19])
        for p, c, value in zip(prompts, completions, got):
            prompt_ids = [tokenizer.eos_id, *tokenizer.encode(p)]  # a prompts data option's encoding
            ids = prompt_ids + tokenizer.encode(c) + [tokenizer.eos_id]
            with torch.no_grad():
                terms = step_by_step(model, ids, len(prompt_ids))
            want = sum(terms) / len(terms) if normalize == "mean" else sum(terms)
            assert value == pytest.approx(want, rel=1e-5, abs=1e-6), (normalize, p, c)
        assert got[0] != got[1] and all(v < 0 for v in got)  # one EOS at least: never empty
    no_eos = TeacherLogProb(str(teacher), include_eos=False)
    assert no_eos(["1+1="], [""]) == [None]  # nothing to score: does not apply
    assert TeacherLogProb(str(teacher), normalize="sum", include_eos=False)(["1+1="], [""]) == [0.0]


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(InputError, match=r"path=.*nowhere: no such folder"):
        TeacherLogProb(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"neither a run folder \(config.yaml\) nor a Hugging Face folder"):
        TeacherLogProb(str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"normalize='max': allowed are mean, sum"):
        TeacherLogProb(str(tmp_path), normalize="max")


def test_a_grpo_run_scores_its_rollouts_by_the_teacher(teacher, tmp_path, shared_cache):
    run_dir = tmp_path / "student"
    node = f"{{teacher: {{_target_: rizzrun.rewards.teacher.TeacherLogProb, path: '{teacher}'}}}}"
    summary = run(compose([*TINY, "data=arithmetic_prompts", "data.n_train=12", "data.n_val=3", "data.batch_size=3",
                           "decoder=sample", "decoder.max_new_tokens=3", "objective=grpo", "objective.num_generations=2",
                           "objective.beta=0", "trainer.max_steps=2", f"rewards={node}", f"cache_dir={shared_cache}"]),
                  run_dir)
    assert summary["status"] == "completed"
    rows = [r for r in read_metrics(run_dir / layout.METRICS) if "train/loss" in r]
    assert len(rows) == 2
    for r in rows:  # mean log-probabilities: negative, finite, and what the rollout reports
        assert r["train/rewards/teacher/mean"] < 0 and math.isfinite(r["train/rewards/teacher/mean"])
        assert r["train/reward"] == pytest.approx(r["train/rewards/teacher/mean"])
