"""`rizzrun merge METHOD ... OUT`: merge models by weight arithmetic (`rizzrun.merge.weights`) into a
new run folder.

    slerp       --init I MODEL MODEL [MODEL...] [--lam 0.5] [--eta 1.0] OUT
                WARP (arXiv:2406.16768): SLERP of the task vectors θ_m − θ_init per tensor (two
                models: λ = --lam; more: iteratively with λ = 1/m, the spec's unconfirmed reading),
                then LITI towards init with --eta (1.0: none)
    linear      --init I MODEL [MODEL...] [--weights W1,W2,...] OUT
                θ_init + Σ w_i (θ_i − θ_init), w_i = 1/M by default
    liti        --init I MERGED --eta η OUT
                (1 − η) θ_init + η θ_merged (WARP stage 3)
    paramdelta  --new-base NB --post P --base B [--post P2 --base B2 ...] [--alpha A ...] OUT
                ParamΔ (arXiv:2504.21023): Θ'_base + Σ α_i (Θ_post,i − Θ_base,i), α_i = 1 by default

Each input is a run folder (the checkpoint `checkpoints/latest` names, verified against the
digests in its meta.json; a damaged one is refused, never skipped) or a Hugging Face Llama folder
(`rizzrun.models.hf_llama.load_llama`). At least one input must be a run folder: the first one
(in the order above) is the TEMPLATE, whose config.yaml and tokenizer/ the merged run takes. All
inputs must be one architecture (model class, every dimension of its config except max_seq_len
and init_std, which change no weight; a run folder's attention and mlp targets) and run folders
must encode text alike (`check_same_tokenizer`). A run whose objective trained weights of its own
(a reward model's head) is refused: merging its trunk alone would drop the head.

OUT is a run folder that `rizzrun eval OUT`, `rizzrun generate OUT -p ...` and
`model.from_pretrained=OUT` accept:

    OUT/config.yaml, OUT/tokenizer/      the template's
    OUT/checkpoints/step-000000/         the merged weights, written by the runner's own
                                         FolderCheckpointIO (digests in meta.json), then loaded back
                                         and checked against the merged digest
    OUT/merge.json                       method, options, each input's role, path, kind,
                                         checkpoint and weights SHA-256 (`weights_digest`), the
                                         merged weights' SHA-256, any SLERP warning

It is written into a temporary folder beside OUT and moved in at the end: a failure leaves OUT as
it was. An existing non-empty OUT is refused; `--force` replaces it only when it is an earlier
merge's output (it holds merge.json), never a training run or another folder.

The checks that need no torch (the method's flags, the paths, each run's checkpoint digests,
OUT) run first (`plan`); this module imports torch only in `merge`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rizzrun.errors import InputError

METHODS = ("slerp", "linear", "liti", "paramdelta")
# The flags each method takes (besides its positional MODELs and OUT).
TAKES = {"slerp": ("--init", "--lam", "--eta"), "linear": ("--init", "--weights"), "liti": ("--init", "--eta"),
         "paramdelta": ("--new-base", "--post", "--base", "--alpha")}
MERGE_FILE = "merge.json"
RUN, HF = "run", "hf"
# Config fields that change no weight: not compared across inputs (the template's are kept).
NOT_COMPARED = ("max_seq_len", "init_std")


@dataclass(frozen=True)
class Source:
    """One input: its role (init, model, merged, new_base, post, base), the flag that gave it
    (`--init`, `MODEL`), its index among its role's inputs, its path and kind (run | hf)."""

    role: str
    flag: str
    path: Path
    kind: str
    index: int = 0

    @property
    def label(self) -> str:
        return f"{self.flag} {self.path}"


@dataclass
class Plan:
    """What `merge` will do, checked without torch (`plan`)."""

    method: str
    out: Path
    force: bool
    sources: list[Source]
    options: dict[str, Any] = field(default_factory=dict)

    def role(self, role: str) -> list[Source]:
        return [s for s in self.sources if s.role == role]

    @property
    def template(self) -> Source:
        return next(s for s in self.sources if s.kind == RUN)


def _unit(flag: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"{flag} {value:g}: out of range; allowed: 0 <= {flag.lstrip('-')} <= 1")
    return float(value)


def _finite(flag: str, value: float) -> float:
    if not math.isfinite(value):
        raise InputError(f"{flag} {value}: not a finite number; allowed: any finite number")
    return float(value)


def parse_weights(text: str | Sequence[float]) -> list[float]:
    """`--weights 0.7,0.3` -> [0.7, 0.3]; InputError naming the bad item."""
    if not isinstance(text, str):
        return [_finite("--weights", float(w)) for w in text]
    out = []
    for item in text.split(","):
        try:
            out.append(float(item))
        except ValueError:
            raise InputError(f"--weights {text}: {item.strip()!r} is not a number; allowed: numbers separated by "
                             "commas, one per MODEL, e.g. --weights 0.7,0.3") from None
        _finite("--weights", out[-1])
    return out


def plan(method: str, out_dir: str | os.PathLike, *, init=None, models: Sequence = (), new_base=None,
         posts: Sequence = (), bases: Sequence = (), alphas: Sequence[float] = (), weights=None,
         lam: float | None = None, eta: float | None = None, force: bool = False) -> Plan:
    """Check a merge before torch is imported: the method and which inputs and options it takes,
    their ranges, each input path (a run folder whose latest checkpoint is intact, or a Hugging
    Face Llama folder), and OUT. Raises InputError, one line naming the flag or path."""
    if method not in METHODS:
        raise InputError(f"METHOD {method}: no such merge method; allowed: {', '.join(METHODS)}")
    models = list(models)
    given = {"--init": init is not None, "--new-base": new_base is not None, "--post": bool(posts),
             "--base": bool(bases), "--alpha": bool(alphas), "--weights": weights is not None,
             "--lam": lam is not None, "--eta": eta is not None}
    takes = TAKES[method]
    for flag, present in given.items():
        if present and flag not in takes:
            users = [m for m, t in TAKES.items() if flag in t]
            raise InputError(f"{flag}: not an option of `merge {method}` (only of {', '.join(users)}); "
                             f"`merge {method}` takes {', '.join(takes)}")
    options: dict[str, Any] = {}
    sources: list[Source] = []
    if method == "paramdelta":
        if new_base is None:
            raise InputError("--new-base: required by `merge paramdelta` (the updated base the deltas are added to)")
        if models:
            raise InputError(f"{models[0]}: `merge paramdelta` takes its models as --new-base NB --post P --base B; "
                             "the only positional argument is OUT")
        if not posts or len(posts) != len(bases):
            raise InputError(f"--post / --base: {len(posts)} --post and {len(bases)} --base given; give at least one "
                             "pair, one --base per --post, in order (--post P1 --base B1 --post P2 --base B2)")
        alphas = [_finite("--alpha", float(a)) for a in alphas]
        if alphas and len(alphas) != len(posts):
            raise InputError(f"--alpha: {len(alphas)} given for {len(posts)} --post/--base pair(s); give none "
                             "(each alpha 1.0) or one per pair, in order")
        options["alphas"] = alphas or [1.0] * len(posts)
        sources.append(_source("new_base", "--new-base", new_base))
        for i, (post, base) in enumerate(zip(posts, bases)):
            sources += [_source("post", "--post", post, i), _source("base", "--base", base, i)]
    else:
        if init is None:
            raise InputError(f"--init: required by `merge {method}` (the model the task vectors start from)")
        sources.append(_source("init", "--init", init))
        if method == "slerp":
            if len(models) < 2:
                raise InputError(f"MODEL: `merge slerp` needs at least 2 models besides --init and OUT, "
                                 f"{len(models)} given; usage: rizzrun merge slerp --init I MODEL1 MODEL2 OUT")
            if lam is not None and len(models) != 2:
                raise InputError(f"--lam {lam:g}: only with exactly 2 models ({len(models)} given: they are merged "
                                 "iteratively with λ = 1/m); drop --lam")
            options["lam"] = _unit("--lam", 0.5 if lam is None else float(lam))
            options["eta"] = _unit("--eta", 1.0 if eta is None else float(eta))
            if len(models) > 2:
                options["lam"] = "1/m (iterative)"
        elif method == "linear":
            if not models:
                raise InputError("MODEL: `merge linear` needs at least 1 model besides --init and OUT; usage: "
                                 "rizzrun merge linear --init I MODEL... [--weights W1,W2,...] OUT")
            w = parse_weights(weights) if weights is not None else [1.0 / len(models)] * len(models)
            if len(w) != len(models):
                raise InputError(f"--weights {weights}: {len(w)} weight(s) for {len(models)} model(s); give one per "
                                 "MODEL, in order")
            options["weights"] = w
        else:  # liti
            if len(models) != 1:
                raise InputError(f"MERGED: `merge liti` takes exactly 1 model besides --init and OUT, {len(models)} "
                                 "given; usage: rizzrun merge liti --init I MERGED --eta 0.3 OUT")
            if eta is None:
                raise InputError("--eta: required by `merge liti`; allowed: 0 <= eta <= 1 (0: init, 1: MERGED)")
            options["eta"] = _unit("--eta", float(eta))
        flag = "MERGED" if method == "liti" else "MODEL"
        role = "merged" if method == "liti" else "model"
        sources += [_source(role, flag, m, i) for i, m in enumerate(models)]
    if not any(s.kind == RUN for s in sources):
        raise InputError("every input is a Hugging Face folder; give at least one run folder: the first one's "
                         "config.yaml and tokenizer become the merged run's (export a merge of Hugging Face folders "
                         "with `rizzrun export OUT` afterwards)")
    out = Path(out_dir).expanduser()
    _check_out(out, force, sources)
    return Plan(method, out, force, sources, options)


def _source(role: str, flag: str, path, index: int = 0) -> Source:
    """A checked input: a run folder whose checkpoint is intact (`checked_checkpoint`, digests), or
    a Hugging Face Llama folder (`hf_llama_dims`); InputError naming the flag and path otherwise."""
    from rizzrun.layout import CONFIG
    from rizzrun.runner.checkpoint_files import checked_checkpoint

    p = Path(path).expanduser()
    head = f"{flag} {path}"
    if not p.exists():
        raise InputError(f"{head}: no such folder; give a run folder (outputs/<date>/...) or a Hugging Face "
                         "Llama folder")
    if not p.is_dir():
        raise InputError(f"{head}: not a folder; give a run folder or a Hugging Face Llama folder")
    if (p / CONFIG).is_file():
        try:
            checked_checkpoint(p)
        except InputError as e:
            raise InputError(f"{head}: {e}") from None
        return Source(role, flag, p, RUN, index)
    if (p / "config.json").is_file():
        from rizzrun.models.hf_llama import HFCheckpointError, hf_llama_dims

        try:
            hf_llama_dims(p)
        except HFCheckpointError as e:
            raise InputError(f"{head}: {'; '.join(e.problems)}") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{head}: {e}") from None
        return Source(role, flag, p, HF, index)
    raise InputError(f"{head}: not a run folder (no {CONFIG}) nor a Hugging Face Llama folder (no config.json)")


def _check_out(out: Path, force: bool, sources: list[Source]) -> None:
    for s in sources:
        if out.resolve() == s.path.resolve():
            raise InputError(f"OUT {out}: is also {s.label}; give a new folder for the merged run")
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT {out}: exists and is not a folder; give a new folder for the merged run")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise InputError(f"OUT {out}: exists and is not empty; give a new folder, or pass --force to replace an "
                             f"earlier merge's output")
        if not (out / MERGE_FILE).is_file():
            raise InputError(f"OUT {out}: not an earlier merge's output (no {MERGE_FILE}); --force replaces only "
                             "those, never a training run or another folder; give a new folder")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".rizzrun-probe-"))
    except OSError as e:
        raise InputError(f"OUT {out}: cannot write into {parent} ({e.strerror or e}); give a folder you can "
                         "write to") from None


# --- loading ----------------------------------------------------------------------------------------

@dataclass
class _Loaded:
    source: Source
    model: Any
    state: dict
    digest: str
    arch: dict
    checkpoint: str | None = None
    cfg: Any = None
    tokenizer: Any = None


def _arch(model, cfg) -> dict:
    """What must agree across inputs: the model class, its config's fields (but NOT_COMPARED), and,
    for a run folder, its attention and mlp targets."""
    import dataclasses

    conf = model.config
    fields = dataclasses.asdict(conf) if dataclasses.is_dataclass(conf) else dict(vars(conf))
    out = {"model": f"{type(model).__module__}.{type(model).__qualname__}",
           **{k: v for k, v in fields.items() if k not in NOT_COMPARED}}
    if cfg is not None:
        for group in ("attention", "mlp"):
            node = cfg.get(group)
            out[group] = None if node is None else node.get("_target_")
    return out


def _load(source: Source, template: _Loaded | None) -> _Loaded:
    from rizzrun.runner.extra_models import weights_digest

    if source.kind == RUN:
        from rizzrun.runner.generate import check_same_tokenizer, load_run_checkpoint, objective_weights

        try:
            cfg, tokenizer, model, folder = load_run_checkpoint(source.path)
        except InputError as e:
            raise InputError(f"{source.label}: {e}") from None
        if objective_weights(folder):
            raise InputError(f"{source.label}: its objective ({cfg.objective._target_}) trained weights of its own "
                             "(objective.*, e.g. a reward model's head), which a merge of the policy's weights would "
                             "drop; merge policy runs only")
        if template is not None:
            check_same_tokenizer(f"{source.label} (against the template {template.source.label})",
                                 tokenizer, template.tokenizer)
        arch, checkpoint = _arch(model, cfg), folder.name
    else:
        from rizzrun.models.hf_llama import HFCheckpointError, load_llama
        from rizzrun.runner.build import factories_for

        try:  # the template's token mixer and feed-forward, as `model.from_pretrained` would build it
            model = load_llama(source.path, **factories_for(template.cfg))
        except HFCheckpointError as e:
            raise InputError(f"{source.label}: {'; '.join(e.problems)}") from None
        cfg = tokenizer = checkpoint = None
        arch = {**_arch(model, None), **{k: v for k, v in template.arch.items() if k in ("attention", "mlp")}}
    model.eval()
    loaded = _Loaded(source, model, dict(model.state_dict()), weights_digest(model), arch, checkpoint, cfg, tokenizer)
    if template is not None:
        for key, want in template.arch.items():
            have = arch.get(key)
            if have != want:
                raise InputError(f"{source.label}: {key}={have} but the template {template.source.label} has "
                                 f"{key}={want}; every input must be the same architecture")
    return loaded


# --- the merge ---------------------------------------------------------------------------------------

def merge(method: str, out_dir: str | os.PathLike, *, init=None, models: Sequence = (), new_base=None,
          posts: Sequence = (), bases: Sequence = (), alphas: Sequence[float] = (), weights=None,
          lam: float | None = None, eta: float | None = None, force: bool = False) -> list[str]:
    """Merge the inputs by `method` (see the module docstring) into the run folder OUT; returns the
    lines the command prints. Bad input raises InputError (one line naming the flag or path)."""
    p = plan(method, out_dir, init=init, models=models, new_base=new_base, posts=posts, bases=bases, alphas=alphas,
             weights=weights, lam=lam, eta=eta, force=force)
    import warnings

    import torch

    from rizzrun.merge import weights as W

    template_source = p.template
    template = _load(template_source, None)
    loaded = {template_source: template}
    for s in p.sources:
        if s not in loaded:
            loaded[s] = _load(s, template)
    states = [loaded[s].state for s in p.sources]
    try:
        W.check_compatible({s.label: loaded[s].state for s in p.sources})
    except ValueError as e:
        raise InputError(str(e)) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "slerp":
            init_sd, thetas = states[0], states[1:]
            merged = (W.slerp(init_sd, thetas[0], thetas[1], p.options["lam"]) if len(thetas) == 2
                      else W.slerp_many(init_sd, thetas))
            if p.options["eta"] != 1.0:
                merged = W.liti(init_sd, merged, p.options["eta"])
        elif method == "linear":
            merged = W.linear(states[0], states[1:], p.options["weights"])
        elif method == "liti":
            merged = W.liti(states[0], states[1], p.options["eta"])
        else:
            merged = W.paramdelta(states[0], [(loaded[post].state, loaded[base].state, a) for post, base, a in
                                              zip(p.role("post"), p.role("base"), p.options["alphas"])])
    notes = [str(w.message) for w in caught]
    model = template.model  # its inputs are read; it now takes the merged weights
    with torch.no_grad():
        model.load_state_dict(merged)
    from rizzrun.runner.extra_models import weights_digest

    digest = weights_digest(model)
    record = {
        "method": method,
        "options": p.options,
        "template": str(template_source.path.absolute()),
        "inputs": [{"role": s.role, "index": s.index, "flag": s.flag, "path": str(s.path.absolute()), "kind": s.kind,
                    "checkpoint": loaded[s].checkpoint, "sha256": loaded[s].digest} for s in p.sources],
        "sha256": digest,
        "warnings": notes,
    }
    _write(p, template_source.path, model, record)
    lines = [f"merged ({method}) -> {p.out}"]
    for s in p.sources:
        where = f", {loaded[s].checkpoint}" if loaded[s].checkpoint else ""
        lines.append(f"  {s.role:<8} {s.path} ({s.kind}{where}) sha256 {loaded[s].digest[:12]}")
    lines.append(f"options: {json.dumps(p.options)}")
    lines += [f"warning: {n}" for n in notes]
    lines.append(f"merged weights sha256 {digest[:12]} (config.yaml and tokenizer from {template_source.path})")
    lines.append(f"use it: rizzrun eval {p.out} | rizzrun generate {p.out} -p TEXT | model.from_pretrained={p.out}")
    return lines


def _write(p: Plan, template: Path, model, record: dict) -> None:
    """OUT as a run folder (see the module docstring), written beside it and moved in at the end."""
    from rizzrun import layout
    from rizzrun.files import write_atomic
    from rizzrun.runner.checkpoint import MODEL_PREFIX, FolderCheckpointIO
    from rizzrun.runner.extra_models import weights_digest
    from rizzrun.runner.generate import load_run_checkpoint

    out = p.out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would become OUT's mode
        shutil.copyfile(template / layout.CONFIG, tmp / layout.CONFIG)
        shutil.copytree(template / layout.TOKENIZER, tmp / layout.TOKENIZER)
        state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
        FolderCheckpointIO().save_checkpoint({"state_dict": state, "global_step": 0,
                                              "rizzrun": {"merge": p.method}},
                                             layout.checkpoints_dir(tmp) / layout.step_dir_name(0))
        _, _, back, _ = load_run_checkpoint(tmp)  # what eval/generate will load: verified, and the same weights
        if weights_digest(back) != record["sha256"]:
            raise RuntimeError(f"{tmp}: the merged weights read back differ from those written")
        write_atomic(tmp / MERGE_FILE, json.dumps(record, indent=2) + "\n")
        (tmp / MERGE_FILE).chmod(0o644)  # mkstemp's 0600, as config.yaml is readable
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into(tmp: Path, out: Path) -> None:
    """tmp becomes OUT: a rename; an empty OUT is removed first; an earlier merge's OUT (--force,
    checked by `plan`) is renamed aside, replaced, then deleted (put back if the rename fails)."""
    from rizzrun.runner.checkpoint_files import fsync_dir

    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
    else:
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".old-{out.name}-"))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old / out.name, out)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
