"""`rizzrun export RUN_DIR OUT_DIR`: a run's latest checkpoint as a Hugging Face Llama folder.

OUT_DIR receives what `transformers.LlamaForCausalLM.save_pretrained` would write, so
`transformers.AutoModelForCausalLM.from_pretrained(OUT_DIR)` loads it with no missing or
unexpected keys (and `model=llama model.from_pretrained=OUT_DIR` loads it back into rizzrun):

    config.json              LlamaConfig fields (`rizzrun.models.hf_llama.hf_config_dict`)
    model.safetensors        transformers names; a tied model stores the embedding once
    generation_config.json   bos/eos/pad ids of the run's tokenizer
    tokenizer files          when transformers can load the run's tokenizer: a BPE run's
                             tokenizer.json as a PreTrainedTokenizerFast folder, an HF tokenizer's
                             own files; the byte tokenizer has no Hugging Face form (nothing written)

The folder is written beside OUT_DIR first and moved in at the end, so a failure leaves OUT_DIR
as it was.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rizzrun import layout

# Files an export writes or that an earlier export / save_pretrained may have left, and which a
# new export must not leave behind (`--force`): stale shards would shadow model.safetensors.
_HF_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                     "pytorch_model*.bin", "pytorch_model.bin.index.json", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt",
                     "added_tokens.json")


def _refuse_objective_weights(run_dir: Path, cfg, folder: Path) -> None:
    """A run whose objective trained weights of its own (a reward model's head) is not a causal LM:
    exporting its trunk alone would silently drop what it trained."""
    from rizzrun.errors import InputError
    from rizzrun.runner.generate import objective_weights

    if objective_weights(folder):
        raise InputError(f"{run_dir}: its objective ({cfg.objective._target_}) trained weights of its own "
                         "(objective.*, e.g. a reward model's head), which a Hugging Face causal-LM folder cannot "
                         f"hold; use the run itself: objective.models.NAME={run_dir}, or "
                         "rizzrun.runner.generate.load_run_model")


def export_run(run_dir: Path, out_dir: Path, force: bool = False, checkpoint: str | None = None) -> list[str]:
    """Write RUN_DIR's latest checkpoint (or the one `checkpoint` names: a step-N folder name or a
    step number) to OUT_DIR (see the module docstring); returns the lines the command prints.
    OUT_DIR existing and non-empty is an error unless `force`, which replaces the model and
    tokenizer files there and leaves any other file alone. A damaged run folder or checkpoint
    raises InputError (see `load_run_checkpoint`)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_exportable(run_dir)
    from rizzrun.models.hf_llama import save_hf_llama

    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not force)):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder; give a new folder, or pass "
                              "--force to replace the model and tokenizer files in it")
    from rizzrun.runner.generate import load_run_checkpoint

    cfg, tokenizer, model, folder = load_run_checkpoint(run_dir, checkpoint)
    _refuse_objective_weights(run_dir, cfg, folder)
    eos_ids = list(getattr(tokenizer, "eos_ids", None) or [tokenizer.eos_id])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".tmp-{out_dir.name}-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would become OUT_DIR's mode
    try:
        save_hf_llama(model, tmp, bos_token_id=tokenizer.bos_id,
                      eos_token_id=eos_ids[0] if len(eos_ids) == 1 else eos_ids,
                      pad_token_id=tokenizer.pad_id)
        tokenizer_note = _export_tokenizer(tokenizer, run_dir / layout.TOKENIZER, tmp, model.config.max_seq_len)
        written = sorted(p.name for p in tmp.iterdir())
        _move_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = model.config
    return [
        f"exported {run_dir} -> {out_dir}",
        f"checkpoint: {folder.name}",
        f"model: Llama {model.num_params():,} parameters (d_model={cfg.d_model}, n_layer={cfg.n_layer}, "
        f"n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}, vocab_size={cfg.vocab_size}, "
        f"tie_word_embeddings={str(cfg.tie_embeddings).lower()})",
        tokenizer_note,
        f"files: {', '.join(written)}",
        f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(out_dir)!r})",
    ]


# The model targets export can write: a Hugging Face Llama folder holds a Llama and nothing else.
EXPORTABLE = ("rizzrun.models.llama.Llama",)


def _check_exportable(run_dir: Path) -> None:
    """InputError (one line) unless the run trained a Llama; read from its config.yaml, before
    anything is loaded or written. A missing or unreadable config.yaml is left to `load_run`."""
    from omegaconf import OmegaConf

    from rizzrun.errors import InputError

    try:
        target = OmegaConf.load(run_dir / layout.CONFIG).model._target_
    except Exception:  # noqa: BLE001 - load_run_checkpoint reports a damaged config.yaml
        return
    if target not in EXPORTABLE:
        raise InputError(f"{run_dir}: its model is {target}, which rizzrun export cannot write; export "
                         "supports Llama runs only (model=llama -> a Hugging Face Llama folder)")


def _export_tokenizer(tokenizer: Any, tokenizer_dir: Path, out: Path, max_len: int) -> str:
    """Write the run's tokenizer in a form `transformers.AutoTokenizer` loads, if it has one;
    returns the line that says what happened."""
    from rizzrun.tokenizers import META_FILE
    from rizzrun.tokenizers.bpe import BPETokenizer
    from rizzrun.tokenizers.byte import ByteTokenizer

    if (tokenizer_dir / "tokenizer_config.json").is_file() and (tokenizer_dir / "tokenizer.json").is_file():
        # A Hugging Face tokenizer folder already (tokenizer=hf): its own files, as they are.
        copied = []
        for path in sorted(tokenizer_dir.rglob("*")):
            name = path.relative_to(tokenizer_dir)
            if path.is_file() and path.name not in (META_FILE, "generation_config.json"):
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out / name)
                copied.append(name.as_posix())
        return f"tokenizer: the run's Hugging Face tokenizer files ({', '.join(copied)})"
    if isinstance(tokenizer, BPETokenizer):
        shutil.copyfile(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
        specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "model_max_length": max_len,
            "clean_up_tokenization_spaces": False,
            # rizzrun's BPE reads "<eos>" inside a text as text, never as the special token.
            "split_special_tokens": True,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
        return (f"tokenizer: BPE ({tokenizer.trained_vocab_size} tokens) as a PreTrainedTokenizerFast folder "
                "(tokenizer.json, tokenizer_config.json, special_tokens_map.json)")
    if isinstance(tokenizer, ByteTokenizer):
        return ("tokenizer: not written: the byte tokenizer has no Hugging Face form; ids 0-255 are the "
                f"UTF-8 bytes, {tokenizer.bos_id} = bos, {tokenizer.eos_id} = eos, {tokenizer.pad_id} = pad")
    return f"tokenizer: not written: {type(tokenizer).__name__} has no Hugging Face form"


def _move_into(tmp: Path, out_dir: Path) -> None:
    """Move the files of `tmp` into `out_dir`: a rename when out_dir does not exist; else the
    Hugging Face files already there are removed first (the caller checked `--force`)."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    for pattern in _HF_FILE_PATTERNS:
        for stale in out_dir.glob(pattern):
            if stale.is_file():
                stale.unlink()
    for path in sorted(tmp.iterdir()):
        target = out_dir / path.name
        if target.is_dir() and path.is_dir():
            shutil.rmtree(target)
        path.replace(target)
