"""The goldfish recipes: the tiny ones run in CI (repro), the paper-scale ones compose,
validate and build on the meta device with the published parameter counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rizzrun.config import ConfigError, load

REPO = Path(__file__).resolve().parents[1]


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


def meta_params(cfg) -> int:
    from hydra.utils import instantiate

    from rizzrun.runner.build import build_model

    tokenizer = instantiate(cfg.tokenizer)
    with torch.device("meta"):
        model = build_model(cfg, tokenizer, pretrained_weights=False)
    return sum(p.numel() for p in model.parameters())


def test_goldfish_7b_builds_llama2_7b_on_meta(tmp_path):
    folder = llama2_7b_folder(tmp_path / "Llama-2-7b-hf")
    (tmp_path / "articles.jsonl").write_text('{"text": "a"}\n')  # validate checks that data.path exists
    cfg = load(["+recipe=goldfish_7b", f"model.from_pretrained={folder}", f"data.path={tmp_path / 'articles.jsonl'}"])
    assert cfg.objective.k == 4 and cfg.objective.context_width == 13 and cfg.data.packing == "document"
    assert cfg.tokenizer.path == str(folder)
    assert meta_params(cfg) == 6_738_415_616  # Llama-2-7B


def test_goldfish_7b_says_what_is_missing():
    with pytest.raises(ConfigError) as e:
        load(["+recipe=goldfish_7b"])
    text = str(e.value)
    assert "model.from_pretrained=???: required value is not set" in text
    assert "data.path=???: required value is not set" in text
    done = subprocess.run([str(Path(sys.executable).with_name("rizzrun")), "+recipe=goldfish_7b"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "model.from_pretrained=???" in done.stderr and "Traceback" not in done.stderr


def test_goldfish_1b_builds_tinyllama_on_meta(tmp_path):
    folder = tokenizer_folder(tmp_path / "llama2-tokenizer")
    (tmp_path / "corpus").mkdir()  # validate checks that data.path exists
    cfg = load(["+recipe=goldfish_1b", f"tokenizer.path={folder}", f"data.path={tmp_path / 'corpus'}"])
    assert cfg.model.size == "1b" and cfg.data.seq_len == 2048 and cfg.objective.k == 4
    assert meta_params(cfg) == 1_100_048_384  # TinyLlama-1.1B


@pytest.mark.parametrize("recipe", ["ce_memorize_tiny", "goldfish_tiny"])
def test_tiny_memorization_recipes_validate_with_eval_at_end(recipe):
    cfg = load([f"+recipe={recipe}"])
    assert cfg.eval.at_end and cfg.data.max_train_docs == 20 and cfg.data.packing == "document"
    assert cfg.objective._target_.endswith("CrossEntropy" if recipe.startswith("ce") else "Goldfish")


@pytest.mark.parametrize("recipe", ["ce_memorize_tiny", "goldfish_tiny"])
def test_tiny_memorization_recipes_run_end_to_end(recipe, tmp_path, shared_cache):
    """The recipe as shipped, shortened to a few steps: trains, evaluates itself at the end
    (eval.json, mem/* metrics) and, for goldfish, logs the three losses."""
    from rizzrun.runner.metrics import read_metrics
    from rizzrun.runner.train import run

    cfg = load([f"+recipe={recipe}", "logger=none", f"cache_dir={shared_cache}", "trainer.max_steps=4",
                "trainer.val_every=4", "trainer.checkpoint_every=4", "trainer.log_every=1", "scheduler.warmup_steps=1",
                "eval.max_documents=3", "eval.continuation_len=8"])
    summary = run(cfg, tmp_path / recipe)
    assert summary["eval"]["documents"] == 3
    assert (tmp_path / recipe / "eval.json").is_file()
    rows = read_metrics(tmp_path / recipe / "metrics.jsonl")
    assert any("mem/rougeL" in r for r in rows)
    train_keys = set().union(*(r for r in rows if "train/loss" in r))
    assert "train/loss" in train_keys
    if recipe == "goldfish_tiny":
        assert {"train/loss_all_tokens", "train/loss_dropped_tokens", "train/dropped_fraction"} <= train_keys
        fractions = [r["train/dropped_fraction"] for r in rows if "train/dropped_fraction" in r]
        assert all(0.1 < f < 0.4 for f in fractions), fractions  # ~1/k of the targets, k = 4
    else:
        assert "train/loss_dropped_tokens" not in train_keys
