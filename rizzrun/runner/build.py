"""Build components from a composed config. Shared by training, generation and evaluation so
that a run folder rebuilds exactly the model it trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def cache_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.cache_dir)).expanduser()


def pretrained_path(cfg: DictConfig) -> str | None:
    """`model.from_pretrained` (a Hugging Face folder the model loads), or None."""
    path = cfg.model.get("from_pretrained") if "model" in cfg else None
    return None if path is None else str(path)


def vocab_size(cfg: DictConfig, tokenizer: Any) -> int:
    """The model's vocabulary: config.json's under `model.from_pretrained` (the tokenizer must fit
    in it), else `model.vocab_size` or the tokenizer's."""
    path = pretrained_path(cfg)
    if path is None:
        return int(cfg.model.vocab_size or tokenizer.vocab_size)
    from rizzrun.models.hf_llama import HF_CONFIG, hf_folder, hf_llama_dims

    vocab = hf_llama_dims(path)["vocab_size"]
    given = cfg.model.get("vocab_size")
    if given is not None and given != vocab:
        raise ValueError(f"model.vocab_size={given} conflicts with vocab_size={vocab} in "
                         f"{hf_folder(path) / HF_CONFIG}; allowed: null (take config.json's) or {vocab}")
    if tokenizer is not None and tokenizer.vocab_size > vocab:
        raise ValueError(f"model.from_pretrained={path}: the tokenizer ({type(tokenizer).__name__}) has "
                         f"{tokenizer.vocab_size} ids but the model's vocabulary has {vocab} "
                         f"(vocab_size in {hf_folder(path) / HF_CONFIG}); use the checkpoint's own "
                         f"tokenizer, or one with at most {vocab} ids")
    return vocab


def build_model(cfg: DictConfig, tokenizer: Any, pretrained_weights: bool = True):
    """The policy model with the configured attention kernel; vocab from the tokenizer unless
    `model.vocab_size` says otherwise (the validator checked it is large enough), or from
    config.json under `model.from_pretrained`.

    pretrained_weights=False (for a run folder whose checkpoint holds the weights): under
    `model.from_pretrained` the model takes config.json's shape but not its weights.
    """
    attention = instantiate(cfg.attention)
    path = pretrained_path(cfg)
    if path is None or pretrained_weights:
        return instantiate(cfg.model, vocab_size=vocab_size(cfg, tokenizer), attention=attention)
    from rizzrun.models.hf_llama import HF_FIELDS, pretrained_llama_dims

    given = {k: cfg.model.get(k) for k in HF_FIELDS if k != "vocab_size"}
    given = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in given.items()}
    dims = pretrained_llama_dims(path, vocab_size=vocab_size(cfg, tokenizer), **given)
    return instantiate(cfg.model, **dims, from_pretrained=None, attention=attention)


def build_decoder(cfg: DictConfig, **overrides: Any):
    node = OmegaConf.merge(cfg.decoder, {k: v for k, v in overrides.items() if v is not None})
    return instantiate(node)
