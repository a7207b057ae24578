"""ReGenesis (arXiv 2410.02108) vs STaR (arXiv 2203.14465): the reasoning task family, answer
extraction, distinct-n, the three-stage chaining with a deterministic fake model, the filter and
hint regeneration, the rollout rows data=rollouts reads, and the model completer — each against
hand-derived values or a second computation."""

from __future__ import annotations

import re

import pytest

from rizzrun.data.reasoning import (ADAPTED, GUIDELINES, HELD_OUT, IN_DOMAIN, TASKS, ReasoningSFT, direct_prompt,
                                    extract_answer, generate_problems, path_of, seed_documents, solve, structure_of,
                                    style_of)
from rizzrun.errors import InputError
from rizzrun.selfplay.regenesis import (distinct_n, model_completer, path_tokens, regenesis, stage_stats, star,
                                        write_rollouts)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the task family -------------------------------------------------------------------------

def test_paths_by_hand():
    assert solve("add 37 45") == "82" and solve("sub 82 45") == "37"
    assert solve("rev dbca") == "acbd" and solve("sort dbca") == "abcd"
    assert [path_of("add 37 45", s) for s in range(3)] == [
        "7+5=12,3+4+1=8#82", "30+40=70,7+5=12,70+12=82#82", "37+40=77,77+5=82#82"]
    assert [path_of("sub 82 45", s) for s in range(3)] == [
        "12-5=7,8-4-1=3#37", "80-40=40,2-5=-3,40-3=37#37", "82-40=42,42-5=37#37"]
    assert [path_of("rev dbca", s) for s in range(3)] == ["a,c,b,d#acbd", "da>ad,bc>cb#acbd", "db|ca>ac|bd#acbd"]
    assert [path_of("sort dbca", s) for s in range(3)] == ["a,b,c,d#abcd", "a1b1c1d1#abcd", "db>bd,ca>ac,merge#abcd"]
    assert [structure_of("add 37 45", s) for s in range(3)] == ["7+5,3+4+c", "30+40,7+5,sum", "37+40,+5"]
    with pytest.raises(ValueError):
        solve("mul 3 4")


def test_every_step_of_every_path_is_true():
    """Each "x op y (op z) = w" of an arithmetic path holds (evaluated independently), and every
    path ends with the answer."""
    for task in TASKS:
        train, val = generate_problems(task, 60, 10)
        assert not set(train) & set(val)
        for q in train + val:
            for s in range(3):
                p = path_of(q, s)
                assert extract_answer(p) == solve(q)
                if task in ("add", "sub"):
                    for lhs, rhs in re.findall(r"([\d+\-]+)=(-?\d+)", p.split("#")[0]):
                        assert eval(lhs) == int(rhs), (q, s, p)  # noqa: S307 - digits and +/- only
                assert style_of(q, p) == s


def test_extract_answer_by_hand():
    assert extract_answer("7+5=12,3+4+1=8#82") == "82"
    assert extract_answer("a#b#c ") == "c"
    assert extract_answer("no answer") is None
    assert extract_answer("12#") == ""


def test_distinct_n_by_hand():
    assert path_tokens("37+40=77#77") == ["37", "+", "40", "=", "77", "#", "77"]
    # two equal paths of 7 tokens: 12 bigrams, 6 distinct
    assert distinct_n(["1+2=3#3", "1+2=3#3"], 2) == pytest.approx(6 / 12)
    # "ab,cd#dc": ab , cd # dc -> 4 bigrams; "ab,dc#cd": ab , dc # cd -> 4, of which (ab ,) repeats: 7/8
    assert distinct_n(["ab,cd#dc", "ab,dc#cd"], 2) == pytest.approx(7 / 8)
    assert distinct_n(["ab", "cd"], 2) == 0.0 and distinct_n(["ab", "ab"], 1) == 0.5


def test_seed_documents_and_corpus():
    docs = seed_documents("add 37 45", unit=0.9, guideline_unit=0.5, default_style_share=0.8)
    # unit 0.9 >= 0.8 + 0.1: style 2 for the direct documents; guideline_unit 0.5: guideline 1
    assert docs == ["add 37 45 P:37+40=77,77+5=82#82", "add 37 45|H:82 P:37+40=77,77+5=82#82",
                    "G:biggest part first|add 37 45 T:tens then ones", "T:tens then ones|add 37 45 S:30+40,7+5,sum",
                    "S:30+40,7+5,sum|add 37 45 P:30+40=70,7+5=12,70+12=82#82",
                    "S:30+40,7+5,sum|add 37 45|H:82 P:30+40=70,7+5=12,70+12=82#82"]
    data = ReasoningSFT(n_train=20, n_val=5)
    assert len(data.documents("train")) == 6 * 20 * len(TASKS)
    assert len(data.documents("val")) == 5 * len(TASKS)
    assert not set(data.problems("train")) & set(data.problems("val"))
    prompt = data.prompts("val")[0]
    problem = data.problems("val")[0]
    assert data.verify(prompt, path_of(problem, 1)) and not data.verify(prompt, "1#0")
    with pytest.raises(InputError, match="data.tasks"):
        ReasoningSFT(tasks=["mul"])
    assert set(IN_DOMAIN) | set(HELD_OUT) == set(TASKS)


# --- the loops with a deterministic fake model -----------------------------------------------

class FakeModel:
    """Follows every format exactly (ADAPTED, structure_of, path_of), except that its first-pass
    path answers of problems in `wrong` are off (the hinted regeneration is right), and for the
    problems in `hopeless` even hinted paths are wrong. Records every prompt it was given."""

    def __init__(self, wrong=(), hopeless=()):
        self.wrong, self.hopeless, self.calls = set(wrong), set(hopeless), []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return [self.answer(p) for p in prompts]

    def answer(self, prompt):
        m = re.match(r"^G:(.*)\|(.*) T:$", prompt)
        if m:
            q = m.group(2)
            return " " + ADAPTED[q.split()[0]][GUIDELINES.index(m.group(1))] + " "
        m = re.match(r"^T:(.*)\|(.*) S:$", prompt)
        if m:
            q = m.group(2)
            return structure_of(q, ADAPTED[q.split()[0]].index(m.group(1)))
        m = re.match(r"^(?:S:(.*)\|)?(\w+ \w+(?: \w+)?)(\|H:\w+)? P:$", prompt)
        q, hinted = m.group(2), m.group(3) is not None
        style = 0
        if m.group(1) is not None:
            style = [structure_of(q, s) for s in range(3)].index(m.group(1))
        path = path_of(q, style)
        if q in self.hopeless or (q in self.wrong and not hinted):
            path = path.rsplit("#", 1)[0] + "#0"
        return path


def test_regenesis_chains_the_stages():
    problems = ["add 37 45", "rev dbca", "add 11 22"]
    model = FakeModel(wrong={"rev dbca"}, hopeless={"add 11 22"})
    records = regenesis(problems, model)
    # four batched calls: adaption, structure, path, hint (the two unsolved problems x 3 guidelines)
    assert [len(c) for c in model.calls] == [9, 9, 9, 6]
    assert model.calls[0][0] == "G:one step at a time|add 37 45 T:"
    assert model.calls[1][1] == "T:tens then ones|add 37 45 S:"  # the stripped adaption output
    assert model.calls[2][2] == "S:37+40,+5|add 37 45 P:"
    assert model.calls[3][0] == "S:a..d|rev dbca|H:acbd P:"  # last to first: its last letter first
    assert model.calls[3][5] == "S:11+20,+2|add 11 22|H:33 P:"
    kept = [(r["problem"], r["stage"], r["completion"]) for r in records if r["kept"]]
    assert kept == [("add 37 45", "path", path_of("add 37 45", s)) for s in range(3)] + \
        [("rev dbca", "hint", path_of("rev dbca", s)) for s in range(3)]
    stats = stage_stats(records)
    assert stats["adaption_follows"] == 1.0 and stats["structure_follows"] == 1.0
    assert stats["path_right"] == pytest.approx(3 / 9) and stats["problems_solved"] == pytest.approx(1 / 3)
    assert stats["hinted"] == 6 and stats["hint_right"] == pytest.approx(3 / 6)
    assert stats["problems_kept"] == pytest.approx(2 / 3) and stats["kept"] == 6 and stats["styles"] == 3
    assert stats["styles_per_problem"] == 3.0 and stats["kept_exact"] == 1.0
    assert stats["path_style_follows"] == pytest.approx(3 / 9)  # the 6 wrong answers break the exact style
    assert stats["distinct_2"] == pytest.approx(distinct_n([k[2] for k in kept], 2))


def test_star_samples_then_rationalizes():
    problems = ["add 37 45", "rev dbca"]
    model = FakeModel(wrong={"rev dbca"})
    records = star(problems, model, samples=3)
    assert model.calls == [["add 37 45 P:"] * 3 + ["rev dbca P:"] * 3, ["rev dbca|H:acbd P:"] * 3]
    stats = stage_stats(records)
    # the fake model has one direct style: 3 identical kept paths per problem count once
    assert stats["kept"] == 2 and stats["styles"] == 1 and stats["hint_right"] == 1.0
    assert stats["styles_per_problem"] == 1.0
    assert stats["path_right"] == 0.5
    assert records[-1]["stage"] == "hint" and records[-1]["right"]


def test_kept_exact_by_hand():
    """A right answer after a wrong step is kept (the filter reads the answer only) but is not exact."""
    records = [{"problem": "add 37 45", "guideline": 0, "stage": "path", "task_guideline": "", "structure": "",
                "completion": c, "answer": "82", "right": True, "kept": True}
               for c in ("7+5=12,3+4+1=8#82", "7+5=13,3+4+1=8#82")]
    stats = stage_stats(records)
    assert stats["kept"] == 2 and stats["kept_exact"] == 0.5 and stats["styles_per_problem"] == 1.0


def test_no_hint_keeps_only_first_pass():
    records = regenesis(["rev dbca"], FakeModel(wrong={"rev dbca"}), hint=False)
    assert len(records) == 3 and not any(r["kept"] for r in records)


def test_rollout_rows_read_by_data_rollouts(tmp_path):
    from rizzrun.data.rollouts import filter_rollouts, read_rollouts

    records = regenesis(["add 37 45", "rev dbca"], FakeModel(wrong={"rev dbca"}))
    write_rollouts(records, tmp_path)
    rows = read_rollouts(tmp_path, "train")
    assert [(r["row"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                       (1, 3), (1, 4), (1, 5)]
    kept, stats = filter_rollouts(rows, min_reward=0.5)
    docs = [r["prompt"] + r["completion"] for r in kept]
    assert docs == [direct_prompt("add 37 45") + path_of("add 37 45", s) for s in range(3)] + \
        [direct_prompt("rev dbca") + path_of("rev dbca", s) for s in range(3)]
    assert all("H:" not in d for d in docs)  # the hint never reaches training
    assert stats["kept"] == 6 and stats["prompts_with_zero_kept"] == 0


# --- the completer on a real model -----------------------------------------------------------

def test_model_completer_matches_one_prompt_at_a_time():
    """Batched (left-padded) greedy completions equal those of each prompt alone, cut at EOS."""
    import torch

    from rizzrun.decoders.greedy import Greedy
    from rizzrun.models.llama import Llama
    from rizzrun.tokenizers.byte import ByteTokenizer

    torch.manual_seed(0)
    tok = ByteTokenizer()
    model = Llama(vocab_size=tok.vocab_size, d_model=32, n_layer=1, n_head=2, n_kv_head=1, d_ff=64,
                  max_seq_len=64).eval()
    decoder = Greedy(max_new_tokens=6)
    prompts = ["add 37 45 P:", "rev dbca P:", "G:split in two|sort abcd T:"]
    batched = model_completer(model, decoder, tok, batch_size=2)(prompts)
    alone = []
    for p in prompts:
        ids = decoder.generate(model, torch.tensor([[tok.eos_id, *tok.encode(p)]]), eos_token_id=tok.eos_id)
        row = ids[0, len(tok.encode(p)) + 1:].tolist()
        alone.append(tok.decode(row[:row.index(tok.eos_id)] if tok.eos_id in row else row))
    assert batched == alone and len(batched) == 3


# --- the job: a seed run, job=synthesize on it, the SFT's data reading its rows -------------------

MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=1", "model.d_ff=64",
         "tokenizer=byte", "logger=none", "trainer.num_threads=1"]


def test_synthesize_job_writes_what_the_records_say(tmp_path, shared_cache):
    """A 2-step seed run on data=reasoning_sft; job=synthesize (star and regenesis) from it: its rows are
    the records it wrote (the same completions, right = the hand check of each answer), and its
    stats are stage_stats of them."""
    import json

    from rizzrun.config import compose
    from rizzrun.data.rollouts import RolloutSFT
    from rizzrun.runner.train import run

    seed = tmp_path / "seed"
    cfg = compose([*MODEL, f"cache_dir={shared_cache}", "data=reasoning_sft", "data.n_train=8", "data.n_val=2",
                   "data.batch_size=4", "data.seq_len=32", "trainer.max_steps=2", "trainer.val_every=2",
                   "trainer.val_batches=1", "trainer.samples_per_val=0", "scheduler.warmup_steps=1"])
    assert run(cfg, seed)["status"] == "completed"
    for method in ("star", "regenesis"):
        out = tmp_path / method
        summary = run(compose([*MODEL, f"cache_dir={shared_cache}", "data=reasoning_sft", "job=synthesize",
                               f"model.from_pretrained={seed}", "decoder=sample", "decoder.max_new_tokens=6",
                               f"+synthesize={{method: {method}, tasks: [add], problems: 2, val_problems: 1}}"]), out)
        assert summary["status"] == "completed"
        records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
        rows = [json.loads(x) for x in (out / "rollouts" / "train.jsonl").read_text().splitlines()]
        assert [r["completion"] for r in rows] == [r["completion"] for r in records]
        assert [r["reward"] == 1.0 for r in rows] == [extract_answer(r["completion"]) == solve(r["problem"])
                                                      for r in records]
        assert len([r for r in records if r["stage"] == "path"]) == 2 * 3
        assert json.dumps(summary["stats"], sort_keys=True) == json.dumps(stage_stats(records), sort_keys=True)
        val = [json.loads(x) for x in (out / "rollouts" / "val.jsonl").read_text().splitlines()]
        held = generate_problems("add", 0, 1)[1][0]
        assert len([r for r in val if r["stage"] == "path"]) == 3 and {r["prompt"] for r in val} == {direct_prompt(held)}
    # the right paths of a hand-made record become the SFT documents of data=rollouts
    right = [{**r, "completion": path_of(r["problem"], 0), "right": True, "kept": True} for r in records[:1]]
    write_rollouts(right, tmp_path / "made")
    data = RolloutSFT(path=str(tmp_path / "made"), min_reward=0.5)
    assert data.documents("train") == [direct_prompt(records[0]["problem"]) + path_of(records[0]["problem"], 0)]


def test_a_stopped_synthesize_job_resumes_keeping_its_finished_split(tmp_path, shared_cache, monkeypatch):
    """What a kill inside the val split leaves (train's files whole, val's rollouts cut short, no
    records-val.jsonl or stats-val.json): resume=<folder> synthesises the val split only and every file
    ends as the uninterrupted job wrote it (a seeded decoder starts each generate() call from its seed)."""
    import json

    import rizzrun.selfplay.regenesis as regenesis_module
    from rizzrun.config import compose
    from rizzrun.runner.train import run

    seed = tmp_path / "seed"
    assert run(compose([*MODEL, f"cache_dir={shared_cache}", "data=reasoning_sft", "data.n_train=8", "data.n_val=2",
                        "data.batch_size=4", "data.seq_len=32", "trainer.max_steps=1", "trainer.val_every=1",
                        "trainer.val_batches=1", "trainer.samples_per_val=0", "scheduler.warmup_steps=0"]),
               seed)["status"] == "completed"
    job = [*MODEL, f"cache_dir={shared_cache}", "data=reasoning_sft", "job=synthesize", f"model.from_pretrained={seed}",
           "decoder=sample", "decoder.max_new_tokens=6", "decoder.seed=3",
           "+synthesize={method: regenesis, tasks: [add], problems: 2, val_problems: 1}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run(compose(job), whole)["status"] == "completed"
    assert run(compose(job), cut)["status"] == "completed"
    files = ["rollouts/train.jsonl", "records.jsonl", "stats.json", "rollouts/val.jsonl", "records-val.jsonl",
             "stats-val.json"]
    for name in ("records-val.jsonl", "stats-val.json"):
        (cut / name).unlink()
    val = cut / "rollouts" / "val.jsonl"
    val.write_text(val.read_text()[: len(val.read_text()) // 2])
    summary = json.loads((cut / "summary.json").read_text())
    (cut / "summary.json").write_text(json.dumps({**summary, "status": "stopped"}))

    made, synthesize = [], regenesis_module.synthesize
    monkeypatch.setattr(regenesis_module, "synthesize",
                        lambda *a, **k: made.append(k.get("split")) or synthesize(*a, **k))
    resumed = run(compose([*job, f"resume={cut}"]), cut)
    assert resumed["status"] == "completed" and made == ["val"]
    for name in files:
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name
    assert resumed["stats"] == json.loads((whole / "stats.json").read_text())
