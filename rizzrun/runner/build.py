"""Build components from a composed config. Shared by training, generation and evaluation so
that a run folder rebuilds exactly the model it trained."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# A key of the model node that the runner reads itself and never passes to the model's target:
# `model.from_pretrained=PATH` builds the model from a Hugging Face folder
# (`rizzrun.models.hf_llama.load_llama`), so the model class knows nothing of that format.
PRETRAINED_KEY = "from_pretrained"


def pretrained_path(cfg: DictConfig) -> str | None:
    """`model.from_pretrained` (a Hugging Face folder the model loads), or None."""
    path = cfg.model.get(PRETRAINED_KEY) if "model" in cfg else None
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


FACTORY_GROUPS = ("attention", "mlp")


def factories_for(cfg: DictConfig) -> dict:
    """The token-mixer (`attention`) and feed-forward (`mlp`) factories built from their groups,
    for the model's parameters of those names only: a model with its own mixing (RWKV) takes
    neither, and its groups are not built (rizzrun.config.schema.RUNNER_SUPPLIED)."""
    import inspect

    from hydra.utils import get_object

    params = inspect.signature(get_object(cfg.model._target_)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {group: instantiate(cfg[group]) for group in FACTORY_GROUPS
            if cfg.get(group) is not None and (group in params or takes_any)}


def build_model(cfg: DictConfig, tokenizer: Any, pretrained_weights: bool = True):
    """The policy model with the configured token mixer (`attention`) and feed-forward (`mlp`)
    factories where its target takes them (`factories_for`); vocab from the tokenizer unless
    `model.vocab_size` says otherwise (the validator checked it is large enough), or from
    config.json under `model.from_pretrained`.

    Under `model.from_pretrained=PATH` the model is `rizzrun.models.hf_llama.load_llama(PATH)`, with
    the dimensions the node sets checked against config.json; PATH may also be a run folder
    (`run_folder_model`). pretrained_weights=False (for a run
    folder whose checkpoint holds the weights): the model takes config.json's shape, randomly
    initialised, and the folder's weights are not read.
    """
    path = pretrained_path(cfg)
    if path is not None and is_run_folder(path):
        return run_folder_model(cfg, path, tokenizer, pretrained_weights)
    factories = factories_for(cfg)
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node.pop(PRETRAINED_KEY, None)
    if path is None:
        return instantiate(node, vocab_size=vocab_size(cfg, tokenizer), **factories)
    from rizzrun.models.hf_llama import HF_FIELDS, load_llama, pretrained_llama_dims

    given = {k: node.get(k) for k in HF_FIELDS}
    given["vocab_size"] = vocab_size(cfg, tokenizer)
    if pretrained_weights:
        return load_llama(path, **factories, **given)
    return instantiate(node, **pretrained_llama_dims(path, **given), **factories)


def is_run_folder(path: str) -> bool:
    from pathlib import Path

    from rizzrun.layout import CONFIG

    return (Path(path).expanduser() / CONFIG).is_file()


def run_folder_model(cfg: DictConfig, path: str, tokenizer: Any, pretrained_weights: bool = True):
    """`model.from_pretrained=RUN_DIR`: the model that run trained (its config.yaml's model,
    attention and mlp), with its latest verified checkpoint's weights (pretrained_weights=False:
    the shape only). Its tokenizer must encode as this run's (InputError otherwise)."""
    from rizzrun.runner.generate import check_same_tokenizer, load_run_checkpoint

    if not pretrained_weights:
        from pathlib import Path

        from rizzrun.layout import CONFIG

        run_cfg = OmegaConf.load(Path(path).expanduser() / CONFIG)
        return build_model(run_cfg, tokenizer, pretrained_weights=False)
    run_cfg, run_tokenizer, model, _ = load_run_checkpoint(path)
    check_same_tokenizer(f"model.from_pretrained={path}", run_tokenizer, tokenizer)
    return model.train()


def build_decoder(node: Any, tokenizer: Any = None):
    """The decoder a config node describes (`decoder=NAME decoder.KEY=VALUE`), handed the run's
    tokenizer (`Decoder.use_tokenizer`: a decoder that reads text, e.g. a principle prompt,
    encodes it with the ids the model reads). Every caller builds decoders here: training
    samples, `rizzrun generate`, `rizzrun eval`."""
    decoder = instantiate(node)
    if tokenizer is not None and hasattr(decoder, "use_tokenizer"):
        decoder.use_tokenizer(tokenizer)
    return decoder
