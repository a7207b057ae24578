"""The settings that are not components: the top level, `trainer` and `logger`.

These dataclasses are the source of truth for which keys exist, their types and their ranges;
the yaml files in conf/trainer and conf/logger give values, the validator checks them against
these. Each field's metadata holds its bounds (`gt`, `ge`, `le`, `lt`), a `pattern` for strings,
`optional=True` when the key may be left out, and a `help` line. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

Precision = Literal["32", "bf16-mixed", "16-mixed", "bf16-true"]


def _f(default, help: str, **bounds):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


@dataclass
class RootConfig:
    """Top-level keys of the composed config (beside one key per component group)."""

    name: str = _f("default", "the run's name: last part of its folder; what resume=true looks for",
                   pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]*")
    seed: int = _f(0, "global seed (data order, init, sampling)", ge=0)
    output_root: str = _f("outputs", "where run folders land")
    cache_dir: str = _f("~/.cache/rizzrun", "tokenized data and trained tokenizers")
    resume: Union[bool, str] = _f(False, "false | true (latest run of this name) | PATH (that run folder)")
    prompts: list[str] = _f(["Return the", "This function", "The default"],
                            "prompts sampled at each validation")
    job: Literal["train", "sample", "refine", "synthesize"] = _f(
        "train", "train: a training run; sample: generate completions of every prompt into rollouts/<split>.jsonl "
        "(the `sample` node); refine: SPaR's tree-search refinement of a sample run's failing completions into "
        "preference pairs (the `refine` node); synthesize: synthesise reasoning paths (the `synthesize` node)")
    stages: Optional[list] = _f(None, "a pipeline: runs one after another, each in its own folder under this "
                                "run's (rizzrun.runner.pipeline); null = one run")
    rewards: Optional[dict] = _f(None, "what scores generated completions (on-policy objectives): {NAME: reward "
                                 "node with _partial_: true and an optional weight}; null = the data's own")


@dataclass
class TrainerConfig:
    """Runner settings (group `trainer`)."""

    accelerator: Literal["cpu", "gpu", "auto"] = _f("cpu", "where to train")
    devices: Union[int, str, list[int]] = _f(1, "number of devices, 'auto', or a list of device ids")
    num_nodes: int = _f(1, "machines the run spans (each with `devices` processes)", ge=1)
    strategy: str = _f("auto", "auto (one process), ddp (data parallel), fsdp (sharded data parallel), or "
                               "another Lightning strategy name")
    precision: Precision = _f("32", "numeric precision")
    max_steps: int = _f(400, "optimizer steps to train for", gt=0)
    accumulate: int = _f(1, "micro-batches per optimizer step", ge=1)
    grad_clip: float = _f(1.0, "gradient-norm clip; 0 = off", ge=0)
    val_every: int = _f(100, "validate every N optimizer steps", gt=0)
    val_batches: int = _f(20, "validation batches per validation; 0 = all", ge=0)
    log_every: int = _f(10, "log every N optimizer steps", gt=0)
    checkpoint_every: int = _f(200, "save a checkpoint every N optimizer steps", gt=0)
    keep_checkpoints: int = _f(2, "newest checkpoints kept", ge=1)
    compile: bool = _f(False, "torch.compile the model")
    num_threads: Optional[int] = _f(None, "torch CPU threads; null = torch's default", ge=1)
    samples_per_val: int = _f(2, "prompts sampled at each validation", ge=0)
    on_nonfinite: Literal["stop", "skip"] = _f("stop", "a NaN/inf loss or gradient norm: stop the run (exit 3), "
                                               "or skip that step's update (up to max_nonfinite_skips times)")
    max_nonfinite_skips: int = _f(0, "with on_nonfinite=skip: steps that may be skipped over the run", ge=0)


@dataclass
class LoggerConfig:
    """Where metrics go (group `logger`). Only `kind` is needed; the rest is for wandb."""

    kind: Literal["wandb", "csv", "none"] = _f("wandb", "logger backend")
    project: str = _f("rizzrun", "W&B project", optional=True)
    entity: Optional[str] = _f(None, "W&B entity (user or team); null = your default", optional=True)
    name: Optional[str] = _f(None, "W&B run name; null = the run folder's name", optional=True)
    group: Optional[str] = _f(None, "W&B group", optional=True)
    tags: list[str] = _f([], "W&B tags", optional=True)
    mode: Literal["offline", "online", "disabled"] = _f("offline", "W&B mode; offline = `wandb sync` later",
                                                        optional=True)


@dataclass
class EvalConfig:
    """Evaluation of a trained model (top-level `eval`): `rizzrun eval RUN_DIR`, or at the end
    of training with `eval.at_end=true`. Memorization is greedy extraction (see
    rizzrun/eval/memorization.py) on a named set of documents, plus held-out loss."""

    at_end: bool = _f(False, "evaluate when training ends (metrics logged as mem/* and eval/*)")
    documents: str = _f("train", "train | val (the data option's splits) | PATH (.jsonl with a text "
                        "field, or .txt with documents separated by blank lines)")
    max_documents: int = _f(100, "documents evaluated (the first N of the set)", ge=1)
    prefix_len: int = _f(32, "prompt: the first N tokens of each document", ge=1)
    continuation_len: int = _f(64, "tokens greedy-decoded and compared with the document", ge=1)


@dataclass
class SampleConfig:
    """A sample job (`job=sample`, rizzrun.runner.sample_job): completions of every prompt of the data's
    splits by the run's decoder, scored by `rewards`, written to rollouts/<split>.jsonl."""

    num_generations: int = _f(4, "completions per prompt", ge=1)
    splits: list[str] = _f(["train"], "the data's splits to sample (train, val)")
    max_prompts: Optional[int] = _f(None, "the first N prompts of each split (null: all)", ge=1, optional=True)
    batch_size: Optional[int] = _f(None, "prompts generated together (null: data.batch_size)", ge=1, optional=True)
    include_reference: bool = _f(False, "also score the data's `answer` column as one more completion per prompt")


@dataclass
class SynthesizeConfig:
    """A self-synthesis job (`job=synthesize`, rizzrun.selfplay.job): reasoning paths of generated problems by
    ReGenesis (arXiv 2410.02108) or STaR (arXiv 2203.14465) from model.from_pretrained, filtered by the
    answer, written to rollouts/train.jsonl for data=rollouts."""

    method: Literal["regenesis", "star"] = _f("regenesis", "regenesis: guideline -> structure -> path; star: direct")
    tasks: list[str] = _f(["add", "rev"], "task types of the problems (rizzrun.data.reasoning.TASKS)")
    problems: int = _f(100, "problems per task type", ge=1)
    problem_seed: int = _f(100, "which problems (0 draws the seed SFT's)", ge=0)
    hint: bool = _f(True, "regenerate problems with no right path with the answer as a hint")
    val_problems: int = _f(10, "held-out problems per type synthesised into rollouts/val.jsonl (0: none)", ge=0)


@dataclass
class RefineConfig:
    """A refine job (`job=refine`, rizzrun.runner.refine_job): SPaR's tree search (arXiv 2412.11605) over
    repairs of a sample run's failing completions by the refiner (model.from_pretrained)."""

    rollouts: Optional[str] = _f(None, "the sample run's folder (rollouts/<split>.jsonl)", optional=True)
    split: str = _f("train", "the sample run's split to refine")
    judge: Literal["checker", "refiner"] = _f("checker", "who judges a response right: the task's checker "
                                              "(data.verify) or the refiner's own judgment")
    k: int = _f(3, "refinements per expansion", ge=1)
    max_expansions: int = _f(4, "refiner calls per failing completion", ge=1)
    max_depth: int = _f(3, "repairs in a row (a node this deep is not expanded)", ge=1)
    order: Literal["bfs", "dfs"] = _f("bfs", "search order")
    max_roots: Optional[int] = _f(None, "refine the first N failing completions (null: all)", ge=1, optional=True)


# top-level node -> schema (component groups not listed here are components with a _target_)
GROUP_SCHEMAS: dict[str, type] = {"trainer": TrainerConfig, "logger": LoggerConfig, "eval": EvalConfig,
                                  "sample": SampleConfig, "refine": RefineConfig, "synthesize": SynthesizeConfig}

# Component groups every run needs; `scheduler` may be removed (`~scheduler`: constant lr).
REQUIRED_GROUPS: tuple[str, ...] = (
    "model", "attention", "objective", "decoder", "data", "tokenizer", "optimizer", "trainer", "logger",
)

# Arguments the runner passes at instantiate time, so the config may leave them null or out.
# `attention` and `mlp` go only to a model whose target has those parameters
# (rizzrun.runner.build.factories_for): a model with its own mixing (RWKV) is neither given them
# nor may set them.
# `objective.d_model` (the policy's width: a reward model's scalar head) and `objective.eos_id` (the
# tokenizer's) go to an objective whose target takes them (rizzrun.runner.extra_models.build_objective).
RUNNER_SUPPLIED: dict[str, tuple[str, ...]] = {"model": ("vocab_size", "attention", "mlp"),
                                               "objective": ("d_model", "eos_id")}

# Keys the runner reads from a component node itself, never passing them to the target, with their
# types: model.from_pretrained=PATH loads a Hugging Face folder or a run folder's model
# (rizzrun.runner.build); objective.models.NAME=SOURCE builds the extra models an objective declares
# (`extra_models`) and objective.precompute=[NAME] precomputes their outputs
# (rizzrun.runner.extra_models).
RUNNER_READ: dict[str, dict[str, object]] = {
    "model": {"from_pretrained": Optional[str]},
    "objective": {"models": Optional[dict], "precompute": Optional[list[str]]},
}

BATCH_KINDS: tuple[str, ...] = ("lm", "preference", "prompts", "diversity")

# What the model gives every token mixer it builds (rizzrun.attention): not for a config to set.
MODEL_SUPPLIED: dict[str, tuple[str, ...]] = {
    "attention": ("d_model", "n_head", "n_kv_head", "head_dim", "layer_idx", "n_layer"),
    "mlp": ("d_model", "d_ff"),
}

# Ranges of component arguments that hold for every option of the group (they are not part of
# a target's signature, so they live here): "group.key" -> ((op, bound), ...).
COMPONENT_RANGES: dict[str, tuple[tuple[str, float], ...]] = {
    "optimizer.lr": ((">", 0),),
    "optimizer.weight_decay": ((">=", 0),),
    "optimizer.eps": ((">", 0),),
    "scheduler.warmup_steps": ((">=", 0),),
    "scheduler.total_steps": ((">", 0),),
    "scheduler.min_lr_ratio": ((">=", 0), ("<=", 1)),
    "data.seq_len": ((">", 0),),
    "data.batch_size": ((">", 0),),
    "data.val_fraction": ((">=", 0), ("<", 1)),
    "data.max_docs": ((">=", 1),),
    "data.max_train_docs": ((">=", 1),),
    "data.min_chars": ((">=", 0),),
    "decoder.max_new_tokens": ((">=", 0),),
    "decoder.temperature": ((">", 0),),
    "decoder.top_k": ((">=", 0),),
    "decoder.top_p": ((">", 0), ("<=", 1)),
    "decoder.typical_p": ((">", 0), ("<=", 1)),
    "decoder.repetition_penalty": ((">", 0),),
    "decoder.min_new_tokens": ((">=", 0),),
    "decoder.seed": ((">=", 0),),
    "model.init_std": ((">", 0),),
    "tokenizer.min_frequency": ((">=", 1),),
}
