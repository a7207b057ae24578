"""`rizzrun eval RUN_DIR` and `eval.at_end`: memorization on a named set of documents plus
held-out loss, written to `<run>/eval.json` (and logged as `mem/*`, `eval/*` when training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rizzrun.config.schema import EvalConfig


def named_documents(data: Any, documents: str, max_documents: int) -> list[str]:
    """`train` / `val`: the data option's own splits; otherwise a path to .jsonl (a `text`
    field per row) or .txt (documents separated by blank lines)."""
    if documents in ("train", "val"):
        texts = getattr(data, f"{documents}_texts", None)
        if texts is None:
            raise ValueError(f"eval.documents={documents}: {type(data).__name__} has no {documents}_texts(); "
                             "give a .jsonl or .txt file instead")
        docs = list(texts())
    else:
        path = Path(documents).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"eval.documents={documents}: no such file; allowed: train, val, or a .jsonl/.txt path")
        if path.suffix == ".jsonl":
            docs = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row.get("text"), str):
                        raise ValueError(f"eval.documents={path}: row {i} (0-based line) has no string 'text' field")
                    docs.append(row["text"])
        elif path.suffix == ".txt":
            docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        else:
            raise ValueError(f"eval.documents={path}: unsupported extension {path.suffix!r}; allowed: .jsonl, .txt")
    return docs[:max_documents]


def evaluate(model, tokenizer, data, eval_cfg: DictConfig | dict) -> dict:
    """Memorization on the named documents + held-out loss over the data's validation split."""
    from rizzrun.eval.memorization import heldout_loss, memorization

    e = dict(eval_cfg)
    docs = named_documents(data, str(e["documents"]), int(e["max_documents"]))
    mem = memorization(model, tokenizer, docs, int(e["prefix_len"]), int(e["continuation_len"]))
    return {"documents": str(e["documents"]), "memorization": mem, "val": heldout_loss(model, data.val_batches())}


def flat_metrics(result: dict, prefix: str = "mem") -> dict[str, float]:
    """The scalars of `evaluate` under logger names (`mem/*` for the run's own eval.documents;
    another set of documents gets another prefix, e.g. `mem_val/*`, so the two never mix)."""
    mem, val = result["memorization"], result["val"]
    return {
        f"{prefix}/exact_match_rate": mem["exact_match_rate"],
        f"{prefix}/token_match": mem["token_match"],
        f"{prefix}/rougeL": mem["rougeL"],
        "eval/val_loss": val["loss"],
        "eval/val_ppl": val["ppl"],
    }


def write(run_dir: Path, result: dict, name: str = "eval.json") -> Path:
    if Path(name).name != name:
        raise ValueError(f"eval output {name!r}: must be a file name inside the run folder, e.g. eval.json")
    path = Path(run_dir) / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def evaluate_run(run_dir: Path, output: str = "eval.json", **overrides: Any) -> dict:
    """Evaluate the latest checkpoint of a run folder into `run_dir/output`; `overrides`
    replace keys of its `eval` config."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rizzrun.paths import cache_root
    from rizzrun.runner.generate import load_run

    cfg, tokenizer, model = load_run(run_dir)
    defaults = dataclasses.asdict(EvalConfig())  # runs made before `eval` existed
    eval_cfg = OmegaConf.merge(defaults, cfg.get("eval") or {}, {k: v for k, v in overrides.items() if v is not None})
    data = instantiate(cfg.data)
    data.setup(tokenizer, cache_dir=cache_root(cfg.cache_dir))
    result = evaluate(model, tokenizer, data, eval_cfg)
    write(run_dir, result, output)
    own = cfg.get("eval") is None or str(eval_cfg.documents) == str(cfg.eval.documents)
    prefix = "mem" if own else "mem_" + "".join(c if c.isalnum() else "_" for c in Path(str(eval_cfg.documents)).stem)
    log_to_run(run_dir, cfg, flat_metrics(result, prefix))
    return result


def log_to_run(run_dir: Path, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Append `metrics` to the run's metrics.jsonl at its checkpoint's step and, for a W&B run,
    to the same W&B run (its id from the folder; offline unless the run was online)."""
    from rizzrun.runner.checkpoint import latest_checkpoint, read_meta
    from rizzrun.runner.loggers import wandb_run_id

    step = read_meta(latest_checkpoint(run_dir)).get("step")
    with (Path(run_dir) / "metrics.jsonl").open("a") as f:
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
