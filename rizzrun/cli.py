"""The `rizzrun` command.

    rizzrun [OVERRIDES...]            run one job through Hydra (-m: a sweep); see rizzrun.config.launch
    rizzrun list [GROUP]              the config groups and their options
    rizzrun show [OVERRIDES...]       the composed config as YAML
    rizzrun validate [OVERRIDES...]   compose + validate: "ok" or every problem (exit 2)
    rizzrun generate RUN_DIR --prompt TEXT ...
    rizzrun export RUN_DIR OUT_DIR [--force]   a run's latest checkpoint as a Hugging Face Llama folder
    rizzrun eval RUN_DIR [--documents train|val|PATH]   memorization + held-out loss -> eval.json

A first argument that is a subcommand or a help flag goes to the typer app; anything else is a
job's command line for Hydra. Nothing here imports torch, Lightning or W&B: the runner is
imported only inside the job (and by `generate`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

SUBCOMMANDS = ("list", "show", "validate", "generate", "eval", "export")
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
        cfg = compose(overrides or [])
        text = OmegaConf.to_yaml(cfg, resolve=resolve)
    except ConfigError as e:
        raise _fail(e) from None
    except Exception as e:  # an interpolation that does not resolve (with --resolve)
        raise _fail(f"cannot resolve the config: {str(e).splitlines()[0]}") from None
    print(text, end="")
    dims = _llama_dims(cfg)
    if dims:
        print("# model dimensions after the size preset: " + ", ".join(f"{k}={v}" for k, v in dims.items()))


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

    try:
        configs = check_jobs(overrides, multirun=multirun)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("ok" if len(configs) == 1 else f"ok ({len(configs)} jobs)")
    return 0


@app.command()
def generate(
    run_dir: Optional[Path] = typer.Argument(None, help="a run folder (outputs/<date>/<time>-<name>)"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    model: Optional[Path] = typer.Option(None, "--model", help="instead of RUN_DIR: a local Hugging Face Llama "
                                         "folder (config.json, safetensors, tokenizer files)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n", help="default: the decoder's"),
    decoder: Optional[str] = typer.Option(None, "--decoder",
                                          help="a decoder option (greedy, sample, ...); default: the run's (greedy with --model)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="sampling temperature"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="keep the k most likely tokens (0 = off)"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="nucleus mass (1.0 = off)"),
    repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", help="CTRL penalty (1.0 = off)"),
    min_new_tokens: Optional[int] = typer.Option(None, "--min-new-tokens", help="no EOS before this many tokens"),
    seed: Optional[int] = typer.Option(None, "--seed", help="sampling seed"),
) -> None:
    """Continue PROMPT with the latest checkpoint of RUN_DIR (or a Hugging Face folder given by
    --model) and print the text."""
    settings = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                      repetition_penalty=repetition_penalty, min_new_tokens=min_new_tokens).items()
                if v is not None}
    if (run_dir is None) == (model is None):
        raise _fail("give a run folder (RUN_DIR) or a Hugging Face model folder (--model PATH), not both or neither")
    if model is not None:
        problem = _hf_model_problem(model) or _decoder_settings_problem(decoder or "greedy", settings)
        if problem:
            raise _fail(problem)
        from rizzrun.runner.generate import generate_from_hf

        print(generate_from_hf(model, prompt, max_new_tokens=max_new_tokens, decoder=decoder, **settings))
        return
    problem = _generate_problem(run_dir, decoder, settings)
    if problem:
        raise _fail(problem)
    from rizzrun.runner.generate import generate_from_run

    print(generate_from_run(run_dir, prompt, max_new_tokens=max_new_tokens, decoder=decoder, **settings))


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


def _generate_problem(run_dir: Path, decoder: Optional[str], settings: dict) -> str | None:
    from rizzrun.config.errors import message
    from rizzrun.config.resume import LATEST

    if not run_dir.is_dir():
        return message(str(run_dir), "no such run folder", "give a folder under outputs/<date>/")
    if not (run_dir / LATEST).exists():
        return message(str(run_dir), f"holds no {LATEST.as_posix()}: the run saved no checkpoint (yet)",
                       "train longer than trainer.checkpoint_every steps, or pick another run")
    return _decoder_settings_problem(decoder, settings, run_dir)


def _decoder_settings_problem(decoder: Optional[str], settings: dict, run_dir: Optional[Path] = None) -> str | None:
    """An unknown --decoder, or a flag that decoder does not take (the run's own decoder when
    --decoder is not given)."""
    from rizzrun.config import catalog
    from rizzrun.config.errors import listing, message, suggest
    from rizzrun.config.validate import option_target

    if decoder is not None:
        names = catalog.options("decoder")
        if decoder not in names:
            return message(f"--decoder {decoder}", "no such decoder", suggest(decoder, names),
                           f"decoders: {listing(names)}")
        target = option_target("decoder", decoder)
    else:
        target = _run_decoder(run_dir) if run_dir is not None else None
    if target is not None and target.params is not None and not target.takes_any_keyword():
        accepted = {p.name for p in target.keyword_params()}
        for key in settings:
            if key not in accepted:
                flag = "--" + key.replace("_", "-")
                return message(f"{flag} {settings[key]}", f"the decoder {target.target} takes no {key}",
                               f"its settings: {listing(sorted(accepted))}; pick a sampling decoder with --decoder")
    return None


def _run_decoder(run_dir: Path):
    from omegaconf import OmegaConf

    from rizzrun.config import signatures

    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        return signatures.resolve(str(saved.decoder._target_))
    except Exception:  # noqa: BLE001 - no saved config or target: the runner will say
        return None


@app.command("eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="a run folder (outputs/<date>/<time>-<name>)"),
    documents: Optional[str] = typer.Option(None, "--documents", help="train | val | PATH (.jsonl/.txt); default: the run's eval.documents"),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", help="evaluate the first N documents"),
    prefix_len: Optional[int] = typer.Option(None, "--prefix-len", help="prompt tokens taken from each document"),
    continuation_len: Optional[int] = typer.Option(None, "--continuation-len", help="tokens decoded and compared"),
    output: str = typer.Option("eval.json", "--output", "-o", help="file name in RUN_DIR for the results"),
) -> None:
    """Memorization (greedy extraction: exact match, token match, RougeL) on a named set of
    documents, and held-out loss, for the latest checkpoint of RUN_DIR; writes RUN_DIR/eval.json
    (or --output)."""
    problem = _generate_problem(run_dir, None, {})
    if problem:
        raise _fail(problem)
    for flag, value in (("--max-documents", max_documents), ("--prefix-len", prefix_len),
                        ("--continuation-len", continuation_len)):
        if value is not None and value < 1:
            raise _fail(f"{flag} {value}: out of range; allowed: >= 1")
    from rizzrun.runner.evaluate import evaluate_run

    try:
        result = evaluate_run(run_dir, documents=documents, max_documents=max_documents, prefix_len=prefix_len,
                              continuation_len=continuation_len, output=output)
    except (ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    mem, val = result["memorization"], result["val"]
    print(f"documents: {result['documents']} ({mem['documents']} evaluated, {mem['skipped_short']} too short)")
    print(f"exact match {mem['exact_match_rate']:.3f} ({mem['exact_matches']}/{mem['documents']})  "
          f"token match {mem['token_match']:.3f}  RougeL {mem['rougeL']:.3f}  "
          f"val loss {val['loss']:.4f}  ppl {val['ppl']:.2f}")
    print(f"written: {run_dir / output}")


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="a run folder (outputs/<date>/<time>-<name>)"),
    out_dir: Path = typer.Argument(..., help="the Hugging Face model folder to write"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty OUT_DIR, replacing the model "
                                                      "and tokenizer files of an earlier export"),
) -> None:
    """Write the latest checkpoint of RUN_DIR as a Hugging Face Llama folder (config.json,
    model.safetensors, generation_config.json, the tokenizer when transformers can load it), which
    transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR) loads."""
    problem = _generate_problem(run_dir, None, {}) or _export_problem(run_dir, out_dir, force)
    if problem:
        raise _fail(problem)
    from rizzrun.runner.export import export_run

    try:
        lines = export_run(run_dir, out_dir, force=force)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise _fail(e) from None
    print("\n".join(lines))


def _export_problem(run_dir: Path, out_dir: Path, force: bool) -> str | None:
    from rizzrun.config.errors import message

    if not (run_dir / "config.yaml").is_file():
        return message(str(run_dir), "not a rizzrun run folder (no config.yaml)", "give a folder under outputs/<date>/")
    if out_dir.exists() and not out_dir.is_dir():
        return message(str(out_dir), "exists and is not a folder", "give a folder to write the model into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        return message(str(out_dir), "exists and is not empty",
                       "give a new folder, or pass --force to replace the model and tokenizer files in it")
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a subcommand or help flag -> typer; anything else -> a Hydra job."""
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
