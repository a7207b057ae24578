"""Dynamic stochastic decoding (DDS, Li et al., arXiv 2406.07850) at CPU scale: one temperature per
context type from a diversity head, against fixed temperatures.

Data: the built-in synthetic dialogue set (rizzrun.data.dialogue): "fact" prompts ("Q: 3+4? A:",
one right answer) and "chat" prompts ("Q: tell me about rain. A:", 8^3 acceptable three-word
replies, uniform). Per seed:
1. a tiny Llama is trained on DialogueSFT (prompt + reply documents; cross-entropy);
2. with it frozen, a DDS head (objective DiversityRegression, granularity both) is trained on
   DialogueContexts: the ground-truth labels (fact 0, chat 1), and, separately, on sampled-proxy
   labels (`label_contexts`: 1 - mean pairwise ROUGE-L of 5 replies sampled at T = 1), the spec's
   BERT-free stand-in for the paper's BERTScore labels;
3. decoders are compared: fact accuracy (one sample per fact prompt, all 100 facts: the reply must
   be the sum), chat distinct-2 (16 samples per chat topic, distinct word bigrams / bigrams, mean
   over the 8 topics), chat well-formed (the reply is three words from the three word lists), and
   the mean temperature used on fact / chat prompts.
Expected: greedy and low T are right on facts but repeat themselves on chat; high T is diverse on
chat but loses fact accuracy; DDS gets both (fact accuracy ~ greedy, chat distinct-2 ~ high T).

Plain PyTorch, one thread. Prints a markdown table and the command that made it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rizzrun.data.contexts import DiversityLabels, write_label_rows  # noqa: E402
from rizzrun.data.dialogue import TOPICS, WORDS, DialogueContexts, DialogueSFT, fact_answer  # noqa: E402
from rizzrun.decoders.dynamic_temperature import DynamicTemperature  # noqa: E402
from rizzrun.decoders.greedy import Greedy  # noqa: E402
from rizzrun.decoders.sample import Sample  # noqa: E402
from rizzrun.eval.diversity import distinct_n, label_contexts  # noqa: E402
from rizzrun.models.llama import Llama  # noqa: E402
from rizzrun.objectives.ce import CrossEntropy  # noqa: E402
from rizzrun.objectives.diversity import DiversityRegression  # noqa: E402
from rizzrun.tokenizers.byte import ByteTokenizer  # noqa: E402

FACTS = [f"Q: {a}+{b}? A:" for a in range(10) for b in range(10)]
CHATS = [f"Q: tell me about {t}. A:" for t in TOPICS]


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def train_lm(args, tok, seed):
    data = DialogueSFT(n_train=args.docs, n_val=0, seq_len=64, batch_size=32, seed=seed)
    data.setup(tok, cache_dir=args.cache)
    torch.manual_seed(seed)
    model = Llama(vocab_size=tok.vocab_size, d_model=args.d_model, n_layer=2, n_head=4, n_kv_head=4,
                  d_ff=3 * args.d_model, max_seq_len=64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * max(0.1, 1 - s / args.lm_steps))
    ce = CrossEntropy()
    for step, batch in zip(range(args.lm_steps), data.train_batches()):
        loss, _ = ce(model, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    log(f"  lm: {args.lm_steps} steps, last loss {loss.item():.3f}")
    return model.eval()


def train_head(args, model, tok, data, seed):
    data.setup(tok)
    torch.manual_seed(seed)
    obj = DiversityRegression(d_model=args.d_model, granularity="both")
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    for _, batch in zip(range(args.head_steps), data.train_batches()):
        loss, metrics = obj(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    log(f"  head: {args.head_steps} steps, last loss {loss.item():.4f}, accuracy {metrics['accuracy']:.2f}")
    return obj.head.eval()


def replies(decoder, model, tok, prompts, n):
    """n replies (text before EOS) per prompt, and the temperatures of DDS (mean per reply) if any."""
    ids = [[tok.eos_id, *tok.encode(p)] for p in prompts for _ in range(n)]
    out = decoder.generate(model, ids, eos_token_id=tok.eos_id)
    width = max(len(i) for i in ids)
    texts = []
    for row in out[:, width:].tolist():
        row = row[:row.index(tok.eos_id)] if tok.eos_id in row else row
        texts.append(tok.decode([i for i in row if i < tok.vocab_size]))
    temps = getattr(decoder, "last_temperatures", None)
    if temps is not None:
        temps = temps.mean(dim=1).tolist()
    elif isinstance(decoder, Sample):
        temps = [decoder.temperature] * len(texts)
    else:
        temps = [0.0] * len(texts)
    return texts, temps


def well_formed(reply: str) -> bool:
    words = reply.split()
    return len(words) == 3 and all(w in lists for w, lists in zip(words, WORDS))


def judge(decoder, model, tok, chat_samples):
    fact_texts, fact_t = replies(decoder, model, tok, FACTS, 1)
    accuracy = sum(t == fact_answer(p) for p, t in zip(FACTS, fact_texts)) / len(FACTS)
    chat_texts, chat_t = replies(decoder, model, tok, CHATS, chat_samples)
    per_topic = [chat_texts[i * chat_samples:(i + 1) * chat_samples] for i in range(len(CHATS))]
    return {"fact_acc": accuracy, "distinct2": statistics.mean(distinct_n(r, 2) for r in per_topic),
            "well_formed": sum(map(well_formed, chat_texts)) / len(chat_texts),
            "t_fact": statistics.mean(fact_t), "t_chat": statistics.mean(chat_t)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lm-steps", type=int, default=1000)
    parser.add_argument("--head-steps", type=int, default=150)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--chat-samples", type=int, default=16)
    parser.add_argument("--label-samples", type=int, default=5)
    parser.add_argument("--cache", default=None, help="tokenized-data cache (default: $RIZZRUN_CACHE)")
    parser.add_argument("--out", default="/tmp/rizzrun-repro-dds", help="where the sampled-label files go")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    results: dict[str, list[dict]] = {}
    started = time.time()
    for seed in args.seeds:
        log(f"seed {seed}")
        model = train_lm(args, tok, seed)
        heads = {"true labels": train_head(args, model, tok, DialogueContexts(n_train=256, n_val=0, batch_size=32,
                                                                              seed=seed), seed)}
        # sampled-proxy labels of the same contexts (computed once per distinct context)
        contexts = [p for p, _, _ in DialogueContexts(n_train=256, n_val=0).rows("train")]
        rows = label_contexts(model, tok, sorted(set(contexts)), n=args.label_samples, max_new_tokens=24, seed=seed)
        by_text = {r["text"]: r for r in rows}
        path = write_label_rows(Path(args.out) / f"labels-s{seed}.jsonl", [by_text[c] for c in contexts])
        labelled = {r["text"]: r["diversity"] for r in rows}
        log(f"  sampled labels: fact mean {statistics.mean(v for k, v in labelled.items() if '+' in k):.2f}, "
            f"chat mean {statistics.mean(v for k, v in labelled.items() if '+' not in k):.2f}")
        heads["ROUGE-L labels"] = train_head(args, model, tok, DiversityLabels(str(path), val_fraction=0.0,
                                                                               batch_size=32, seed=seed), seed)
        decoders = {"greedy": Greedy(max_new_tokens=24)}
        for t in (0.1, 0.7, 1.0, 1.5):
            decoders[f"sample T={t}"] = Sample(temperature=t, max_new_tokens=24, seed=seed)
        decoders["DDS constant d=0.5 (T=0.8)"] = DynamicTemperature(score=0.5, max_new_tokens=24, seed=seed)
        for name, head in heads.items():
            for granularity in ("sequence", "token"):
                decoders[f"DDS {granularity}, {name}"] = DynamicTemperature(
                    granularity=granularity, head=head, max_new_tokens=24, seed=seed)
        decoders["DDS sequence, true labels, inverse_sigmoid"] = DynamicTemperature(
            mapping="inverse_sigmoid", head=heads["true labels"], max_new_tokens=24, seed=seed)
        decoders["DDS sequence, true labels, t_max=1.0"] = DynamicTemperature(
            t_max=1.0, head=heads["true labels"], max_new_tokens=24, seed=seed)
        for name, decoder in decoders.items():
            results.setdefault(name, []).append(judge(decoder, model, tok, args.chat_samples))
        log(f"  ({time.time() - started:.0f}s)")

    def cell(name, key, fmt="{:.2f}"):
        values = [r[key] for r in results[name]]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"

    with record(Path(__file__).resolve().parents[1] / "docs" / "results.md", "dds",
                "## DDS: dynamic stochastic decoding (Li et al., arXiv 2406.07850) — `make repro-dds`"):
        cmd = "python repro/dds.py " + " ".join(sys.argv[1:])
        print(f"\n`{cmd.strip()}` — {len(args.seeds)} seeds (mean ± sd); LM {args.lm_steps} steps on {args.docs} "
              f"documents, head {args.head_steps} steps; t_min 0.1, t_max 1.5, linear unless named; "
              f"{time.time() - started:.0f} s\n")
        print("| decoder | fact accuracy | chat distinct-2 | chat well-formed | mean T fact | mean T chat |")
        print("|---|---|---|---|---|---|")
        for name in results:
            print(f"| {name} | {cell(name, 'fact_acc')} | {cell(name, 'distinct2')} | {cell(name, 'well_formed')} | "
                  f"{cell(name, 't_fact')} | {cell(name, 't_chat')} |")


if __name__ == "__main__":
    main()
