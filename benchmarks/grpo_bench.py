"""On-policy training benchmark (`python benchmarks/run.py --only grpo`): a rizzrun GRPO step
(arXiv 2402.03300) against TRL 1.16's `GRPOTrainer` step on the same tiny Llama, prompts and
settings, and rollout generation against `transformers.generate(do_sample=True)`.

Workload (the shape of recipes/grpo_tiny.yaml): `ArithmeticPrompts` batches of 16 prompts through
the byte tokenizer, G = 8 completions each (128 rows), at most 6 new tokens, T = 1, no top-k / top-p,
beta 0.04, loss_type grpo, num_iterations 1, use_bias_correction_kl false, AdamW lr 5e-6 with no
weight decay, gradients clipped at 1.0, reward: the arithmetic correctness function
(`leading_integer_match`, the data's own). The model: the tiny rizzrun Llama (random init, seed 0,
vocab 259) and its `transformers` twin with the same weights (`run.hf_twin`, sdpa, fp32).

Timing: one torch thread, process CPU time (`time.process_time`: less moved than wall time by the
other jobs of a shared machine, though cache and core contention still show), best of `repeats`
interleaved rounds of `steps` steps each (the median step of a round, the upper one for an even
count), one warm-up step per variant excluded and reported apart (it holds the compiles).

Shapes: B prompts, G generations, N = B * G rows, P prompt length, C = max new tokens.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPTS, G, MAX_NEW, BETA, LR = 16, 8, 6, 0.04, 5e-6
STEPS = 4  # timed steps per round (after one warm-up step per variant)
LOSS_TOL = 1e-5
VARIANTS = {  # rizzrun rows: the flags of RizzrunGRPO (the config keys they stand for in the report)
    "rizzrun": {},
    "rizzrun decoder.compile": {"compile_decoder": True},
    "rizzrun trainer.compile": {"compile_model": True},
    "rizzrun both compiled": {"compile_decoder": True, "compile_model": True},
    # before the shared prompt in training: the reference's and the policy's forwards over every copy of
    # a prompt (what a model that cannot train through its cache gets), same run, for the before/after ratio
    "rizzrun every copy forwarded": {"share_prompts": False},
    "rizzrun trainer.compile every copy forwarded": {"compile_model": True, "share_prompts": False},
    # and before the shared prefill as well: every copy prefilled (the rollout path of a decoder whose
    # generate has no num_return_sequences)
    "rizzrun per-copy prefill": {"shared_prefill": False, "share_prompts": False},
    "rizzrun trainer.compile per-copy prefill": {"compile_model": True, "shared_prefill": False,
                                                 "share_prompts": False},
}
LABELS = {"rizzrun": "rizzrun (eager)", "rizzrun decoder.compile": "rizzrun, `decoder.compile=true`",
          "rizzrun trainer.compile": "rizzrun, `trainer.compile=true`",
          "rizzrun both compiled": "rizzrun, both `=true`",
          "rizzrun every copy forwarded": "rizzrun (eager), before: every copy through the training forwards",
          "rizzrun trainer.compile every copy forwarded":
              "rizzrun, `trainer.compile=true`, before: every copy through the training forwards",
          "rizzrun per-copy prefill": "rizzrun (eager), before both: every copy prefilled and forwarded",
          "rizzrun trainer.compile per-copy prefill":
              "rizzrun, `trainer.compile=true`, before both: every copy prefilled and forwarded"}
# after -> before rows (same run, interleaved): the shared prompt in training, then both sharings
BEFORE = {"rizzrun": "rizzrun every copy forwarded",
          "rizzrun trainer.compile": "rizzrun trainer.compile every copy forwarded"}
BEFORE_BOTH = {"rizzrun": "rizzrun per-copy prefill",
               "rizzrun trainer.compile": "rizzrun trainer.compile per-copy prefill"}


def per_copy_prefill(decoder_class):
    """`decoder_class` whose generate does not take num_return_sequences: `sample_rollout` then
    hands it the G-times repeated prompts and every copy is prefilled (rizzrun before the shared
    prefill; the same tokens)."""

    class PerCopyPrefill(decoder_class):
        def generate(self, model, prompt_ids, eos_token_id=None, max_new_tokens=None, attention_mask=None,
                     pad_token_id=None):
            return super().generate(model, prompt_ids, eos_token_id, max_new_tokens, attention_mask, pad_token_id)

    return PerCopyPrefill


def cpu_time(fn):
    """(result, process CPU seconds, wall seconds) of one call."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


# --- the data, the models, TRL's tokenizer -------------------------------------------------------

def prompt_batches(n: int, cache: str | None = None):
    """(data, tokenizer, the first n `prompts` batches of 16 ArithmeticPrompts rows)."""
    import datasets

    from rizzrun.data.arithmetic import ArithmeticPrompts
    from rizzrun.tokenizers.byte import ByteTokenizer

    datasets.disable_progress_bars()
    tok = ByteTokenizer()
    data = ArithmeticPrompts(batch_size=PROMPTS)
    data.setup(tok, cache_dir=cache)
    stream = data.train_batches()
    return data, tok, [next(stream) for _ in range(n)]


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the ByteLevel alphabet), rebuilt here."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_hf_tokenizer():
    """A `transformers` fast tokenizer with rizzrun's ByteTokenizer ids (bytes 0..255, bos 256,
    eos 257, pad 258) that prepends EOS to a text, as `PromptData` does for a rizzrun tokenizer;
    decoding is UTF-8 with replacement, as ByteTokenizer.decode. Checked against it in `setup`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = _byte_chars()
    vocab = {chars[b]: b for b in range(256)} | {"<bos>": 256, "<eos>": 257, "<pad>": 258}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<eos> $A", special_tokens=[("<eos>", 257)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def build_models():
    """(rizzrun Llama, its transformers twin): tiny, vocab 259, random init with seed 0."""
    from run import hf_twin

    from rizzrun.models.llama import Llama

    torch.manual_seed(0)
    model = Llama(259, size="tiny")
    return model, hf_twin(model)


# --- rizzrun -------------------------------------------------------------------------------------

class Phases:
    """CPU seconds per phase of each step: `wrap(obj, name, phase)` times every call of a method
    (added to the running step's `phase`), `start()` opens a step, `steps` holds them all."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = {}

    def start(self) -> dict[str, float]:
        self.current = {}
        self.steps.append(self.current)
        return self.current

    def add(self, phase: str, fn):
        out, c, _ = cpu_time(fn)
        self.current[phase] = self.current.get(phase, 0.0) + c
        return out

    def wrap(self, obj, name: str, phase: str) -> None:
        """The wrapper keeps the method's signature (functools.wraps): sample_rollout reads it."""
        method = getattr(obj, name)
        setattr(obj, name, functools.wraps(method)(lambda *a, **k: self.add(phase, lambda: method(*a, **k))))


class RizzrunGRPO:
    """One rizzrun GRPO optimizer step as the runner makes it (rizzrun/runner/on_policy.py):
    OnPolicy.batch_for (sample_rollout with the Sample decoder, score_rollout with the data's
    reward, rollout_metrics, GRPO.prepare with the frozen reference), the objective's loss,
    backward, clip at 1.0, AdamW. compile_decoder: decoder.compile=true; compile_model:
    trainer.compile=true; shared_prefill False: every copy of a prompt prefilled (before
    num_return_sequences); share_prompts False: the reference's and the policy's forwards over every copy
    (before `completion_logps` ran a group's prompt once: the models' `trains_through_cache` answer False).
    `phases.steps` keeps the CPU seconds of each step's phases."""

    def __init__(self, policy, reference, data, tok, compile_decoder: bool = False, compile_model: bool = False,
                 shared_prefill: bool = True, share_prompts: bool = True):
        from rizzrun.decoders.sample import Sample
        from rizzrun.objectives.grpo import GRPO
        from rizzrun.optim import adamw
        from rizzrun.runner.on_policy import OnPolicy, build_rewards

        if not share_prompts:  # a copy of the reference: the other variants share theirs
            reference = copy.deepcopy(reference)
            for model in (policy, reference):
                model.trains_through_cache = lambda: False
        self.policy, self.reference = policy, reference
        self.objective = GRPO(num_generations=G, beta=BETA, loss_type="grpo", max_completion_length=MAX_NEW)
        decoder = Sample if shared_prefill else per_copy_prefill(Sample)
        self.decoder = decoder(max_new_tokens=MAX_NEW, temperature=1.0, top_k=0, top_p=1.0, compile=compile_decoder)
        if compile_model:  # trainer.compile=true: the runner compiles the policy's forward (rizzrun/runner/train.py)
            policy.compile()
        self.on_policy = OnPolicy(self.objective, self.decoder, tok, build_rewards(None, data), data.columns, seed=0)
        self.opt = adamw(policy, lr=LR, weight_decay=0.0)
        self.phases = Phases()
        self.phases.wrap(self.decoder, "generate", "generation")
        self.phases.wrap(self.objective, "prepare", "reference forward (prepare)")
        from rizzrun.rollouts.sample import _takes_num_return_sequences

        assert _takes_num_return_sequences(self.decoder) is shared_prefill  # the path this variant stands for

    def step(self, prompts: dict, step: int) -> float:
        t = self.phases.start()
        batch, metrics, _ = self.phases.add("rollout", lambda: self.on_policy.batch_for(
            self.policy, prompts, step, 0, extra={"reference": self.reference}))
        t["scoring, metrics"] = t.pop("rollout") - t["generation"] - t["reference forward (prepare)"]
        self.last_lengths = batch["completion_mask"].sum(dim=1)
        self.policy.train()
        loss, _ = self.phases.add("policy forward, loss", lambda: self.objective(self.policy, batch))
        self.phases.add("backward", loss.backward)

        def update():
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

        self.phases.add("clip, optimizer", update)
        return float(loss.detach())


# --- TRL -----------------------------------------------------------------------------------------

def trl_trainer(folder: Path, out: str):
    """TRL 1.16's GRPOTrainer on the saved twin (CPU, fp32, sdpa, no vLLM), configured as
    rizzrun's conf/objective/grpo.yaml pins it, with its optimizer and scheduler built as `train()`
    builds them (AdamW lr 5e-6, no weight decay, clip 1.0), one accumulation step."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rizzrun.rewards.verifiable import leading_integer_match

    args = GRPOConfig(
        output_dir=out, bf16=False, use_cpu=True, report_to=[], disable_dropout=True, use_vllm=False,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
        per_device_train_batch_size=PROMPTS * G, num_generations=G, max_completion_length=MAX_NEW,
        temperature=1.0, top_p=1.0, top_k=0, beta=BETA, loss_type="grpo", num_iterations=1, epsilon=0.2,
        scale_rewards="group", use_bias_correction_kl=False, learning_rate=LR, weight_decay=0.0,
        max_grad_norm=1.0, lr_scheduler_type="constant", logging_steps=10**9, save_strategy="no",
        dataloader_num_workers=0,
    )
    data = Dataset.from_dict({"prompt": ["1+1="], "answer": [2]})  # needed to start; batches come from the bench
    trainer = GRPOTrainer(model=str(folder), reward_funcs=leading_integer_match, args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def trl_rows(data, prompts: dict) -> list[dict]:
    """TRL's generation batch for a prompts batch: each dataset row G times in a row (its
    RepeatSampler), with the `answer` column its reward function reads."""
    texts, cols = data.columns(prompts["row"])
    return [{"prompt": t, "answer": a} for t, a in zip(texts, cols["answer"]) for _ in range(G)]


def trl_step(trainer, rows: list[dict], phases: Phases | None = None) -> float:
    """One optimizer step of TRL's training loop (transformers Trainer._inner_training_loop with one
    accumulation step): training_step (generation, scoring, reference log-probs, loss, backward),
    clip, optimizer and scheduler step, zero_grad. phases: the trainer's methods wrapped by
    `trl_phases`, and this step's phases added to it."""
    model = trainer.model

    def update():
        trainer._clip_grad_norm(model)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad()

    if phases is None:
        loss = trainer.training_step(model, rows, None)
        update()
    else:
        t = phases.start()
        loss = phases.add("step", lambda: trainer.training_step(model, rows, None))
        phases.add("clip, optimizer", update)
        t["scoring, metrics"] = t.pop("rollout") - t["generation"] - t["reference forward (prepare)"]
        t["other (training_step)"] = t.pop("step") - t["generation"] - t["scoring, metrics"] - \
            t["reference forward (prepare)"] - t["policy forward, loss"] - t["backward"]
    trainer.state.global_step += 1
    return float(loss)


def trl_phases(trainer) -> Phases:
    """Wrap the trainer's parts in a Phases: `_generate` (generation), `_generate_and_score_completions`
    (the rollout: generation, padding, rewards, advantages, the reference's log-probs), the reference's
    log-probs inside it (`_get_per_token_logps_and_entropies` under no_grad), `_compute_loss`, the
    accelerator's backward."""
    phases = Phases()
    phases.wrap(trainer, "_generate", "generation")
    phases.wrap(trainer, "_generate_and_score_completions", "rollout")
    logps = trainer._get_per_token_logps_and_entropies

    def per_token_logps(*args, **kwargs):
        if torch.is_grad_enabled():  # the policy's, inside _compute_loss
            return logps(*args, **kwargs)
        return phases.add("reference forward (prepare)", lambda: logps(*args, **kwargs))

    trainer._get_per_token_logps_and_entropies = per_token_logps
    phases.wrap(trainer, "_compute_loss", "policy forward, loss")
    phases.wrap(trainer.accelerator, "backward", "backward")
    return phases


def same_loss(trainer, ours: RizzrunGRPO, data, tok, prompts: dict) -> dict:
    """The first step's loss of both on the same completions: rizzrun's rollout (a few of its
    completions replaced by the right answer, so that advantages are not all 0 for an untrained
    model) scored, prepared and lost by rizzrun, and fed to TRL through its own
    `_generate_and_score_completions` (its `_generate` replaced, as tests/test_grpo.py does: TRL
    pads, scores with its reward function, normalizes, takes the reference log-probs) and
    `_compute_loss`. The policy sits off the reference (the same noise on both), so the KL term
    counts. Raises unless the losses agree to LOSS_TOL."""
    from rizzrun.rollouts.sample import sample_rollout

    policy = ours.policy
    with torch.no_grad():
        rollout = sample_rollout(policy, ours.decoder, prompts, G, tok.eos_id)
    P = prompts["prompt_ids"].shape[1]
    C = rollout["completion_mask"].shape[1]
    texts, cols = data.columns(prompts["row"])
    for i in range(0, PROMPTS * G, 3):  # every third row answers its prompt right, then stops
        answer = [*str(cols["answer"][i // G]).encode(), tok.eos_id][:C]
        row = rollout["input_ids"][i, P:]
        row.fill_(0)
        row[:len(answer)] = torch.tensor(answer)
        rollout["completion_mask"][i] = torch.arange(C) < len(answer)
        rollout["truncated"][i] = len(answer) > C or answer[-1] != tok.eos_id
        rollout["attention_mask"][i, P:] = rollout["completion_mask"][i]
    ours.on_policy.score(rollout)
    batch = ours.objective.prepare(policy, rollout, reference=ours.reference)
    policy.train()
    loss, metrics = ours.objective(policy, batch)

    mask = rollout["completion_mask"]
    prompt_ids = [ids[m].tolist() for ids, m in zip(rollout["input_ids"][:, :P], rollout["attention_mask"][:, :P])]
    completion_ids = [ids[m].tolist() for ids, m in zip(rollout["input_ids"][:, P:], mask)]
    completions = trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True)

    def fixed_generate(prompt_texts):
        assert len(prompt_texts) == len(completion_ids)
        return prompt_ids, completion_ids, None, completions, None, {}, None, []

    real = trainer._generate
    trainer._generate = fixed_generate
    try:
        inputs = trainer._generate_and_score_completions(trl_rows(data, prompts))
        trl_loss = trainer._compute_loss(trainer.model, inputs)
    finally:
        trainer._generate = real
    advantages = float((inputs["advantages"] - batch["advantages"]).abs().max())
    loss, trl_loss = loss.detach(), trl_loss.detach()
    diff = abs(float(loss) - float(trl_loss))
    if not diff <= LOSS_TOL or not advantages <= 1e-6:
        raise AssertionError(f"not the same work: rizzrun's GRPO loss {float(loss):.8f}, TRL's {float(trl_loss):.8f} "
                             f"(|diff| {diff:.2e} > {LOSS_TOL}) or advantages differ by {advantages:.2e}")
    return {"rizzrun": float(loss), "trl": float(trl_loss), "abs_diff": diff, "max_abs_advantage_diff": advantages,
            "kl": float(metrics["kl"]), "reward": float(torch.nanmean(rollout["rewards"])),
            "nonzero_advantages": int((batch["advantages"] != 0).sum())}


def add_noise(model, seed: int = 11, scale: float = 0.02) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# --- generation alone ----------------------------------------------------------------------------

def generation(model, hf, prompts: dict, repeats: int) -> dict:
    """Rollout generation tokens/s on the same 128 rows (each prompt G times), MAX_NEW tokens each,
    no EOS (every row generates MAX_NEW tokens; min_new_tokens = max_new_tokens for transformers),
    eval mode, inference_mode, T = 1, no top-k/top-p: rizzrun's Sample decoder eager and compiled,
    each prompt prefilled once (`num_return_sequences=G`, as sample_rollout calls it) and every
    copy prefilled (the 128 repeated rows, before), vs `transformers` generate(do_sample=True) on the
    128 repeated rows (as TRL calls it). Same work checked first: greedy tokens identical, and the
    seeded samples of both rizzrun paths identical."""
    from rizzrun.decoders.greedy import Greedy
    from rizzrun.decoders.sample import Sample

    unique, unique_mask = prompts["prompt_ids"], prompts["prompt_mask"].long()
    ids = unique.repeat_interleave(G, dim=0)
    mask = unique_mask.repeat_interleave(G, dim=0)
    model, hf = model.eval(), hf.eval()

    def hf_generate(sample: bool):
        with torch.inference_mode():
            return hf.generate(ids, attention_mask=mask, do_sample=sample, max_new_tokens=MAX_NEW,
                               min_new_tokens=MAX_NEW, eos_token_id=None, pad_token_id=258,
                               **({"temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {}))

    def ours(decoder, shared: bool = True):
        with torch.inference_mode():
            if shared:
                return decoder.generate(model, unique, eos_token_id=None, attention_mask=unique_mask, pad_token_id=258,
                                        num_return_sequences=G)
            return decoder.generate(model, ids, eos_token_id=None, attention_mask=mask, pad_token_id=258)

    greedy = ours(Greedy(max_new_tokens=MAX_NEW))
    if not torch.equal(greedy, hf_generate(False)) or not torch.equal(greedy, ours(Greedy(max_new_tokens=MAX_NEW), False)):
        raise AssertionError("not the same work: rizzrun's greedy tokens differ from transformers' on the rollout batch")
    seeded = Sample(max_new_tokens=MAX_NEW, seed=5)
    if not torch.equal(ours(seeded), ours(seeded, False)):
        raise AssertionError("not the same work: the shared prefill samples other tokens than the per-copy prefill")
    eager = Sample(max_new_tokens=MAX_NEW, temperature=1.0, top_k=0, top_p=1.0)
    compiled = Sample(max_new_tokens=MAX_NEW, temperature=1.0, top_k=0, top_p=1.0, compile=True)
    methods = {"rizzrun": lambda: ours(eager), "rizzrun compiled": lambda: ours(compiled),
               "rizzrun per-copy prefill": lambda: ours(eager, False),
               "rizzrun compiled per-copy prefill": lambda: ours(compiled, False),
               "transformers": lambda: hf_generate(True)}
    first = {}
    for name, fn in methods.items():
        out, c, _ = cpu_time(fn)
        assert out.shape == (ids.shape[0], ids.shape[1] + MAX_NEW), (name, out.shape)
        first[name] = c
    times = {k: [] for k in methods}
    for _ in range(repeats):  # interleaved
        for name, fn in methods.items():
            times[name].append(cpu_time(fn)[1])
    best = {k: min(v) for k, v in times.items()}
    tokens = ids.shape[0] * MAX_NEW
    return {"rows": ids.shape[0], "prompt_len": ids.shape[1], "new_tokens": MAX_NEW,
            "tokens_per_s": {k: tokens / v for k, v in best.items()},
            "spread": {k: max(v) / min(v) - 1 for k, v in times.items()}, "first_call_s": first}


# --- the benchmark -------------------------------------------------------------------------------

def uptime() -> list[str]:
    """The load averages (1, 5, 15 min) of /proc/loadavg: how busy the shared machine was."""
    try:
        return Path("/proc/loadavg").read_text().split(" ")[:3]
    except OSError:
        return ["?"]


def grpo(repeats: int = 5, cache: str | None = None, steps: int = STEPS) -> dict:
    """Every figure of the on-policy section, with one torch thread (restored after)."""
    import warnings

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # TRL's and the scheduler's per-step warnings, not ours
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            warnings.filterwarnings("ignore", category=UserWarning, module="trl")
            return _grpo(repeats, cache, steps)
    finally:
        torch.set_num_threads(before)


def _grpo(repeats: int, cache: str | None, steps: int) -> dict:
    import transformers
    import trl

    from rizzrun.models.hf_llama import from_hf_state_dict
    from rizzrun.models.llama import Llama

    load = [uptime()]
    started = time.perf_counter()
    data, tok, batches = prompt_batches(1 + repeats * steps, cache)
    model, hf = build_models()
    hf_tok = byte_hf_tokenizer()  # the same ids as rizzrun's ByteTokenizer, checked:
    for text in data.prompts("train")[:50] + ["12+3= x\u00e9\u4e2d"]:
        assert hf_tok(text)["input_ids"] == [tok.eos_id, *tok.encode(text)], text
    assert hf_tok.decode(list(range(259)), skip_special_tokens=True) == tok.decode(range(259))

    with tempfile.TemporaryDirectory(prefix="rizzrun-bench-grpo-") as tmp:
        folder = Path(tmp) / "twin"
        hf.save_pretrained(folder)
        hf_tok.save_pretrained(folder)
        t = time.perf_counter()
        trainer = trl_trainer(folder, str(Path(tmp) / "trl"))
        trl_setup_s = time.perf_counter() - t

        # Every policy starts from the same weights, moved off the reference (the init) by a little noise.
        add_noise(trainer.model)

        def policy():
            state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            return from_hf_state_dict(Llama(259, size="tiny"), state).train()

        reference = copy.deepcopy(model).eval().requires_grad_(False)
        variants = {name: RizzrunGRPO(policy(), reference, data, tok, **flags) for name, flags in VARIANTS.items()}
        check = same_loss(trainer, variants["rizzrun"], data, tok, batches[0])
        trainer.model.zero_grad()
        phases = {name: v.phases for name, v in variants.items()}
        phases["trl"] = trl_phases(trainer)

        # One warm-up step each on batch 0 (the compiles happen here), then interleaved rounds: each
        # variant one step on the same batch, `steps` batches a round.
        names = [*variants, "trl"]

        def run(name, k):
            if name == "trl":
                loss = trl_step(trainer, trl_rows(data, batches[k]), phases["trl"])
            else:
                loss = variants[name].step(batches[k], k)
            return loss, phases[name].steps[-1]["generation"]

        first = {name: cpu_time(lambda: run(name, 0))[1] for name in names}
        step_s = {n: [] for n in names}
        gen_s = {n: [] for n in names}
        wall = {n: [] for n in names}
        k = 1
        for _ in range(repeats):
            rounds = {n: [] for n in names}
            for _ in range(steps):
                for name in names:
                    (_, generated), c, w = cpu_time(lambda: run(name, k))
                    rounds[name].append((c, w, generated))
                k += 1
            for name in names:
                c, w, generated = sorted(rounds[name])[len(rounds[name]) // 2]  # the median step
                step_s[name].append(c)
                wall[name].append(w)
                gen_s[name].append(generated)
        lengths = float(variants["rizzrun"].last_lengths.float().mean())
    load.append(uptime())
    gen = generation(copy.deepcopy(model), copy.deepcopy(hf), batches[0], repeats=max(5, repeats))
    gflops = matmul_gflops()
    load.append(uptime())

    timed = {n: ph.steps[1:] for n, ph in phases.items()}  # the first step each is the warm-up
    phase_s = {n: {k: statistics.median(t[k] for t in rows) for k in rows[0]} for n, rows in timed.items()}
    best = {n: min(v) for n, v in step_s.items()}
    at = {n: v.index(min(v)) for n, v in step_s.items()}
    P = batches[0]["prompt_ids"].shape[1]
    flops = step_flops(model, PROMPTS * G, P, MAX_NEW)
    return {
        "date": dt.date.today().isoformat(), "repeats": repeats, "steps_per_round": steps,
        "threads": torch.get_num_threads(), "prompts": PROMPTS, "generations": G, "max_new_tokens": MAX_NEW,
        "prompt_len": P, "mean_completion_len": lengths,
        "beta": BETA, "lr": LR, "params": sum(p.numel() for p in model.parameters()),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "check": check, "generation": gen, "gflops_1_thread": gflops, "step_gflop": flops / 1e9,
        "step_s": best, "step_s_rounds": step_s, "step_s_wall": {n: min(v) for n, v in wall.items()},
        "spread": {n: max(v) / min(v) - 1 for n, v in step_s.items()},
        "generation_s": {n: gen_s[n][at[n]] for n in names},
        "generation_share": {n: gen_s[n][at[n]] / best[n] for n in names},
        "phase_s": phase_s,
        "first_step_s": first, "trl_setup_s": trl_setup_s, "loadavg": load,
        "vs_trl": {n: best["trl"] / best[n] for n in variants},
        "mfu": {n: flops / best[n] / (gflops * 1e9) for n in names},
        "total_s": time.perf_counter() - started,
    }


def matmul_gflops(repeats: int = 5, n: int = 1024) -> float:
    """Dense fp32 matmul rate on this thread (process CPU time, best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / min(cpu_time(lambda: a @ b)[1] for _ in range(repeats)) / 1e9


def step_flops(model, rows: int, prompt_len: int, new_tokens: int) -> float:
    """Model FLOPs of one GRPO step: every forward over the P + C - 1 positions a row runs through
    (the rollout's prefill and decode steps, the reference's forward: 2 per parameter each; the
    policy's forward + backward: 6), plus attention (PaLM, arXiv 2204.02311 App. B: 12 L T d per
    position for a training pass, a third of it for a forward)."""
    from run import train_flops_per_token

    positions = rows * (prompt_len + new_tokens - 1)
    T = prompt_len + new_tokens - 1
    train = train_flops_per_token(model, T)
    return positions * (train + 2 * train / 3)


TARGET = 1.5
PHASE_ROWS = ("rizzrun per-copy prefill", "rizzrun every copy forwarded", "rizzrun", "rizzrun trainer.compile", "trl")
PHASES = ("generation", "scoring, metrics", "reference forward (prepare)", "policy forward, loss", "backward",
          "clip, optimizer", "other (training_step)")


def report(r: dict) -> str:
    s, share, gen = r["step_s"], r["generation_share"], r["generation"]
    t = gen["tokens_per_s"]
    c = r["check"]
    v = r["versions"]
    lines = [
        f"## On-policy training: GRPO (tiny Llama, {r['prompts']} prompts × G {r['generations']}, "
        f"≤ {r['max_new_tokens']} new tokens, T 1, best of {r['repeats']} interleaved rounds)",
        "",
        f"Measured {r['date']} (`python benchmarks/run.py --only grpo`; benchmarks/grpo_bench.py), "
        f"{r['threads']} torch thread, process CPU time, TRL {v['trl']}, transformers {v['transformers']}. "
        "The workload of recipes/grpo_tiny.yaml: `ArithmeticPrompts` through the byte tokenizer "
        f"(prompts of {r['prompt_len']} tokens), the tiny Llama ({r['params'] / 1e6:.2f} M parameters, random init, "
        f"completions {r['mean_completion_len']:.1f} tokens on average) and its `transformers` twin (sdpa, fp32) with "
        f"the same weights, beta {r['beta']}, loss_type grpo, num_iterations 1, use_bias_correction_kl false, "
        f"reward = arithmetic correctness, AdamW lr {r['lr']}, clip 1.0. A step = rollout (generation), scoring, "
        "reference log-probs, loss, backward, optimizer step: rizzrun's as the runner makes it (`OnPolicy.batch_for`, "
        "the objective, AdamW), TRL's `GRPOTrainer.training_step` plus its training loop's clip, optimizer and "
        f"scheduler step (CPU, no vLLM). Median step of {r['steps_per_round']} per round, the first step (warm-up, "
        "compiles) excluded. MFU: model FLOPs of the step (forwards of the rollout and the reference, the policy's "
        f"forward + backward, every copy of a prompt counted as TRL runs them, so rizzrun's sharing shows as a "
        f"higher MFU: {r['step_gflop']:.1f} GFLOP) over a dense fp32 matmul on one thread "
        f"({r['gflops_1_thread']:.0f} GFLOP/s, same run).",
        "",
        "| | ms / step | generation ms | generation share | vs TRL GRPOTrainer | MFU | spread over rounds | first step s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in VARIANTS:
        lines.append(f"| {LABELS[n]} | {s[n] * 1e3:.0f} | {r['generation_s'][n] * 1e3:.0f} | {share[n]:.0%} | "
                     f"**{r['vs_trl'][n]:.2f}×** | {r['mfu'][n]:.0%} | {r['spread'][n]:.0%} | "
                     f"{r['first_step_s'][n]:.1f} |")
    lines.append(f"| TRL GRPOTrainer | {s['trl'] * 1e3:.0f} | {r['generation_s']['trl'] * 1e3:.0f} | "
                 f"{share['trl']:.0%} | 1 | {r['mfu']['trl']:.0%} | {r['spread']['trl']:.0%} | "
                 f"{r['first_step_s']['trl']:.1f} |")
    eager = r["vs_trl"]["rizzrun"]
    fastest = max((n for n in VARIANTS if n not in {*BEFORE.values(), *BEFORE_BOTH.values()}),
                  key=lambda n: r["vs_trl"][n])
    median = {n: statistics.median(v) for n, v in r["step_s_rounds"].items()}
    lines += [
        "",
        f"Target ≥ {TARGET}× TRL: eager rizzrun **{'met' if eager >= TARGET else 'missed'}** ({eager:.2f}×); "
        f"fastest {LABELS[fastest]} {r['vs_trl'][fastest]:.2f}×. Each prompt runs once per group, in the "
        "rollout (`num_return_sequences`: its cache repeated G times) and in the reference's and the policy's "
        "forwards (`completion_logps`: the prompt through `Llama.step`, its cache repeated G times, the completions "
        "per row; same log-probs and gradients). Rows \"before\" (same run, interleaved) leave out the training "
        "forwards' sharing, rows \"before both\" the rollout's too: " + "; ".join(
            f"{LABELS[a]} {r['vs_trl'][c]:.2f}× (before both) → {r['vs_trl'][b]:.2f}× (before) → "
            f"{r['vs_trl'][a]:.2f}× TRL (step {s[b] / s[a]:.2f}× faster than before; median rounds "
            f"{median['trl'] / median[c]:.2f}× → {median['trl'] / median[b]:.2f}× → {median['trl'] / median[a]:.2f}×)"
            for (a, b), c in zip(BEFORE.items(), BEFORE_BOTH.values())) + ". With the shared prompt the "
        "training forwards run `Llama.step`, which `trainer.compile` does not compile (it compiles `forward`). "
        "The first step holds the compiles "
        f"(`decoder.compile`: one graph for the rollout's batch and cache length; `trainer.compile`: the policy's "
        f"forward and backward), shortened by inductor's caches (on disk from earlier runs on the machine, and in "
        f"the process: the last row reuses the graphs of the two above); building the GRPOTrainer (two model "
        f"loads) took {r['trl_setup_s']:.1f} s wall.",
        "",
        "Where the time goes (median CPU ms per phase over every timed step; rizzrun's phases timed around "
        "the decoder, `GRPO.prepare`, the objective, backward and the update; TRL's around `_generate`, the "
        "reference's `_get_per_token_logps_and_entropies`, `_compute_loss` and `accelerator.backward`, the rest of "
        "`_generate_and_score_completions` being scoring, padding and metrics):",
        "",
        "| phase | " + " | ".join(LABELS.get(n, "TRL") for n in PHASE_ROWS) + " | TRL / rizzrun eager |",
        "| --- | " + " | ".join("---:" for _ in PHASE_ROWS) + " | ---: |",
    ]
    ph = r["phase_s"]
    for k in PHASES:
        cells = [f"{ph[n][k] * 1e3:.1f}" if k in ph[n] else "—" for n in PHASE_ROWS]
        ratio = f"{ph['trl'][k] / ph['rizzrun'][k]:.2f}×" if ph["rizzrun"].get(k) and k in ph["trl"] else "—"
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {ratio} |")
    total = {n: sum(ph[n].values()) for n in PHASE_ROWS}
    lines.append("| sum | " + " | ".join(f"{total[n] * 1e3:.1f}" for n in PHASE_ROWS)
                 + f" | {total['trl'] / total['rizzrun']:.2f}× |")
    lines += [
        "",
        f"Rollout generation alone ({gen['rows']} rows, prompt {gen['prompt_len']}, {gen['new_tokens']} new tokens, "
        "no EOS, eval + inference_mode, T 1, best of interleaved calls): rizzrun's Sample decoder "
        f"{t['rizzrun']:.0f} tokens/s, with `compile=true` {t['rizzrun compiled']:.0f}, `transformers` "
        f"generate(do_sample=True, dynamic cache, as TRL calls it: the 128 repeated rows) {t['transformers']:.0f}: "
        f"**{t['rizzrun'] / t['transformers']:.2f}×** and **{t['rizzrun compiled'] / t['transformers']:.2f}×**; "
        f"each prompt prefilled once (`num_return_sequences={r['generations']}`), where before every copy was: "
        f"{t['rizzrun per-copy prefill']:.0f} and {t['rizzrun compiled per-copy prefill']:.0f} tokens/s, "
        f"{t['rizzrun per-copy prefill'] / t['transformers']:.2f}× and "
        f"{t['rizzrun compiled per-copy prefill'] / t['transformers']:.2f}× "
        "(greedy tokens checked identical first, and the seeded samples of both prefills; spread "
        + ", ".join(f"{k} {x:.0%}" for k, x in gen["spread"].items()) + ").",
        "",
        f"Same work checked before timing: one rollout fed to both (rizzrun's completions, every third replaced by the "
        f"right answer so advantages are not all 0; TRL's `_generate` replaced, its own "
        f"`_generate_and_score_completions` and `_compute_loss`; the policy {c['kl']:.3f} nats/token off the "
        f"reference): losses {c['rizzrun']:.7f} and {c['trl']:.7f} (|diff| {c['abs_diff']:.1e} ≤ {LOSS_TOL}), "
        f"advantages equal to {c['max_abs_advantage_diff']:.0e}. Load average (1, 5, 15 min) at the start, after "
        "the steps and at the end: " + "; ".join(" ".join(x) for x in r["loadavg"]) + f" ({r['total_s']:.0f} s in all).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(report(grpo(repeats=2)))
