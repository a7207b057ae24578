"""PairData: preference pairs (prompt, chosen, rejected) as `preference` batches.

The batch (rizzrun.objectives.preference, docs/contracts.md "Batch kinds"): prompt_ids (B, P),
chosen_ids (B, C), rejected_ids (B, R) long, each with a bool mask (True = a real token, real
tokens first, right padding with id 0), every tensor padded to the batch's own longest row, and
row (B,) long: the pair's id, numbered over the kept pairs of every part in order (train
0..N_train-1, then val, then the eval sets), stable for the same data, tokenizer and options.

Tokenization (TRL, arXiv 2305.18290's reference trainer, where TRL says; decided here otherwise):
- a plain prompt begins as a document begins in rizzrun's packed training stream. rizzrun's own
  tokenizers (byte, bpe: `encode(text)` takes no options): [EOS] + encode(prompt), the EOS that
  precedes every packed document and every prompt the runner samples from. A Hugging Face
  tokenizer (its `encode` takes `add_special_tokens`): encode(prompt, add_special_tokens=True),
  the folder's own BOS, with an EOS the folder's post-processor appends (T5, BERT style) left
  out: the completion follows the prompt (TRL >= 0.29 loses it the same way, splitting
  prompt+completion at its common prefix with the prompt).
- a plain completion: encode(text) + [EOS], the EOS not added when the ids already end with it
  (TRL >= 0.29 `add_eos`; TRL <= 0.28 appended EOS to every completion).
- chat rows (the prompt is a list of {"role", "content"} messages; chosen and rejected are
  message lists or one message): prompt text = apply_chat_template(prompt,
  add_generation_prompt=True); completion text = apply_chat_template(prompt + completion)
  minus the prompt text in front (TRL <= 0.28 `maybe_apply_chat_template`). When a template
  renders the prompt alone differently, the prompt ends where the renderings part (TRL >= 0.29
  does this with ids). Both are encoded with encode(text): the template wrote the specials, so
  none is added, and no EOS is appended (TRL >= 0.29: the template ends the turn).

Truncation, in this order (p, c, r: prompt and completion ids, EOS included):
1. max_prompt_length: p keeps its last max_prompt_length tokens (TRL <= 0.28, whose default
   truncation_mode "keep_end" cut prompts from the start).
2. max_length bounds len(p) + len(completion) for both completions:
   - truncation="keep_start" (TRL >= 0.29 default, its `DataCollatorForPreference`): each
     completion keeps its first max_length - len(p) tokens; a pair whose prompt alone has
     max_length tokens or more is dropped ("prompt_too_long"), as TRL >= 0.29 drops it.
   - truncation="keep_end": tokens are cut from the start of the prompt until prompt + the
     longer completion fit, keeping at least the prompt's last token; a completion that still
     does not fit is cut at its end. TRL slices each of prompt+chosen and prompt+rejected to its
     last max_length tokens on its own; a `preference` batch has one prompt per pair, so here
     both completions see the prompt cut for the longer one, and a completion is never cut at
     its start (its first tokens are what the preference is about).
A pair is "truncated" when a completion lost tokens (its EOS with them), "truncated_prompts"
counts pairs whose prompt lost tokens. Dropped pairs, by reason: "prompt_too_long",
"empty_prompt" (the prompt encodes to no token), "empty_completion" (a completion's text encodes
to no token; an empty answer is a data glitch, not a preference), "identical" (chosen and
rejected have the same ids after truncation: the DPO loss is the constant ln 2 with zero
gradient).

Caching: each part's tokenized pairs are written by `datasets.Dataset.map` to
<cache_root>/tokenized/pairs-<part>-<key>.arrow, key = hash(data fingerprint, tokenizer
fingerprint, part, prompt style), and read back by the next setup instead of tokenizing.

Training order, as rizzrun.data.lm: with n training pairs and b = min(batch_size, n), batch i
belongs to epoch i // P, P = n // b; each epoch visits the pairs in a permutation seeded by
(seed, epoch) and cuts it into P batches of b pairs (the n - P*b left over sit out that epoch).
Batch i is a pure function of (data, seed, i): `train_batches(start=i)` is an exact resume.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import numbers
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from rizzrun.data.lm import SPLIT_NAMES, _seed_for, encoder_of, plural
from rizzrun.errors import InputError

# Bump when tokenized pair files change meaning (columns, tokenization or truncation rules).
PAIRS_VERSION = 1
TRUNCATIONS = ("keep_start", "keep_end")
FORMATS = ("auto", "plain", "chat")
DROP_REASONS = ("prompt_too_long", "empty_prompt", "empty_completion", "identical")
FIELDS = ("prompt", "chosen", "rejected")
_ROWS = 1000


# -- rows ------------------------------------------------------------------------------------


class BadRow(Exception):
    """A source row that cannot be a pair: `reason` (a stats key) and a one-line `detail`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


ON_BAD_ROW = ("error", "skip")


def good_rows(n: int, parse, what: str, on_bad_row: str, field_fix: str = "") -> tuple[list, Counter, list[str]]:
    """([(r, parse(r))] for the rows r < n that parse, bad rows by reason, up to 10 messages naming them).
    A row whose parse raises BadRow stops the read when on_bad_row="error": an InputError naming `what`
    (the file and split), the row (0-based) and the fix (`field_fix`: how to point at the right column when
    the field is missing); "skip" counts it by reason instead."""
    rows, bad, examples = [], Counter(), []
    for r in range(n):
        try:
            rows.append((r, parse(r)))
        except BadRow as err:
            where = f"{what}: row {r} (0-based): {err.detail}"
            if on_bad_row == "error":
                fix = field_fix if err.reason == "missing_field" else ""
                raise InputError(f"{where}. Fix the data,{fix} or set data.on_bad_row=skip to drop bad rows "
                                 f"and count them") from None
            bad[err.reason] += 1
            if len(examples) < 10:
                examples.append(where)
    return rows, bad, examples


def _messages(value, field: str, key: str, one_ok: bool) -> list[dict]:
    """`value` as a list of message dicts (None values dropped: arrow's filler for absent keys)."""
    if one_ok and isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        kind = "an empty list" if isinstance(value, (list, tuple)) else type(value).__name__
        raise BadRow("malformed_messages", f"field {key!r} ({field}) is {kind}, not a list of "
                                           f"{{'role', 'content'}} messages")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            got = (f"keys {sorted(m)}" if isinstance(m, dict) else type(m).__name__)
            raise BadRow("malformed_messages", f"field {key!r} ({field}): message {k} needs a string 'role' and "
                                               f"a string 'content' (got {got})")
        out.append({k2: v for k2, v in m.items() if v is not None})
    return out


def normalize_row(prompt, chosen, rejected, fmt: str, keys: dict[str, str]) -> tuple[str, str, str, bool]:
    """(prompt, chosen, rejected, chat) of one source row: plain strings, or JSON message lists
    when chat. keys: {"prompt": the data's field name, ...} for messages. Raises BadRow."""
    values = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    for field, v in values.items():
        if v is None:
            raise BadRow("missing_field", f"field {keys[field]!r} ({field}) is missing or null")
    chat = fmt == "chat" or (fmt == "auto" and isinstance(prompt, (list, tuple)))
    if chat:
        out = [json.dumps(_messages(values[f], f, keys[f], one_ok=f != "prompt"), ensure_ascii=False) for f in FIELDS]
        return out[0], out[1], out[2], True
    for field, v in values.items():
        if not isinstance(v, str):
            kind = "a message list" if isinstance(v, (list, tuple, dict)) else type(v).__name__
            hint = ("; data.format=plain needs strings (data.format=auto reads a message-list prompt as chat)"
                    if fmt == "plain" and isinstance(v, (list, tuple, dict)) else
                    "; with a plain-text prompt chosen and rejected must be strings too")
            shown = json.dumps(v, default=str)[:40]
            raise BadRow("non_string", f"field {keys[field]!r} ({field}) is {kind} {shown}, not a string"
                         + (hint if kind == "a message list" else ""))
    if not prompt.strip():
        raise BadRow("empty_prompt", f"field {keys['prompt']!r} (prompt) is empty or only whitespace")
    return prompt, chosen, rejected, False


def rows_dataset(prompts, chosens, rejecteds, chat, source):
    """A `datasets.Dataset` of normalized rows: prompt, chosen, rejected (str; JSON message lists
    where chat), chat (bool), source (int64: the row's index in its origin, for messages)."""
    from datasets import Dataset, Features, Value

    features = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                         "chat": Value("bool"), "source": Value("int64")})
    return Dataset.from_dict({"prompt": list(prompts), "chosen": list(chosens), "rejected": list(rejecteds),
                              "chat": list(chat), "source": list(source)}, features=features)


# -- tokenization ----------------------------------------------------------------------------


def hf_style(tokenizer) -> bool:
    """True for a tokenizer whose `encode` takes add_special_tokens (HFTokenizer)."""
    try:
        return "add_special_tokens" in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):
        return False


def common_prefix(*texts: str) -> int:
    n = min(len(t) for t in texts)
    for i in range(n):
        c = texts[0][i]
        if any(t[i] != c for t in texts[1:]):
            return i
    return n


def render_chat(tokenizer, prompt: list, chosen: list, rejected: list) -> tuple[str, str, str]:
    """(prompt text, chosen text, rejected text) of a chat row (see the module docstring)."""
    p = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
    pc = tokenizer.apply_chat_template(list(prompt) + list(chosen))
    pr = tokenizer.apply_chat_template(list(prompt) + list(rejected))
    cut = len(p) if pc.startswith(p) and pr.startswith(p) else common_prefix(p, pc, pr)
    return p[:cut], pc[cut:], pr[cut:]


def truncate(p: list, c: list, r: list, max_length: int | None, max_prompt_length: int | None,
             truncation: str) -> tuple[list, list, list, str]:
    """(p, c, r, drop reason or "") after the truncation rules of the module docstring."""
    if max_prompt_length is not None and len(p) > max_prompt_length:
        p = p[len(p) - max_prompt_length:]
    if max_length is not None:
        if truncation == "keep_start":
            if len(p) >= max_length:
                return p, c, r, "prompt_too_long"
        else:
            over = len(p) + max(len(c), len(r)) - max_length
            if over > 0:
                p = p[min(over, len(p) - 1):]
        room = max_length - len(p)
        c, r = c[:room], r[:room]
    return p, c, r, ""


class _Tokenize:
    """The `Dataset.map` function: normalized rows -> ids, texts, cut counts and drop reason."""

    def __init__(self, tokenizer, max_length, max_prompt_length, truncation):
        self.tokenizer = tokenizer
        self.hf = hf_style(tokenizer)
        self.max_length, self.max_prompt_length, self.truncation = max_length, max_prompt_length, truncation

    def _encode(self, texts: list[str], specials: bool = False) -> list[list[int]]:
        if not texts:
            return []
        if specials:
            batch = getattr(self.tokenizer, "encode_batch", None)
            if batch is not None:
                return batch(texts, add_special_tokens=True)
            return [self.tokenizer.encode(t, add_special_tokens=True) for t in texts]
        return encoder_of(self.tokenizer)(texts)

    def __call__(self, batch: dict) -> dict:
        tok, eos = self.tokenizer, self.tokenizer.eos_id
        n = len(batch["prompt"])
        texts = {f: list(batch[f]) for f in FIELDS}
        for i in range(n):
            if batch["chat"][i]:
                msgs = [json.loads(texts[f][i]) for f in FIELDS]
                texts["prompt"][i], texts["chosen"][i], texts["rejected"][i] = render_chat(tok, *msgs)
        chat = list(batch["chat"])
        ids = {f: self._encode(texts[f]) for f in FIELDS}
        plain_rows = [i for i in range(n) if not chat[i]]
        if self.hf and plain_rows:
            full = self._encode([texts["prompt"][i] for i in plain_rows], specials=True)
            for i, f in zip(plain_rows, full):
                if f[-1:] == [eos] and ids["prompt"][i][-1:] != [eos]:
                    f = f[:-1]  # a post-processor's EOS after the prompt (see the module docstring)
                ids["prompt"][i] = f
        out = {k: [] for k in ("prompt_ids", "chosen_ids", "rejected_ids", "prompt_text", "chosen_text",
                               "rejected_text", "prompt_cut", "chosen_cut", "rejected_cut", "drop", "source")}
        for i in range(n):
            p, c, r = ids["prompt"][i], ids["chosen"][i], ids["rejected"][i]
            drop = "empty_completion" if not c or not r else ""
            if not chat[i]:
                if not self.hf:
                    p = [eos, *p]
                c = c if c[-1:] == [eos] else [*c, eos]
                r = r if r[-1:] == [eos] else [*r, eos]
            if not p:
                drop = drop or "empty_prompt"
            tp, tc, tr, reason = truncate(p, c, r, self.max_length, self.max_prompt_length, self.truncation)
            drop = drop or reason or ("empty_completion" if not tc or not tr else "") or (
                "identical" if tc == tr else "")
            for key, value in (("prompt_ids", tp), ("chosen_ids", tc), ("rejected_ids", tr)):
                out[key].append(value)
            for f in FIELDS:
                out[f"{f}_text"].append(texts[f][i])
            out["prompt_cut"].append(len(p) - len(tp))
            out["chosen_cut"].append(len(c) - len(tc))
            out["rejected_cut"].append(len(r) - len(tr))
            out["drop"].append(drop)
            out["source"].append(batch["source"][i])
        return out


def _features():
    from datasets import Features, List, Value

    ids = List(Value("int32"))
    return Features({"prompt_ids": ids, "chosen_ids": ids, "rejected_ids": ids, "prompt_text": Value("string"),
                     "chosen_text": Value("string"), "rejected_text": Value("string"),
                     "prompt_cut": Value("int32"), "chosen_cut": Value("int32"), "rejected_cut": Value("int32"),
                     "drop": Value("string"), "source": Value("int64")})


class Ragged:
    """Rows of ids of different lengths, kept flat: values (int32) and offsets (n + 1)."""

    def __init__(self, column: pa.ChunkedArray | pa.Array):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        self.values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> list[int]:
        return self.values[self.offsets[i]:self.offsets[i + 1]].tolist()

    def pad(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L) long, mask (B, L) bool) of rows idx, right-padded with 0 to the longest."""
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        pos = np.arange(width)
        mask = pos[None, :] < lengths[:, None]
        flat = self.offsets[idx][:, None] + pos[None, :]
        ids = np.where(mask, self.values[np.minimum(flat, max(len(self.values) - 1, 0))] if len(self.values) else 0, 0)
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask)


class _Part:
    """One tokenized part (train, val or an eval set): its kept pairs and their first row id."""

    def __init__(self, table: pa.Table, first_row: int):
        self.prompt, self.chosen, self.rejected = (Ragged(table.column(f"{f}_ids")) for f in FIELDS)
        self.texts = {f: table.column(f"{f}_text").to_pylist() for f in FIELDS}
        self.first_row = first_row
        self.n = table.num_rows

    def batch(self, idx) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        out = {}
        for f in FIELDS:
            out[f"{f}_ids"], out[f"{f}_mask"] = getattr(self, f).pad(idx)
        out["row"] = torch.from_numpy(idx + self.first_row)
        return out


# -- the data component -------------------------------------------------------------------


def _positive_int(key: str, value, low: int, nullable: bool, owner: str):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        need = ("null or " if nullable else "") + f"an integer >= {low}"
        raise InputError(f"data.{key}={value!r}: must be {need} ({owner})")
    return int(value)


class PairData:
    """Base of the preference-pair data: subclasses supply `_data_key()` (a hash of the raw data
    and of every option that changes the rows) and `_raw_parts()` ({"train": rows, "val": rows
    (absent: no validation), <eval set name>: rows, ...} as `rows_dataset`s); this class
    tokenizes (cached), truncates, filters and batches them as `preference` batches.

    batch_size: pairs per batch. seed: the training order (not the data).
    cache_dir: cache root (None: $RIZZRUN_CACHE or ~/.cache/rizzrun).
    max_length: at most this many prompt + completion tokens per sequence (None: no limit).
    max_prompt_length: a prompt keeps its last max_prompt_length tokens (None: no limit).
    truncation: "keep_start" (cut completions' ends) or "keep_end" (cut the prompt's start).
    format: "auto" (a row is chat when its prompt is a message list), "plain" or "chat".
    See the module docstring for the tokenization, truncation and order rules.
    """

    batch_kind = "preference"

    def __init__(self, batch_size: int, seed: int, cache_dir: str | None, max_length: int | None = None,
                 max_prompt_length: int | None = None, truncation: str = "keep_start", format: str = "auto"):
        owner = type(self).__name__
        self.batch_size = _positive_int("batch_size", batch_size, 1, False, owner)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InputError(f"data.seed={seed!r}: must be an integer ({owner})")
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.max_length = _positive_int("max_length", max_length, 2, True, owner)
        self.max_prompt_length = _positive_int("max_prompt_length", max_prompt_length, 1, True, owner)
        if truncation not in TRUNCATIONS:
            raise InputError(f"data.truncation={truncation!r}: allowed: {', '.join(TRUNCATIONS)}")
        if format not in FORMATS:
            raise InputError(f"data.format={format!r}: allowed: {', '.join(FORMATS)}")
        if (self.max_length is not None and self.max_prompt_length is not None
                and self.max_prompt_length >= self.max_length):
            raise InputError(f"data.max_prompt_length={self.max_prompt_length}: must be < data.max_length="
                             f"{self.max_length}, so that a completion has room")
        self.truncation, self.format = truncation, format
        self._parts: dict[str, _Part] | None = None
        self._stats: dict[str, dict] = {}
        self._skipped: dict[str, Counter] = {}  # part -> bad source rows by reason (subclasses fill it)
        self.skipped_examples: list[str] = []

    # -- subclass hooks --------------------------------------------------------------------

    def _data_key(self) -> str:
        raise NotImplementedError

    def _raw_parts(self) -> dict:
        raise NotImplementedError

    def _split_origin(self, part: str) -> tuple[str, str]:
        """(`key=value` that decides what `part` holds, how to get pairs into it): the ends of
        the empty-part message."""
        return f"data={type(self).__name__}", "add pairs"

    # -- identity --------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the raw data (`_data_key`) and of the options that change tokenized pairs."""
        key = ["pairs", PAIRS_VERSION, self._data_key(), self.max_length, self.max_prompt_length, self.truncation]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def train_texts(self) -> Iterator[str]:
        """Every training prompt, chosen and rejected text (message contents of chat rows), for
        tokenizer training."""
        for batch in self._raw_parts()["train"].iter(batch_size=_ROWS):
            for i in range(len(batch["prompt"])):
                for f in FIELDS:
                    if batch["chat"][i]:
                        yield from (m["content"] for m in json.loads(batch[f][i]))
                    else:
                        yield batch[f][i]

    # -- pipeline --------------------------------------------------------------------------

    def setup(self, tokenizer, cache_dir: str | None = None) -> None:
        """Tokenize, truncate and filter every part (cached under <cache_root>/tokenized/);
        `tokenizer` must already be prepared. Raises one InputError naming every empty part."""
        from rizzrun.paths import cache_root

        root = cache_root(cache_dir or self.cache_dir) / "tokenized"
        raw = self._raw_parts()
        reserved = [name for name in raw if name in ("skipped",)]
        if reserved:
            raise ValueError(f"{type(self).__name__}: part name {reserved[0]!r} is reserved")
        if any(any(ds.data.column("chat").to_pylist()) for ds in raw.values() if len(ds)) and not callable(
                getattr(tokenizer, "apply_chat_template", None)):
            raise InputError(f"data.format={self.format}: the rows are conversational (message lists), which need a "
                             f"tokenizer with a chat template, and {type(tokenizer).__name__} has none; use "
                             f"tokenizer=hf with a folder that has a chat template, or give plain-text fields "
                             f"(allowed: data.format=auto|plain|chat)")
        style = "hf" if hf_style(tokenizer) else "eos"
        fn = _Tokenize(tokenizer, self.max_length, self.max_prompt_length, self.truncation)
        parts, stats, problems, first = {}, {}, [], 0
        for name, ds in raw.items():
            key = hashlib.sha256(f"pairs-v{PAIRS_VERSION}|{self.fingerprint}|{tokenizer.fingerprint}|{name}|"
                                 f"{style}".encode()).hexdigest()[:40]
            if len(ds) == 0:  # map() on zero rows returns the input columns unchanged
                table = _features().arrow_schema.empty_table()
            else:
                root.mkdir(parents=True, exist_ok=True)
                table = ds.map(fn, batched=True, batch_size=_ROWS, remove_columns=ds.column_names,
                               features=_features(), cache_file_name=str(root / f"pairs-{name}-{key}.arrow"),
                               new_fingerprint=key, load_from_cache_file=True, desc=f"tokenize pairs {name}").data.table
            drop = table.column("drop").to_pylist()
            kept = table.filter(pa.array([not d for d in drop], type=pa.bool_()))
            part = _Part(kept, first)
            first += part.n
            parts[name] = part
            cuts = {f: np.asarray(kept.column(f"{f}_cut").to_pylist(), dtype=np.int64) for f in FIELDS}
            dropped = Counter(d for d in drop if d)
            stats[name] = {
                "pairs": part.n,
                "rows": len(ds),
                "tokens": int(sum(int(getattr(part, f).lengths.sum()) for f in FIELDS)),
                "truncated": int(((cuts["chosen"] > 0) | (cuts["rejected"] > 0)).sum()),
                "truncated_prompts": int((cuts["prompt"] > 0).sum()),
                "dropped": {r: dropped[r] for r in DROP_REASONS if dropped[r]},
                "skipped": dict(sorted(self._skipped.get(name, Counter()).items())),
            }
            if part.n == 0:
                setting, fix = self._split_origin(name)
                why = ", ".join(f"{n} {r}" for r, n in stats[name]["dropped"].items())
                what = SPLIT_NAMES.get(name, f"{name!r} eval")
                problems.append(f"{setting}: the {what} split has no pairs ({plural(len(ds), 'row')}"
                                + (f"; dropped: {why}" if why else "") + f"): {fix}")
        if problems:
            raise InputError("; ".join(problems))
        self._parts, self._stats = parts, stats

    def _require_setup(self) -> dict[str, _Part]:
        if self._parts is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(tokenizer) before asking for batches")
        return self._parts

    # -- batches ---------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        """Pairs over every part: row ids are 0..n_rows-1."""
        return sum(p.n for p in self._require_setup().values())

    def split_rows(self, part: str) -> range:
        """The row ids of `part` ("train", "val" or an eval set name)."""
        p = self._require_setup()[part]
        return range(p.first_row, p.first_row + p.n)

    @property
    def train_batch_size(self) -> int:
        """Pairs per training batch: batch_size, or every training pair when there are fewer."""
        return min(self.batch_size, self._require_setup()["train"].n)

    @property
    def batches_per_epoch(self) -> int:
        return self._require_setup()["train"].n // self.train_batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of training pairs visited in `epoch`."""
        g = torch.Generator().manual_seed(_seed_for(self.seed, epoch))
        return torch.randperm(self._require_setup()["train"].n, generator=g)

    def train_batches(self, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Infinite stream of `preference` batches of train_batch_size pairs, from global batch
        index `start` (see the module docstring)."""
        if int(start) != start or start < 0:
            raise ValueError(f"train_batches start={start!r}: must be an integer >= 0")
        part = self._require_setup()["train"]
        per_epoch, b = self.batches_per_epoch, self.train_batch_size
        epoch, i = divmod(int(start), per_epoch)
        while True:
            order = self.epoch_order(epoch).numpy()
            for j in range(i, per_epoch):
                yield part.batch(order[j * b:(j + 1) * b])
            epoch, i = epoch + 1, 0

    def _in_order(self, name: str) -> Iterator[dict[str, torch.Tensor]]:
        part = self._require_setup()[name]
        for i in range(0, part.n, self.batch_size):
            yield part.batch(np.arange(i, min(i + self.batch_size, part.n)))

    def val_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every validation pair once, in row order; the last batch may be smaller. Nothing when
        the data has no validation split."""
        if "val" in self._require_setup():
            yield from self._in_order("val")

    def example_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every pair of every part once, in row order (0..n_rows-1), batch_size at a time; a
        batch never spans two parts, so each part's last batch may be smaller. For precomputing
        reference log-probs indexed by row."""
        for name in self._require_setup():
            yield from self._in_order(name)

    def eval_sets(self) -> dict[str, Callable[[], Iterator[dict[str, torch.Tensor]]]]:
        """{name: () -> iterator of batches} of the extra held-out pair sets (rows after val)."""
        names = [n for n in self._require_setup() if n not in ("train", "val")]
        return {n: (lambda n=n: self._in_order(n)) for n in names}

    # -- texts and counts ------------------------------------------------------------------

    def pairs(self, split: str) -> list[tuple[str, str, str]]:
        """(prompt, chosen, rejected) texts of the kept pairs of `split`, in row order: plain rows
        as given, chat rows as rendered by the chat template (what the ids encode, without the
        EOS/BOS rizzrun adds)."""
        t = self._require_setup()[split].texts
        return list(zip(t["prompt"], t["chosen"], t["rejected"]))

    def prompts(self, split: str) -> list[str]:
        """The prompt texts of `split`'s kept pairs, in row order."""
        return list(self._require_setup()[split].texts["prompt"])

    def longest_pair(self) -> int:
        """Tokens of the longest prompt + completion over every part (what a model must read, less
        one: the last token is only a target)."""
        longest = 0
        for part in self._require_setup().values():
            if part.n:
                completion = np.maximum(part.chosen.lengths, part.rejected.lengths)
                longest = max(longest, int((part.prompt.lengths + completion).max()))
        return longest

    def prompt_token_ids(self, split: str) -> list[list[int]]:
        """The prompt ids of `split`'s kept pairs, in row order: exactly what the model reads before a
        completion (specials, chat template and truncation included), for generation-based eval."""
        part = self._require_setup()[split]
        return [part.prompt.row(i) for i in range(part.n)]

    @property
    def stats(self) -> dict:
        """{part: {pairs, rows, tokens, truncated, truncated_prompts, dropped: {reason: n},
        skipped: {reason: n}}, ..., "skipped": {reason: n} over every part} (parts after setup)."""
        out = {name: {k: (dict(v) if isinstance(v, dict) else v) for k, v in s.items()}
               for name, s in self._stats.items()}
        total: Counter = Counter()
        for c in self._skipped.values():
            total.update(c)
        out["skipped"] = dict(sorted(total.items()))
        return out
