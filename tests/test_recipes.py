"""Every recipe in `recipes/` is exercised here; a new recipe file is picked up automatically.

The rule that sorts them, from the recipe itself: a recipe that composes with no `???` value is
complete, so it must be CPU-scale and train as shipped — it trains a few steps here, shortened by
the overrides of `SHORTEN` (each says which of the recipe's own values it replaces, and why); a
sample job (`job: sample`) generates a few completions instead. A recipe that leaves `???` values
needs local inputs (a checkpoint folder, a corpus, a tokenizer): it is paper-scale, so it must name
what is missing when those inputs are absent, and, given stand-ins for them, validate and build on
the meta device with its published parameter count. A pipeline (`stages`) is a list of runs of
other recipes: each of its stages must be a shipped recipe, tested here on its own.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from rizzrun import layout, paths
from rizzrun.config import ConfigError, compose, load, signatures

RECIPES = sorted(p.stem for p in paths.recipes_dir().glob("*.yaml"))

# Shortening a CPU-scale recipe to a test, each override replacing a recipe value that is slow:
SHORTEN = [
    "trainer.max_steps=2",        # hundreds of steps -> 2
    "trainer.val_every=2",        # validate once, at the last step
    "trainer.val_batches=1",      # 20 validation batches -> 1
    "scheduler.warmup_steps=1",   # the recipes' 50 warmup steps do not fit in 2
    "trainer.log_every=1",        # a metrics row at each of the 2 steps
    "logger=none",                # W&B's start-up (seconds); metrics.jsonl is written regardless
    "decoder.max_new_tokens=4",   # samples at validation: 64 new tokens -> 4
    "sample.max_prompts=3",       # a sample job: hundreds of prompts per split -> 3 ...
    "sample.num_generations=2",   # ... and 8 completions each -> 2
    "eval.max_documents=2",       # eval.at_end: greedy extraction of 20 documents -> 2 ...
    "eval.continuation_len=8",    # ... and 64 tokens -> 8
]
# Where the data option has it: the whole corpus (thousands of documents, all tokenized, and a
# validation split that eval.at_end's held-out loss reads entirely) -> its first 300 documents.
SHORTEN_DATA = "data.max_docs=300"
# The published parameter count of each paper-scale recipe's model (32,000-token vocabulary).
PAPER_PARAMS = {
    "goldfish_1b": 1_100_048_384,  # TinyLlama-1.1B
    "goldfish_7b": 6_738_415_616,  # Llama-2-7B
    "dpo_7b": 6_738_415_616,  # Llama-2-7B
    "grpo_7b": 6_738_415_616,  # Llama-2-7B
    "minillm_7b": 6_738_415_616,  # the LLaMA-7B student (its teacher: 13B, a stand-in folder here)
    "warp_7b": 6_738_415_616,  # Llama-2-7B shape (the paper: Gemma 7B)
    "score_7b": 6_738_415_616,  # Llama-2-7B shape (the paper: Gemini 1.5 Flash)
    "bspo_7b": 6_738_415_616,  # Llama-2-7B shape (its ScoreLM: a run folder stand-in)
    "spar_7b": 6_738_415_616,  # the actor's DPO: Llama-2-7B shape (the paper: LLaMA3-8B)
}


@lru_cache(maxsize=None)
def missing_inputs(recipe: str) -> tuple[str, ...]:
    """The recipe's `???` keys (the inputs it needs), hydra's own node left aside."""
    def walk(node, prefix):
        for key in node:
            if OmegaConf.is_missing(node, key):
                yield f"{prefix}{key}"
            elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
                yield from walk(node[key], f"{prefix}{key}.")

    cfg = compose([f"+recipe={recipe}"])
    return tuple(sorted(k for k in walk(cfg, "") if not k.startswith("hydra.")))


RUN_REFERENCE = re.compile(r"\$\{run:([^}]+)\}")


@lru_cache(maxsize=None)
def starts_from(recipe: str) -> tuple[str, ...]:
    """The runs a recipe starts from, by name (`${run:NAME}`, e.g. dpo_tiny's sft_tiny)."""
    text = json.dumps(OmegaConf.to_container(compose([f"+recipe={recipe}"]), resolve=False))
    return tuple(sorted(set(RUN_REFERENCE.findall(text))))


def run_folder(outputs: Path, name: str) -> Path:
    """Where `${run:NAME}` finds NAME's run under output_root (rizzrun.config.resume.latest_run)."""
    return outputs / "2026-01-01" / f"00-00-00-{name}"


def refine_outputs(folder: Path) -> None:
    """Files as a refine run (job=refine) leaves them, where it left none: 40 SPaR pairs, 40 control pairs
    and 20 RFT documents of the signed-reversal task. A shortened refiner (2 steps) repairs nothing, so a
    recipe that trains on a refine run's output gets these in its start's folder; the search itself is
    tests/test_spar.py's."""
    pair = json.dumps({"prompt": "rev:ab=", "chosen": "ba/xyz", "rejected": "bb/abc"}) + "\n"
    for name in ("spar", "independent"):
        path = folder / "pairs" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or not path.read_text().strip():
            path.write_text(pair * 40)
    rft = folder / "rft" / "train.jsonl"
    rft.parent.mkdir(parents=True, exist_ok=True)
    if not rft.exists() or not rft.read_text().strip():
        rft.write_text((json.dumps({"text": "fix:bb/abc>rev:ab=ba/abc"}) + "\n") * 20)


def runs_it_starts_from(recipe: str, outputs: Path) -> Path | None:
    """Stand-ins for the runs `recipe` starts from: folders holding each run's config (as its recipe
    composes it) and a checkpoint pointer, enough for `${run:NAME}` and validation; the output_root
    to give, or None when the recipe starts from no run."""
    names = starts_from(recipe)
    for name in names:
        folder = run_folder(outputs, name)
        (folder / layout.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        runs_it_starts_from(name, outputs)  # the runs it starts from, first
        cfg = load([f"+recipe={name}", *([f"output_root={outputs}"] if starts_from(name) else [])])
        (folder / layout.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (folder / layout.LATEST).write_text(layout.step_dir_name(1) + "\n")
        if cfg.job in ("sample", "synthesize"):  # what a sample run leaves: its rollouts (a later run's data.path)
            (folder / "rollouts").mkdir(exist_ok=True)
            (folder / "rollouts" / "train.jsonl").write_text("")
        if cfg.job == "refine":  # what a refine run leaves: SPaR pairs, the control pairs, the refiner's RFT set
            refine_outputs(folder)
    return outputs if names else None


@lru_cache(maxsize=None)
def stage_recipes(recipe: str) -> tuple[str, ...] | None:
    """The recipes a pipeline recipe's stages run (`+recipe=NAME`), or None for a single run."""
    stages = compose([f"+recipe={recipe}"]).get("stages")
    if not stages:
        return None
    return tuple(o.split("=", 1)[1] for s in stages for o in s.overrides if str(o).startswith("+recipe="))


# A stage's recipe shortened for a test may need more: its start is a 2-step model that never emits
# EOS, so every sampled completion is truncated (kept here) and no reward clears a quantile.
# regenesis_sft_tiny: a 2-step seed model gets no reasoning path right, so keep every path.
EXTRA = {"rest_improve_tiny": ["data.drop_truncated=false", "data.quantile=null"],
         "regenesis_sft_tiny": ["data.min_reward=null"]}
# ... and so may a shortened run that another one starts from: a proxy reward model's pairs need
# completions of one prompt with different rewards, which the 2-step model's truncated samples are
# not; the data's reference answers (reward 1) give each prompt one.
START_EXTRA = {"bspo_sample_tiny": ["sample.include_reference=true"],
               "bspo_scorelm_tiny": ["data.references=true", "data.drop_truncated=false"],
               # a path synthesis job: 2 problems per task, short paths (the 2-step model never stops)
               "regenesis_synth_tiny": ["synthesize.problems=2", "synthesize.val_problems=2", "decoder.max_new_tokens=8"],
               # a refine job: 3 failing samples searched
               "spar_refine_tiny": ["refine.max_roots=3"]}
EXTRA["spar_refine_tiny"] = START_EXTRA["spar_refine_tiny"]
EXTRA["regenesis_synth_tiny"] = START_EXTRA["regenesis_synth_tiny"]
EXTRA["bspo_scorelm_tiny"] = START_EXTRA["bspo_scorelm_tiny"]

PIPELINES = [r for r in RECIPES if stage_recipes(r)]
PAPER_SCALE = [r for r in RECIPES if missing_inputs(r)]
CPU_SCALE = [r for r in RECIPES if r not in PAPER_SCALE and r not in PIPELINES]


@pytest.mark.parametrize("recipe", PIPELINES)
def test_a_pipeline_runs_shipped_recipes_tested_here(recipe, tmp_path):
    """A pipeline's stages are shipped single-run recipes (each trained or sampled by the tests here);
    the pipeline itself validates with every stage (rizzrun.runner.pipeline; its mechanics:
    tests/test_pipeline.py)."""
    assert set(stage_recipes(recipe)) <= set(CPU_SCALE)
    assert load([f"+recipe={recipe}"]).stages[0].name


def test_every_recipe_is_classified_and_both_kinds_exist():
    assert set(PAPER_SCALE) | set(CPU_SCALE) | set(PIPELINES) == set(RECIPES) and len(RECIPES) >= 5
    assert {"tiny", "goldfish_tiny", "ce_memorize_tiny"} <= set(CPU_SCALE)
    assert {"goldfish_1b", "goldfish_7b", "dpo_7b"} <= set(PAPER_SCALE)
    assert {"dpo_tiny", "dpo_precomputed_tiny", "d2po_tiny", "smpo_tiny", "rm_tiny", "rrm_tiny"} <= set(CPU_SCALE)


# ---- stand-ins for a paper-scale recipe's local inputs ---------------------------------------------

def tokenizer_folder(path: Path, vocab: int = 32000) -> Path:
    """A WordLevel tokenizer with Llama-2's vocabulary size and special tokens."""
    path.mkdir(parents=True, exist_ok=True)
    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tokenizer = {"version": "1.0", "truncation": None, "padding": None,
                 "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                                   "normalized": False, "special": True} for t, i in list(words.items())[:3]],
                 "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
                 "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}}
    (path / "tokenizer.json").write_text(json.dumps(tokenizer))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return path


def llama2_7b_folder(path: Path) -> Path:
    """config.json of Llama-2-7B (as published) + its tokenizer; the weights file is a stand-in:
    validation checks that it exists, the meta-device build never reads it."""
    tokenizer_folder(path)
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 32000, "tie_word_embeddings": False,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}))
    (path / "model.safetensors").write_bytes(b"")
    return path


def llama2_13b_folder(path: Path) -> Path:
    """config.json of Llama-2-13B (as published) + the Llama-2 tokenizer: a teacher's stand-in."""
    llama2_7b_folder(path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                  num_key_value_heads=40)
    (path / "config.json").write_text(json.dumps(config))
    return path


def run_folder_stand_in(path: Path) -> Path:
    """A run folder as the validator reads one (its config.yaml): an input that names a run (a
    ScoreLM, a reward model); the meta-device build never loads it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / layout.CONFIG).write_text(f"name: {path.name}\n")
    return path


def documents(path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": f"Article {i}: " + "words " * 50}) + "\n" for i in range(4)))
    return path


# For each input a paper-scale recipe may leave `???`: how to make a local stand-in for it.
STAND_INS = {
    "model.from_pretrained": lambda tmp: llama2_7b_folder(tmp / "Llama-2-7b-hf"),
    "tokenizer.path": lambda tmp: tokenizer_folder(tmp / "llama2-tokenizer"),
    "data.path": lambda tmp: documents(tmp / "articles.jsonl"),
    "objective.models.teacher": lambda tmp: llama2_13b_folder(tmp / "Llama-2-13b-hf"),
    "rewards.rm.path": lambda tmp: run_folder_stand_in(tmp / "scorelm"),
}


def with_stand_ins(recipe: str, tmp_path: Path) -> list[str]:
    unknown = [k for k in missing_inputs(recipe) if k not in STAND_INS]
    assert not unknown, f"recipe {recipe} needs {unknown}: add a stand-in for each to STAND_INS"
    tmp_path.mkdir(parents=True, exist_ok=True)
    return [f"+recipe={recipe}", *(f"{k}={STAND_INS[k](tmp_path)}" for k in missing_inputs(recipe))]


def meta_params(cfg) -> int:
    from hydra.utils import instantiate

    from rizzrun.runner.build import build_model

    tokenizer = instantiate(cfg.tokenizer)
    with torch.device("meta"):
        model = build_model(cfg, tokenizer, pretrained_weights=False)
    assert all(p.is_meta for p in model.parameters())  # no memory, no init
    return sum(p.numel() for p in model.parameters())


# ---- paper-scale recipes -----------------------------------------------------------------------------

def required_in_yaml(node, prefix=""):
    """The keys a recipe file itself sets to ??? (its defaults list aside)."""
    for key, value in (node or {}).items():
        if key == "defaults":
            continue
        if value == "???":
            yield f"{prefix}{key}"
        elif isinstance(value, dict):
            yield from required_in_yaml(value, f"{prefix}{key}.")


@pytest.mark.parametrize("recipe", RECIPES)
def test_what_a_recipe_marks_required_stays_required(recipe):
    """A ??? merged over an option's value keeps that value (OmegaConf), so a recipe's ??? over, say,
    an objective's `models.behavior: null` would silently be null: every ??? a recipe writes must
    still be missing once composed."""
    import yaml

    raw = yaml.safe_load((paths.recipes_dir() / f"{recipe}.yaml").read_text())
    lost = [k for k in required_in_yaml(raw) if k not in missing_inputs(recipe)]
    assert not lost, f"{recipe}: {lost} composed to a value; write it as an interpolation or in the option"


@pytest.mark.parametrize("recipe", PAPER_SCALE)
def test_paper_scale_recipe_names_its_missing_inputs(recipe, tmp_path):
    missing = missing_inputs(recipe)
    with pytest.raises(ConfigError) as e:
        load([f"+recipe={recipe}"])
    for key in missing:
        assert f"{key}=???: required value is not set" in str(e.value)
    # ... and nothing else (an unknown checkpoint must not be judged by the size preset's shape):
    # every problem is about one of the missing inputs
    assert all(any(key in p for key in missing) for p in e.value.problems), e.value.problems
    done = subprocess.run([str(Path(sys.executable).with_name("rizzrun")), f"+recipe={recipe}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "RIZZRUN_OUTPUTS": str(tmp_path / "outputs")})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert all(f"{key}=???" in done.stderr for key in missing), done.stderr


@pytest.mark.parametrize("recipe", PAPER_SCALE)
def test_paper_scale_recipe_builds_its_published_shape_on_meta(recipe, tmp_path):
    assert recipe in PAPER_PARAMS, f"add {recipe}'s published parameter count to PAPER_PARAMS"
    cfg = load(with_stand_ins(recipe, tmp_path))
    assert meta_params(cfg) == PAPER_PARAMS[recipe]


def test_goldfish_paper_recipes_hold_the_papers_settings(tmp_path):
    """Hans et al., arXiv 2406.10209: k=4, h=13; sec. 4.1 (7B, documents as samples, its own
    tokenizer) and sec. 4.2 (1.1B from scratch, 2048-token rows)."""
    cfg = load(with_stand_ins("goldfish_7b", tmp_path / "7b"))
    assert cfg.objective.k == 4 and cfg.objective.context_width == 13 and cfg.data.packing == "document"
    assert cfg.tokenizer.path == cfg.model.from_pretrained
    cfg = load(with_stand_ins("goldfish_1b", tmp_path / "1b"))
    assert cfg.model.size == "1b" and cfg.data.seq_len == 2048 and cfg.objective.k == 4
    assert cfg.objective.context_width == 13


# ---- CPU-scale recipes -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outputs_with_starts(tmp_path_factory, shared_cache):
    """An output_root where the runs recipes start from are trained once (shortened), on demand."""
    from rizzrun.runner.train import run

    outputs = tmp_path_factory.mktemp("outputs")

    def with_starts(recipe: str) -> Path:
        for name in starts_from(recipe):
            with_starts(name)  # what it starts from, first (a sample run starts from a trained one)
            done = run_folder(outputs, name) / layout.SUMMARY
            if not (done.exists() and json.loads(done.read_text())["status"] == "completed"):
                cfg = load([f"+recipe={name}", f"cache_dir={shared_cache}", f"output_root={outputs}", *SHORTEN,
                            *START_EXTRA.get(name, [])])
                run(cfg, run_folder(outputs, name))
                if cfg.job == "refine":  # its pairs, where a 2-step refiner found none (refine_outputs)
                    refine_outputs(run_folder(outputs, name))
        return outputs

    return with_starts


@pytest.mark.parametrize("recipe", CPU_SCALE)
def test_cpu_scale_recipe_trains(recipe, tmp_path, shared_cache, outputs_with_starts):
    """The recipe as shipped, shortened by SHORTEN: a finite loss at each step, a checkpoint of the
    last one, and what the recipe promises besides (an eval at the end, goldfish's losses)."""
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    outputs = outputs_with_starts(recipe)  # a recipe that starts from another one's run: that run first
    shipped = load([f"+recipe={recipe}", f"output_root={outputs}"])
    assert shipped.trainer.accelerator == "cpu" and shipped.model.size in ("tiny", "small"), (
        f"recipe {recipe} needs no local input, so it must train on a CPU as shipped; a paper-scale recipe "
        "leaves its inputs ??? (see this file's docstring)")
    shorten = [*SHORTEN, *([SHORTEN_DATA] if "max_docs" in shipped.data else [])]
    cfg = load([f"+recipe={recipe}", f"cache_dir={shared_cache}", f"output_root={outputs}", *shorten,
                *EXTRA.get(recipe, [])])
    run_dir = tmp_path / recipe
    summary = run(cfg, run_dir)
    if shipped.job == "sample":  # generates instead of training: 3 prompts x 2 completions per split
        assert summary["status"] == "completed"
        for split in shipped.sample.splits:
            assert summary["splits"][split]["completions"] == 3 * 2
            assert len((run_dir / "rollouts" / f"{split}.jsonl").read_text().splitlines()) == 3 * 2
        return
    if shipped.job == "refine":  # searches repairs instead of training (rizzrun.runner.refine_job)
        assert summary["status"] == "completed"
        for name in ("pairs/spar.jsonl", "pairs/independent.jsonl", "rft/train.jsonl"):
            assert (run_dir / name).is_file(), name
        return
    if shipped.job == "synthesize":  # synthesises reasoning paths instead of training (rizzrun.selfplay.job)
        assert summary["status"] == "completed"
        assert (run_dir / "rollouts" / "train.jsonl").read_text().count("\n") >= 2 * len(shipped.synthesize.tasks)
        return

    rows = read_metrics(run_dir / layout.METRICS)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    assert summary["step"] == 2
    if signatures.resolve(shipped.data._target_).attrs.get("batch_kind") == "prompts":  # judged by rewards
        assert math.isfinite(summary["val_reward"]) and summary["val_loss"] is None
    else:
        assert math.isfinite(summary["val_loss"])
    assert (run_dir / layout.LATEST).read_text().strip() == layout.step_dir_name(2)
    assert (layout.checkpoints_dir(run_dir) / layout.step_dir_name(2) / layout.WEIGHTS).is_file()

    if shipped.eval.at_end:  # what each recipe is judged by, at its end (rizzrun.runner.evaluate)
        assert (run_dir / layout.EVAL).is_file()
        judged = summary["eval"]
        if "documents" in judged:  # a corpus: memorization
            assert judged["documents"] == 2 and any("mem/rougeL" in r for r in rows)
        if "task" in judged:  # a verifiable task: greedy answers to held-out prompts
            assert judged["task"]["n"] == 2 and any("task/correct_rate" in r for r in rows)
        if "sets" in judged:  # pairs: the objective's metrics on the held-out pairs and eval sets
            assert judged["val"]["pairs"] > 0 and any("eval/val/rewards/accuracies" in r for r in rows)
        if "rewards" in judged:  # prompts: the rewards of greedy completions of held-out prompts
            assert judged["rewards"]["completions"] == 2 and any("eval/val/reward" in r for r in rows)
        assert {"documents", "task", "sets", "rewards"} & set(judged)
    train_keys = set().union(*(r for r in rows if "train/loss" in r))
    if shipped.objective._target_.endswith("Goldfish"):
        assert {"train/loss_all_tokens", "train/loss_dropped_tokens", "train/dropped_fraction"} <= train_keys
        fractions = [r["train/dropped_fraction"] for r in rows if "train/dropped_fraction" in r]
        assert all(0.1 < f < 0.4 for f in fractions), fractions  # ~1/k of the targets, k = 4
    else:
        assert "train/loss_dropped_tokens" not in train_keys


@pytest.mark.parametrize("recipe", ["ce_memorize_tiny", "goldfish_tiny"])
def test_tiny_memorization_recipes_validate_with_eval_at_end(recipe):
    cfg = load([f"+recipe={recipe}"])
    assert cfg.eval.at_end and cfg.data.max_train_docs == 20 and cfg.data.packing == "document"
    assert cfg.objective._target_.endswith("CrossEntropy" if recipe.startswith("ce") else "Goldfish")
