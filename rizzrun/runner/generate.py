"""`rizzrun generate RUN_DIR --prompt ...`: rebuild a run's model from its folder and decode;
`rizzrun generate --model HF_FOLDER --prompt ...`: the same decoders on a model trained elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def load_run(run_dir: Path):
    """(config, tokenizer, model) of a run folder: the model rebuilt from its config.yaml (under
    `model.from_pretrained`, config.json's shape, not its weights) with its latest checkpoint.
    Shared by generate, eval and export."""
    from rizzrun.runner.build import build_model
    from rizzrun.runner.checkpoint import WEIGHTS, latest_checkpoint, load_weights
    from rizzrun.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a rizzrun run folder (no config.yaml)")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoints/latest is missing)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    model = build_model(cfg, tokenizer, pretrained_weights=False)  # the checkpoint replaces them
    model.load_state_dict(load_weights(checkpoint / WEIGHTS))
    return cfg, tokenizer, model.eval()


def generate_from_run(
    run_dir: Path, prompt: str, max_new_tokens: int | None = None, decoder: str | None = None, **overrides: Any
) -> str:
    from hydra.utils import instantiate

    from rizzrun.runner.task import sample_texts

    cfg, tokenizer, model = load_run(run_dir)
    node = cfg.decoder if decoder is None else _decoder_option(decoder)
    given = {k: v for k, v in {"max_new_tokens": max_new_tokens, **overrides}.items() if v is not None}
    dec = instantiate(OmegaConf.merge(node, given))
    seed = given.get("seed", int(cfg.seed))
    return sample_texts(model, dec, tokenizer, [prompt], seed=seed)[0]


def generate_from_hf(
    model_dir: Path, prompt: str, max_new_tokens: int | None = None, decoder: str | None = None, **overrides: Any
) -> str:
    """Decode with a local Hugging Face Llama folder (config.json + safetensors + tokenizer files).

    The prompt is encoded as `transformers` does by default (with the tokenizer's own special
    tokens, e.g. Llama's BOS), and decoding stops at any of the folder's EOS ids, so the text
    equals `AutoModelForCausalLM.generate` for the same decoder settings (greedy: token for token).
    """
    import torch
    from hydra.utils import instantiate

    from rizzrun.models.hf_llama import load_llama
    from rizzrun.tokenizers.hf import HFTokenizer

    tokenizer = HFTokenizer(str(model_dir))
    model = load_llama(model_dir).eval()
    given = {k: v for k, v in {"max_new_tokens": max_new_tokens, **overrides}.items() if v is not None}
    dec = instantiate(OmegaConf.merge(_decoder_option(decoder or "greedy"), given))
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=True)])
    out = dec.generate(model, ids, eos_token_id=list(tokenizer.eos_ids))
    new = [i for i in out[0, ids.shape[1]:].tolist() if i < tokenizer.vocab_size]
    return prompt + tokenizer.decode(new)


def _decoder_option(name: str):
    from rizzrun.paths import conf_dir

    path = Path(conf_dir()) / "decoder" / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"--decoder {name}: no such decoder; valid: {', '.join(options)}")
    return OmegaConf.load(path)
