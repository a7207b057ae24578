"""Hugging Face Llama checkpoints in and out: tiny random `transformers` Llama folders written to
tmp_path (no network) load into rizzrun's Llama with the logits `transformers` computes from the
same folder; rizzrun runs export to folders `transformers.AutoModelForCausalLM` loads with identical
weights and logits; every refusal names the tensor or field and what is supported."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from rizzrun.config import ConfigError, compose
from rizzrun.config.check import check_jobs
from rizzrun.models.hf_llama import HFCheckpointError, hf_llama_dims, load_llama, to_hf_state_dict
from rizzrun.models.llama import Llama, rope_inv_freq
from rizzrun.runner.checkpoint import FolderCheckpointIO
from rizzrun.runner.export import export_run

V = 61
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


def hf_folder(path: Path, seed: int = 0, shard: str | None = None, dtype=torch.float32, **overrides) -> Path:
    """A random transformers Llama saved with save_pretrained; init_std 0.2 makes the logits large
    (so 1e-5 is tight) and the attention far from uniform (so RoPE matters)."""
    settings = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.2,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    settings.update(overrides)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).to(dtype)
    model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
    return path


def hf_reference(path: Path):
    """transformers' own load of the folder, in fp32 with the explicit-softmax attention."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    return model.eval()


def ids(T: int, B: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def to_v4_config(path: Path) -> None:
    """Rewrite config.json in the transformers 4 layout: rope_theta and rope_scaling at the top
    level, torch_dtype (what most published Llama folders hold)."""
    config = json.loads((path / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    config["torch_dtype"] = config.pop("dtype", "float32")
    (path / "config.json").write_text(json.dumps(config))


# ---- logits equal transformers' ----------------------------------------------------------------

CASES = {
    "mha-untied": dict(num_key_value_heads=4),
    "gqa-tied": dict(tie_word_embeddings=True),
    "mqa-tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
    "llama3-rope-gqa": dict(rope_parameters={"rope_theta": 500000.0, **LLAMA3}),
    "sharded-tied": dict(tie_word_embeddings=True, num_hidden_layers=3),
    "v4-config-llama3": dict(rope_parameters={"rope_theta": 500000.0, **LLAMA3}, tie_word_embeddings=True),
    "bf16-checkpoint": dict(),
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(tmp_path, case):
    path = hf_folder(tmp_path / case, shard="20KB" if case.startswith("sharded") else None,
                     dtype=torch.bfloat16 if case.startswith("bf16") else torch.float32, **CASES[case])
    if case.startswith("sharded"):
        index = json.loads((path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) >= 3 and not (path / "model.safetensors").exists()
    if case.startswith("v4"):
        to_v4_config(path)
    ours = load_llama(path).eval()
    theirs = hf_reference(path)
    config = theirs.config
    assert (ours.config.n_kv_head, ours.config.tie_embeddings, ours.config.n_layer) == (
        config.num_key_value_heads, config.tie_word_embeddings, config.num_hidden_layers)
    assert (ours.lm_head.weight is ours.embed.weight) == config.tie_word_embeddings
    assert ours.num_params() == sum(p.numel() for p in theirs.parameters())
    assert all(p.dtype == torch.float32 and not p.is_meta for p in ours.parameters())
    x = ids(T=60)
    with torch.no_grad():
        got, want = ours(x), theirs(x).logits
    assert want.std() > 0.5  # far from zero: 1e-5 is a tight bound
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_llama3_rope_scaling_changes_the_logits(tmp_path):
    """The llama3 case above can only pass if the scaling is applied: without it the logits of
    positions past original_max_position_embeddings differ."""
    path = hf_folder(tmp_path / "m", rope_parameters={"rope_theta": 500000.0, **LLAMA3})
    scaled = load_llama(path).eval()
    plain = Llama(**{**scaled.config.__dict__, "rope_scaling": None}).eval()
    plain.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        gap = (scaled(ids(T=60)) - plain(ids(T=60))).abs().max()
    assert gap > 1e-2


def test_rope_inv_freq_matches_transformers_llama3():
    """Llama 3.1 8B's RoPE settings: all three bands (kept, blended, divided by factor) occur."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {**LLAMA3, "original_max_position_embeddings": 8192}
    config = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
                                      rope_parameters={"rope_theta": 500000.0, **scaling})
    want, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    got = rope_inv_freq(128, 500000.0, scaling)
    plain = rope_inv_freq(128, 500000.0)
    assert attention_factor == 1.0
    ratio = plain / got
    assert (ratio == 1).any() and (ratio == 8).any() and ((ratio > 1.01) & (ratio < 7.99)).any()
    torch.testing.assert_close(got, want, atol=0, rtol=1e-6)


def test_kv_cache_steps_match_parallel_on_a_loaded_model(tmp_path):
    path = hf_folder(tmp_path / "m", rope_parameters={"rope_theta": 500000.0, **LLAMA3})
    model = load_llama(path).eval()
    x = ids(T=40)
    with torch.no_grad():
        full = model(x)
        cache = model.init_cache(batch_size=2, max_len=40)
        steps = [model.step(x[:, :7], cache)] + [model.step(x[:, t:t + 1], cache) for t in range(7, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_smaller_max_seq_len_and_agreeing_dims_are_accepted(tmp_path):
    path = hf_folder(tmp_path / "m", tie_word_embeddings=True)
    full = load_llama(path).eval()
    short = load_llama(path, vocab_size=V, max_seq_len=32, n_layer=2, tie_embeddings=True, rope_theta=10000,
                       attention=None).eval()
    assert short.config.max_seq_len == 32 and short.rope_cos.shape == (32, 8)
    with torch.no_grad():
        torch.testing.assert_close(short(ids(T=32)), full(ids(T=32)), atol=0, rtol=0)


def test_hf_llama_dims_is_what_the_model_gets(tmp_path):
    path = hf_folder(tmp_path / "m", rope_parameters={"rope_theta": 500000.0, **LLAMA3})
    dims = hf_llama_dims(path)
    assert dims == dict(vocab_size=V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=64,
                        rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False, rope_scaling=LLAMA3)
    config = load_llama(path).config
    assert {k: getattr(config, k) for k in dims} == dims


def test_load_llama_builds_mixer_buffers_for_real_and_refuses_unknown_dimensions(tmp_path):
    """Weights come from the folder (the model is built on meta, never initialised); a mixer's own
    non-persistent buffers, which no checkpoint holds, are computed on the real device by its
    `reset_buffers(device)`; a mixer with parameters transformers' Llama lacks is refused."""
    from rizzrun.attention.sdpa import SDPAttention

    class ScaledSDPA(SDPAttention):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.register_buffer("scale", torch.empty(kwargs["n_head"]), persistent=False)
            self.reset_buffers(None)

        def reset_buffers(self, device):
            self.scale = torch.full((self.n_head,), 2.0, device=device)

    class GatedSDPA(SDPAttention):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gate = torch.nn.Parameter(torch.ones(kwargs["n_head"]))

        def reset_parameters(self, std, out_std):
            super().reset_parameters(std, out_std)
            torch.nn.init.ones_(self.gate)

    path = hf_folder(tmp_path / "m")
    model = load_llama(path, attention=ScaledSDPA)
    scales = [block.attn.scale for block in model.blocks]
    assert len(scales) == 2 and all(not t.is_meta and torch.equal(t, torch.full((4,), 2.0)) for t in scales)
    stored = load_file(path / "model.safetensors")
    for name, tensor in to_hf_state_dict(model).items():
        assert torch.equal(tensor, stored[name]), name
    with pytest.raises(ValueError, match=r"parameters with no transformers Llama equivalent: "
                                         r"blocks.0.attn.gate, blocks.1.attn.gate"):
        load_llama(path, attention=GatedSDPA)
    with pytest.raises(TypeError, match=r"load_llama\(\) got unknown dimension\(s\) size; allowed: vocab_size, "):
        load_llama(path, size="7b")


# ---- export: run folder -> Hugging Face folder -> transformers / rizzrun -----------------------------

SMALL = ["model.n_layer=2", "model.d_model=32", "model.n_head=4", "model.n_kv_head=2", "model.d_ff=48",
         "model.max_seq_len=64", "model.init_std=0.2", "model.rope_theta=500000", "data.seq_len=32"]


def run_folder(tmp_path: Path, *overrides: str, tokenizer=None) -> Path:
    """A run folder as the runner leaves it (config.yaml, tokenizer/, checkpoints/latest), with
    random weights; built directly, nothing trained."""
    from hydra.utils import instantiate

    from rizzrun.runner.build import build_model

    run_dir = tmp_path / "run"
    cfg = compose([*SMALL, *overrides])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tokenizer = tokenizer or instantiate(cfg.tokenizer)
    tokenizer.save(run_dir / "tokenizer")
    torch.manual_seed(3)
    model = build_model(cfg, tokenizer)
    # as the runner writes it: model.safetensors, state.pt, meta.json with their digests, latest
    FolderCheckpointIO().save_checkpoint({"global_step": 7, "state_dict": {f"model.{k}": v for k, v in
                                                                           model.state_dict().items()}},
                                         run_dir / "checkpoints" / "step-000007")
    return run_dir


@pytest.mark.parametrize("overrides", [
    ["model.tie_embeddings=true"],
    ["model.tie_embeddings=false", "model.n_kv_head=4"],
    ["model.tie_embeddings=false", "model.rope_scaling={rope_type: llama3, factor: 8.0, low_freq_factor: 1.0, "
                                   "high_freq_factor: 4.0, original_max_position_embeddings: 16}"],
], ids=["tied", "untied-mha", "untied-llama3-rope"])
def test_export_loads_in_transformers_and_back(tmp_path, overrides):
    run_dir = run_folder(tmp_path, *overrides)
    from rizzrun.runner.generate import load_run

    _, tokenizer, model = load_run(run_dir)
    out = tmp_path / "hf"
    lines = export_run(run_dir, out)
    assert "tokenizer: not written: the byte tokenizer has no Hugging Face form" in "\n".join(lines)

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] == model.config.tie_embeddings
    assert json.loads((out / "generation_config.json").read_text()) == {
        "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}
    stored = load_file(out / "model.safetensors")
    assert ("lm_head.weight" in stored) == (not model.config.tie_embeddings)

    theirs = hf_reference(out)  # asserts no missing / unexpected keys
    ours_hf = to_hf_state_dict(model)
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(tensor, ours_hf[name]), name
    x = ids(T=60)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(theirs(x).logits, want, atol=1e-5, rtol=0)
    assert want.std() > 0.5

    back = load_llama(out)
    assert dataclasses.replace(back.config, init_std=model.config.init_std) == model.config  # init_std: unused
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_export_bpe_tokenizer_matches_autotokenizer(tmp_path):
    from rizzrun.tokenizers.bpe import BPETokenizer

    texts = ["def f(x):\n    return x + 1\n", "Return the value of the café, naïve résumé.", "héllo wörld"] * 30
    bpe = BPETokenizer(vocab_size=300, min_frequency=2, cache_dir=str(tmp_path / "cache"))
    bpe.prepare(lambda: texts, "fixture-data")
    run_dir = run_folder(tmp_path, "tokenizer=bpe", "tokenizer.vocab_size=300", tokenizer=bpe)
    out = tmp_path / "hf"
    lines = export_run(run_dir, out)
    assert any(line.startswith("tokenizer: BPE (") for line in lines)
    auto = transformers.AutoTokenizer.from_pretrained(out)
    for text in ["", "Return the café", "naïve 日本語 😀", "a <eos> b<bos>", "  spaces\n\ttabs  "]:
        assert auto(text, add_special_tokens=False)["input_ids"] == bpe.encode(text), text
        assert auto.decode(bpe.encode(text)) == bpe.decode(bpe.encode(text)), text
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (bpe.bos_id, bpe.eos_id, bpe.pad_id)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}


def test_export_copies_a_hugging_face_tokenizer(tmp_path):
    """A run with tokenizer=hf exports that folder's own files; AutoTokenizer reads them back."""
    from rizzrun.tokenizers.bpe import BPETokenizer
    from rizzrun.tokenizers.hf import HFTokenizer

    bpe = BPETokenizer(vocab_size=280, min_frequency=2, cache_dir=str(tmp_path / "cache"))
    bpe.prepare(lambda: ["the cat sat on the mat, the end"] * 20, "fixture-data")
    export_run(run_folder(tmp_path / "a", "tokenizer=bpe", "tokenizer.vocab_size=280", tokenizer=bpe), tmp_path / "src")
    tok = HFTokenizer(str(tmp_path / "src"))
    run_dir = run_folder(tmp_path / "b", "tokenizer=hf", f"tokenizer.path={tmp_path / 'src'}", tokenizer=tok)
    lines = export_run(run_dir, tmp_path / "out")
    assert any(line.startswith("tokenizer: the run's Hugging Face tokenizer files (") for line in lines), lines
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert auto("the cat é", add_special_tokens=False)["input_ids"] == bpe.encode("the cat é")
    assert not (tmp_path / "out" / "rizzrun_tokenizer.json").exists()
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == bpe.eos_id


def test_export_command_refuses_a_non_empty_folder_unless_forced(tmp_path, capsys):
    from rizzrun.cli import main

    run_dir = run_folder(tmp_path)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "README.md").write_text("keep me")
    (out / "model-00001-of-00002.safetensors").write_text("stale shard")
    (out / "model.safetensors.index.json").write_text("{}")

    with pytest.raises(SystemExit) as info:
        main(["export", str(run_dir), str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"error: {out}: exists and is not empty; give a new folder, or pass --force "
                                       "to replace the model and tokenizer files in it\n")
    with pytest.raises(SystemExit) as info:
        main(["export", str(run_dir), str(out), "--force"])
    printed = capsys.readouterr().out
    assert info.value.code in (0, None), printed
    assert f"exported {run_dir} -> {out}" in printed and "byte tokenizer has no Hugging Face form" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors"]
    hf_reference(out)

    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "nope"), str(tmp_path / "x")])
    assert info.value.code == 2 and f"{tmp_path / 'nope'}: no such run folder" in capsys.readouterr().err


def test_export_of_a_run_that_started_from_pretrained(tmp_path):
    """A run fine-tuned from a Hugging Face folder exports with config.json's shape (not the size preset)."""
    source = hf_folder(tmp_path / "source", vocab_size=300, tie_word_embeddings=True)
    run_dir = run_folder(tmp_path, f"model.from_pretrained={source}", "model.n_layer=null", "model.d_model=null",
                         "model.n_head=null", "model.n_kv_head=null", "model.d_ff=null", "model.max_seq_len=null",
                         "model.rope_theta=null")
    export_run(run_dir, tmp_path / "hf")
    theirs = hf_reference(tmp_path / "hf")
    original = hf_reference(source)
    for name, tensor in original.state_dict().items():
        assert torch.equal(theirs.state_dict()[name], tensor), name


# ---- errors --------------------------------------------------------------------------------------

def edit_config(path: Path, **changes) -> Path:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return path


def edit_tensors(path: Path, drop=(), add=None) -> Path:
    tensors = load_file(path / "model.safetensors")
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(HFCheckpointError) as info:
        load_llama(path, **kwargs)
    return str(info.value)


def test_missing_unexpected_and_mis_shaped_tensors(tmp_path):
    path = edit_tensors(hf_folder(tmp_path / "m"), drop=["model.layers.1.mlp.up_proj.weight"],
                        add={"model.layers.0.self_attn.q_proj.bias": torch.zeros(32)})
    assert load_error(path) == (
        f"{path}: 2 problems:\n"
        "  - tensor model.layers.1.mlp.up_proj.weight is missing (config.json implies shape (48, 32))\n"
        "  - unexpected tensor model.layers.0.self_attn.q_proj.bias (32,) in model.safetensors: rizzrun's Llama "
        "has no such parameter (no biases, no extra heads)")

    path = edit_config(hf_folder(tmp_path / "kv"), num_key_value_heads=4)
    message = load_error(path)
    assert message.startswith(f"{path}: 4 problems:\n")
    assert ("  - tensor model.layers.0.self_attn.k_proj.weight has shape (16, 32) in model.safetensors, but "
            "config.json implies (32, 32)") in message

    untied = hf_folder(tmp_path / "untied")
    edit_tensors(untied, drop=["lm_head.weight"])
    assert load_error(untied) == (f"{untied}: tensor lm_head.weight is missing (config.json implies shape "
                                  f"({V}, 32))")


def test_sharded_folder_with_a_missing_shard(tmp_path):
    path = hf_folder(tmp_path / "m", shard="20KB")
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    shard = weight_map["model.layers.1.mlp.up_proj.weight"]
    (path / shard).unlink()
    message = load_error(path)
    assert message.startswith(f"{path / 'model.safetensors.index.json'}: weight_map names shard {shard} (for ")
    assert message.endswith("which is missing")


@pytest.mark.parametrize("changes,expected", [
    (dict(model_type="mistral"),
     'model_type="mistral" is not supported; supported: "llama" (transformers LlamaForCausalLM checkpoints)'),
    (dict(attention_bias=True), "attention_bias=true is not supported; supported: false (rizzrun's Llama has no biases)"),
    (dict(mlp_bias=True), "mlp_bias=true is not supported; supported: false (rizzrun's Llama has no biases)"),
    (dict(hidden_act="gelu"), 'hidden_act="gelu" is not supported; supported: "silu" (SwiGLU)'),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}),
     'rope_parameters.rope_type="yarn" is not supported; supported: "default", "llama3" (Llama 3.1 scaling, '
     "arXiv 2407.21783)"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 4.0,
                           "high_freq_factor": 1.0}),
     "rope_parameters.high_freq_factor=1.0 must be greater than low_freq_factor=4.0 (the two bound the smoothly "
     "scaled band)"),
    (dict(head_dim=16), "head_dim=16 is not supported with hidden_size=32 and num_attention_heads=4; supported: "
                        "head_dim = hidden_size / num_attention_heads = 8 (rizzrun's Llama derives it)"),
    (dict(num_attention_heads=3, num_key_value_heads=1, head_dim=None),
     "rizzrun's Llama cannot take this shape: num_attention_heads (n_head)=3 must divide hidden_size (d_model)=32; "
     "allowed n_head: 1, 2, 4, 8, 16"),
], ids=["model_type", "attention_bias", "mlp_bias", "hidden_act", "rope_type", "llama3-factors", "head_dim",
        "heads"])
def test_unsupported_config_fields(tmp_path, changes, expected):
    path = edit_config(hf_folder(tmp_path / "m"), **changes)
    assert load_error(path) == f"{path / 'config.json'}: {expected}"


def test_dimensions_conflicting_with_config_json(tmp_path):
    path = hf_folder(tmp_path / "m")
    config = path / "config.json"
    assert load_error(path, n_layer=3, max_seq_len=128, tie_embeddings=True) == (
        f"{path}: 3 problems:\n"
        f"  - n_layer=3 conflicts with num_hidden_layers=2 in {config}; allowed: null (take config.json's) or 2\n"
        f"  - max_seq_len=128 conflicts with max_position_embeddings=64 in {config}; allowed: null (take "
        "config.json's) or an integer <= 64\n"
        f"  - tie_embeddings=true conflicts with tie_word_embeddings=false in {config}; allowed: null (take "
        "config.json's) or false")
    assert load_error(path, rope_scaling=LLAMA3) == (
        f"{path}: rope_scaling={json.dumps(LLAMA3)} conflicts with rope_scaling=null in {config}; allowed: null "
        "(take config.json's) or null")


def test_missing_folder_and_files(tmp_path):
    assert load_error(tmp_path / "nope") == (
        f"{tmp_path / 'nope'}: no such folder; give a local Hugging Face Llama folder (config.json + "
        "model.safetensors or model.safetensors.index.json + shards)")
    (tmp_path / "empty").mkdir()
    assert load_error(tmp_path / "empty") == (
        f"{tmp_path / 'empty'}: has no config.json (it holds: nothing); a Hugging Face model folder has "
        "config.json beside the weights")
    path = hf_folder(tmp_path / "m")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    assert load_error(path) == (
        f"{path}: has no model.safetensors and no model.safetensors.index.json (found pytorch_model.bin: rizzrun "
        "reads safetensors only); save the model with transformers' save_pretrained (safetensors)")


def test_rope_scaling_argument_errors():
    with pytest.raises(ValueError, match=r'rope_scaling.rope_type="linear" is not supported; supported: '
                                         r'"default", "llama3"'):
        Llama(V, n_layer=1, rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match=r"rope_scaling \(rope_type 'llama3'\) is missing low_freq_factor, "
                                         r"high_freq_factor, original_max_position_embeddings"):
        Llama(V, n_layer=1, rope_scaling={"rope_type": "llama3", "factor": 8.0})


# ---- validation (no torch) and the runner's vocabulary ---------------------------------------------

def problems_of(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_jobs(list(overrides))
    return info.value.problems


SHORT_SAMPLES = "decoder.max_new_tokens=32"


def test_validation_reads_config_json(tmp_path):
    path = hf_folder(tmp_path / "m", vocab_size=300)
    config = path / "config.json"
    # These folders hold 64 positions: the default samples at validation (14-token prompt + 64 new
    # tokens) would not fit, which validate reports too, so they sample 32 tokens here.
    check_jobs([f"model.from_pretrained={path}", "data.seq_len=64", SHORT_SAMPLES])  # ok: byte tokenizer (259) fits in 300
    assert problems_of(f"model.from_pretrained={path}", "model.n_head=8", "model.max_seq_len=32",
                       "data.seq_len=32") == [
        f"model.n_head=8: conflicts with num_attention_heads=4 in {config}; allowed: null (take config.json's) or 4"]
    assert problems_of(f"model.from_pretrained={path}", "data.seq_len=65", SHORT_SAMPLES) == [
        f"data.seq_len=65: longer than the model's max_seq_len=64 (from max_position_embeddings in {config}); "
        "allowed: data.seq_len <= 64"]
    small = hf_folder(tmp_path / "small")  # vocab 61 < the byte tokenizer's 259
    assert problems_of(f"model.from_pretrained={small}", "data.seq_len=64", SHORT_SAMPLES) == [
        f"model.from_pretrained='{small}': the model's vocabulary (vocab_size=61 in its config.json) is smaller "
        "than the tokenizer's (rizzrun.tokenizers.byte.ByteTokenizer: 259 ids); use the checkpoint's own "
        "tokenizer, or one with at most 61 ids"]
    edit_config(small, model_type="gpt2", mlp_bias=True)
    assert problems_of(f"model.from_pretrained={small}") == [
        f"model.from_pretrained='{small}': {small / 'config.json'}: model_type=\"gpt2\" is not supported; "
        "supported: \"llama\" (transformers LlamaForCausalLM checkpoints)",
        f"model.from_pretrained='{small}': {small / 'config.json'}: mlp_bias=true is not supported; supported: "
        "false (rizzrun's Llama has no biases)"]
    assert problems_of("model.from_pretrained=3") == [  # read by the runner, still type-checked
        "model.from_pretrained=3: expected str or null, got int; quote it to pass text: model.from_pretrained='3'"]
    assert problems_of("model.rope_scaling={rope_type: yarn}") == [
        "model.rope_scaling.rope_type=\"yarn\": is not supported; supported: \"default\", \"llama3\" ('llama3': "
        "Llama 3.1 frequency scaling, arXiv 2407.21783)"]


def test_build_checks_the_tokenizer_against_config_json(tmp_path):
    from rizzrun.runner.build import vocab_size
    from rizzrun.tokenizers.byte import ByteTokenizer

    path = hf_folder(tmp_path / "m")
    cfg = compose([f"model.from_pretrained={path}"])
    with pytest.raises(ValueError) as info:
        vocab_size(cfg, ByteTokenizer())
    assert str(info.value) == (
        f"model.from_pretrained={path}: the tokenizer (ByteTokenizer) has 259 ids but the model's vocabulary has "
        f"{V} (vocab_size in {path / 'config.json'}); use the checkpoint's own tokenizer, or one with at most "
        f"{V} ids")
    cfg = compose([f"model.from_pretrained={hf_folder(tmp_path / 'big', vocab_size=300)}", "model.vocab_size=400"])
    with pytest.raises(ValueError, match=r"model.vocab_size=400 conflicts with vocab_size=300 in .*config.json; "
                                         r"allowed: null \(take config.json's\) or 300"):
        vocab_size(cfg, ByteTokenizer())


def test_validate_command_without_torch(tmp_path):
    """`rizzrun validate model.from_pretrained=...` reads the folder with no torch import, and a
    missing folder is exit 2 with its path."""
    good = hf_folder(tmp_path / "good", vocab_size=300)
    code = (
        "import sys\n"
        "from rizzrun.cli import main\n"
        "codes = []\n"
        "for argv in (['validate', 'model.from_pretrained=/nope'], ['validate', *sys.argv[1:]],\n"
        "             ['show', *sys.argv[1:]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        codes.append(e.code or 0)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'safetensors', 'transformers'})\n"
        "print('CODES', codes, 'HEAVY', heavy)\n"
    )
    env = {**os.environ, "RIZZRUN_OUTPUTS": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code, f"model.from_pretrained={good}", "data.seq_len=64",
                             SHORT_SAMPLES],
                            cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "CODES [2, 0, 0] HEAVY []", result.stderr
    assert result.stderr == (
        "error: model.from_pretrained='/nope': no such folder; give a local Hugging Face Llama folder "
        "(config.json + model.safetensors or model.safetensors.index.json + shards)\n")
    assert "from_pretrained: " + str(good) in result.stdout
    assert ("# model dimensions after the size preset: vocab_size=300, d_model=32, n_layer=2, n_head=4, "
            "n_kv_head=2, d_ff=48, max_seq_len=64") in result.stdout
