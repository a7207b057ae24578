"""The `rizzrun` command.

    rizzrun [OVERRIDES...]            run one job through Hydra (-m: a sweep); see rizzrun.config.launch
    rizzrun list [GROUP]              the config groups and their options
    rizzrun show [OVERRIDES...]       the composed config as YAML
    rizzrun validate [OVERRIDES...]   compose + validate: "ok" or every problem (exit 2)
    rizzrun generate RUN_DIR --prompt TEXT [decoder=NAME] [decoder.KEY=VALUE ...]
    rizzrun generate --model HF_DIR --prompt TEXT [decoder=NAME] [decoder.KEY=VALUE ...]
    rizzrun export RUN_DIR OUT_DIR [--force]   a run's latest checkpoint as a Hugging Face Llama folder
    rizzrun eval RUN_DIR [decoder=NAME] [decoder.KEY=VALUE ...] [--documents train|val|PATH]
                                      memorization + held-out loss (+ a task's accuracy) -> eval.json
    rizzrun compare PATH... | --wandb ENTITY/PROJECT   runs side by side (rizzrun.compare)
    rizzrun merge slerp|linear|liti|paramdelta ... OUT   models merged by weight arithmetic into a
                                      new run folder (rizzrun.merge.command)

generate, eval and export load the checkpoint `checkpoints/latest` names (or `--checkpoint
step-N`) after checking its files against the digests in its meta.json, and refuse a damaged
one; their bad input is one `error:` line and exit 2, found before torch where it can be.
generate and eval take any decoder option with its own knobs as overrides, the runner's way
(`decoder=typical decoder.typical_p=0.9`), composed and checked by the validator's rules before
torch (rizzrun.runner.generate.compose_decoder); generate's base is the run's own decoder (greedy
with --model), eval's is greedy, on which its metrics are defined.

A first argument that is a subcommand or a help flag goes to the typer app; anything else is a
job's command line for Hydra. Nothing here imports torch, Lightning or W&B: the runner is
imported only inside the job (and by `generate`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from rizzrun.layout import EVAL as EVAL_FILE

SUBCOMMANDS = ("list", "show", "validate", "generate", "eval", "export", "compare", "merge")
HELP_FLAGS = ("--help", "-h")

app = typer.Typer(
    name="rizzrun",
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "A Hydra-configured experiment runner for language-model research.\n\n"
        "Bare overrides run a job: `rizzrun [OVERRIDES...]` composes conf/ (+ recipes/), validates it and "
        "trains, e.g. `rizzrun +recipe=tiny trainer.max_steps=100`; `rizzrun -m seed=0,1,2` runs a sweep; "
        "`rizzrun resume=true` continues the latest run of the same name. Every Hydra flag works there "
        "(--cfg job, --info, -m, hydra.run.dir=..., hydra/launcher=...). With no arguments it runs the demo."
    ),
)


def _fail(error: Exception | str) -> typer.Exit:
    print(f"error: {error}", file=sys.stderr)
    return typer.Exit(2)


@app.command("list")
def list_(group: Optional[str] = typer.Argument(None, help="a group (model, objective, ..., recipe)")) -> None:
    """List every group and its options, or one group's options with a line about each."""
    from rizzrun.config import catalog
    from rizzrun.config.errors import listing, message, suggest
    from rizzrun.config.validate import option_target

    groups = [*catalog.groups(), catalog.RECIPE_GROUP]
    if group is None:
        width = max(map(len, groups))
        for g in groups:
            print(f"{g:<{width}}  {listing(catalog.options(g))}")
        return
    if group not in groups:
        raise _fail(message(f"list {group}", f"no group '{group}'", suggest(group, groups),
                            f"groups: {listing(groups)}"))
    names = catalog.options(group)
    width = max(map(len, names), default=0)
    for name in names:
        # The option's own yaml comment first (two options may share a target), else the
        # first line of its target's docstring.
        about = catalog.yaml_description(catalog.option_file(group, name))
        if not about and group != catalog.RECIPE_GROUP:
            target = option_target(group, name)
            about = (target.doc or "").strip().splitlines()[0] if target is not None and target.doc else ""
        print(f"{name:<{width}}  {about}".rstrip())


@app.command()
def show(
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides, e.g. +recipe=tiny model.size=small"),
    resolve: bool = typer.Option(False, "--resolve", help="resolve ${...} interpolations"),
) -> None:
    """Print the composed config as YAML (with the Llama dimensions its size resolves to)."""
    from omegaconf import OmegaConf

    from rizzrun.config import ConfigError, compose

    try:
        cfg = compose(_resumed_overrides(overrides or []))
        text = OmegaConf.to_yaml(cfg, resolve=resolve)
    except ConfigError as e:
        raise _fail(e) from None
    except Exception as e:  # an interpolation that does not resolve (with --resolve)
        raise _fail(f"cannot resolve the config: {str(e).splitlines()[0]}") from None
    print(text, end="")
    dims = _llama_dims(cfg)
    if dims:
        print("# model dimensions after the size preset: " + ", ".join(f"{k}={v}" for k, v in dims.items()))


def _resumed_overrides(overrides: list[str]) -> list[str]:
    """With resume=true|PATH: the overrides of the job a resume would run (the run's own, then
    these), so that `show` and `validate` see what `rizzrun ... resume=...` would run."""
    from rizzrun.config.resume import requests_resume, resumed_job

    if not requests_resume(overrides):
        return overrides
    return resumed_job(overrides, "config").overrides


def _llama_dims(cfg) -> dict | None:
    """The model's dimensions, from its spec's `dims` (rizzrun.config.specs); None without one."""
    from omegaconf import OmegaConf

    from rizzrun.config.specs import hook, spec_of

    model = cfg.get("model")
    if model is None or not isinstance(model.get("_target_"), str):
        return None
    dims = hook(spec_of(model._target_), "dims")
    if dims is None:
        return None
    try:
        node = OmegaConf.to_container(model, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve: validate says
        return None
    return dims(node)


@app.command()
def validate(
    overrides: Optional[list[str]] = typer.Argument(None, help="Hydra overrides, e.g. +recipe=tiny model.size=small"),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="check every job of a sweep (a=1,2 b=x,y)"),
) -> None:
    """Compose and validate without running: print "ok", or every problem and exit with 2."""
    code = _validate(overrides or [], multirun)
    if code:
        raise typer.Exit(code)


def _validate(overrides: list[str], multirun: bool) -> int:
    """`rizzrun validate`'s work (the command, and main()'s direct route to it): 0 or 2."""
    from rizzrun.config import ConfigError
    from rizzrun.config.check import check_jobs
    from rizzrun.config.resume import requests_resume
    from rizzrun.errors import InputError

    try:
        if multirun and requests_resume(overrides):  # the sweep it would continue, and its jobs
            from rizzrun.config.launch import resume_sweep

            resume_sweep(overrides, [], "config")
            overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0].strip() != "resume"]
        configs = check_jobs(overrides if multirun else _resumed_overrides(overrides), multirun=multirun)
    except (ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("ok" if len(configs) == 1 else f"ok ({len(configs)} jobs)")
    return 0


# click's exceptions, or the copy of click that typer vendors (typer >= 0.2x): where typer's own
# BadParameter is defined.
_usage = sys.modules[typer.BadParameter.__module__]


class _OneLineUsageErrors(TyperCommand):
    """A value of the wrong type or a missing option (`--temperature abc`, no `--prompt`) as one
    `error:` line and exit 2, like every other bad input, instead of click's usage block."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _usage.UsageError as e:
            if isinstance(e, _usage.BadParameter) and e.param is not None:
                opts = list(getattr(e.param, "opts", None) or [])
                flag = " / ".join(opts) if e.param.param_type_name == "option" and opts else str(e.param.name).upper()
                what = "required" if isinstance(e, _usage.MissingParameter) else str(e.message).rstrip(".")
                text = f"{flag}: {what}"
            else:
                text = " ".join(e.format_message().split()).rstrip(".")
            raise _fail(f"{text}; see rizzrun {ctx.info_name} --help") from None


CHECKPOINT_HELP = "a checkpoint of RUN_DIR (step-NNNNNN or a step number); default: the one checkpoints/latest names"
# Extra arguments (decoder=NAME, decoder.KEY=VALUE) reach the command as ctx.args.
OVERRIDE_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
# The flags `generate` had before decoder settings became overrides -> what to write instead.
MOVED_FLAGS = {"--decoder": "decoder", "--temperature": "decoder.temperature", "--top-k": "decoder.top_k",
               "--top-p": "decoder.top_p", "--repetition-penalty": "decoder.repetition_penalty",
               "--min-new-tokens": "decoder.min_new_tokens", "--seed": "decoder.seed",
               "--max-new-tokens": "decoder.max_new_tokens", "-n": "decoder.max_new_tokens"}


@app.command(cls=_OneLineUsageErrors, context_settings=OVERRIDE_ARGS)
def generate(
    ctx: typer.Context,
    run_dir: Optional[str] = typer.Argument(None, metavar="[RUN_DIR] [decoder=NAME] [decoder.KEY=VALUE]...",
                                            help="a run folder (outputs/<date>/<time>-<name>), then overrides of "
                                                 "its decoder: decoder=NAME (an option of `rizzrun list decoder`) "
                                                 "and decoder.KEY=VALUE, e.g. decoder=typical decoder.typical_p=0.9"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    model: Optional[Path] = typer.Option(None, "--model", help="instead of RUN_DIR: a local Hugging Face Llama "
                                         "folder (config.json, safetensors, tokenizer files)"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
) -> None:
    """Continue PROMPT with the latest checkpoint of RUN_DIR (or a Hugging Face folder given by
    --model) and print the text. The decoder is the run's own (greedy with --model); decoder=NAME
    picks another (`rizzrun list decoder`), decoder.KEY=VALUE sets its knobs (those of
    conf/decoder/NAME.yaml); every value is checked by the validator's rules before the model
    loads. A sampling decoder without decoder.seed takes the run's seed."""
    folder, overrides = _split_positionals("generate", [run_dir] if run_dir is not None else [], ctx.args,
                                           ("--prompt", "-p", "--model", "--checkpoint"))
    if (folder is None) == (model is None):
        raise _fail("give a run folder (RUN_DIR) or a Hugging Face model folder (--model PATH), not both or neither")
    if model is not None:
        problem = (("--checkpoint: only with RUN_DIR, not with --model" if checkpoint is not None else None)
                   or _hf_model_problem(model) or _decoder_problem(overrides, None))
        if problem:
            raise _fail(problem)
        from rizzrun.runner.generate import generate_from_hf

        with _input_errors():
            text = generate_from_hf(model, prompt, overrides)
        print(text)
        return
    problem = _run_problem(folder, checkpoint) or _decoder_problem(overrides, folder)
    if problem:
        raise _fail(problem)
    from rizzrun.runner.generate import generate_from_run

    with _input_errors():
        text = generate_from_run(folder, prompt, overrides, checkpoint=checkpoint)
    print(text)


def _split_positionals(command: str, given: list[str], extra: list[str],
                       flags: tuple[str, ...]) -> tuple[Optional[Path], list[str]]:
    """(RUN_DIR, overrides) from a command's positional arguments, in any order: an argument of
    the form KEY=VALUE or ~KEY that is not an existing path is an override, the other one the run
    folder. An unknown flag is one `error:` line (a flag that became an override says which)."""
    from rizzrun.config.errors import message, suggest

    from rizzrun.config.errors import closest

    args = [*given, *extra]
    for i, arg in enumerate(extra):
        if arg.startswith("-") and not _is_number(arg):
            flag, _, value = arg.partition("=")
            after = extra[i + 1] if i + 1 < len(extra) else ""
            value = value or ("" if after.startswith("-") and not _is_number(after) or "=" in after else after)
            moved = MOVED_FLAGS.get(flag)
            near = closest(flag, MOVED_FLAGS) if moved is None and command == "generate" else None
            shown = value or ("NAME" if (moved or MOVED_FLAGS.get(near)) == "decoder" else "VALUE")
            if moved is not None and command == "generate":
                raise _fail(message(f"{flag} {value}".rstrip(), "decoder settings are overrides now",
                                    f"write {moved}={shown} (see rizzrun {command} --help)"))
            hint = (f"did you mean {MOVED_FLAGS[near]}={shown}?" if near is not None and not suggest(flag, flags)
                    else suggest(flag, flags))
            raise _fail(message(flag, "no such option", hint,
                                f"options: {', '.join(flags)}; decoder settings: decoder=NAME decoder.KEY=VALUE; "
                                f"see rizzrun {command} --help"))
    folders, overrides = [], []
    for arg in args:
        is_override = ("=" in arg or arg.startswith("~")) and not Path(arg).exists()
        (overrides if is_override else folders).append(arg)
    if len(folders) > 1:
        raise _fail(message(" ".join(folders), "more than one run folder",
                            "give one RUN_DIR, then decoder=NAME / decoder.KEY=VALUE overrides"))
    return (Path(folders[0]) if folders else None), overrides


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decoder_problem(overrides: list[str], run_dir: Optional[Path], refused: dict | None = None,
                     base_name: Optional[str] = None) -> str | None:
    """The decoder the overrides compose (on the run's own, or on `base_name`/greedy), checked by
    the validator's rules, before torch: None, or every problem (rizzrun.runner.generate.compose_decoder)."""
    from rizzrun.config import ConfigError
    from rizzrun.runner.generate import compose_decoder, run_decoder_node

    base = run_decoder_node(run_dir) if run_dir is not None else None
    try:
        compose_decoder(overrides, base=base, base_name=base_name, refused=refused)
    except ConfigError as e:
        return str(e)
    return None


@contextmanager
def _input_errors():
    """An InputError found once the runner reads its inputs -> one `error:` line, exit 2."""
    from rizzrun.errors import InputError

    try:
        yield
    except InputError as e:
        raise _fail(e) from None


def _hf_model_problem(model: Path) -> str | None:
    """A missing or unsupported folder, reported before torch is imported."""
    from rizzrun.config.errors import message
    from rizzrun.models.hf_llama import HFCheckpointError, hf_llama_dims
    from rizzrun.tokenizers.hf import folder_vocab_size

    try:
        hf_llama_dims(model)
        folder_vocab_size(str(model))
    except HFCheckpointError as e:
        return message(f"--model {model}", "; ".join(e.problems))
    except (OSError, ValueError) as e:
        return message(f"--model {model}", str(e))
    return None


def _run_problem(run_dir: Path, checkpoint: Optional[str]) -> str | None:
    """A missing run folder, one without config.yaml or a checkpoint, or a checkpoint whose files
    do not match the digests in its meta.json: found before torch is imported."""
    from rizzrun.config.errors import message
    from rizzrun.errors import InputError
    from rizzrun.layout import CONFIG
    from rizzrun.runner.checkpoint_files import checked_checkpoint

    if not run_dir.exists():
        return message(str(run_dir), "no such run folder", "give a folder under outputs/<date>/")
    if not run_dir.is_dir():
        return message(str(run_dir), "not a folder", "give a run folder under outputs/<date>/")
    if not (run_dir / CONFIG).is_file():
        return message(str(run_dir), f"not a rizzrun run folder (no {CONFIG})", "give a folder under outputs/<date>/")
    try:
        checked_checkpoint(run_dir, checkpoint)
    except InputError as e:
        return str(e)
    return None


def _range_problem(flag: str, value: float, bounds, hint: str = "") -> str | None:
    from rizzrun.config.errors import message

    allowed = " and ".join(f"{op} {bound:g}" for op, bound in bounds)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return message(f"{flag} {shown}", "not a finite number", f"allowed: {allowed or 'a finite number'}", hint)
    from rizzrun.config.validate import holds

    if not all(holds(value, op, bound) for op, bound in bounds):
        return message(f"{flag} {shown}", "out of range", f"allowed: {allowed}" + (f" ({hint})" if hint else ""))
    return None


def _schema_bounds(schema: type, name: str) -> tuple:
    """(op, bound) pairs of a schema dataclass field, as the validator reads them."""
    import dataclasses

    from rizzrun.config.validate import bounds_of

    return bounds_of({f.name: f.metadata for f in dataclasses.fields(schema)}[name])


@app.command("eval", cls=_OneLineUsageErrors, context_settings=OVERRIDE_ARGS)
def eval_(
    ctx: typer.Context,
    run_dir: str = typer.Argument(..., metavar="RUN_DIR [decoder=NAME] [decoder.KEY=VALUE]...",
                                  help="a run folder (outputs/<date>/<time>-<name>), then the decoder the "
                                       "metrics decode with: greedy unless decoder=NAME / decoder.KEY=VALUE say"),
    documents: Optional[str] = typer.Option(None, "--documents", help="train | val | PATH (.jsonl/.txt); default: the run's eval.documents"),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", help="evaluate the first N documents"),
    prefix_len: Optional[int] = typer.Option(None, "--prefix-len", help="prompt tokens taken from each document"),
    continuation_len: Optional[int] = typer.Option(None, "--continuation-len", help="tokens decoded and compared"),
    output: str = typer.Option(EVAL_FILE, "--output", "-o", help="file name in RUN_DIR for the results"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
) -> None:
    """Memorization (extraction: exact match, token match, RougeL) on a named set of documents,
    held-out loss, and a verifiable task's accuracy, for the latest checkpoint of RUN_DIR; writes
    RUN_DIR/eval.json (or --output), which records the decoder. The metrics are defined on greedy
    decoding, the default; decoder=NAME decoder.KEY=VALUE measure them under another decoder
    (logged apart: mem_by_NAME/*, task_by_NAME/*)."""
    folder, overrides = _split_positionals("eval", [run_dir], ctx.args, (
        "--documents", "--max-documents", "--prefix-len", "--continuation-len", "--output", "-o", "--checkpoint"))
    if folder is None:
        raise _fail("RUN_DIR: required; see rizzrun eval --help")
    from rizzrun.runner.evaluate import EVAL_REFUSED

    problem = _run_problem(folder, checkpoint) or _eval_problem(folder, documents, output, dict(
        max_documents=max_documents, prefix_len=prefix_len, continuation_len=continuation_len)) or _decoder_problem(
        overrides, None, refused=EVAL_REFUSED)
    if problem:
        raise _fail(problem)
    from rizzrun.runner.evaluate import evaluate_run

    with _input_errors():
        result = evaluate_run(folder, documents=documents, max_documents=max_documents, prefix_len=prefix_len,
                              continuation_len=continuation_len, output=output, checkpoint=checkpoint,
                              decoder=overrides)
    _print_eval(result, decoder_shown=bool(overrides))
    print(f"written: {folder / output}")


def _print_eval(result: dict, decoder_shown: bool = False) -> None:
    """What `rizzrun eval` found, by what the run's data is (see rizzrun.runner.evaluate.evaluate)."""
    mem, val = result.get("memorization"), result["val"]
    if decoder_shown:
        print(f"decoder: {_decoded_by(result)} {json.dumps(result['decoder'])}")
    if mem is not None:
        print(f"documents: {result['documents']} ({mem['documents']} evaluated, {mem['skipped_short']} too short)")
        print(f"exact match {mem['exact_match_rate']:.3f} ({mem['exact_matches']}/{mem['documents']})  "
              f"token match {mem['token_match']:.3f}  RougeL {mem['rougeL']:.3f}  "
              f"val loss {val['loss']:.4f}  ppl {val['ppl']:.2f}")
    elif "sets" in result:
        for name, metrics in {"val": val, **result["sets"]}.items():
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("loss", "rewards/accuracies",
                                                                                   "rewards/margins"))
            print(f"{name} pairs ({int(metrics.get('pairs', 0))}): {shown}")
    else:
        print(f"val loss {val['loss']:.4f}  ppl {val['ppl']:.2f}")
    task = result.get("task")
    if task is not None:
        print(f"task: {task['correct_rate']:.3f} correct of {task['n']} held-out prompts ({_decoded_by(result)}), "
              f"{task['eos_rate']:.3f} stopped, {task['mean_new_tokens']:.1f} new tokens on average")


DEFAULT_EVAL_DECODER = "greedy"


def _decoded_by(result: dict) -> str:
    return str(result.get("decoder_option") or DEFAULT_EVAL_DECODER)


def _eval_problem(run_dir: Path, documents: Optional[str], output: str, counts: dict) -> str | None:
    """`eval`'s flags, before torch: counts in EvalConfig's ranges, --documents a split or a
    readable .jsonl/.txt file, --output a file name in a run folder that can be written."""
    from rizzrun.config.errors import message
    from rizzrun.config.schema import EvalConfig

    for key, value in counts.items():
        problem = value is not None and _range_problem("--" + key.replace("_", "-"), value,
                                                       _schema_bounds(EvalConfig, key))
        if problem:
            return problem
    if documents is not None and documents not in ("train", "val"):
        path = Path(documents).expanduser()
        if not path.is_file():
            return message(f"--documents {documents}", "no such file", "allowed: train, val, or a .jsonl/.txt file")
        if path.suffix not in (".jsonl", ".txt"):
            return message(f"--documents {documents}", f"unsupported extension {path.suffix!r}",
                           "allowed: train, val, or a .jsonl (a text field per row) / .txt (documents separated "
                           "by blank lines) file")
        if not os.access(path, os.R_OK):
            return message(f"--documents {documents}", "not readable", "give a file you can read")
    if not output or Path(output).name != output or output in (".", ".."):
        return message(f"--output {output}", "not a file name", "give a file name inside the run folder, e.g. eval.json")
    return _unwritable(run_dir, f"--output {output}")


def _unwritable(folder: Path, head: str) -> str | None:
    """Whether a file can be created in `folder` (or, when it does not exist yet, in its nearest
    existing parent), found by creating one: permissions, a read-only file system, root."""
    import tempfile

    from rizzrun.config.errors import message

    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return message(head, f"{probe} is not a folder", "give a path whose parent is a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".rizzrun-probe-"))
    except OSError as e:
        return message(head, f"cannot write into {probe} ({e.strerror or e})", "give a folder you can write to")
    return None


@app.command("export", cls=_OneLineUsageErrors)
def export(
    run_dir: Path = typer.Argument(..., help="a run folder (outputs/<date>/<time>-<name>)"),
    out_dir: Path = typer.Argument(..., help="the Hugging Face model folder to write"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty OUT_DIR, replacing the model "
                                                      "and tokenizer files of an earlier export"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
) -> None:
    """Write the latest checkpoint of RUN_DIR as a Hugging Face Llama folder (config.json,
    model.safetensors, generation_config.json, the tokenizer when transformers can load it), which
    transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR) loads."""
    problem = _run_problem(run_dir, checkpoint) or _export_problem(out_dir, force)
    if problem:
        raise _fail(problem)
    from rizzrun.runner.export import export_run

    try:
        with _input_errors():
            lines = export_run(run_dir, out_dir, force=force, checkpoint=checkpoint)
    except (FileExistsError, OSError) as e:  # OUT_DIR changed, or a write failed, after the checks
        raise _fail(f"{out_dir}: {e.strerror or e}" if isinstance(e, OSError) and e.strerror else e) from None
    print("\n".join(lines))


def _export_problem(out_dir: Path, force: bool) -> str | None:
    from rizzrun.config.errors import message

    if out_dir.exists() and not out_dir.is_dir():
        return message(str(out_dir), "exists and is not a folder", "give a folder to write the model into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        return message(str(out_dir), "exists and is not empty",
                       "give a new folder, or pass --force to replace the model and tokenizer files in it")
    # export writes beside OUT_DIR first (a temp folder in its parent), then moves the files in
    return _unwritable(out_dir.absolute().parent, str(out_dir)) or (
        _unwritable(out_dir, str(out_dir)) if out_dir.is_dir() else None)


@app.command("compare", cls=_OneLineUsageErrors)
def compare(
    paths: Optional[list[Path]] = typer.Argument(None, help="run folders, sweep folders or folders of runs"),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="a metric to show (repeatable); "
                                               "default: val/loss and train/loss"),
    maximize: Optional[list[str]] = typer.Option(None, "--maximize", help="a metric whose best is its largest "
                                                 "(repeatable; names like acc/accuracy/f1/reward are by default)"),
    sort: Optional[str] = typer.Option(None, "--sort", help="rows best first by this metric's best value"),
    fmt: Optional[str] = typer.Option(None, "--format", help="rich | markdown | csv; default: rich on a "
                                      "terminal, else markdown"),
    plot: Optional[str] = typer.Option(None, "--plot", help="a metric to plot against the step (with --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="the PNG file --plot writes"),
    per_run: bool = typer.Option(False, "--per-run", help="one row per run: do not group runs that differ only by seed"),
    ignore: Optional[list[str]] = typer.Option(None, "--ignore", help="a config key never shown nor grouped by (repeatable)"),
    wandb: Optional[str] = typer.Option(None, "--wandb", help="ENTITY/PROJECT: read the runs from W&B instead"),
    filters: Optional[list[str]] = typer.Option(None, "--filter", help="with --wandb: KEY=VALUE (state=finished, "
                                                "config.optimizer.lr=0.001) or a JSON filter (repeatable)"),
    group: Optional[str] = typer.Option(None, "--group", help="with --wandb: the W&B group (a sweep)"),
) -> None:
    """Compare runs: a table of the config keys that differ and each metric's final and best value
    (runs differing only by seed grouped as mean ± 95% CI), and with --plot a PNG of the curves."""
    from rizzrun.compare.command import Options, compare as run_compare

    options = Options(paths=list(paths or []), wandb=wandb, filters=list(filters or []), group=group,
                      metrics=list(metric or []), maximize=tuple(maximize or ()), sort=sort, fmt=fmt, plot=plot,
                      out=out, per_run=per_run, ignore=tuple(ignore or ()))
    with _input_errors():
        run_compare(options)


@app.command("merge", cls=_OneLineUsageErrors)
def merge(
    method: str = typer.Argument(..., metavar="METHOD", help="slerp | linear | liti | paramdelta"),
    paths: Optional[list[str]] = typer.Argument(None, metavar="[MODEL...] OUT",
                                                help="the models to merge (slerp: 2 or more, linear: 1 or more, "
                                                     "liti: the merged model, paramdelta: none), then OUT, the run "
                                                     "folder to write"),
    init: Optional[str] = typer.Option(None, "--init", help="slerp, linear, liti: the model the task vectors "
                                       "start from (a run folder or a Hugging Face Llama folder)"),
    lam: Optional[float] = typer.Option(None, "--lam", help="slerp of 2 models: λ in [0, 1] (0: the first, "
                                        "1: the second); default 0.5"),
    eta: Optional[float] = typer.Option(None, "--eta", help="slerp: LITI towards --init after SLERP, η in [0, 1], "
                                        "default 1.0 (none); liti: required"),
    weights: Optional[str] = typer.Option(None, "--weights", help="linear: W1,W2,... one per MODEL; "
                                          "default 1/M each"),
    new_base: Optional[str] = typer.Option(None, "--new-base", help="paramdelta: the updated base model"),
    post: Optional[list[str]] = typer.Option(None, "--post", help="paramdelta: a post-trained model (repeatable, "
                                             "paired in order with --base)"),
    base: Optional[list[str]] = typer.Option(None, "--base", help="paramdelta: the base that --post was trained "
                                             "from (repeatable)"),
    alpha: Optional[list[float]] = typer.Option(None, "--alpha", help="paramdelta: the weight of each "
                                                "(--post - --base) delta (repeatable, one per pair); default 1.0"),
    force: bool = typer.Option(False, "--force", help="replace OUT when it is an earlier merge's output"),
) -> None:
    """Merge models by weight arithmetic into a new run folder OUT (config.yaml and tokenizer of the
    first run folder among the inputs), which `rizzrun eval OUT`, `rizzrun generate OUT -p ...` and
    `model.from_pretrained=OUT` accept; OUT/merge.json records the method, options and each
    input's weights digest.

    \b
    slerp       --init I MODEL MODEL [MODEL...] [--lam 0.5] [--eta 1.0] OUT   (WARP, arXiv:2406.16768)
    linear      --init I MODEL [MODEL...] [--weights W1,W2,...] OUT
    liti        --init I MERGED --eta 0.3 OUT
    paramdelta  --new-base NB --post P --base B [--post P2 --base B2 ...] [--alpha A ...] OUT   (arXiv:2504.21023)

    Inputs are run folders (their latest checkpoint, verified) or Hugging Face Llama folders."""
    paths = list(paths or [])
    if not paths:
        raise _fail("OUT: required (the run folder to write, last); see rizzrun merge --help")
    from rizzrun.merge.command import merge as run_merge

    try:
        with _input_errors():
            lines = run_merge(method, paths[-1], init=init, models=paths[:-1], new_base=new_base, posts=post or [],
                              bases=base or [], alphas=alpha or [], weights=weights, lam=lam, eta=eta, force=force)
    except OSError as e:  # a write failed after the checks
        raise _fail(f"{paths[-1]}: {e.strerror or e}") from None
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a subcommand or help flag -> typer; anything else -> a Hydra job."""
    from rizzrun.ranks import handed_job, run_handed_job

    job = handed_job()
    if job is not None:  # a rank Lightning started for a run under way: join it, without Hydra
        sys.exit(run_handed_job(job))
    argv = list(sys.argv[1:] if argv is None else argv)
    multirun = ("-m", "--multirun")
    if argv[:1] == ["validate"] and all(a in multirun or not a.startswith("-") for a in argv[1:]):
        # Straight to the work: typer coerces arguments through pydantic, which alone costs
        # more than validating (issue 11: a rejected config within 1.5x the import floor).
        sys.exit(_validate([a for a in argv[1:] if a not in multirun], any(a in multirun for a in argv[1:])))
    if argv and (argv[0] in SUBCOMMANDS or argv[0] in HELP_FLAGS):
        app(args=argv, prog_name="rizzrun")
        return
    from rizzrun.config.launch import launch

    sys.exit(launch(argv))


if __name__ == "__main__":
    main()
