"""`rizzrun eval RUN_DIR` and `eval.at_end`: memorization on a named set of documents plus
held-out loss, written to `<run>/eval.json` (and logged as `mem/*`, `eval/*` when training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from rizzrun import layout
from rizzrun.config.schema import EvalConfig
from rizzrun.errors import InputError

# Decoder keys eval sets itself -> what to write instead (`compose_decoder(refused=...)`).
EVAL_REFUSED = {"max_new_tokens": "eval decodes exactly --continuation-len tokens (eval.continuation_len); "
                                  "set that instead"}


def named_documents(data: Any, documents: str, max_documents: int, key: str = "eval.documents=") -> list[str]:
    """`train` / `val`: the data option's own splits; otherwise a path to .jsonl (a `text`
    field per row) or .txt (documents separated by blank lines). Bad input raises InputError
    headed by `key` + the value (`eval.documents=...`, or `--documents ...` for the command)."""
    if documents in ("train", "val"):
        texts = getattr(data, f"{documents}_texts", None)
        if texts is None:
            raise InputError(f"{key}{documents}: {type(data).__name__} has no {documents}_texts(); "
                             "give a .jsonl or .txt file instead")
        docs = list(texts())
    else:
        path = Path(documents).expanduser()
        if not path.is_file():
            raise InputError(f"{key}{documents}: no such file; allowed: train, val, or a .jsonl/.txt path")
        if path.suffix == ".jsonl":
            docs = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row.get("text"), str):
                        raise InputError(f"{key}{documents}: row {i} (0-based line) has no string 'text' field")
                    docs.append(row["text"])
        elif path.suffix == ".txt":
            docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        else:
            raise InputError(f"{key}{documents}: unsupported extension {path.suffix!r}; allowed: .jsonl, .txt")
    return docs[:max_documents]


def evaluate(model, tokenizer, data, eval_cfg: DictConfig | dict, key: str = "eval.documents=", objective=None,
             extra_models: dict | None = None, decoder: Any = None, rewards: Any = None) -> dict:
    """What a trained model is judged by, by the data it trained on:

    - a corpus (`lm` data): memorization on the named documents + held-out loss over the data's
      validation split (`key` heads a message about the documents, see `named_documents`);
    - pairs (`preference` data) and labelled contexts (`diversity` data: the DDS head): the
      objective's metrics (`objective.evaluate`, with its extra models) over the validation
      examples (`val`) and each of the data's `eval_sets()` (`sets`);
    - prompts (`prompts` data, an on-policy run): the `rewards` (a RewardSet) of one completion per
      held-out prompt (the first `eval.max_documents`), as `rewards` (logged `eval/val/reward`, ...);
    - a verifiable task (data with `verify`, e.g. the built-in arithmetic): greedy answers to the
      first `eval.max_documents` held-out prompts, `eval.continuation_len` new tokens at most,
      checked by the data (`task`); a task's corpus is not judged by memorization.

    Memorization and the task are defined on greedy decoding: `decoder` None is
    conf/decoder/greedy.yaml; a decoder node (`rizzrun.runner.generate.compose_decoder(...).node`)
    measures them under that decoder instead, built with `build_decoder` and with max_new_tokens
    set to `eval.continuation_len`. The result records the node as `decoder`. (`eval.at_end`
    during training always evaluates greedily: the run's metrics stay the papers'.)
    """
    from rizzrun.eval.memorization import heldout_loss, memorization
    from rizzrun.eval.task import held_out_prompts, objective_metrics, reward_metrics, task_accuracy

    from rizzrun.runner.build import build_decoder

    e = dict(eval_cfg)
    node = eval_decoder_node(decoder, int(e["continuation_len"]))
    result: dict = {"decoder": node}
    built = []

    def dec():  # built once, only when something decodes
        if not built:
            built.append(build_decoder(node, tokenizer))
        return built[0]

    if getattr(data, "batch_kind", "lm") == "prompts":
        if rewards is None:
            raise ValueError("evaluating prompts data needs the run's rewards (rizzrun.runner.on_policy.build_rewards)")
        result["rewards"] = reward_metrics(model, dec(), tokenizer, data, rewards, int(e["max_documents"]))
    elif getattr(data, "batch_kind", "lm") in ("preference", "diversity"):
        if objective is None:
            raise ValueError(f"evaluating {data.batch_kind} data needs the run's objective")
        result["val"] = objective_metrics(objective, model, data.val_batches(), extra_models)
        result["sets"] = {name: objective_metrics(objective, model, batches(), extra_models)
                          for name, batches in getattr(data, "eval_sets", dict)().items()}
    else:
        if not hasattr(data, "verify"):
            docs = named_documents(data, str(e["documents"]), int(e["max_documents"]), key)
            result["documents"] = str(e["documents"])
            result["memorization"] = memorization(model, tokenizer, docs, int(e["prefix_len"]),
                                                  int(e["continuation_len"]), decoder=dec())
        result["val"] = heldout_loss(model, data.val_batches())
    if hasattr(data, "verify") and getattr(objective, "policy_generates", True):
        prompts = held_out_prompts(data, tokenizer, int(e["max_documents"]))
        result["task"] = task_accuracy(model, tokenizer, data, prompts, int(e["continuation_len"]), decoder=dec())
    return result


def eval_decoder_node(decoder: Any, continuation_len: int) -> dict:
    """The decoder node eval decodes with, as plain data: `decoder` (a node; None: greedy) with
    max_new_tokens = continuation_len."""
    from omegaconf import OmegaConf

    from rizzrun.runner.generate import DEFAULT_DECODER, decoder_option

    node = decoder_option(DEFAULT_DECODER) if decoder is None else decoder
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {**node, "max_new_tokens": int(continuation_len)}


def flat_metrics(result: dict, prefix: str = "mem", by: str = "") -> dict[str, float]:
    """The scalars of `evaluate` under logger names: `mem/*` for the run's own eval.documents
    (another set of documents gets another prefix, e.g. `mem_val/*`, so the two never mix),
    `eval/val_loss`, `eval/val_ppl` (lm), `eval/val/<metric>` and `eval/<set>/<metric>`
    (preference; `eval/val/<metric>` also for the rewards of prompts data), `task/<metric>` (a verifiable task). `by` (`_by_sample`) follows `mem*` and
    `task` for metrics decoded with another decoder than greedy, so they never mix either."""
    out: dict[str, float] = {}
    mem = result.get("memorization")
    if mem is not None:
        out.update({f"{prefix}{by}/{k}": mem[k] for k in ("exact_match_rate", "token_match", "rougeL")})
    if "rewards" in result:  # prompts data: the rewards of held-out completions
        out.update({f"eval/val/{k}": v for k, v in result["rewards"].items()})
    val = result.get("val")
    if val is not None and "sets" in result:
        out.update({f"eval/val/{k}": v for k, v in val.items()})
        for name, metrics in result["sets"].items():
            out.update({f"eval/{name}/{k}": v for k, v in metrics.items()})
    elif val is not None:
        out.update({"eval/val_loss": val["loss"], "eval/val_ppl": val["ppl"]})
    if "task" in result:
        out.update({f"task{by}/{k}": v for k, v in result["task"].items() if isinstance(v, (int, float))})
    return out


def write(run_dir: Path, result: dict, name: str = layout.EVAL) -> Path:
    if Path(name).name != name:
        raise ValueError(f"eval output {name!r}: must be a file name inside the run folder, e.g. eval.json")
    path = Path(run_dir) / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def evaluate_run(run_dir: Path, output: str = layout.EVAL, checkpoint: str | None = None,
                 decoder: Sequence[str] = (), **overrides: Any) -> dict:
    """Evaluate the latest checkpoint of a run folder (or the one `checkpoint` names: a step-N
    folder name or a step number) into `run_dir/output`; `overrides` replace keys of its `eval`
    config. `decoder`: `decoder=NAME decoder.KEY=VALUE` overrides composed on greedy
    (`compose_decoder`; ConfigError when bad); a sampling decoder without a seed takes the run's
    seed, so the file is reproducible. The result also says `decoder_option` (the option's name);
    metrics decoded otherwise than by plain greedy are logged as `mem_by_NAME/*`, `task_by_NAME/*`.
    A damaged run folder or checkpoint raises InputError (see `load_run_checkpoint`)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rizzrun.paths import cache_root
    from rizzrun.runner.checkpoint import read_meta
    from rizzrun.runner.generate import load_run_checkpoint

    from rizzrun.runner.generate import DEFAULT_DECODER, compose_decoder, decoder_option

    composed = compose_decoder(decoder, refused=EVAL_REFUSED)
    cfg, tokenizer, model, folder = load_run_checkpoint(run_dir, checkpoint)
    node = composed.node
    if "seed" in node and node.seed is None:
        node.seed = int(cfg.seed)
    plain = OmegaConf.to_container(decoder_option(DEFAULT_DECODER)) == OmegaConf.to_container(node)
    defaults = dataclasses.asdict(EvalConfig())  # runs made before `eval` existed
    eval_cfg = OmegaConf.merge(defaults, cfg.get("eval") or {}, {k: v for k, v in overrides.items() if v is not None})
    _check_window(eval_cfg, overrides, model.config.max_seq_len)
    data = instantiate(cfg.data)
    data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
    objective, extra = run_objective(cfg, tokenizer, data, folder, model)
    rewards = None
    if getattr(data, "batch_kind", "lm") == "prompts":
        from rizzrun.runner.on_policy import build_rewards

        rewards = build_rewards(cfg.get("rewards"), data)
    result = evaluate(model, tokenizer, data, eval_cfg, "--documents " if overrides.get("documents") else "eval.documents=",
                      objective=objective, extra_models=extra, decoder=node, rewards=rewards)
    result["decoder_option"] = composed.option
    write(run_dir, result, output)
    own = cfg.get("eval") is None or str(eval_cfg.documents) == str(cfg.eval.documents)
    prefix = "mem" if own else "mem_" + "".join(c if c.isalnum() else "_" for c in Path(str(eval_cfg.documents)).stem)
    by = "" if plain else f"_by_{composed.option}"
    log_to_run(run_dir, cfg, flat_metrics(result, prefix, by), read_meta(folder).get("step"))
    return result


def run_objective(cfg: DictConfig, tokenizer, data, folder: Path, model):
    """(objective, extra models) of a run as it trained at checkpoint `folder`: the objective's own
    weights (a reward model's head) loaded from the checkpoint; the extra models rebuilt as the run
    built them (`init`: the policy as built from the config and seed before training) and checked
    against the digests the checkpoint recorded (InputError when one changed)."""
    import lightning as L

    from rizzrun.runner.build import build_model
    from rizzrun.runner.checkpoint import read_meta
    from rizzrun.runner.extra_models import build_extra_models, extra_sources
    from rizzrun.runner.generate import load_run_objective

    objective = load_run_objective(cfg, model, tokenizer, folder)
    if not extra_sources(cfg):
        return objective, {}
    L.seed_everything(int(cfg.seed), verbose=False)
    start = build_model(cfg, tokenizer)  # the policy's starting weights, as the run built them
    extra, _ = build_extra_models(cfg, objective, start, tokenizer, data, resume_meta=read_meta(folder))
    return objective, extra


def _check_window(eval_cfg: DictConfig, overrides: dict, max_seq_len: int) -> None:
    """The prompt and the continuation must fit the model's context, checked before the data is
    read; InputError names each length as the user set it (a flag, or the run's config)."""
    p, c = int(eval_cfg.prefix_len), int(eval_cfg.continuation_len)
    if p + c <= max_seq_len:
        return
    named = [f"--{k.replace('_', '-')} {v}" if overrides.get(k) is not None else f"eval.{k}={v}"
             for k, v in (("prefix_len", p), ("continuation_len", c))]
    raise InputError(f"{named[0]} + {named[1]} = {p + c}: longer than the model's max_seq_len={max_seq_len}; "
                     f"allowed: prefix_len + continuation_len <= {max_seq_len}")


def log_to_run(run_dir: Path, cfg: DictConfig, metrics: dict[str, float], step: int | None) -> None:
    """Append `metrics` to the run's metrics.jsonl at `step` (the evaluated checkpoint's) and, for
    a W&B run, to the same W&B run (its id from the folder; offline unless the run was online)."""
    from rizzrun.runner.loggers import wandb_run_id

    with (Path(run_dir) / layout.METRICS).open("a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    lcfg = cfg.get("logger")
    if lcfg is not None and lcfg.get("kind") == "wandb":
        import wandb

        run = wandb.init(project=lcfg.project, entity=lcfg.get("entity"), id=wandb_run_id(run_dir), resume="allow",
                         dir=str(run_dir), mode=lcfg.get("mode", "offline"))
        try:
            run.log({**metrics, "trainer/global_step": step})
        finally:
            run.finish()
