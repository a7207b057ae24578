"""Config tree, recipes, compose and validate: every error names the key, the bad value and what
is allowed. Fake targets live in tests/fake_components.py (read through AST, never imported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rizzrun import paths
from rizzrun.config import ConfigError, catalog, compose, load, problems, signatures, sweep_jobs
from rizzrun.config.errors import closest, message
from rizzrun.config.resume import latest_run, override_value

MODELS = ", ".join(sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml")))
REPO = Path(__file__).resolve().parents[1]
FAKES = str(Path(__file__).resolve().parent)
if FAKES not in sys.path:  # so that `fake_components` is a findable top-level module
    sys.path.insert(0, FAKES)


def errors_of(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(overrides)
    return info.value.problems


def only_error(overrides: list[str]) -> str:
    found = errors_of(overrides)
    assert len(found) == 1, found
    return found[0]


# --- the tree ---------------------------------------------------------------------------------

def test_paths_point_at_the_checkout():
    assert paths.conf_dir() == REPO / "conf"
    assert paths.recipes_dir() == REPO / "recipes"


def test_groups_and_options_are_the_folders_and_files():
    assert catalog.groups() == ["attention", "data", "decoder", "hparams_search", "logger", "mlp", "model", "objective",
                                "optimizer", "scheduler", "tokenizer", "trainer"]
    for group in catalog.groups():  # against the folder, read here independently
        assert catalog.options(group) == sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")), group
    assert {"greedy", "sample"} <= set(catalog.options("decoder"))
    assert catalog.options("recipe") == sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    assert "tiny" in catalog.options("recipe")
    assert catalog.options("nonexistent") == []


def test_default_config_is_the_demo():
    cfg = load([], hydra_config=True)
    assert cfg.name == "default" and cfg.seed == 0 and cfg.resume is False
    assert cfg.model._target_ == "rizzrun.models.llama.Llama" and cfg.model.size == "tiny"
    assert cfg.model.vocab_size is None and cfg.model.init_std == 0.02
    assert cfg.attention == {"_target_": "rizzrun.attention.sdpa.SDPAttention", "_partial_": True}
    assert cfg.data._target_ == "rizzrun.data.pydoc.PyDocCorpus" and cfg.data.seq_len == 128
    assert cfg.data.seed == 0 and cfg.scheduler.total_steps == cfg.trainer.max_steps == 400
    assert cfg.trainer.val_every == 100 and cfg.trainer.precision == "32"
    assert cfg.optimizer.lr == 3e-3 and list(cfg.optimizer.betas) == [0.9, 0.95]
    assert cfg.logger.kind == "wandb" and cfg.logger.mode == "offline"
    assert len(cfg.prompts) >= 2
    assert cfg.hydra.job.chdir is False
    assert OmegaConf.to_container(cfg.hydra.run)["dir"] == "${output_root}/${now:%Y-%m-%d}/${now:%H-%M-%S}-${name}"
    assert OmegaConf.to_container(cfg.hydra.sweep) == {
        "dir": "${output_root}/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}", "subdir": "${hydra.job.num}"}


def test_output_root_and_cache_dir_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RIZZRUN_OUTPUTS", "/tmp/rz-out")
    monkeypatch.setenv("RIZZRUN_CACHE", "/tmp/rz-cache")
    cfg = load([])
    assert (cfg.output_root, cfg.cache_dir, cfg.data.cache_dir) == ("/tmp/rz-out", "/tmp/rz-cache", "/tmp/rz-cache")
    monkeypatch.delenv("RIZZRUN_CACHE")
    monkeypatch.setenv("HOME", "/home/someone")
    assert load([]).cache_dir == "/home/someone/.cache/rizzrun"


def _option_overrides(group: str, option: str, tmp_path: Path) -> list[str]:
    # Data paths must exist now (validate checks them); the files are never read here.
    (tmp_path / "a.txt").write_text("some text\n")
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n')
    extra = {("data", "text"): [f"data.train_files=[{tmp_path / 'a.txt'}]"],
             ("data", "hf"): [f"data.path={tmp_path / 'corpus'}"],
             # Pairs are for a preference objective; an lm one is refused with them (tested below).
             ("data", "preference"): [f"data.path={tmp_path / 'pairs.jsonl'}", "objective=dpo"],
             ("data", "arithmetic_pairs"): ["objective=dpo"]}
    for objective in ("dpo", "smpo", "reward_model"):  # ... and the other way round
        extra[("objective", objective)] = ["data=arithmetic_pairs"]
    # Contexts with diversity labels are for the DDS head's objective, and it needs them.
    (tmp_path / "labels.jsonl").write_text('{"text": "Q: 1+1? A:", "diversity": 0.0}\n')
    extra[("data", "dialogue_contexts")] = ["objective=dds_head"]
    extra[("data", "diversity_labels")] = [f"data.path={tmp_path / 'labels.jsonl'}", "objective=dds_head"]
    extra[("objective", "dds_head")] = ["data=dialogue_contexts"]
    # Prompts are for an on-policy objective (it scores rollouts of them), and it needs them.
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    extra[("data", "arithmetic_prompts")] = ["objective=grpo"]
    extra[("data", "task_prompts")] = ["objective=grpo"]
    extra[("data", "signed_prompts")] = ["objective=grpo"]
    extra[("data", "prompt_file")] = [f"data.path={tmp_path / 'prompts.jsonl'}", "objective=grpo"]
    (tmp_path / "sampled" / "rollouts").mkdir(parents=True, exist_ok=True)  # a sample run's folder, as validated
    (tmp_path / "sampled" / "rollouts" / "train.jsonl").write_text("")
    extra[("data", "rollouts")] = [f"data.path={tmp_path / 'sampled'}"]
    extra[("objective", "grpo")] = ["data=arithmetic_prompts"]
    extra[("objective", "warp")] = ["data=arithmetic_prompts"]
    extra[("objective", "score")] = ["data=arithmetic_prompts"]
    extra[("objective", "bspo")] = ["data=arithmetic_prompts"]
    extra[("data", "rollout_pairs")] = [f"data.path={tmp_path / 'sampled'}", "objective=reward_model"]
    (tmp_path / "teacher").mkdir(exist_ok=True)  # a run folder, as the validator sees one: its config.yaml
    (tmp_path / "teacher" / "config.yaml").write_text("name: teacher\n")
    extra[("objective", "minillm")] = ["data=arithmetic_prompts", f"objective.models.teacher={tmp_path / 'teacher'}"]
    # A group the default config's defaults list does not pick (hparams_search) is added with '+'.
    picked = {str(k) for e in OmegaConf.load(REPO / "conf" / "config.yaml").defaults if hasattr(e, "keys") for k in e}
    return [f"{'' if group in picked else '+'}{group}={option}", *extra.get((group, option), [])]


@pytest.mark.parametrize("group,option", [(g, o) for g in catalog.groups() for o in catalog.options(g)])
def test_every_option_of_every_group_validates(group, option, tmp_path):
    overrides = _option_overrides(group, option, tmp_path)
    if (group, option) == ("model", "llama_pretrained"):  # a folder with config.json + safetensors
        from test_hf_llama import hf_folder

        overrides.append(f"model.from_pretrained={hf_folder(tmp_path / 'hf', vocab_size=300, max_position_embeddings=256)}")
        overrides.append("tokenizer=byte")
    if (group, option) == ("tokenizer", "hf"):  # tokenizer.path=??? must name a folder with a tokenizer.json
        (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordLevel", "vocab": {"<unk>": 0}}}')
        overrides.append(f"tokenizer.path={tmp_path}")
    cfg = load(overrides, hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option


def _recipe_inputs(recipe: str, tmp_path: Path) -> list[str]:
    """The local inputs a paper-scale recipe asks for (it says so when they are missing: test_recipes'
    stand-ins for each), or the runs a recipe starts from (`${run:NAME}`), as folders that hold NAME's
    config and a checkpoint."""
    from test_recipes import missing_inputs, runs_it_starts_from, with_stand_ins

    if missing_inputs(recipe):
        return with_stand_ins(recipe, tmp_path)[1:]
    return [f"output_root={outputs}" for outputs in [runs_it_starts_from(recipe, tmp_path / "outputs")] if outputs]


@pytest.mark.parametrize("recipe", catalog.options("recipe"))
def test_every_shipped_recipe_validates_and_names_itself(recipe, tmp_path):
    assert load([f"+recipe={recipe}", *_recipe_inputs(recipe, tmp_path)]).name == recipe


def test_tiny_recipe_holds_only_its_name():
    default = OmegaConf.to_container(load([]))
    tiny = OmegaConf.to_container(load(["+recipe=tiny"]))
    assert {k for k in default if default[k] != tiny[k]} == {"name"}
    assert (REPO / "recipes" / "tiny.yaml").read_text().startswith("# @package _global_\n")


# --- recipes through the ConfigStore ---------------------------------------------------------------

@pytest.fixture
def recipes(tmp_path, monkeypatch):
    """A recipes folder of the test's own; writes NAME.yaml files into it."""
    monkeypatch.setattr(paths, "recipes_dir", lambda: tmp_path)

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path

    yield write
    monkeypatch.undo()
    catalog.register_recipes()  # back to the real recipes, dropping the test's


def test_recipe_defaults_override_other_groups(recipes):
    recipes("paper", "# @package _global_\n# a paper's setup\ndefaults:\n  - override /decoder: greedy\n"
                     "  - override /scheduler: constant\nname: paper\ndecoder:\n  max_new_tokens: 7\n")
    cfg = load(["+recipe=paper"], hydra_config=True)
    greedy = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "decoder" / "greedy.yaml"))
    assert cfg.decoder == {**greedy, "max_new_tokens": 7}
    assert cfg.decoder._target_ == "rizzrun.decoders.greedy.Greedy"
    assert cfg.scheduler._target_ == "rizzrun.optim.constant" and cfg.name == "paper"
    assert cfg.hydra.runtime.choices["recipe"] == "paper"
    # the command line still wins over the recipe
    assert load(["+recipe=paper", "decoder.max_new_tokens=9"]).decoder.max_new_tokens == 9
    assert catalog.yaml_description(catalog.option_file("recipe", "paper")) == "a paper's setup"


def test_recipe_files_are_reread_and_dropped(recipes):
    path = recipes("r1", "# @package _global_\nname: r1\nseed: 1\n")
    assert load(["+recipe=r1"]).seed == 1
    path.write_text("# @package _global_\nname: r1\nseed: 2\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load(["+recipe=r1"]).seed == 2
    path.unlink()
    assert only_error(["+recipe=r1"]).startswith("+recipe=r1: no recipe 'r1'; recipes: (none)")


def test_recipe_naming_a_missing_option(recipes):
    path = recipes("bad", "# @package _global_\ndefaults:\n  - override /objective: cee\nname: bad\n")
    assert only_error(["+recipe=bad"]) == (
        f"recipe 'bad' ({path}), defaults entry objective: cee: no option 'cee' in group 'objective'; "
        f"did you mean 'ce'? options: {', '.join(catalog.options('objective'))}")


def test_recipe_setting_keys_that_do_not_exist(recipes):
    recipes("typo", "# @package _global_\nname: typo\nsed: 3\nmodel:\n  n_layr: 2\n")
    found = errors_of(["+recipe=typo"])
    assert found[0] == ("sed=3: unknown top-level key; did you mean 'seed'? top-level keys: cache_dir, job, name, "
                        "output_root, prompts, resume, rewards, seed, stages; groups: attention, data, decoder, hparams_search, logger, mlp, model, "
                        "objective, optimizer, scheduler, tokenizer, trainer")
    llama = REPO / "rizzrun" / "models" / "llama.py"
    assert found[1].startswith(f"model.n_layr=2: rizzrun.models.llama.Llama has no parameter 'n_layr' ({llama}); "
                               "did you mean 'model.n_layer'? parameters: vocab_size, size, d_model, n_layer,")
    assert len(found) == 2


def test_recipe_that_is_not_yaml(recipes):
    path = recipes("broken", "name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        catalog.register_recipes()
    assert str(info.value).startswith(f"{path}: not valid YAML: ")


# --- bad overrides ------------------------------------------------------------------------------

def test_unknown_group_option():
    assert only_error(["model=lama"]) == ("model=lama: no option 'lama' in group 'model'; did you mean 'llama'? "
                                          f"options: {MODELS}")
    assert only_error(["attention=[sdpa,naiv]"]) == (
        "attention=[sdpa,naiv]: no option 'naiv' in group 'attention'; did you mean 'naive'? options: fam, hybrid, "
        "lightning, naive, sdpa, selective, ssmax, think")
    assert only_error(["model=3"]) == f"model=3: 'model' is a config group, so its value names an option; options: {MODELS}"


def test_unknown_recipe():
    assert only_error(["+recipe=tny"]) == (
        f"+recipe=tny: no recipe 'tny'; did you mean 'tiny'? recipes: "
        f"{', '.join(sorted(p.stem for p in (REPO / 'recipes').glob('*.yaml')))} (the files in {REPO / 'recipes'})")


def test_recipe_needs_a_plus():
    assert only_error(["recipe=tiny"]) == ("recipe=tiny: a recipe is added to the defaults, not overridden; "
                                           "write +recipe=tiny")


def test_misspelled_key():
    assert only_error(["model.n_layr=2"]) == (
        "model.n_layr=2: 'model' has no key 'n_layr'; did you mean 'model.n_layer'? keys: d_ff, d_model, "
        "from_pretrained, init_std, max_seq_len, n_head, n_kv_head, n_layer, norm_eps, rope_scaling, rope_theta, "
        "size, tie_embeddings, vocab_size")


def test_misspelled_group_name():
    found = only_error(["modle=llama"])
    assert found.startswith("modle=llama: the config has no key 'modle'; did you mean 'model'? keys: attention, cache_dir,")
    assert "+modle" not in found  # a typo, so no advice to add it as a new key


def test_new_key_advice_only_when_nothing_is_close():
    assert only_error(["trainer.foo=1"]).endswith(
        "keys: accelerator, accumulate, checkpoint_every, compile, devices, grad_clip, keep_checkpoints, log_every, "
        "max_nonfinite_skips, max_steps, num_nodes, num_threads, on_nonfinite, precision, samples_per_val, strategy, "
        "val_batches, val_every; "
        "to add a new key write +trainer.foo=1")


def test_every_bad_override_is_reported_with_the_problems_of_the_rest():
    found = errors_of(["model.n_layr=2", "data=txt", "trainer.max_stepz=1", "trainer.max_steps=-1"])
    assert [p.split(":")[0] for p in found] == [
        "data=txt", "model.n_layr=2", "trainer.max_stepz=1",
        "scheduler.total_steps=-1 (from ${trainer.max_steps})", "trainer.max_steps=-1"]
    assert "did you mean 'text'?" in found[0] and "did you mean 'trainer.max_steps'?" in found[2]


def test_adding_a_key_that_exists_and_deleting_one_that_does_not():
    assert only_error(["+model.size=small"]) == ("+model.size=small: 'model.size' already exists, so it is set, "
                                                 "not added: write model.size=small")
    assert only_error(["~model.sizes"]) == "~model.sizes: there is no 'model.sizes' to delete; did you mean 'model.size'?"


def test_unparsable_override_and_sweep_without_multirun():
    assert only_error(["x=="]).startswith("x==: not a valid override (")
    assert only_error(["seed=1,2"]) == (
        "seed=1,2: several values for one key; to run one job per value add -m (rizzrun -m seed=1,2); "
        "for a list write key=[a,b]; for text with a comma quote it: key='a,b'")


def test_compose_can_drop_the_hydra_node():
    assert "hydra" not in compose([]) and "hydra" in compose([], hydra_config=True)


# --- impossible values ------------------------------------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    ("optimizer.lr=0", "optimizer.lr=0: out of range; allowed: lr > 0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1: out of range; allowed: lr > 0"),
    ("trainer.accumulate=0", "trainer.accumulate=0: out of range; allowed: accumulate >= 1"),
    ("trainer.val_every=0", "trainer.val_every=0: out of range; allowed: val_every > 0"),
    ("trainer.precision=16", "trainer.precision=16: not allowed; did you mean '16-mixed'? "
                             "allowed: '32', 'bf16-mixed', '16-mixed', 'bf16-true'"),
    ("trainer.accelerator=tpu", "trainer.accelerator='tpu': not allowed; did you mean 'gpu'? allowed: 'cpu', 'gpu', 'auto'"),
    ("trainer.accelerator=cuda", "trainer.accelerator='cuda': not allowed; allowed: 'cpu', 'gpu', 'auto'"),
    ("data.seq_len=512", "data.seq_len=512: longer than the model's max_seq_len=256 (from model.size=tiny); "
                         "allowed: data.seq_len <= 256, or raise model.max_seq_len"),
    ("model.n_head=5 model.n_kv_head=1", "model.n_head=5: must divide d_model=192; allowed n_head: 1, 2, 3, 4, 6, 8, 12, "
                                         "16, 24, 32, 48, 96"),
    ("model.size=tinyy", "model.size='tinyy': not a Llama size; did you mean 'tiny'? allowed: tiny, small, 1b, 7b"),
    ("model.vocab_size=100", "model.vocab_size=100: smaller than the tokenizer's vocabulary "
                             "(rizzrun.tokenizers.byte.ByteTokenizer: 259 ids); "
                             "allowed: null (take the tokenizer's) or an integer >= 259"),
    ("data.batch_size=abc", "data.batch_size='abc': expected int, got str"),
    ("scheduler.warmup_steps=500", "scheduler.warmup_steps=500: longer than scheduler.total_steps=400 "
                                   "(from ${trainer.max_steps}); "
                                   "allowed: scheduler.warmup_steps <= 400"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5]: not a pair of numbers in [0, 1); "
                                  "allowed: e.g. optimizer.betas=[0.9,0.95]"),
    ("data.max_docs=0", "data.max_docs=0: out of range; allowed: max_docs >= 1"),
    ("decoder.seed=1.5", "decoder.seed=1.5: expected int or null, got float"),
    ("trainer.compile=yes", "trainer.compile='yes': expected true or false, got str"),
    ("name=123", "name=123: expected str, got int; quote it to pass text: name='123'"),
    ("name=a/b", "name='a/b': not allowed; allowed: letters, digits and . _ + - (no spaces or slashes), "
                 "matching [A-Za-z0-9][A-Za-z0-9._+-]*"),
    ("logger.mode=onlin", "logger.mode='onlin': not allowed; did you mean 'online'? allowed: 'offline', 'online', 'disabled'"),
    ("~model", f"model: no model chosen; pick one with model=OPTION (options: {MODELS})"),
    ("data=text", "data.train_files=???: required value is not set; set it, e.g. data.train_files=VALUE"),
])
def test_impossible_value(override, expected):
    assert only_error(override.split()) == expected


def test_max_steps_problem_points_at_its_interpolations():
    assert errors_of(["trainer.max_steps=0"]) == [
        "scheduler.total_steps=0 (from ${trainer.max_steps}): out of range; allowed: total_steps > 0",
        "trainer.max_steps=0: out of range; allowed: max_steps > 0"]


def test_bpe_vocab_is_the_config_key():
    assert only_error(["tokenizer=bpe", "model.vocab_size=1000"]).startswith(
        "model.vocab_size=1000: smaller than the tokenizer's vocabulary (rizzrun.tokenizers.bpe.BPETokenizer: 2048 ids)")
    load(["tokenizer=bpe", "model.vocab_size=4096"])


def test_explicit_max_seq_len_is_named_as_the_source():
    # Since validate also checks the samples taken at validation, a 64-token model is too short
    # for them as well: 'This function' is 13 bytes, + the EOS the sampler puts first = 14, + 64.
    assert errors_of(["model.max_seq_len=64"]) == [
        "data.seq_len=128: longer than the model's max_seq_len=64 (from model.max_seq_len); "
        "allowed: data.seq_len <= 64, or raise model.max_seq_len",
        "decoder.max_new_tokens=64: a sample at validation, the prompt 'This function' (14 tokens with the EOS put "
        "first) + 64 new tokens = 78, is longer than the model's max_seq_len=64 (from model.max_seq_len); allowed: "
        "decoder.max_new_tokens <= 50, shorter prompts, or trainer.samples_per_val=0, or raise model.max_seq_len"]
    assert only_error(["model.max_seq_len=64", "trainer.samples_per_val=0"]).startswith("data.seq_len=128: ")


def test_all_problems_in_one_error():
    with pytest.raises(ConfigError) as info:
        load(["optimizer.lr=0", "trainer.max_steps=0", "logger.kind=tensorboard"])
    text = str(info.value)
    assert text.startswith("4 problems:\n- ")
    for key in ("optimizer.lr=0", "trainer.max_steps=0", "scheduler.total_steps=0", "logger.kind='tensorboard'"):
        assert f"\n- {key}" in text


def test_unresolvable_interpolation():
    assert only_error(["scheduler.total_steps=${trainer.max_stepz}"]) == (
        "scheduler.total_steps=${trainer.max_stepz}: cannot resolve it (Interpolation key 'trainer.max_stepz' not found)")


def test_unknown_schema_key_added_with_plus():
    assert only_error(["+logger.projekt=x"]) == (
        "logger.projekt='x': unknown key of logger (LoggerConfig in rizzrun/config/schema.py); did you mean "
        "'logger.project'? keys: kind, project, entity, name, group, tags, mode")


# --- binding to target signatures (fake targets) -------------------------------------------------------

def test_missing_target_file():
    assert only_error(["objective._target_=rizzrun.objectives.nosuch.NoSuch"]) == (
        "objective._target_=rizzrun.objectives.nosuch.NoSuch: cannot find rizzrun/objectives/nosuch.py "
        f"(looked in {REPO / 'rizzrun' / 'objectives'})")


def test_missing_target_name():
    assert only_error(["objective._target_=rizzrun.objectives.ce.CrossEntropi"]) == (
        "objective._target_=rizzrun.objectives.ce.CrossEntropi: "
        f"{REPO / 'rizzrun' / 'objectives' / 'ce.py'} defines no 'CrossEntropi'; did you mean 'CrossEntropy'?")


def test_missing_required_argument_unless_partial():
    base = ["objective._target_=fake_components.NeedsArgs", "~objective.ignore_index"]
    assert only_error(base) == ("objective.n_items: required argument of fake_components.NeedsArgs is not set; "
                                "add it: +objective.n_items=VALUE")
    load([*base, "+objective._partial_=true"])
    load([*base, "+objective.n_items=3", "+objective.flag=true", "+objective.sizes=[1,2]"])


def test_literal_list_and_keyword_only_annotations():
    base = ["objective._target_=fake_components.NeedsArgs", "~objective.ignore_index", "+objective.n_items=3"]
    assert errors_of([*base, "+objective.mode=fsat", "+objective.sizes=[1,x]", "+objective.flag=1"]) == [
        "objective.mode='fsat': not allowed; did you mean 'fast'? allowed: 'fast', 'slow'",
        "objective.sizes=[1, 'x']: expected a list of int or null, got list",
        "objective.flag=1: expected true or false, got int"]


def test_unknown_argument_suggests_the_parameter():
    fake = Path(FAKES) / "fake_components.py"
    found = errors_of(["objective._target_=fake_components.NeedsArgs", "+objective.n_item=3"])
    assert found == [
        f"objective.ignore_index=-100: fake_components.NeedsArgs has no parameter 'ignore_index' ({fake}); "
        "parameters: n_items, mode, sizes, flag",
        f"objective.n_item=3: fake_components.NeedsArgs has no parameter 'n_item' ({fake}); "
        "did you mean 'objective.n_items'? parameters: n_items, mode, sizes, flag",
        "objective.n_items: required argument of fake_components.NeedsArgs is not set; add it: +objective.n_items=VALUE"]


def test_kwargs_target_accepts_any_key():
    load(["objective._target_=fake_components.TakesKwargs", "+objective.anything=1"])


def test_batch_kind_mismatch_names_both_sides():
    found = errors_of(["objective._target_=fake_components.PreferenceLoss", "~objective.ignore_index"])
    assert found == [
        "objective=ce, data=pydoc: objective 'ce' (fake_components.PreferenceLoss) consumes batch_kind "
        "'preference' but data 'pydoc' (rizzrun.data.pydoc.PyDocCorpus) produces 'lm'; pick "
        "data=arithmetic_pairs or data=preference or data=rollout_pairs, or an objective that consumes 'lm'"]


def test_dataclass_data_target():
    from rizzrun.config.validate import option_batch_kind

    lm = [o for o in catalog.options("data") if option_batch_kind("data", o) == "lm"]
    assert {"actions", "arithmetic_sft", "hf", "pydoc", "rollouts", "text"} <= set(lm)  # the lm data options
    assert errors_of(["~data", "+data={_target_: fake_components.PairData, n: 2}"]) == [
        "data.path: required argument of fake_components.PairData is not set; add it: +data.path=VALUE",
        "objective=ce, data=fake_components.PairData: objective 'ce' (rizzrun.objectives.ce.CrossEntropy) consumes "
        "batch_kind 'lm' but data 'fake_components.PairData' (fake_components.PairData) produces 'preference'; "
        f"pick {' or '.join(f'data={o}' for o in sorted(lm))}, or an objective "
        "that consumes 'preference'"]


def test_deleting_keys():
    assert only_error(["~data.max_doc"]) == "~data.max_doc: there is no 'data.max_doc' to delete; did you mean 'data.max_docs'?"
    assert only_error(["~data.max_docs"]) == ("~data.max_docs: 'data.max_docs' is null, and Hydra cannot delete a key "
                                              "whose value is null; leave it out, or replace the whole node")


def test_missing_and_invalid_batch_kind():
    assert only_error(["objective._target_=fake_components.NoKind", "~objective.ignore_index"]) == (
        "objective._target_=fake_components.NoKind: declares no batch_kind; the class must say which batch it "
        "consumes: batch_kind = 'lm' | 'preference' | 'prompts' | 'diversity'")
    assert only_error(["objective._target_=fake_components.BadKind", "~objective.ignore_index"]) == (
        "objective._target_=fake_components.BadKind: batch_kind='pairs' is not a batch kind; "
        "allowed: 'lm', 'preference', 'prompts', 'diversity'")


def test_function_target_with_partial():
    load(["optimizer._target_=fake_components.builder", "~optimizer.weight_decay", "~optimizer.betas",
          "~optimizer.eps", "+optimizer.nesterov=true"])
    assert [p.split(" (")[0] for p in errors_of(["optimizer._target_=fake_components.builder"])] == [
        "optimizer.weight_decay=0.1: fake_components.builder has no parameter 'weight_decay'",
        "optimizer.betas=[0.9, 0.95]: fake_components.builder has no parameter 'betas'",
        "optimizer.eps=1e-08: fake_components.builder has no parameter 'eps'"]


# --- signatures -----------------------------------------------------------------------------------

def test_signature_read_from_source():
    target = signatures.resolve("fake_components.PreferenceLoss")
    assert target.kind == "class" and target.attrs["batch_kind"] == "preference"
    assert [(p.name, p.required, p.default) for p in target.params] == [
        ("beta", False, 0.1), ("label_smoothing", False, 0.0), ("reference", False, None)]
    assert target.doc == "A loss on preference pairs (inherits its batch_kind)."
    assert signatures.resolve("rizzrun.tokenizers.byte.ByteTokenizer").attrs["vocab_size"] == 259


def test_signature_follows_reexports():
    # torch/optim/__init__.py re-exports AdamW from torch/optim/adamw.py
    adamw = signatures.resolve("torch.optim.AdamW")
    assert adamw.file.name == "adamw.py" and "lr" in {p.name for p in adamw.keyword_params()}


def test_signature_errors():
    with pytest.raises(signatures.TargetNotFound, match=r"^cannot find module 'nope_pkg' \(is it installed\?\)$"):
        signatures.resolve("nope_pkg.mod.Thing")
    with pytest.raises(signatures.TargetNotFound, match=r"^'Thing' is not a dotted path"):
        signatures.resolve("Thing")


# --- sweeps, resume, helpers -----------------------------------------------------------------------------

def test_sweep_jobs_expand_like_the_basic_sweeper():
    assert sweep_jobs(["seed=0,1", "attention=glob([n*,sd*])", "name=x"]) == [
        ["seed=0", "attention=naive", "name=x"], ["seed=0", "attention=sdpa", "name=x"],
        ["seed=1", "attention=naive", "name=x"], ["seed=1", "attention=sdpa", "name=x"]]
    assert sweep_jobs(["optimizer.lr=interval(0.001,0.01)"]) == [["optimizer.lr=0.001"], ["optimizer.lr=0.01"]]
    assert sweep_jobs(["trainer.max_steps=range(1,3)"]) == [["trainer.max_steps=1"], ["trainer.max_steps=2"]]


def test_latest_run_picks_the_newest_folder_with_a_checkpoint(tmp_path):
    def run(day, name, checkpoint):
        folder = tmp_path / day / name
        (folder / "checkpoints").mkdir(parents=True)
        if checkpoint:
            (folder / "checkpoints" / "latest").write_text("step-000010\n")
        return folder

    run("2024-01-01", "10-00-00-tiny", True)
    want = run("2024-01-02", "08-00-00-tiny", True)
    run("2024-01-02", "09-00-00-tiny", False)  # newer, but nothing to resume
    run("2024-01-03", "09-00-00-x-tiny", True)  # another name that ends in -tiny
    run("multirun", "09-00-00-tiny", True)
    assert latest_run(tmp_path, "tiny") == want
    with pytest.raises(ConfigError, match=r"^resume=true: no run named 'small' with a checkpoint under "):
        latest_run(tmp_path, "small")


def test_override_value_quotes_odd_paths():
    assert override_value(Path("/a/b-1/c_d")) == "/a/b-1/c_d"
    assert override_value(Path("/a b/it's")) == "'/a b/it\\'s'"


def test_closest_and_message():
    assert closest("16", ["32", "16-mixed"]) == "16-mixed"
    assert closest("BF16-Mixed", ["bf16-mixed", "32"]) == "bf16-mixed"
    assert closest("zzz", ["model", "data"]) is None
    assert message("k=1", "", "bad", "did you mean 'x'?", "allowed: x") == "k=1: bad; did you mean 'x'? allowed: x"


def test_problems_of_a_sound_config_is_empty():
    assert problems(compose([], hydra_config=True)) == []


def test_recipe_package_header(tmp_path):
    plain, scoped = tmp_path / "plain.yaml", tmp_path / "scoped.yaml"
    plain.write_text("# what it is\nname: plain\n")
    scoped.write_text("# what it is\n# @package model\nsize: small\n")
    assert (catalog.recipe_package(plain), catalog.recipe_package(scoped)) == ("_global_", "model")
    assert catalog.yaml_description(scoped) == "what it is"
