"""`resume=true|PATH`: which run folder to continue, and the job that continues it *as it was
configured*. Torch-free: the launcher calls this before Hydra starts.

Run folders are `<output_root>/<YYYY-MM-DD>/<HH-MM-SS>-<name>/` (conf/config.yaml, hydra.run.dir);
a resumable one holds `checkpoints/latest` and Hydra's `.hydra/{overrides,config,hydra}.yaml`.

How the resumed job is composed (`resumed_job`), Hydra-natively, from today's conf/:

1. The run's own overrides (`.hydra/overrides.yaml`, less `resume=` and `hydra.*`) come first,
   then the user's new ones: the later wins. A saved override of a key the user sets again is
   dropped (kept only when it added the key, `+k=v`, so that the user's `k=w` has a key to set).
2. The saved config wins over today's defaults: conf/ may have changed since the run began.
   Where a group's default option changed (`.hydra/hydra.yaml`, runtime.choices), `group=OPTION`
   picks the run's option again; where a value differs from `.hydra/config.yaml` (compared as
   written, interpolations unresolved), `key=SAVED` (`+key=SAVED` for a key conf/ no longer has)
   restores it. Only keys the user's overrides leave alone are pinned, before the user's
   overrides. A key conf/ gained since keeps its default (new code may need it). The pins are
   part of the job's overrides, so Hydra saves them in `.hydra/overrides.yaml` for the next resume.
3. The schedule is not re-stretched: `scheduler.total_steps` (by default `${trainer.max_steps}`;
   likewise an objective's own schedule length, `objective.max_steps`)
   keeps the value the run had unless the user sets it. Extending a 60-step run with
   `trainer.max_steps=100` thus follows the run's own schedule, warmup included (the warmup
   default adapts to total_steps, which stays 60): after step 60 a cosine stays at its floor,
   min_lr_ratio * lr, with no jump. `scheduler.total_steps=100` re-stretches it on purpose.
4. What the checkpoint was trained with cannot change (`FROZEN`: model, attention, tokenizer, data,
   the objective's and the optimizer's class, the objective's extra models and what of them is
   precomputed, seed, which orders the data): a difference from the
   saved config there is refused, before torch, naming each key with the run's value and the new
   one. Where caches live and how many processes fill them (`*.cache_dir`, `data.num_proc`) may
   change, and so may everything else (trainer.max_steps to extend a run, logger,
   trainer.val_every, the objective's or optimizer's settings, ...). Values are compared as
   written (`data.path: ${oc.env:DATA}/x` may point elsewhere on another machine and still
   resume); a new value that resolves to the run's (`data.seed=0` for `${seed}`) is no change.

`resume=true` (the latest run of `name`) follows the same rules. The launcher prints
`resuming FOLDER (changed: trainer.max_steps 60 -> 100; kept from the run: ...)`, and
`rizzrun --cfg job resume=...` shows the resumed job without running it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rizzrun import layout
from rizzrun.config import catalog
from rizzrun.config.errors import ConfigError, message, show

LATEST = layout.LATEST
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

# What the checkpoint was trained with: a key equal to one of these or under it may not change.
FROZEN = ("model", "attention", "mlp", "tokenizer", "data", "seed", "objective._target_", "objective.models",
          "objective.precompute", "optimizer._target_")
FROZEN_GROUPS = ("model", "attention", "mlp", "tokenizer", "data")
# Where a cache lives, and how many processes fill it, do not change what it holds: free even
# under a frozen node.
MOVABLE = ("cache_dir", "num_proc")
# Keys that keep the value they had in the run (resolved) unless the user sets them.
# An objective's schedule over the run (SMPO's margin: objective.max_steps) stays the run's, like the lr's.
KEEP_RESOLVED = ("scheduler.total_steps", "objective.max_steps")
_ABSENT = object()


def resume_folder(cfg: DictConfig) -> Path | None:
    """The run folder to continue, or None for a fresh run (`resume=false`).

    `resume=true`: the newest `<output_root>/<date>/<time>-<name>` holding checkpoints/latest.
    `resume=PATH`: that folder, which must hold checkpoints/latest. Raises ConfigError otherwise.
    """
    resume = cfg.get("resume", False)
    if resume is False or resume is None:
        return None
    if resume is True:
        return latest_run(Path(str(cfg.output_root)).expanduser(), str(cfg.name))
    folder = Path(str(resume)).expanduser()
    if not folder.is_dir():
        raise ConfigError(message(f"resume={resume}", f"no such run folder ({folder.absolute()})",
                                  "give a run folder under output_root, or resume=true for the latest run "
                                  f"named '{cfg.name}'"))
    if not resumable(folder):
        raise ConfigError(message(f"resume={resume}", f"{folder} holds no {LATEST}: that run saved no checkpoint",
                                  "resume a run that did (trainer.checkpoint_every sets how often they are saved)"))
    return folder.absolute()


def latest_run(output_root: Path, name: str, key: str = "resume=true",
               fix: str = "start afresh with resume=false, or give the folder: resume=PATH") -> Path:
    """The newest run folder of `name` under `output_root` that saved a checkpoint (or a sample job's
    or a pipeline's folder: `resumable`).

    Folders are `<time>-<name>`, or `<time>-<name>-N` when runs of that name started in the same
    second (rizzrun.run_dirs.claim); a suffixed folder counts only when its saved config says
    `name` (a run may itself be named `tiny-1`)."""
    run_name = re.compile(rf"(\d{{2}}-\d{{2}}-\d{{2}})-{re.escape(name)}(?:-(\d+))?")
    found = []
    if output_root.is_dir():
        for day in output_root.iterdir():
            if not (day.is_dir() and _DAY.fullmatch(day.name)):
                continue
            for run in day.iterdir():
                match = run_name.fullmatch(run.name)
                if not (match and resumable(run)):
                    continue
                if match.group(2) is not None and _saved_name(run) != name:
                    continue
                found.append((day.name, match.group(1), int(match.group(2) or 0), run))
    if not found:
        raise ConfigError(message(
            key, f"no run named '{name}' with a checkpoint under {output_root}",
            f"looked for {output_root}/<date>/<time>-{name}/{LATEST.as_posix()}; {fix}"))
    return max(found)[3].absolute()


def resumable(run: Path) -> bool:
    """A training run that saved a checkpoint, or a run without checkpoints that continues from its
    own files: a sample job (whole batches written), a refine job (its files written again), a synthesize
    job (which starts over) or a pipeline (finished stages) — summary.json's `job`."""
    if (run / LATEST).exists():
        return True
    try:
        return json.loads((run / layout.SUMMARY).read_text()).get("job") in ("sample", "pipeline", "refine", "synthesize")
    except (OSError, ValueError):
        return False


def _saved_name(run: Path) -> str | None:
    try:
        return str(OmegaConf.load(run / layout.HYDRA_CONFIG).get("name"))
    except Exception:  # noqa: BLE001 - an unreadable folder is not a candidate
        return None


# --- the resumed job ---------------------------------------------------------------------------------

@dataclass
class Resumed:
    """The job that continues `folder`: Hydra's overrides for it, and what it changes."""

    folder: Path
    overrides: list[str]
    changed: list[str] = field(default_factory=list)  # `key RUN -> NEW`, what the user changed
    kept: list[str] = field(default_factory=list)  # `key RUN`, where the run's value beat today's conf/

    def summary(self) -> str:
        """`resuming FOLDER (changed: ...; kept from the run: ...)`, the launcher's line."""
        parts = [f"changed: {', '.join(self.changed)}"] if self.changed else ["nothing changed"]
        if self.kept:
            parts.append(f"kept from the run: {', '.join(self.kept)}")
        return f"resuming {self.folder} ({'; '.join(parts)})"


def resuming(cfg) -> bool:
    """Whether a composed job continues a run: its `resume` is true or a folder, not false/null."""
    resume = cfg.get("resume")
    return not (resume in (None, False) or str(resume).lower() == "false")


def requests_resume(overrides: Sequence[str]) -> bool:
    """Whether the command line asks to resume (its last `resume=` is not false/null)."""
    from rizzrun.config.compose import parse_overrides

    if not any(o.lstrip("+~").split("=", 1)[0].split("@", 1)[0].strip() == "resume" for o in overrides):
        return False  # no need to parse
    try:
        parsed = parse_overrides(overrides)
    except ConfigError:
        return False  # reported by the ordinary checks
    values = [o.value() for o in parsed if o.key_or_group == "resume" and not o.is_delete()]
    return bool(values) and values[-1] not in (False, None) and str(values[-1]).lower() not in ("false", "null")


def resumed_job(overrides: Sequence[str], config_name: str) -> Resumed:
    """The job for `rizzrun OVERRIDES` with resume=true|PATH: composed and validated (see the
    module docstring). Raises ConfigError with every problem, or with each key that may not change."""
    from rizzrun.config.check import check_job
    from rizzrun.config.compose import compose_report

    overrides = list(overrides)
    cfg, problems = compose_report(overrides, config_name=config_name)
    if cfg is None:
        raise ConfigError(problems)
    folder = resume_folder(cfg)
    assert folder is not None
    if any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides):
        raise ConfigError(f"resume={_typed(cfg.resume)}: resume picks the run folder itself; drop hydra.run.dir, "
                          "or give the folder as resume=PATH")
    saved_overrides, saved, saved_choices = _saved_run(folder, cfg.resume)
    base = merged_overrides(saved_overrides, overrides)

    run_cfg, user_cfg = _compose_pair(base, overrides, config_name)
    named = _named_keys(overrides)
    group_pins = [f"{g}={s}" for g, s in saved_choices.items()
                  if g in catalog.groups() and s is not None and s in catalog.options(g) and g not in named
                  and _choice(run_cfg, g) == _choice(user_cfg, g) != s]
    if group_pins:
        run_cfg, user_cfg = _compose_pair(base + group_pins, overrides, config_name)

    saved_leaves, run_leaves, user_leaves = (_leaves(c) for c in (saved, _plain(run_cfg), _plain(user_cfg)))

    def set_by_user(key: str) -> bool:  # by key, group or recipe
        return any(key == k or key.startswith(f"{k}.") for k in named) \
            or not _same(run_leaves.get(key, _ABSENT), user_leaves.get(key, _ABSENT))

    pins, kept = [], [f"{g} {s}" for g, s in (p.split("=", 1) for p in group_pins)]
    for key, value in saved_leaves.items():
        now = run_leaves.get(key, _ABSENT)
        if not set_by_user(key) and not _same(now, value):
            pins.append(pin(key, value, add=now is _ABSENT))
            kept.append(f"{key} {show(value)}")
    for key in KEEP_RESOLVED:
        before, now = _resolved(saved, key), _resolved(_with_pins(user_cfg, pins), key)
        if before is not _ABSENT and now is not _ABSENT and not _same(before, now) and not set_by_user(key):
            pins.append(pin(key, before, add=False))
            kept.append(f"{key} {show(before)}")

    final = [*base, *group_pins, *pins, *overrides]
    job, problems = check_job(final, config_name=config_name, here=True)
    if job is None:
        raise ConfigError([_from_the_run(p, pins) for p in problems])
    changed, frozen = _differences(saved, saved_choices, job, run_leaves)
    if frozen:  # the other problems of a job that cannot run would only distract
        raise ConfigError(message(
            f"resume={_typed(cfg.resume)}",
            f"a resumed run keeps what its checkpoint was trained with (model, attention, mlp, tokenizer, data, "
            f"objective and optimizer class, seed), but this command changes {', '.join(frozen)}",
            "start a new run, or resume without changing them"))
    if problems:
        raise ConfigError([_from_the_run(p, pins) for p in problems])
    return Resumed(folder, final, changed, kept)


def with_overrides(argv: Sequence[str], old: Sequence[str], new: Sequence[str]) -> list[str]:
    """`argv` (Hydra's command line) with its overrides `old` replaced by `new`, after the flags."""
    flags = list(argv)
    for override in old:  # the last occurrence: a flag's value (-cn NAME) comes before the overrides
        del flags[len(flags) - 1 - flags[::-1].index(override)]
    return [*flags, *new]


def merged_overrides(saved: Sequence[str], user: Sequence[str]) -> list[str]:
    """The run's saved overrides, less `resume=`, `hydra.*` and those the user's overrides
    replace; the user's follow them (the later wins)."""
    from rizzrun.config.compose import parse_overrides

    groups = set(catalog.groups()) | {catalog.RECIPE_GROUP}
    users = {(o.key_or_group, o.package): o for o in parse_overrides(user)}
    kept = []
    for line, o in zip(saved, parse_overrides(saved)):
        key = o.key_or_group
        if key in ("resume", "hydra") or key.startswith(("hydra.", "hydra/")):
            continue
        mine = users.get((key, o.package))
        if mine is not None:
            adds_key = (o.is_add() or o.is_force_add()) and key not in groups
            if not adds_key or mine.is_add() or mine.is_force_add():
                continue  # the user's own override replaces it
        kept.append(line)
    return kept


def pin(key: str, value, add: bool) -> str:
    """The override `key=value` (`+key=value` when `add`), checked to parse back to `value`."""
    from rizzrun.config.compose import parse_overrides

    line = f"{'+' if add else ''}{key}={literal(value)}"
    try:
        [parsed] = parse_overrides([line])
        ok = parsed.key_or_group == key and _same(parsed.value(), value)
    except ConfigError:
        ok = False
    if not ok:
        raise ConfigError(message(key, f"the run's value {show(value)} cannot be written as an override",
                                  "start a new run"))
    return line


def literal(value) -> str:
    """`value` in Hydra's override grammar (strings always quoted, so '32' stays text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Hydra's quoted strings: a quote is escaped, and so are backslashes before a quote or the end.
        text = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), value)
        return "'" + text.replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no override literal for {type(value).__name__}")


def override_value(path: Path) -> str:
    """`path` as the value of a Hydra override, quoted when it has characters the grammar treats
    specially."""
    text = str(path)
    return text if re.fullmatch(r"[\w./:~+@-]+", text) else literal(text)


# --- helpers -------------------------------------------------------------------------------------------

def _saved_run(folder: Path, resume) -> tuple[list[str], dict, dict]:
    """(the run's overrides, its composed config as written, its group choices)."""
    need = [folder / layout.HYDRA_CONFIG, folder / layout.HYDRA_OVERRIDES]
    missing = [p for p in need if not p.is_file()]
    if missing:
        raise ConfigError(message(f"resume={_typed(resume)}", f"{folder} holds no {missing[0].relative_to(folder)}, "
                                  "so how that run was configured is unknown",
                                  "resume a run folder that rizzrun made, or start a new run"))
    overrides = [str(o) for o in OmegaConf.load(need[1])]
    saved = OmegaConf.to_container(OmegaConf.load(need[0]), resolve=False)
    choices: dict = {}
    settings = folder / layout.HYDRA_SETTINGS
    if settings.is_file():
        node = OmegaConf.select(OmegaConf.load(settings), "hydra.runtime.choices", default=None)
        choices = OmegaConf.to_container(node) if node is not None else {}
    saved.pop("hydra", None)
    return overrides, saved, choices


def _typed(resume) -> str:
    """resume's value as the user typed it: true, or the path unquoted."""
    return show(resume) if isinstance(resume, bool) else str(resume)


def _compose_pair(base: list[str], user: list[str], config_name: str) -> tuple[DictConfig, DictConfig]:
    """(the run's overrides composed today, the same plus what composes of the user's: the
    final check reports the rest, once the run's values are pinned)."""
    from rizzrun.config.compose import compose_report

    run_cfg, problems = compose_report(base, config_name=config_name)
    if problems or run_cfg is None:
        head = f"the run's own overrides ({layout.HYDRA_OVERRIDES}) no longer compose"
        raise ConfigError([f"{head}: {p}" for p in problems] or [head])
    user_cfg, problems = compose_report([*base, *user], config_name=config_name)
    if user_cfg is None:
        raise ConfigError(problems)
    return run_cfg, user_cfg


def _named_keys(overrides: Sequence[str]) -> set[str]:
    """The keys and groups the user's overrides set (not those they delete: a deleted key of the
    run is pinned first, so that it exists to be deleted)."""
    from rizzrun.config.compose import parse_overrides

    return {o.key_or_group for o in parse_overrides(overrides) if not o.is_delete()}


def _from_the_run(problem: str, pins: list[str]) -> str:
    """A problem with a value pinned from the run's config says where it came from."""
    for line in pins:
        key = line.lstrip("+").split("=", 1)[0]
        if problem.startswith((f"{key}=", f"{key}:", f"+{key}=")):
            return (f"{problem} (the run's own value, kept from its {layout.HYDRA_CONFIG} over today's conf/: "
                    f"set {key}=VALUE, or drop it with ~{key})")
    return problem


def _choice(cfg: DictConfig, group: str):
    return OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)


def _plain(cfg: DictConfig) -> dict:
    """The config as written (unresolved), without its hydra node."""
    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    return out


def _leaves(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} down to non-empty mappings' leaves (lists are leaves); `resume` left out."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if key == "resume":
            continue
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{key}."))
        else:
            out[key] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def _with_pins(cfg: DictConfig, pins: list[str]) -> DictConfig:
    """`cfg` with the pins applied as Hydra would (for resolving a key against them)."""
    from rizzrun.config.compose import parse_overrides

    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    for o in parse_overrides(pins):
        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False)
    return cfg


def _resolved(cfg, key: str):
    """The resolved value at `key`, or _ABSENT when missing or unresolvable."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        value = OmegaConf.select(node, key, default=_ABSENT, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an unresolvable value (e.g. a ${hydra:...}) is not compared
        return _ABSENT
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig,)) else value


def _frozen(key: str) -> bool:
    if key.rsplit(".", 1)[-1] in MOVABLE:
        return False
    return any(key == f or key.startswith(f"{f}.") for f in FROZEN)


def _differences(saved: dict, saved_choices: dict, job: DictConfig, run_leaves: dict) -> tuple[list[str], list[str]]:
    """(every change from the run's config, `key RUN -> NEW`; those in FROZEN). Values are compared
    as written, and a difference that resolves to the same value is none. A key conf/ gained
    since the run began is no change while it keeps today's default. A group whose option changed
    is named once (`tokenizer byte -> bpe`), not key by key."""
    before, after = _leaves(saved), _leaves(_plain(job))
    saved_node = OmegaConf.create(saved)
    changed, frozen, groups = [], [], []
    for g, s in saved_choices.items():
        now = _choice(job, g)
        if g in catalog.groups() and s is not None and now is not None and now != s:
            groups.append(g)
            changed.append(f"{g} {s} -> {now}")
            keys = set(before) | set(after)
            if g in FROZEN_GROUPS or any(_frozen(k) and k.startswith(f"{g}.")
                                         and not _same(before.get(k, _ABSENT), after.get(k, _ABSENT)) for k in keys):
                frozen.append(f"{g}={now} (the run's: {g}={s})")
    for key in sorted(set(before) | set(after), key=lambda k: (k.split(".")[0], k)):
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if _same(old, new) or any(key.startswith(f"{g}.") for g in groups):
            continue
        if old is not _ABSENT and new is not _ABSENT:  # `${seed}` -> 0 with seed=0 is no change
            was, now = _resolved(saved_node, key), _resolved(job, key)
            if was is not _ABSENT and _same(was, now):
                continue
        if old is _ABSENT and _same(new, run_leaves.get(key, _ABSENT)):
            continue  # a key conf/ gained since the run began, at its default
        old_text = "(absent)" if old is _ABSENT else show(old)
        new_text = "(absent)" if new is _ABSENT else show(new)
        changed.append(f"{key} {old_text} -> {new_text}")
        if _frozen(key):
            frozen.append(f"{key}={new_text} (the run's: {old_text})")
    return changed, frozen
