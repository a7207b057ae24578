"""`rizzrun generate RUN_DIR --prompt ... [decoder=NAME] [decoder.KEY=VALUE ...]`: rebuild a run's
model from its folder and decode; `rizzrun generate --model HF_FOLDER --prompt ...`: the same
decoders on a model trained elsewhere. `compose_decoder` turns those overrides into one checked
decoder node (also for `rizzrun eval`), before torch is imported: this module imports only
omegaconf at the top."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from omegaconf import DictConfig, OmegaConf

DECODER_GROUP = "decoder"
# The decoder without decoder=NAME when there is no run's own (--model; eval's metrics).
DEFAULT_DECODER = "greedy"
# What to do instead of a value out of range, beside the range itself.
_HINTS = {"temperature": "for greedy decoding use decoder=greedy"}


class ComposedDecoder(NamedTuple):
    """A decoder node composed from overrides: `node` (a DictConfig to build with
    `rizzrun.runner.build.build_decoder`), `option` (the decoder=NAME picked, else the base's
    name or None), `given` (the top-level keys the overrides set)."""

    node: DictConfig
    option: str | None
    given: frozenset


def decoder_option(name: str) -> DictConfig:
    """conf/decoder/NAME.yaml; ConfigError naming the options when there is none."""
    from rizzrun.config import catalog
    from rizzrun.config.compose import option_message
    from rizzrun.config.errors import ConfigError

    names = catalog.options(DECODER_GROUP)
    if name not in names:
        raise ConfigError(option_message(f"{DECODER_GROUP}={name}", DECODER_GROUP, name, names))
    return OmegaConf.load(catalog.option_file(DECODER_GROUP, name))


def compose_decoder(overrides: Sequence[str] = (), base: Any = None, settings: Mapping | None = None,
                    base_name: str | None = None, refused: Mapping[str, str] | None = None) -> ComposedDecoder:
    """The decoder node that `decoder=NAME decoder.KEY=VALUE ...` (Hydra's override syntax and value
    parsing: ints, floats, true/false, null, 'quoted text', [lists]; `~decoder.KEY` drops a key,
    so the decoder's default applies) make of `base`, checked by the validator's own rules
    (`rizzrun.config.validate.check_component`: unknown keys with the nearest one, `???` values,
    types, each decoder's ranges) without importing torch.

    base: the node used without decoder=NAME (a run's saved decoder; None: conf/decoder/greedy.yaml);
    with decoder=NAME, conf/decoder/NAME.yaml replaces it. settings: decoder keys as Python
    values, applied after the overrides (the Python API's `max_new_tokens=5`). refused: keys the
    caller sets itself -> what to do instead (eval decodes --continuation-len tokens).
    Raises ConfigError listing every problem; anything but decoder=... / decoder.KEY=... is one."""
    from rizzrun.config.compose import parse_overrides
    from rizzrun.config.errors import ConfigError, message
    from rizzrun.config.validate import check_component

    parsed = parse_overrides(list(overrides))
    problems: list[str] = []
    option, edits = None, []
    for o in parsed:
        key = o.key_or_group
        if o.package is not None or not (key == DECODER_GROUP or key.startswith(DECODER_GROUP + ".")):
            problems.append(message(o.input_line, "not a decoder setting",
                                    "give decoder=NAME and decoder.KEY=VALUE (see rizzrun list decoder)"))
        elif o.is_sweep_override():
            problems.append(message(o.input_line, "a sweep is not one decoder", "give one value"))
        elif key == DECODER_GROUP:
            if o.is_delete() or not isinstance(o.value(), str):
                problems.append(message(o.input_line, "decoder=NAME picks a decoder option",
                                        "see rizzrun list decoder"))
            elif option is not None and option != o.value():
                problems.append(message(o.input_line, f"decoder={option} is already given", "pick one decoder"))
            else:
                option = o.value()
        else:
            edits.append(o)
    node = None
    if option is not None:
        try:
            node = decoder_option(option)
        except ConfigError as e:
            problems.extend(e.problems)
    elif base is None:
        node, base_name = decoder_option(base_name or DEFAULT_DECODER), base_name or DEFAULT_DECODER
    else:
        node = OmegaConf.create(OmegaConf.to_container(base) if isinstance(base, DictConfig) else dict(base))
    given: set[str] = set()
    for o in edits:
        key = o.key_or_group[len(DECODER_GROUP) + 1:]
        top = key.split(".", 1)[0]
        if refused and top in refused:
            problems.append(message(o.input_line, refused[top]))
            continue
        given.add(top)
        if node is None:
            continue
        if o.is_delete():
            if OmegaConf.select(node, key, default=_ABSENT) is _ABSENT:
                problems.append(message(o.input_line, f"the decoder has no key {key} to drop"))
            else:
                parent, _, leaf = key.rpartition(".")
                del (OmegaConf.select(node, parent) if parent else node)[leaf]
        else:
            OmegaConf.update(node, key, o.value(), merge=True, force_add=True)
    for key, value in (settings or {}).items():
        if refused and key in refused:
            problems.append(message(f"{DECODER_GROUP}.{key}", refused[key]))
        elif node is not None:
            given.add(key)
            node[key] = value
    if node is not None:
        problems += [_hinted(p) for p in check_component(DECODER_GROUP, node)]
    if problems:
        raise ConfigError(problems)
    return ComposedDecoder(node, option if option is not None else base_name, frozenset(given))


_ABSENT = object()


def _hinted(problem: str) -> str:
    key = problem.split("=", 1)[0].rsplit(".", 1)[-1]
    return f"{problem} ({_HINTS[key]})" if key in _HINTS and ": out of range;" in problem else problem


def run_decoder_node(run_dir: Path) -> DictConfig | None:
    """The decoder a run trained with (its config.yaml's `decoder`), or None (none saved)."""
    from rizzrun.layout import CONFIG

    try:
        node = OmegaConf.load(Path(run_dir) / CONFIG).get(DECODER_GROUP)
    except Exception:  # noqa: BLE001 - an unreadable config.yaml: loading the run says so
        return None
    return node if isinstance(node, DictConfig) else None


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
    naming what sets them (`decoder.max_new_tokens=N` when the command line gave it)."""
    from rizzrun.errors import InputError

    total = prompt_len + max_new_tokens
    if total <= max_seq_len:
        return
    room = max_seq_len - prompt_len
    fix = (f"allowed: decoder.max_new_tokens <= {room} for this prompt, or a shorter --prompt" if room >= 0
           else "shorten --prompt")
    head = (f"decoder.max_new_tokens={max_new_tokens}" if given
            else f"--prompt (the decoder's max_new_tokens={max_new_tokens})")
    raise InputError(f"{head}: the prompt ({prompt_len} tokens) + {max_new_tokens} new tokens = {total} exceeds "
                     f"the model's max_seq_len={max_seq_len}; {fix}")


def generate_from_run(run_dir: Path, prompt: str, overrides: Sequence[str] = (), checkpoint: str | None = None,
                      decoder: str | None = None, **settings: Any) -> str:
    """PROMPT continued by a run's checkpoint (the latest, or the one `checkpoint` names) with the
    decoder `overrides` compose (`decoder=NAME decoder.KEY=VALUE ...`, see `compose_decoder`) on
    the run's own decoder; `decoder` (a name) and `settings` (decoder keys as Python values,
    e.g. max_new_tokens=5) are the same in Python. A sampling decoder without a seed takes the
    run's seed. Bad settings raise ConfigError (the command checks them before torch)."""
    from rizzrun.runner.task import sample_texts

    overrides = [*overrides, *([f"{DECODER_GROUP}={decoder}"] if decoder is not None else [])]
    composed = compose_decoder(overrides, base=run_decoder_node(run_dir), settings=settings)
    cfg, tokenizer, model = load_run(run_dir, checkpoint)
    dec = _build(composed, tokenizer)
    # sample_texts starts the prompt after an EOS, as documents start in the training stream
    check_length(1 + len(tokenizer.encode(prompt)), dec.max_new_tokens, model.config.max_seq_len,
                 "max_new_tokens" in composed.given)
    return sample_texts(model, dec, tokenizer, [prompt], seed=int(cfg.seed))[0]


def generate_from_hf(model_dir: Path, prompt: str, overrides: Sequence[str] = (), decoder: str | None = None,
                     **settings: Any) -> str:
    """Decode with a local Hugging Face Llama folder (config.json + safetensors + tokenizer files),
    with the decoder `overrides` compose on greedy (as `generate_from_run`; a sampling decoder
    without a seed draws a fresh one).

    The prompt is encoded as `transformers` does by default (with the tokenizer's own special
    tokens, e.g. Llama's BOS), and decoding stops at any of the folder's EOS ids, so the text
    equals `AutoModelForCausalLM.generate` for the same decoder settings (greedy: token for token).
    """
    overrides = [*overrides, *([f"{DECODER_GROUP}={decoder}"] if decoder is not None else [])]
    composed = compose_decoder(overrides, settings=settings)
    import torch

    from rizzrun.models.hf_llama import load_llama
    from rizzrun.tokenizers.hf import HFTokenizer

    tokenizer = HFTokenizer(str(model_dir))
    model = load_llama(model_dir).eval()
    dec = _build(composed, tokenizer)
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=True)])
    check_length(ids.shape[1], dec.max_new_tokens, model.config.max_seq_len, "max_new_tokens" in composed.given)
    out = dec.generate(model, ids, eos_token_id=list(tokenizer.eos_ids))
    new = [i for i in out[0, ids.shape[1]:].tolist() if i < tokenizer.vocab_size]
    return prompt + tokenizer.decode(new)


def _build(composed: ComposedDecoder, tokenizer):
    """The decoder (`build_decoder`); a value its constructor refuses that the validator could not
    see (a rule between two knobs, say) -> InputError, one line."""
    from rizzrun.errors import InputError
    from rizzrun.runner.build import build_decoder

    try:
        return build_decoder(composed.node, tokenizer)
    except ValueError as e:
        raise InputError(f"{DECODER_GROUP}: {_first_line(e)}") from e
    except Exception as e:  # hydra wraps a constructor's error in InstantiationException
        cause = e.__cause__ if isinstance(e.__cause__, ValueError) else None
        if cause is None:
            raise
        raise InputError(f"{DECODER_GROUP}: {_first_line(cause)}") from e
