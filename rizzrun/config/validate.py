"""Check a composed config before anything is built, reporting every problem at once.

- Component nodes (those with `_target_`) are bound to their target's signature, read from
  source by `rizzrun.config.signatures` (nothing is imported): unknown keys, missing required
  arguments, values that do not fit a simple annotation.
- `trainer`, `logger` and the top-level keys are checked against the dataclasses of
  `rizzrun.config.schema`: keys, types, ranges, allowed values.
- Each component's own rules come from the torch-free spec beside it (`pkg/mod_spec.py` for a
  target defined in `pkg.mod`, see `rizzrun.config.specs`): Llama's dimensions, a Hugging Face
  folder, a data path. This module names no target.
- Relations between components, through what the specs report: what must fit in the model's
  max_seq_len (data.seq_len, the eval window, sampled prompts + decoder.max_new_tokens), the
  model's vocabulary against the tokenizer's, the batch kind the data produces against the one
  the objective consumes.

Whether this machine has the accelerator asked for is not a property of the config: the commands
that run here check it (`rizzrun.config.check.check_jobs`, `rizzrun.config.devices`).

Every message reads `KEY=VALUE: what is wrong; what is allowed`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rizzrun.config import catalog, schema, signatures, specs, typespec
from rizzrun.config.errors import ConfigError, listing, message, show, suggest
from rizzrun.config.extra_models import check_extra_models
from rizzrun.config.rewards import check_rewards
from rizzrun.config.specs import BROKEN, MISSING


_RESERVED = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem of `cfg`; return None when it is sound."""
    found = problems(cfg)
    if found:
        raise ConfigError(found)


def problems(cfg: DictConfig) -> list[str]:
    """Every problem of `cfg`, one line each; [] when it is sound."""
    out: list[str] = []
    interpolated: dict[str, str] = {}
    values = _plain(cfg, "", out, interpolated)
    choices = _choices(cfg)
    targets: dict[str, signatures.Target | None] = {}
    out += _check_top_level(values)
    groups = catalog.groups()
    for group, node in values.items():
        if group in groups and not isinstance(node, dict) and node is not None and node is not BROKEN:
            out.append(message(f"{group}={show(node)}", f"expected a {group} node (a mapping)",
                               f"pick an option with {group}=OPTION (options: {listing(catalog.options(group))})"))
        elif group in schema.GROUP_SCHEMAS and isinstance(node, dict):
            out += _check_schema(group, node, schema.GROUP_SCHEMAS[group])
        elif isinstance(node, dict) and group in groups:
            out += _check_component_tree(group, group, node, targets)
    spec_of: dict = {}
    found, failed = _check_specs(values, targets, spec_of)
    out += found
    out += _check_lengths(values, spec_of, _model_length(values, spec_of, failed))
    out += _check_with_model(values, targets, spec_of, failed)
    out += _check_vocab(values, targets, spec_of, failed)
    out += _check_optimization(values, interpolated)
    out += _check_batch_kinds(values, targets, choices)
    out += _check_sharding(values, targets, choices)
    out += check_extra_models(values, targets)
    out += check_rewards(values, targets, lambda path, node: _check_component("objective", path, node, {}))
    if values.get("stages"):  # a pipeline: each of its runs as it will be composed
        out += _pipeline_problems(cfg)
    return [_with_origin(p, interpolated) for p in out]


def _pipeline_problems(cfg: DictConfig) -> list[str]:
    from rizzrun.config.stages import PLACEHOLDER_ROOT, StageError, shared_overrides, stage_plan, stage_problems

    try:
        root = PLACEHOLDER_ROOT  # not known yet: every stage folder is still to be made
        return stage_problems(stage_plan(cfg, root), root, shared_overrides(cfg))
    except StageError as e:
        return [str(e)]


def _with_origin(problem: str, interpolated: dict[str, str]) -> str:
    """`scheduler.total_steps=0: ...` -> `scheduler.total_steps=0 (from ${trainer.max_steps}): ...`:
    the key to change is the one the value came from."""
    head, sep, rest = problem.partition(": ")
    key = head.split("=", 1)[0]
    if sep and "=" in head and key in interpolated and "${" not in head:
        return f"{head} (from {interpolated[key]}){sep}{rest}"
    return problem


# --- plain values ----------------------------------------------------------------------------------

def _plain(node: Any, path: str, out: list[str], interpolated: dict[str, str]) -> Any:
    """`node` as plain Python with interpolations resolved one key at a time, so that one bad
    interpolation is reported without hiding the rest; `interpolated` gets key -> '${...}'."""
    if isinstance(node, DictConfig):
        items = [(str(k), k) for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(i), i) for i in range(len(node))]
    else:
        return node
    result: dict | list = {} if isinstance(node, DictConfig) else []
    for name, key in items:
        full = f"{path}.{name}" if path else name
        if full == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            value = MISSING
        else:
            if OmegaConf.is_interpolation(node, key):
                interpolated[full] = str(node._get_node(key)._value())
            try:
                value = _plain(node[key], full, out, interpolated)
            except Exception as e:  # noqa: BLE001 - OmegaConf raises several kinds here
                raw = node._get_node(key)._value()
                ours = "ConfigError raised while resolving interpolation: "
                if str(e).startswith(ours):  # a resolver of ours (${run:NAME}) said what is wrong
                    out.append(f"{full}={raw}: " + str(e)[len(ours):].splitlines()[0].split(": ", 1)[-1])
                else:
                    reason = str(e).splitlines()[0]
                    out.append(message(f"{full}={raw}", f"cannot resolve it ({reason})"))
                value = BROKEN
        if isinstance(result, dict):
            result[name] = value
        else:
            result.append(value)
    return result


def _choices(cfg: DictConfig) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    except Exception:  # noqa: BLE001 - no hydra node: composed without it
        return {}


# --- top level, trainer, logger ----------------------------------------------------------------------

def _check_top_level(values: dict) -> list[str]:
    out = []
    root_fields = {f.name for f in dataclasses.fields(schema.RootConfig)}
    groups = catalog.groups()
    for key in values:
        if key not in root_fields and key not in groups and key not in schema.GROUP_SCHEMAS and key != "hydra":
            out.append(message(f"{key}={show(values[key])}", "unknown top-level key",
                               suggest(key, [*root_fields, *groups]),
                               f"top-level keys: {listing(sorted(root_fields))}; groups: {listing(groups)}"))
    out += _check_schema("", {k: v for k, v in values.items() if k in root_fields}, schema.RootConfig,
                          unknown_ok=True)
    for group in schema.REQUIRED_GROUPS:
        if values.get(group) is None:
            out.append(message(group, f"no {group} chosen",
                               f"pick one with {group}=OPTION (options: {listing(catalog.options(group))})"))
    return out


def bounds_of(meta: typing.Mapping) -> tuple[tuple[str, float], ...]:
    """A schema field's range metadata (gt/ge/lt/le) as (op, bound) pairs: (">", 0), ..."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return tuple((ops[k], meta[k]) for k in ops if k in meta)


def _check_schema(path: str, node: dict, cls: type, unknown_ok: bool = False) -> list[str]:
    out = []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{path}." if path else ""
    if not unknown_ok:
        for key in node:
            if key not in fields:
                out.append(message(f"{prefix}{key}={show(node[key])}",
                                   f"unknown key of {path} ({cls.__name__} in rizzrun/config/schema.py)",
                                   suggest(key, fields, prefix), f"keys: {listing(fields)}"))
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in node:
            if not f.metadata.get("optional"):
                out.append(message(key, "missing", f"{f.metadata.get('help', '')}; set it with +{key}=VALUE"))
            continue
        out += _check_value(key, node[name], typespec.from_type(hints[name]), bounds_of(f.metadata),
                            f.metadata.get("pattern"))
    return out


def _check_value(key: str, value: Any, spec: typespec.Spec, bounds=(), pattern: str | None = None) -> list[str]:
    if value is BROKEN:
        return []
    if value is MISSING:
        return [message(f"{key}=???", "required value is not set", f"set it, e.g. {key}=VALUE")]
    if not typespec.matches(value, spec):
        choices = typespec.literal_choices(spec)
        if choices:
            return [message(f"{key}={show(value)}", "not allowed", suggest(str(value), [str(c) for c in choices]),
                            f"allowed: {listing(show(c) for c in choices)}")]
        hint = ""
        if spec.kind in ("str", "union") and typespec.matches("x", spec) and isinstance(value, (int, float)):
            hint = f"quote it to pass text: {key}='{value}'"
        return [message(f"{key}={show(value)}", f"expected {typespec.describe(spec)}, got {typespec.type_name(value)}",
                        hint)]
    out = []
    if bounds and isinstance(value, float) and not math.isfinite(value):
        allowed = " and ".join(f"{op} {bound}" for op, bound in bounds)
        return [message(f"{key}={show(value)}", "not a finite number", f"allowed: {key.rsplit('.', 1)[-1]} {allowed}")]
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        failed = [f"{op} {bound}" for op, bound in bounds if not holds(value, op, bound)]
        if failed:
            allowed = " and ".join(f"{op} {bound}" for op, bound in bounds)
            out.append(message(f"{key}={show(value)}", "out of range", f"allowed: {key.rsplit('.', 1)[-1]} {allowed}"))
    if pattern and isinstance(value, str) and not re.fullmatch(pattern, value):
        out.append(message(f"{key}={show(value)}", "not allowed",
                           f"allowed: letters, digits and . _ + - (no spaces or slashes), matching {pattern}"))
    return out


def holds(value: float, op: str, bound: float) -> bool:
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


# --- components ------------------------------------------------------------------------------------

def _check_component_tree(group: str, path: str, node: dict, targets: dict) -> list[str]:
    if "_target_" not in node:
        if path == group and group not in schema.GROUP_SCHEMAS:
            return [message(path, "has no _target_", f"a component names what builds it, "
                            f"e.g. {path}._target_=package.module.Class")]
        return []
    out = _check_component(group, path, node, targets)
    for key, value in node.items():  # nested components (a value with its own _target_)
        if isinstance(value, dict) and "_target_" in value:
            out += _check_component_tree(group, f"{path}.{key}", value, targets)
    return out


def _check_component(group: str, path: str, node: dict, targets: dict) -> list[str]:
    name = node["_target_"]
    if not isinstance(name, str) or not name:
        return [message(f"{path}._target_={show(name)}", "expected a dotted path package.module.Class")]
    try:
        target = signatures.resolve(name)
    except signatures.TargetNotFound as e:
        targets[path] = None
        return [message(f"{path}._target_={name}", str(e))]
    except (OSError, SyntaxError) as e:
        targets[path] = None
        return [message(f"{path}._target_={name}", f"cannot read its source: {e}")]
    targets[path] = target
    out = []
    partial = node.get("_partial_", False)
    if not isinstance(partial, bool):
        out.append(message(f"{path}._partial_={show(partial)}", "expected true or false"))
    if target.kind != "class" and target.kind != "function" or target.params is None:
        return out  # e.g. compiled code: nothing to bind against
    supplied = schema.RUNNER_SUPPLIED.get(path, ())
    positional = node.get("_args_") or []
    params = [p for p in target.params if p.kind in ("positional_only", "normal")]
    consumed = {p.name for p in params[: len(positional)]}
    by_name = {p.name: p for p in target.keyword_params()}
    read = schema.RUNNER_READ.get(path, {})
    for key, tp in read.items():
        out += _check_value(f"{path}.{key}", node[key], typespec.from_type(tp)) if key in node else []
    keys = [k for k in node if k not in _RESERVED and k not in read]
    # What the model passes a component of the group (a mixer at any depth: a hybrid's inner ones too).
    given = schema.MODEL_SUPPLIED.get(group, ())
    for key in [k for k in keys if k in given]:
        out.append(message(f"{path}.{key}={show(node[key])}", f"the model gives every {group} component "
                           f"its {key} ({', '.join(given)})", "set the model's dimensions instead (model.KEY=VALUE)"))
    keys = [k for k in keys if k not in given]
    for key in keys:
        if key not in by_name and not target.takes_any_keyword():
            out.append(message(f"{path}.{key}={show(node[key])}", f"{name} has no parameter '{key}' ({target.file})",
                               suggest(key, by_name, f"{path}."), f"parameters: {listing(by_name)}"))
    if not partial:
        for p in target.params:
            if (p.required and p.kind in ("normal", "keyword_only") and p.name not in node
                    and p.name not in consumed and p.name not in supplied):
                out.append(message(f"{path}.{p.name}", f"required argument of {name} is not set",
                                   f"add it: +{path}.{p.name}=VALUE"))
        if any(p.required and p.kind == "positional_only" for p in params[len(positional):]):
            out.append(message(path, f"{name} has positional-only arguments, which a config cannot "
                               f"pass by name; give them in {path}._args_"))
    for key in keys:
        p = by_name.get(key)
        value = node[key]
        if isinstance(value, dict) and "_target_" in value:
            continue
        if value is None and key in supplied:
            continue
        spec = typespec.from_ast(p.annotation) if p is not None else typespec.ANY
        if p is not None and p.default is None:  # `x: int = None` still means "or null"
            spec = typespec.optional(spec)
        bounds = schema.COMPONENT_RANGES.get(f"{path}.{key}", ()) + specs.ranges(target).get(key, ())
        out += _check_value(f"{path}.{key}", value, spec, bounds)
    return out


# --- relations between components --------------------------------------------------------------------

def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_specs(values: dict, targets: dict, spec_of: dict) -> tuple[list[str], set[str]]:
    """Each component's own rules (its spec's `check`); also the paths whose spec found a problem."""
    out, failed = [], set()
    for path, target in targets.items():
        spec = specs.spec_module(target.module) if target is not None and target.module else None
        spec_of[path] = spec
        check = specs.hook(spec, "check")
        node = _at(values, path)
        if check is None or not isinstance(node, dict):
            continue
        found = check(node, path)
        if found:
            failed.add(path)
        out += found
    return out, failed


def _check_with_model(values: dict, targets: dict, spec_of: dict, failed: set[str]) -> list[str]:
    """Rules between a component and the model's dimensions (its spec's `check_with_model`), e.g.
    a mixer's head layout or block size; skipped when the model's own rules already failed."""
    model = values.get("model")
    dims_hook = specs.hook(spec_of.get("model"), "dims")
    if "model" in failed or dims_hook is None or not isinstance(model, dict):
        return []
    dims = dims_hook(model)
    if dims is None:
        return []
    out = []
    for path in targets:
        check = specs.hook(spec_of.get(path), "check_with_model")
        node = _at(values, path)
        if check is not None and path not in failed and isinstance(node, dict):
            out += check(node, path, dims)
    return out


def _at(values: dict, path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _model_length(values: dict, spec_of: dict, failed: set[str]) -> specs.Length | None:
    model = values.get("model")
    hook = specs.hook(spec_of.get("model"), "max_seq_len")
    if hook is None or not isinstance(model, dict) or "model" in failed:
        return None  # no spec says, or its problems come first
    return hook(model)


def _check_lengths(values: dict, spec_of: dict, length: specs.Length | None) -> list[str]:
    """What must fit in the model's max_seq_len: a training row (data.seq_len), the memorization
    window when the run evaluates at its end (EOS + eval.prefix_len + eval.continuation_len), and
    each prompt sampled at validation with decoder.max_new_tokens new tokens."""
    if length is None:
        return []
    out = []
    limit, source = length.value, f"from {length.source}"
    fix = f", or {length.fix}" if length.fix else ""
    data = values.get("data") if isinstance(values.get("data"), dict) else {}
    seq_len = _int(data.get("seq_len"))
    if seq_len is not None and seq_len > limit:
        out.append(message(f"data.seq_len={seq_len}", f"longer than the model's max_seq_len={limit} ({source})",
                           f"allowed: data.seq_len <= {limit}{fix}"))
    max_length = _int(data.get("max_length"))  # pairs: prompt + completion, read as max_length - 1 inputs
    if max_length is not None and max_length - 1 > limit:
        out.append(message(f"data.max_length={max_length}", f"a pair of that many tokens is read as {max_length - 1} "
                           f"inputs, more than the model's max_seq_len={limit} ({source})",
                           f"allowed: data.max_length <= {limit + 1}{fix}"))
    ev = values.get("eval") if isinstance(values.get("eval"), dict) else {}
    prefix, cont = _int(ev.get("prefix_len")), _int(ev.get("continuation_len"))
    if ev.get("at_end") is True and prefix is not None and cont is not None and 1 + prefix + cont > limit:
        out.append(message(f"eval.continuation_len={cont}",
                           f"the memorization window, EOS + eval.prefix_len={prefix} + {cont} = {1 + prefix + cont} "
                           f"tokens, is longer than the model's max_seq_len={limit} ({source})",
                           f"allowed: eval.prefix_len + eval.continuation_len <= {limit - 1}{fix}"))
    out += _check_samples(values, spec_of, limit, source, fix)
    return out


def _check_samples(values: dict, spec_of: dict, limit: int, source: str, fix: str) -> list[str]:
    """Sampling at validation feeds [EOS, *encode(prompt)] and adds decoder.max_new_tokens
    (rizzrun/runner/task.py `sample_texts`). A tokenizer spec with `prompt_tokens` counts a
    prompt exactly; without one (a BPE trained at run time, an HF folder: counting needs the
    tokenizer loaded) a non-empty prompt counts as one token, a lower bound, so the check never
    refuses a run that fits."""
    decoder, trainer, tok = values.get("decoder"), values.get("trainer"), values.get("tokenizer")
    prompts = values.get("prompts")
    samples = _int(trainer.get("samples_per_val")) if isinstance(trainer, dict) else None
    new = _int(decoder.get("max_new_tokens")) if isinstance(decoder, dict) else None
    if not samples or new is None or not isinstance(prompts, list) or not isinstance(tok, dict):
        return []
    count = specs.hook(spec_of.get("tokenizer"), "prompt_tokens")
    longest, longest_text, exact = -1, "", count is not None
    for text in prompts[:samples]:
        if not isinstance(text, str):
            continue
        n = 1 + (count(tok, text) if count is not None else int(bool(text)))
        if n > longest:
            longest, longest_text = n, text
    if longest < 0 or longest + new <= limit:
        return []
    tokens = f"{longest} tokens with the EOS put first" if exact else f"at least {longest} tokens with the EOS put first"
    return [message(f"decoder.max_new_tokens={new}",
                    f"a sample at validation, the prompt {show(longest_text)} ({tokens}) + {new} new tokens = "
                    f"{longest + new}, is longer than the model's max_seq_len={limit} ({source})",
                    f"allowed: decoder.max_new_tokens <= {max(0, limit - longest)}, shorter prompts, or "
                    f"trainer.samples_per_val=0{fix}")]


def _check_vocab(values: dict, targets: dict, spec_of: dict, failed: set[str]) -> list[str]:
    """The model must embed every id the tokenizer produces."""
    model, tok = values.get("model"), values.get("tokenizer")
    if not isinstance(model, dict) or not isinstance(tok, dict):
        return []
    tok_target = targets.get("tokenizer")
    need = _int(tok.get("vocab_size"))
    if need is None:
        hook = specs.hook(spec_of.get("tokenizer"), "vocab_size")
        need = hook(tok) if hook is not None else None
    if need is None and tok_target is not None:
        need = _int(tok_target.attrs.get("vocab_size"))
    if need is None:
        return []
    have = _int(model.get("vocab_size"))
    tokenizer = f"{tok.get('_target_')}: {need} ids"
    if have is not None:
        if have >= need:
            return []
        return [message(f"model.vocab_size={have}", f"smaller than the tokenizer's vocabulary ({tokenizer})",
                        f"allowed: null (take the tokenizer's) or an integer >= {need}")]
    hook = specs.hook(spec_of.get("model"), "vocab_size")
    vocab = hook(model) if hook is not None and model.get("vocab_size") is None else None
    if vocab is None or vocab.value >= need:
        return []
    return [message(vocab.key, f"the model's vocabulary ({vocab.origin}) is smaller than the tokenizer's ({tokenizer})",
                    vocab.fix)]


def _check_optimization(values: dict, interpolated: dict[str, str]) -> list[str]:
    out = []
    scheduler, optimizer = values.get("scheduler"), values.get("optimizer")
    if isinstance(scheduler, dict):
        # A null warmup adapts to total_steps (rizzrun.optim.default_warmup): only a number conflicts.
        warmup, total = _int(scheduler.get("warmup_steps")), _int(scheduler.get("total_steps"))
        if warmup is not None and total is not None and 0 < total < warmup:
            origin = interpolated.get("scheduler.total_steps")
            source = f" (from {origin})" if origin else ""
            out.append(message(f"scheduler.warmup_steps={warmup}", f"longer than scheduler.total_steps={total}{source}",
                               f"allowed: scheduler.warmup_steps <= {total}"))
    if isinstance(optimizer, dict) and isinstance(optimizer.get("betas"), list):
        betas = optimizer["betas"]
        numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
        if len(betas) != 2 or not numbers or not all(0 <= b < 1 for b in betas):
            out.append(message(f"optimizer.betas={show(betas)}", "not a pair of numbers in [0, 1)",
                               "allowed: e.g. optimizer.betas=[0.9,0.95]"))
    return out


def _batch_kind(role: str, path: str, node: Any, target: signatures.Target | None) -> tuple[str | None, list[str]]:
    if not isinstance(node, dict) or target is None:
        return None, []
    kind = target.attrs.get("batch_kind")
    verb = "consumes" if role == "objective" else "produces"
    if kind is None:
        return None, [message(f"{path}._target_={target.target}", "declares no batch_kind",
                              f"the class must say which batch it {verb}: batch_kind = "
                              f"{' | '.join(repr(k) for k in schema.BATCH_KINDS)}")]
    if kind not in schema.BATCH_KINDS:
        return None, [message(f"{path}._target_={target.target}", f"batch_kind={show(kind)} is not a batch kind",
                              suggest(str(kind), schema.BATCH_KINDS),
                              f"allowed: {listing(repr(k) for k in schema.BATCH_KINDS)}")]
    return kind, []


def _check_batch_kinds(values: dict, targets: dict, choices: dict) -> list[str]:
    consumed, out = _batch_kind("objective", "objective", values.get("objective"), targets.get("objective"))
    produced, more = _batch_kind("data", "data", values.get("data"), targets.get("data"))
    out += more
    if values.get("job") in ("sample", "refine"):  # generate from prompts; the objective is not used
        if produced is not None and produced != "prompts":
            fitting = [o for o in catalog.options("data") if option_batch_kind("data", o) == "prompts"]
            data = choices.get("data") or targets["data"].target
            out.append(message(f"job=sample, data={data}", f"data '{data}' produces '{produced}' batches; a sample "
                               "job generates completions of prompts", f"pick data={' or data='.join(fitting)}"))
        return out
    if consumed is None or produced is None or consumed == produced:
        return out
    objective = choices.get("objective") or targets["objective"].target
    data = choices.get("data") or targets["data"].target
    fitting = [o for o in catalog.options("data") if option_batch_kind("data", o) == consumed]
    pick = (f"data={' or data='.join(fitting)}" if fitting
            else f"a data option that produces '{consumed}' (none ships yet)")
    out.append(message(
        f"objective={objective}, data={data}",
        f"objective '{objective}' ({targets['objective'].target}) consumes batch_kind '{consumed}' but "
        f"data '{data}' ({targets['data'].target}) produces '{produced}'",
        f"pick {pick}, or an objective that consumes '{produced}'"))
    return out


def _check_sharding(values: dict, targets: dict, choices: dict) -> list[str]:
    """trainer.strategy=fsdp with an objective whose class says it cannot train a sharded model
    (`unshardable = "<why>"`, e.g. WARP's EMA copy of the policy)."""
    trainer, target = values.get("trainer"), targets.get("objective")
    if not isinstance(trainer, dict) or trainer.get("strategy") != "fsdp" or target is None:
        return []
    why = target.attrs.get("unshardable")
    if not isinstance(why, str):
        return []
    objective = choices.get("objective") or target.target
    return [message(f"trainer.strategy=fsdp, objective={objective}", f"objective '{objective}' cannot train a "
                    f"sharded model: {why}", "use trainer.strategy=ddp (every process holds the whole model)")]


def option_batch_kind(group: str, option: str) -> str | None:
    """The batch_kind declared by the target of conf/GROUP/OPTION.yaml, if readable."""
    target = option_target(group, option)
    return target.attrs.get("batch_kind") if target is not None else None


def option_target(group: str, option: str) -> signatures.Target | None:
    """The source view of conf/GROUP/OPTION.yaml's `_target_`, or None (no target, unreadable)."""
    try:
        node = OmegaConf.load(catalog.option_file(group, option))
        name = node.get("_target_") if isinstance(node, DictConfig) else None
        return signatures.resolve(str(name)) if name else None
    except Exception:  # noqa: BLE001 - a listing helper: an unreadable option just has no answer
        return None




# --- one component on its own ------------------------------------------------------------------------

def check_component(group: str, node: Any) -> list[str]:
    """Every problem of one component node of `group` on its own, one line each (`group.KEY=VALUE:
    ...`), by the rules `problems` applies to that node inside a full config: its target's
    signature (unknown keys with the nearest one, required arguments, `???` values, types), the
    ranges (`schema.COMPONENT_RANGES`, its spec's `RANGES`) and its spec's `check`; and a number
    with a range must be finite (inf/nan). For a node a command composes without a full config,
    e.g. `rizzrun generate RUN_DIR decoder=typical decoder.typical_p=0.9`. Relations with other
    components (the model's max_seq_len, its vocabulary) need the full config: not checked here."""
    out: list[str] = []
    interpolated: dict[str, str] = {}
    values = _plain(node, group, out, interpolated) if isinstance(node, (DictConfig, ListConfig)) else node
    if not isinstance(values, dict):
        return [message(f"{group}={show(values)}", f"expected a {group} node (a mapping)",
                        f"pick an option with {group}=OPTION (options: {listing(catalog.options(group))})")]
    targets: dict[str, signatures.Target | None] = {}
    out += _check_component_tree(group, group, values, targets)
    infinite = _non_finite(group, values, targets.get(group))
    if infinite:  # said once, as not finite, instead of also out of range
        keys = {p.split("=", 1)[0] for p in infinite}
        out = [p for p in out if p.split("=", 1)[0] not in keys]
    found, _ = _check_specs({group: values}, targets, {})
    return [_with_origin(p, interpolated) for p in [*infinite, *out, *found]]


def _non_finite(path: str, node: dict, target: signatures.Target | None) -> list[str]:
    """`path.KEY=inf: not a finite number` for each float argument with a range that is inf or nan."""
    import math

    out = []
    ranged = specs.ranges(target) if target is not None else {}
    for key, value in node.items():
        bounds = schema.COMPONENT_RANGES.get(f"{path}.{key}", ()) + ranged.get(key, ())
        if bounds and isinstance(value, float) and not math.isfinite(value):
            allowed = " and ".join(f"{op} {bound}" for op, bound in bounds)
            out.append(message(f"{path}.{key}={show(value)}", "not a finite number", f"allowed: {key} {allowed}"))
    return out
