"""On-policy objectives through the whole runner (docs/contracts.md "Rollouts"): prompts become
scored rollouts made with the run's decoder, each rollout batch trains num_iterations steps, a
checkpoint inside such a block keeps its rollouts so that a resume (in-process, and a real process
stopped by SIGTERM) gives the uninterrupted run's weights and metrics; validation and eval judge
completions by their rewards; bad reward settings are refused before anything trains."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rizzrun import layout
from rizzrun.config import ConfigError, catalog, compose, load
from rizzrun.config.validate import option_batch_kind
from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_state, load_weights
from rizzrun.runner.metrics import read_metrics
from rizzrun.runner.train import run
from test_runner import deterministic

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))
# A tiny policy from scratch on a few addition prompts: rewards are mostly 0, which is enough to
# check the plumbing; the effect is measured by `make repro-grpo`.
TINY = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
        "tokenizer=byte", "logger=none", "trainer.log_every=1", "scheduler=constant", "optimizer.lr=1e-3",
        "trainer.num_threads=1", "data=arithmetic_prompts", "data.n_train=24", "data.n_val=6", "data.batch_size=3",
        "decoder=sample", "decoder.max_new_tokens=4", "trainer.samples_per_val=0", "trainer.val_every=4",
        "trainer.checkpoint_every=4", "objective=grpo", "objective.num_generations=4"]
ON_POLICY = [o for o in catalog.options("objective") if option_batch_kind("objective", o) == "prompts"]


def train(run_dir: Path, *overrides: str, cache) -> dict:
    return run(compose([*TINY, f"cache_dir={cache}", *overrides]), run_dir)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, shared_cache) -> Path:
    """A tiny run folder to distil from (MiniLLM's objective.models.teacher)."""
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    cfg = compose([*[o for o in TINY if not o.startswith(("data", "objective", "decoder"))], f"cache_dir={shared_cache}",
                   "data=arithmetic_sft", "data.n_train=40", "data.n_val=8", "data.batch_size=8", "trainer.max_steps=2",
                   "trainer.val_every=2"])
    assert run(cfg, folder)["status"] == "completed"
    return folder


# What an objective needs besides the shared settings to train here (a teacher: a run folder; MiniLLM's
# teacher-mixed sampler draws from the plain mixture, so T = 1 and no top-p).
EXTRA = {"minillm": lambda teacher: [f"objective.models.teacher={teacher}", "decoder.temperature=1.0",
                                     "decoder.top_p=1.0"]}


def test_every_on_policy_objective_is_tested():
    assert {"grpo", "minillm"} <= set(ON_POLICY)


@pytest.mark.parametrize("objective", ON_POLICY)
def test_trains_on_scored_rollouts_validates_and_evaluates(objective, tmp_path, shared_cache, request):
    run_dir = tmp_path / "run"
    extra = EXTRA[objective](request.getfixturevalue("teacher")) if objective in EXTRA else []
    summary = train(run_dir, f"objective={objective}", "objective.num_iterations=2", "trainer.max_steps=4",
                    "eval.at_end=true", "eval.max_documents=6", "eval.continuation_len=4", *extra, cache=shared_cache)
    assert summary["status"] == "completed"
    rows = read_metrics(run_dir / layout.METRICS)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for r in train_rows:  # 3 prompts x 4 completions, TRL's rollout metrics, reward in [0, 1]
        assert r["train/completions"] == 12
        assert 0 <= r["train/reward"] <= 1 and 0 <= r["train/rewards/correct/mean"] <= 1
        assert 1 <= r["train/completions/mean_length"] <= 4 and 0 <= r["train/frac_reward_zero_std"] <= 1
        assert r["perf/update_s"] > 0
    # num_iterations=2: steps 1 and 3 generate, steps 2 and 4 train on the same rollouts again
    assert [r["perf/rollout_s"] > 0 for r in train_rows] == [True, False, True, False]
    for a, b in ((0, 1), (2, 3)):
        assert train_rows[a]["train/completions/mean_length"] == train_rows[b]["train/completions/mean_length"]
        assert train_rows[a]["train/reward"] == train_rows[b]["train/reward"]
    val = [r for r in rows if "val/reward" in r]
    assert [r["step"] for r in val] == [4] and val[0]["val/completions"] == 6
    judged = json.loads((run_dir / layout.EVAL).read_text())
    assert judged["rewards"]["completions"] == 6 and 0 <= judged["rewards"]["reward"] <= 1
    assert judged["task"]["n"] == 6  # greedy answers checked by the task's verifier


def test_a_resume_inside_a_block_of_iterations_is_the_uninterrupted_run(tmp_path, shared_cache):
    """Step 3 is inside the block of steps 3-4 that share a rollout: its checkpoint keeps the
    prepared rollouts (old log-probs of the policy of step 2), and the resumed step 4 trains on them."""
    options = ["objective.num_iterations=2", "trainer.checkpoint_every=3", "trainer.val_every=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(straight, *options, "trainer.max_steps=6", cache=shared_cache)
    train(split, *options, "trainer.max_steps=3", cache=shared_cache)
    held = load_state(latest_checkpoint(split) / layout.STATE)["rollouts"]
    assert held["step"] == 3 and set(held["ranks"][0]) == {0}  # one micro-batch's rollouts, rank 0
    train(split, *options, "trainer.max_steps=6", "resume=true", cache=shared_cache)
    a, b = load_weights(latest_checkpoint(straight) / WEIGHTS), load_weights(latest_checkpoint(split) / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert deterministic(read_metrics(straight / layout.METRICS)) == deterministic(read_metrics(split / layout.METRICS))
    # ... and it needs them: a checkpoint at a block boundary holds none
    assert "rollouts" not in load_state(latest_checkpoint(straight) / layout.STATE)


def test_accumulated_micro_batches_each_keep_their_rollouts(tmp_path, shared_cache):
    options = ["objective.num_iterations=2", "trainer.accumulate=2", "trainer.checkpoint_every=1", "trainer.max_steps=3"]
    run_dir = tmp_path / "acc"
    train(run_dir, *options, cache=shared_cache)
    rows = [r for r in read_metrics(run_dir / layout.METRICS) if "train/loss" in r]
    assert [r["train/completions"] for r in rows] == [24, 24, 24]  # 2 micro-batches x 3 prompts x 4
    assert rows[0]["train/reward"] == rows[1]["train/reward"]
    held = load_state(latest_checkpoint(run_dir) / layout.STATE)["rollouts"]
    assert set(held["ranks"][0]) == {0, 1}


def env(cache: Path) -> dict:
    return {**os.environ, "RIZZRUN_CACHE": str(cache), "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}


def test_a_signal_stops_an_on_policy_run_and_the_resume_is_the_same_run(tmp_path, shared_cache):
    """A real process, SIGTERM at whatever step it reached (inside a block of 3 iterations two
    times in three), resumed by a second process: the uninterrupted curve."""
    options = [*TINY, "objective.num_iterations=3", "trainer.checkpoint_every=50", "trainer.val_every=50"]
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen([RIZZRUN, *options, "trainer.max_steps=400", f"hydra.run.dir={run_dir}"],
                            env=env(shared_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not any("train/loss" in r for r in (read_metrics(run_dir / layout.METRICS)
                                              if (run_dir / layout.METRICS).exists() else [])):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-2000:]
    stopped = json.loads((run_dir / layout.SUMMARY).read_text())
    assert stopped["status"] == "stopped by SIGTERM", err[-2000:]
    total = stopped["step"] + 4
    env_ = env(shared_cache)
    done = subprocess.run([RIZZRUN, *options, f"trainer.max_steps={total}", f"resume={run_dir}"], env=env_,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = tmp_path / "reference"
    done = subprocess.run([RIZZRUN, *options, f"trainer.max_steps={total}", f"hydra.run.dir={reference}"], env=env_,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert deterministic(read_metrics(run_dir / layout.METRICS)) == deterministic(read_metrics(reference / layout.METRICS))


# --- refused before training ------------------------------------------------------------------------

def test_reward_settings_are_checked_by_the_validator(tmp_path):
    fn = "rizzrun.rewards.verifiable.exact_match"
    with pytest.raises(ConfigError) as e:
        load(["data=arithmetic_pairs", "objective=dpo", f"rewards={{c: {{_target_: {fn}, _partial_: true}}}}"])
    assert "rewards: rizzrun.objectives.dpo.DPO trains on 'preference' batches" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load(["data=arithmetic_prompts", "objective=grpo",
              f"rewards={{c: {{_target_: {fn}, _partial_: true, weight: .inf}}, d: 3, "
              "e: {_target_: rizzrun.rewards.verifiable.nowhere, _partial_: true}}"])
    text = str(e.value)
    assert "rewards.c.weight='.inf': expected a finite number" in text
    assert "rewards.d=3: expected a reward node with a _target_" in text
    assert "rewards.e._target_=rizzrun.rewards.verifiable.nowhere" in text
    with pytest.raises(ConfigError) as e:
        load(["data=pydoc", "objective=grpo"])
    assert "consumes batch_kind 'prompts'" in str(e.value)
    cfg = load(["data=arithmetic_prompts", "objective=grpo",
                f"rewards={{c: {{_target_: {fn}, _partial_: true, weight: 0.5}}}}"])
    assert cfg.rewards.c.weight == 0.5


@pytest.mark.parametrize("objective", ON_POLICY)
def test_objectives_that_cannot_train_a_sharded_model_are_refused_under_fsdp(objective):
    """WARP (an EMA deep copy of the policy) and BSPO (an unsharded value head beside it) crash under
    FSDP2 at the first step; the validator says so first. The others train sharded (the 2-process FSDP
    test above, GRPO; SCoRe and MiniLLM ran by hand)."""
    overrides = ["data=arithmetic_prompts", f"objective={objective}", "trainer.strategy=fsdp"]
    if objective == "minillm":
        overrides.append("objective.models.teacher=null")
    if objective in ("warp", "bspo"):
        with pytest.raises(ConfigError) as e:
            load(overrides)
        assert f"trainer.strategy=fsdp, objective={objective}: objective '{objective}' cannot train a sharded " \
               "model" in str(e.value)
        assert "use trainer.strategy=ddp" in str(e.value)
    else:
        try:
            load(overrides)
        except ConfigError as e:
            assert "trainer.strategy=fsdp" not in str(e)


def test_rewards_build_from_the_config_or_the_data(tmp_path):
    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.errors import InputError
    from rizzrun.runner.on_policy import build_rewards

    data = ArithmeticPrompts(n_train=4, n_val=0)
    own = build_rewards(None, data)
    assert own.names == ("correct",) and own.weights.tolist() == [1.0]
    node = {"exact": {"_target_": "rizzrun.rewards.verifiable.exact_match", "_partial_": True, "weight": 2.0},
            "form": {"_target_": "rizzrun.rewards.verifiable.format_match", "_partial_": True, "pattern": "[0-9]+"}}
    rewards = build_rewards(node, data)
    scores = rewards(["1+2=", "1+2="], ["3", " x"], answer=[3, 3])
    assert rewards.names == ("exact", "form") and scores.total.tolist() == [3.0, 0.0]
    with pytest.raises(InputError, match="not a function; a reward function needs _partial_: true"):
        build_rewards({"exact": {"_target_": "rizzrun.rewards.verifiable.format_match", "prompts": [], "completions": []}},
                      data)

    class NoRewards(ArithmeticPrompts):
        def default_rewards(self):
            return None

    with pytest.raises(InputError, match="rewards=null: data NoRewards brings no reward of its own"):
        build_rewards(None, NoRewards(n_train=4, n_val=0))


def test_a_completion_budget_the_model_cannot_hold_is_refused_before_training(tmp_path, shared_cache):
    summary_path = tmp_path / "long" / layout.SUMMARY
    from rizzrun.errors import InputError

    with pytest.raises(InputError, match=r"decoder.max_new_tokens=60: the longest prompt has 7 tokens"):
        train(tmp_path / "long", "model.max_seq_len=64", "decoder.max_new_tokens=60", "trainer.max_steps=2",
              cache=shared_cache)
    assert json.loads(summary_path.read_text())["status"] == "bad input"
    assert not (tmp_path / "long" / layout.CHECKPOINTS).exists() or not any((tmp_path / "long" / layout.CHECKPOINTS).iterdir())


# --- the objective's optional hooks ------------------------------------------------------------------

def test_the_rollout_and_after_step_hooks_are_called_and_resume(tmp_path, shared_cache, monkeypatch):
    """`rollout(model, decoder, prompts, score, eos_id, **extra)` replaces the default rollout (under
    no_grad, at generation steps only, never for validation); `after_step(model)` runs once per
    optimizer step, and its state resumes with the objective's state_dict."""
    from hooked_objectives import HookedGRPO
    from rizzrun.runner.task import LanguageModelTask

    seen = {}
    monkeypatch.setattr(LanguageModelTask, "on_train_end", lambda self: seen.update(objective=self.objective),
                        raising=False)
    hooked = ["objective._target_=hooked_objectives.HookedGRPO", "objective.beta=0.0", "objective.num_iterations=2",
              "trainer.val_every=2", "trainer.checkpoint_every=2"]
    straight = tmp_path / "straight"
    train(straight, *hooked, "trainer.max_steps=4", cache=shared_cache)
    whole = seen["objective"]
    assert isinstance(whole, HookedGRPO)
    assert whole.rollouts_made == 2 and whole.modes == [False, False]  # steps 1 and 3 generate
    assert whole.after_steps == 4
    split = tmp_path / "split"
    train(split, *hooked, "trainer.max_steps=2", cache=shared_cache)
    train(split, *hooked, "trainer.max_steps=4", "resume=true", cache=shared_cache)
    resumed = seen["objective"]
    assert resumed.after_steps == 4 and resumed.rollouts_made == 1
    assert resumed.weight_sum == whole.weight_sum  # the same policies after each step


# --- several processes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_follow_one_process_with_the_doubled_batch(strategy, tmp_path, shared_cache):
    """DDP, and FSDP2 (sharded parameters: the rollout's decoding steps and the shared-prompt log-probs
    gather them as forward does, decoding runs under no_grad). Each of 2 processes takes half of every prompt batch and generates all G completions of its own
    prompts (whole groups); completions are seeded per (step, prompt row, sample), so they are the ones
    one process makes with the whole batch, and the loss, rewards, gradient norm and held-out rewards
    follow that run's (within float tolerance). scale_rewards=batch: the std gathers both processes';
    loss_type=dapo: prepare gathers every process's token count (a collective each rank reaches; that it
    gives the global token mean is tests/test_grpo.py's two-process test, whose groups differ in length)."""
    common = [*TINY, "objective.num_iterations=2", "objective.scale_rewards=batch", "objective.loss_type=dapo",
              "trainer.max_steps=3",
              "trainer.val_every=3", "trainer.checkpoint_every=3", "scheduler=constant"]
    runs = {}
    for name, extra in (("one", ["data.batch_size=4"]), ("two", ["data.batch_size=2", "trainer.devices=2",
                                                                    f"trainer.strategy={strategy}"])):
        runs[name] = tmp_path / name
        done = subprocess.run([RIZZRUN, *common, *extra, f"hydra.run.dir={runs[name]}"], env=env(shared_cache),
                              capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-4000:]
    one, two = (read_metrics(runs[n] / layout.METRICS) for n in ("one", "two"))
    keys = ("train/loss", "train/reward", "train/kl", "train/grad_norm", "train/completions", "train/tokens",
            "train/completions/mean_length", "val/reward", "val/completions")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        for key in keys:
            if key in a:
                assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-6), (a["step"], key, a[key], b[key])
    assert one[0]["train/completions"] == 16  # 4 prompts x 4, over both processes
