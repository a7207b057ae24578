"""Build components from a composed config. Shared by training, generation and evaluation so
that a run folder rebuilds exactly the model it trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def cache_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.cache_dir)).expanduser()


def vocab_size(cfg: DictConfig, tokenizer: Any) -> int:
    return int(cfg.model.vocab_size or tokenizer.vocab_size)


def build_model(cfg: DictConfig, tokenizer: Any):
    """The policy model with the configured attention kernel; vocab from the tokenizer unless
    `model.vocab_size` says otherwise (the validator checked it is large enough)."""
    attention = instantiate(cfg.attention)
    return instantiate(cfg.model, vocab_size=vocab_size(cfg, tokenizer), attention=attention)


def build_decoder(cfg: DictConfig, **overrides: Any):
    node = OmegaConf.merge(cfg.decoder, {k: v for k, v in overrides.items() if v is not None})
    return instantiate(node)
