"""Progressive Mixed-Precision Decoding (PMPD; Chen, Tan, Kouris, Lee, Fan, Venieris, arXiv 2410.13461).

The prompt is prefilled at a high weight precision, then decoding steps down through fewer weight
bits (4 -> 3, or 4 -> 3 -> 2) as more tokens are generated. The weights are the nested 8-bit codes
of `rizzrun.decoders.nested_quant` (uniform Any-Precision, arXiv 2402.10517: every k-bit code is
the top k bits of the 8-bit one), swapped in per step; the KV cache written at one precision is
kept when the precision changes (no recomputation, as on the paper's hardware).

When to switch (the scheduler):
- static (the paper's prompt-agnostic scheduler, `naive` in the official code): decoding forward s
  (s = 0 feeds the first generated token) runs at precisions[j], j = the number of switch steps
  <= s; one switch step per adjacent pair, `n_high`. n_high >= the generation length is pure
  high-precision decoding, n_high = 0 is high-precision prefill + low-precision decoding.
  Decision: the official loop always runs the first decoding forward at the high precision and
  consults the schedule from the second on; here n_high counts every decoding forward, so the
  neutral settings are exactly pure high / pure low decoding.
- kv_cache (the learned, task-agnostic scheduler): after the prefill, one `SwitchClassifier` per
  adjacent pair reads the last layer's cached keys and values of the prompt and predicts a class
  in {0, ⌊N/3⌋, 2⌊N/3⌋, N (never)}, N = max_new_tokens of the call. Decisions: the classifier reads
  the cache right after the prefill (the official one is trained on that cache but, at inference,
  is asked after the first decoding forward); chained pairs switch at the running maximum of their
  predicted steps (the official loop reuses the first pair's step for the next pair); one precision
  per forward for the whole batch (one copy of the weights is read), so a batch switches at the
  latest step any of its rows asks for, quality first (batch size 1 gives the paper's per-prompt
  schedule).

Labels for the classifier (`switch_examples`, the official SupervisedDataset): decode greedily at
the pair's high precision and with a switch at each candidate step; the label is the earliest
candidate whose ROUGE-L against the full-precision model's greedy output is >= the pure high
precision's, both rounded to 3 decimals, else "never". Decisions: ROUGE-L is over token ids
(`rizzrun.eval.memorization.rouge_l`) instead of words of decoded text; the prefill of every
decode runs at the decoder's prefill precision, so the classifier is trained on the cache it reads.

Efficiency is reported, not timed (CPU fake quantisation runs fp32 matmuls): after generate(),
`last_stats` holds the precision of every forward and the mean weight bits read per decoding
forward (`bits_per_weight`; quantised layers only, embeddings and head stay full precision).
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rizzrun.decoders.base import Decoder
from rizzrun.decoders.loop import ModelStepper
from rizzrun.decoders.nested_quant import NestedWeights
from rizzrun.decoders.pmpd_spec import problems

__all__ = ["PMPD", "SwitchClassifier", "SwitchClassifiers", "candidate_steps", "precision_schedule",
           "switch_examples", "switch_label", "train_switch_classifiers"]

_FORMAT = "rizzrun.pmpd.switch_classifiers.v1"

# model -> {quantizer: its NestedWeights}, shared by every PMPD decoder (codes depend on the weights only).
_NESTED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def candidate_steps(n: int) -> tuple[int, int, int, int]:
    """The switch step of each classifier class: (0, ⌊n/3⌋, 2⌊n/3⌋, n = never), n new tokens."""
    return 0, n // 3, n // 3 * 2, n


def precision_schedule(precisions, switch_steps, forwards: int) -> list[int]:
    """Bits of decoding forwards s = 0 .. forwards-1: precisions[number of switch steps <= s]."""
    return [precisions[sum(step <= s for step in switch_steps)] for s in range(forwards)]


def _as_list(value):
    if isinstance(value, (str, bytes, nn.Module)) or not hasattr(value, "__iter__"):
        return value
    return list(value)


# --- the learned scheduler ------------------------------------------------------------------------


class SwitchClassifier(nn.Module):
    """PMPD's KV-cache classifier for one precision pair: keys, values (B, Hkv, T, D) of the
    prompt's last layer -> logits (B, classes) over the switch steps of `candidate_steps`.

    As the official code: keys and values are averaged over heads -> (B, T, D); learned queries
    (Hkv, Hkv, D) (Hkv groups of Hkv queries) attend over the T keys (scaled dot product,
    softmax, dropout on the weights); the attended values are averaged within each group ->
    (B, Hkv, D), flattened D-major -> (B, D·Hkv), then LayerNorm -> Linear -> ReLU -> Linear(classes).
    mask (B, T) bool, True = real token, keeps left padding out of the attention.
    """

    def __init__(self, head_dim: int, n_kv_head: int, classes: int = 4, dropout: float = 0.1):
        super().__init__()
        self.head_dim, self.n_kv_head = head_dim, n_kv_head
        self.query = nn.Parameter(torch.empty(n_kv_head, n_kv_head, head_dim))
        nn.init.xavier_normal_(self.query)
        hidden = head_dim * n_kv_head
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, H, T, D = keys.shape
        if (H, D) != (self.n_kv_head, self.head_dim):
            raise ValueError(f"the classifier was made for {self.n_kv_head} KV heads of dim {self.head_dim}; the "
                             f"model's cache has {H} of dim {D}")
        k = keys.float().mean(1)
        v = values.float().mean(1)
        att = torch.einsum("gqd,btd->bgqt", self.query, k) / math.sqrt(D)
        if mask is not None:
            att = att.masked_fill(~mask[:, None, None, :], -math.inf)
        w = self.dropout(torch.softmax(att, dim=-1))
        out = torch.einsum("bgqt,btd->bgqd", w, v).mean(2)  # (B, Hkv, D)
        return self.fc2(F.relu(self.fc1(self.norm(out.transpose(1, 2).reshape(B, D * H)))))


class SwitchClassifiers(nn.Module):
    """One `SwitchClassifier` per adjacent precision pair, e.g. pairs [(4, 3), (3, 2)];
    save(path) / load(path) as safetensors (the dimensions and pairs in its metadata)."""

    def __init__(self, head_dim: int, n_kv_head: int, pairs, dropout: float = 0.1):
        super().__init__()
        self.head_dim, self.n_kv_head = head_dim, n_kv_head
        self.pairs = [tuple(int(b) for b in p) for p in pairs]
        self.classifiers = nn.ModuleDict(
            {f"{hi}_{lo}": SwitchClassifier(head_dim, n_kv_head, dropout=dropout) for hi, lo in self.pairs})

    def __getitem__(self, pair) -> SwitchClassifier:
        return self.classifiers[f"{pair[0]}_{pair[1]}"]

    @torch.no_grad()
    def classes(self, pair, keys, values, mask=None) -> torch.Tensor:
        """Predicted class (B,) long for `pair`: argmax of the logits (softmax is monotone)."""
        clf = self[pair]
        return clf(keys.to(clf.query.device), values.to(clf.query.device),
                   None if mask is None else mask.to(clf.query.device)).argmax(-1)

    def save(self, path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata={
            "format": _FORMAT, "head_dim": str(self.head_dim), "n_kv_head": str(self.n_kv_head),
            "pairs": ",".join(f"{hi}_{lo}" for hi, lo in self.pairs)})

    @classmethod
    def load(cls, path) -> "SwitchClassifiers":
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"classifier={str(path)!r}: no such file; write one with SwitchClassifiers.save "
                             "(see rizzrun.decoders.pmpd.train_switch_classifiers)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # a file that is not safetensors
            raise ValueError(f"classifier={str(path)!r} is not a safetensors file: {e}") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"classifier={str(path)!r} was not written by SwitchClassifiers.save (metadata "
                             f"format={meta.get('format')!r}, expected {_FORMAT!r})")
        pairs = [tuple(int(b) for b in p.split("_")) for p in meta["pairs"].split(",")]
        out = cls(int(meta["head_dim"]), int(meta["n_kv_head"]), pairs)
        out.load_state_dict(load_file(str(path)))
        return out.eval()


# --- the decoder ----------------------------------------------------------------------------------


class PMPDStepper(ModelStepper):
    """The decode loop's stepper (see `rizzrun.decoders.loop.ModelStepper`) with the weight
    precision switched per forward: prefill at prefill_bits, decoding forward s at
    `precision_schedule(precisions, switch_steps, ...)[s]`; one KV cache throughout. It leaves the
    last precision's weights in the model: PMPD.generate restores them (used alone, call
    `decoder.nested_weights(model).restore()` afterwards)."""

    def __init__(self, decoder: "PMPD", weights: NestedWeights, model, batch_size: int, max_len: int, device):
        super().__init__(model, batch_size, max_len, device)
        self.decoder, self.weights = decoder, weights
        self.max_len = max_len
        self.switch_steps: list[int] = []
        self.forwards: list[int] = []

    def prefill(self, ids: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        d = self.decoder
        self.weights.set_bits(d.prefill_bits)
        self.forwards = [d.prefill_bits]
        logits = super().prefill(ids, padding)
        n = self.max_len - ids.shape[1]
        self.switch_steps = d.switch_steps(n, self.cache, padding)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        s = len(self.forwards) - 1
        bits = d.precisions[sum(step <= s for step in self.switch_steps)]
        self.weights.set_bits(bits)
        self.forwards.append(bits)
        return super().step(tokens)


class PMPD(Decoder):
    """Progressive mixed-precision decoding (see the module docstring); generate() as `Decoder`.

    precisions: bit-widths, high first, strictly descending, in 2..8 ([4, 3]; chained [4, 3, 2];
    one value = uniform decoding at that precision). prefill_bits: the prompt's precision (None =
    precisions[0]). scheduler: 'static' or 'kv_cache'. n_high (static): the decoding forwards
    before each switch, one per adjacent pair, non-decreasing (an int for two precisions); None =
    an equal share, pair j switches at j·⌊N/len(precisions)⌋. classifier (kv_cache): the
    safetensors file of `SwitchClassifiers.save` (or a SwitchClassifiers object). quantizer: the
    nested codes, 'uniform' (the spec's CPU proposal) or 'kmeans' (non-uniform, per-level LUTs).
    The other knobs are `Decoder`'s (greedy by default; do_sample=True samples with the warpers).

    The model's block Linear weights are quantised on first use and the codes kept per model
    (rebuilt when its weights change); generate() always puts the original weights back, also on
    an exception. last_stats after generate(): prefill_bits, decode_bits (per decoding forward),
    switch_steps, bits_per_weight (mean over decoding forwards; prefill_bits if there were none),
    quantized_params, total_params.
    """

    def __init__(
        self,
        precisions: list[int] = (4, 3),
        prefill_bits: int | None = None,
        scheduler: str = "static",
        n_high: int | list[int] | None = None,
        classifier: str | None = None,
        quantizer: str = "uniform",
        max_new_tokens: int = 64,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        typical_p: float = 1.0,
        seed: int | None = None,
    ):
        super().__init__(max_new_tokens, repetition_penalty, min_new_tokens, do_sample=do_sample,
                         temperature=temperature, top_k=top_k, top_p=top_p, typical_p=typical_p, seed=seed)
        precisions, n_high = _as_list(precisions), _as_list(n_high)
        knobs = dict(precisions=precisions, prefill_bits=prefill_bits, scheduler=scheduler, n_high=n_high,
                     classifier=classifier, quantizer=quantizer)
        bad = problems(knobs)
        if bad:
            key, value, why = bad[0]
            raise ValueError(f"{key}={value!r} is not allowed: {why}")
        self.precisions = [int(p) for p in precisions]
        self.prefill_bits = self.precisions[0] if prefill_bits is None else int(prefill_bits)
        self.scheduler = scheduler
        self.n_high = [n_high] if isinstance(n_high, int) else n_high
        self.classifier = classifier
        self.quantizer = quantizer
        self._classifiers = None
        if scheduler == "kv_cache":
            self._classifiers = (SwitchClassifiers.load(classifier) if isinstance(classifier, (str, Path))
                                 else classifier).eval()
            pairs = list(zip(self.precisions, self.precisions[1:]))
            missing = [p for p in pairs if p not in self._classifiers.pairs]
            if missing:
                raise ValueError(f"classifier={classifier!r} holds classifiers for the pairs "
                                 f"{self._classifiers.pairs}, not {missing}: train one for precisions="
                                 f"{self.precisions}")
        self._stepper: PMPDStepper | None = None
        self.last_stats: dict | None = None

    def settings(self) -> dict:
        out = super().settings()
        out["n_high"] = self.n_high if self.n_high is None or len(self.n_high) != 1 else self.n_high[0]
        out["classifier"] = self.classifier if isinstance(self.classifier, (str, type(None))) else "<object>"
        return {k: v for k, v in out.items() if k != "last_stats"}

    # --- the precisions -----------------------------------------------------------------------

    def nested_weights(self, model) -> NestedWeights:
        """The model's nested codes, built on first use and again after its weights changed."""
        per_model = _NESTED.setdefault(model, {})
        weights = per_model.get(self.quantizer)
        if weights is None or not weights.is_current(model):
            weights = per_model[self.quantizer] = NestedWeights(model, self.quantizer)
        return weights

    def switch_steps(self, n: int, cache=None, padding=None) -> list[int]:
        """The switch step of each adjacent pair for n new tokens (non-decreasing)."""
        pairs = list(zip(self.precisions, self.precisions[1:]))
        if not pairs:
            return []
        if self.scheduler == "static":
            if self.n_high is None:
                return [j * (n // len(self.precisions)) for j in range(1, len(self.precisions))]
            return list(self.n_high)
        state = getattr(cache, "layers", [None])[-1]
        if not hasattr(state, "keys_values"):
            raise ValueError(f"scheduler='kv_cache' reads the last layer's key/value cache; this model's decoding "
                             f"state ({type(cache).__name__}) has none: use a softmax-attention model or "
                             "scheduler='static'")
        keys, values = state.keys_values(cache.pos)
        steps, running = [], 0
        for pair in pairs:
            cls = self._classifiers.classes(pair, keys, values, padding)
            running = max(running, candidate_steps(n)[int(cls.max())])
            steps.append(running)
        return steps

    def stepper(self, model, batch_size: int, max_len: int, device):
        self._stepper = PMPDStepper(self, self.nested_weights(model), model, batch_size, max_len, device)
        return self._stepper

    def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
                 pad_token_id=None, num_return_sequences: int = 1) -> torch.Tensor:
        self._stepper, self.last_stats = None, None
        try:  # num_return_sequences > 1: every copy prefilled (PMPDStepper does not expand)
            return super().generate(model, prompt_ids, eos_token_id, max_new_tokens, attention_mask, pad_token_id,
                                    num_return_sequences)
        finally:
            weights = _NESTED.get(model, {}).get(self.quantizer)
            if weights is not None:
                weights.restore()
            if self._stepper is not None:
                st = self._stepper
                decode = st.forwards[1:]
                self.last_stats = dict(
                    prefill_bits=self.prefill_bits, decode_bits=decode, switch_steps=st.switch_steps,
                    bits_per_weight=sum(decode) / len(decode) if decode else float(self.prefill_bits),
                    quantized_params=st.weights.quantized_params, total_params=st.weights.total_params)
                self._stepper = None


# --- training the learned scheduler -----------------------------------------------------------------


def switch_label(reference, high_output, switched_outputs) -> int:
    """The class of the earliest switch whose ROUGE-L F1 vs `reference` (rounded to 3 decimals)
    is >= the pure-high output's; len(switched_outputs) (= never) if none. Token-id sequences."""
    from rizzrun.eval.memorization import rouge_l

    base = round(rouge_l(high_output, reference), 3)
    for i, out in enumerate(switched_outputs):
        if round(rouge_l(out, reference), 3) >= base:
            return i
    return len(switched_outputs)


def _continuation(decoder, model, prompt, eos_token_id) -> list[int]:
    out = decoder.generate(model, torch.tensor([prompt], device=_device(model)), eos_token_id=eos_token_id)
    return out[0, len(prompt):].tolist()


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def switch_examples(model, prompts, precisions, max_new_tokens: int, prefill_bits: int | None = None,
                    references=None, eos_token_id=None, quantizer: str = "uniform") -> dict:
    """Training examples of the kv_cache scheduler: {pair: [{"keys", "values" (Hkv, T, D) float32,
    "label": class}]} for each adjacent pair of `precisions` and each prompt (a list of ids).

    references: the full-precision continuations to score against (default: greedy decoding of
    the unquantised model, max_new_tokens tokens). Each pair (hi, lo) decodes greedily at hi and
    with switches at the candidate steps 0, ⌊N/3⌋, 2⌊N/3⌋ (`switch_label`), every prefill at
    prefill_bits (None = precisions[0]); the keys/values are the prompt's last-layer cache after it.
    """
    from rizzrun.decoders.greedy import Greedy

    precisions = [int(p) for p in precisions]
    prefill = precisions[0] if prefill_bits is None else int(prefill_bits)
    n = max_new_tokens
    if references is None:
        greedy = Greedy(max_new_tokens=n)
        references = [_continuation(greedy, model, p, eos_token_id) for p in prompts]
    out = {}
    for hi, lo in zip(precisions, precisions[1:]):
        high = PMPD([hi], prefill_bits=prefill, max_new_tokens=n, quantizer=quantizer)
        switched = [PMPD([hi, lo], prefill_bits=prefill, n_high=c, max_new_tokens=n, quantizer=quantizer)
                    for c in candidate_steps(n)[:3]]
        rows = []
        for prompt, ref in zip(prompts, references):
            label = switch_label(ref, _continuation(high, model, prompt, eos_token_id),
                                 [_continuation(d, model, prompt, eos_token_id) for d in switched])
            keys, values = _prompt_cache(high, model, prompt, prefill)
            rows.append({"keys": keys, "values": values, "label": label})
        out[(hi, lo)] = rows
    return out


def _prompt_cache(decoder: PMPD, model, prompt, bits: int):
    """The last layer's (keys, values) (Hkv, T, D) after prefilling `prompt` at `bits`."""
    weights = decoder.nested_weights(model)
    was_training = model.training
    model.eval()
    try:
        with weights.use(bits):
            cache = model.init_cache(1, max_len=len(prompt))
            model.step(torch.tensor([prompt], device=_device(model)), cache)
            keys, values = cache.layers[-1].keys_values(cache.pos)
    finally:
        model.train(was_training)
    return keys[0].float().clone(), values[0].float().clone()


def train_switch_classifiers(examples: dict, head_dim: int, n_kv_head: int, epochs: int = 30, lr: float = 0.0045,
                             weight_decay: float = 0.08, grad_accum: int = 32, dropout: float = 0.1,
                             seed: int = 0) -> tuple[SwitchClassifiers, dict]:
    """Train one classifier per pair of `examples` (`switch_examples`' output) with cross-entropy,
    one example at a time, gradients accumulated over grad_accum examples, Adam with L2 weight
    decay (the official setup: 30 epochs, lr 0.0045, weight decay 0.08, accumulation 32).
    Returns (classifiers in eval mode, {pair: [mean loss per epoch]}). Decision: the loss is the
    cross-entropy of the logits (the official code applies it to the softmax output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifiers = SwitchClassifiers(head_dim, n_kv_head, list(examples), dropout=dropout)
    history = {}
    for pair, rows in examples.items():
        clf = classifiers[pair].train()
        opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
        losses = []
        for _ in range(epochs):
            total = 0.0
            order = torch.randperm(len(rows), generator=g).tolist()
            for i, idx in enumerate(order):
                row = rows[idx]
                with torch.random.fork_rng(devices=[]):  # dropout draws, not the caller's RNG
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
                    logits = clf(row["keys"][None], row["values"][None])
                loss = F.cross_entropy(logits, torch.tensor([row["label"]]))
                (loss / grad_accum).backward()
                total += loss.item()
                if (i + 1) % grad_accum == 0 or i + 1 == len(order):
                    opt.step()
                    opt.zero_grad()
            losses.append(total / max(len(rows), 1))
        history[pair] = losses
    return classifiers.eval(), history
