"""`rizzrun generate RUN_DIR --prompt ...`: rebuild a run's model from its folder and decode;
`rizzrun generate --model HF_FOLDER --prompt ...`: the same decoders on a model trained elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def load_run(run_dir: Path, checkpoint: str | None = None):
    """(config, tokenizer, model) of a run folder: the model rebuilt from its config.yaml (under
    `model.from_pretrained`, config.json's shape, not its weights) with its latest checkpoint, or
    the one `checkpoint` names (a step-N folder name or a step number). Shared by generate, eval
    and export; see `load_run_checkpoint`."""
    cfg, tokenizer, model, _ = load_run_checkpoint(run_dir, checkpoint)
    return cfg, tokenizer, model


def load_run_checkpoint(run_dir: Path, checkpoint: str | None = None):
    """`load_run` plus the checkpoint folder loaded. The checkpoint is verified first (digests in
    its meta.json; `checked_checkpoint`); a missing or unreadable config.yaml or tokenizer, a
    damaged checkpoint, or weights that do not fit the config raise InputError naming the file."""
    from rizzrun.errors import InputError
    from rizzrun.layout import CONFIG, TOKENIZER, WEIGHTS
    from rizzrun.runner.build import build_model
    from rizzrun.runner.checkpoint import checked_checkpoint, load_weights
    from rizzrun.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise InputError(f"{run_dir}: not a rizzrun run folder (no {CONFIG}); give a folder under outputs/<date>/")
    folder = checked_checkpoint(run_dir, checkpoint)
    try:
        cfg = OmegaConf.load(run_dir / CONFIG)
    except Exception as e:  # noqa: BLE001 - yaml and omegaconf raise many kinds
        raise InputError(f"{run_dir / CONFIG}: unreadable ({_first_line(e)}); the run folder is damaged") from e
    try:
        tokenizer = load_tokenizer(run_dir / TOKENIZER)
    except Exception as e:  # noqa: BLE001 - a missing file, bad JSON, an unknown kind
        raise InputError(f"{run_dir / TOKENIZER}: cannot load the run's tokenizer ({_first_line(e)}); "
                         "the run folder is damaged") from e
    model = build_model(cfg, tokenizer, pretrained_weights=False)  # the checkpoint replaces them
    try:
        model.load_state_dict(load_weights(folder / WEIGHTS))
    except RuntimeError as e:  # missing/unexpected keys or shapes: config.yaml and weights disagree
        raise InputError(f"{folder / WEIGHTS}: does not fit the model {CONFIG} describes "
                         f"({_first_line(e)})") from e
    return cfg, tokenizer, model.eval(), folder


def objective_weights(folder: Path) -> dict:
    """The weights a run's objective trained itself (a reward model's head), as its state_dict:
    the `objective.*` entries of the checkpoint's state.pt, prefix removed; {} for most runs."""
    from rizzrun.layout import STATE
    from rizzrun.runner.checkpoint import load_state

    extra = load_state(Path(folder) / STATE).get("extra_state_dict", {})
    return {k[len("objective."):]: v for k, v in extra.items() if k.startswith("objective.")}


def load_run_objective(cfg, model, tokenizer, folder: Path):
    """The run's objective as it was at checkpoint `folder`: built from its config, with the weights
    it trained itself (`objective_weights`) loaded; InputError when they do not fit its class."""
    from rizzrun.errors import InputError
    from rizzrun.layout import STATE
    from rizzrun.runner.extra_models import build_objective

    objective = build_objective(cfg, model, tokenizer)
    own = objective_weights(folder)
    if own:
        try:
            objective.load_state_dict(own)
        except RuntimeError as e:
            raise InputError(f"{folder / STATE}: the objective's weights do not fit {cfg.objective._target_} "
                             f"({_first_line(e)})") from e
    return objective


def load_run_model(run_dir: Path, checkpoint: str | None = None):
    """(model, tokenizer): what a run trained, as a later run loads it (an objective's
    `models.NAME=RUN_DIR`, `model.from_pretrained=RUN_DIR`): the policy, or, when the run's
    objective trained parameters of its own (a reward model's head, saved as `objective.*` in the
    checkpoint's state.pt), the model the objective makes of them (`objective.as_model(policy)`)."""
    cfg, tokenizer, model, folder = load_run_checkpoint(run_dir, checkpoint)
    if not objective_weights(folder):
        return model, tokenizer
    objective = load_run_objective(cfg, model, tokenizer, folder)
    as_model = getattr(objective, "as_model", None)
    return (as_model(model).eval() if as_model else model), tokenizer


def check_same_tokenizer(key: str, run_tokenizer, tokenizer) -> None:
    """A model from another run reads that run's ids: InputError (headed by `key`, how the user named
    the run) unless `tokenizer` encodes as the run's did (equal fingerprints)."""
    from rizzrun.errors import InputError

    if tokenizer is not None and run_tokenizer.fingerprint != tokenizer.fingerprint:
        raise InputError(f"{key}: that run's tokenizer ({type(run_tokenizer).__name__}) encodes differently from "
                         f"this run's ({type(tokenizer).__name__}); both models must read the same ids: use the "
                         "tokenizer that run trained with")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_length(prompt_len: int, max_new_tokens: int, max_seq_len: int, given: bool) -> None:
    """The prompt and the tokens to generate must fit the model's context; InputError otherwise,
    naming the flag that sets them."""
    from rizzrun.errors import InputError

    total = prompt_len + max_new_tokens
    if total <= max_seq_len:
        return
    room = max_seq_len - prompt_len
    fix = (f"allowed: --max-new-tokens <= {room} for this prompt, or a shorter --prompt" if room >= 0
           else "shorten --prompt")
    head = f"--max-new-tokens {max_new_tokens}" if given else f"--prompt (the decoder's max_new_tokens={max_new_tokens})"
    raise InputError(f"{head}: the prompt ({prompt_len} tokens) + {max_new_tokens} new tokens = {total} exceeds "
                     f"the model's max_seq_len={max_seq_len}; {fix}")


def generate_from_run(
    run_dir: Path, prompt: str, max_new_tokens: int | None = None, decoder: str | None = None,
    checkpoint: str | None = None, **overrides: Any
) -> str:
    from hydra.utils import instantiate

    from rizzrun.runner.task import sample_texts

    cfg, tokenizer, model = load_run(run_dir, checkpoint)
    node = cfg.decoder if decoder is None else _decoder_option(decoder)
    given = {k: v for k, v in {"max_new_tokens": max_new_tokens, **overrides}.items() if v is not None}
    dec = instantiate(OmegaConf.merge(node, given))
    # sample_texts starts the prompt after an EOS, as documents start in the training stream
    check_length(1 + len(tokenizer.encode(prompt)), dec.max_new_tokens, model.config.max_seq_len,
                 max_new_tokens is not None)
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
    check_length(ids.shape[1], dec.max_new_tokens, model.config.max_seq_len, max_new_tokens is not None)
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
