"""`rizzrun generate --model HF_FOLDER`: rizzrun's decoders on a model trained elsewhere give
the text `transformers` generates from the same folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from test_hf_tokenizer import _build

REPO = Path(__file__).resolve().parents[1]
RIZZRUN = str(Path(sys.executable).with_name("rizzrun"))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer folder with a random Llama of its vocabulary beside it."""
    folder = _build("bpe", tmp_path_factory.mktemp("hf_model"))
    vocab = len(transformers.AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      initializer_range=0.2, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def reference(folder: Path, prompt: str, n: int, **knobs) -> str:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt")
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    eos = list(dict.fromkeys([tok.eos_token_id, *configured]))
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=n, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id, **knobs)
    return prompt + tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("knobs", [{}, {"repetition_penalty": 1.3}])
def test_generate_from_an_hf_folder_equals_transformers(model_folder, knobs):
    overrides = [f"decoder.{k}={v}" for k, v in knobs.items()]
    done = subprocess.run([RIZZRUN, "generate", "--model", str(model_folder), "--prompt", "the cat",
                           "decoder.max_new_tokens=12", "decoder=greedy", *overrides], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == reference(model_folder, "the cat", 12, **knobs)


def test_generate_needs_exactly_one_source(model_folder, tmp_path):
    both = subprocess.run([RIZZRUN, "generate", str(tmp_path), "--model", str(model_folder), "--prompt", "x"],
                          capture_output=True, text=True, cwd=REPO)
    assert both.returncode == 2 and "not both or neither" in both.stderr
    missing = subprocess.run([RIZZRUN, "generate", "--model", str(tmp_path / "nope"), "--prompt", "x"],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and f"--model {tmp_path / 'nope'}: no such folder" in missing.stderr
    wrong = subprocess.run([RIZZRUN, "generate", "--model", str(model_folder), "--prompt", "x", "decoder.top_k=3"],
                           capture_output=True, text=True, cwd=REPO)  # greedy, the default with --model
    assert wrong.returncode == 2 and "rizzrun.decoders.greedy.Greedy has no parameter 'top_k'" in wrong.stderr


def test_generate_with_an_hf_folder_refuses_bad_values_in_one_line(model_folder):
    """Out-of-range values before torch; a prompt + decoder.max_new_tokens longer than the folder's
    max_position_embeddings (128) once the prompt is tokenized: one line, exit 2, no traceback."""
    prompt_len = len(transformers.AutoTokenizer.from_pretrained(model_folder)("the cat")["input_ids"])
    cases = [
        (["decoder=sample", "decoder.temperature=0"],
         "error: decoder.temperature=0: out of range; allowed: temperature > 0 (for greedy decoding use "
         "decoder=greedy)\n"),
        (["--checkpoint", "2"], "error: --checkpoint: only with RUN_DIR, not with --model\n"),
        (["decoder.max_new_tokens=200"], f"error: decoder.max_new_tokens=200: the prompt ({prompt_len} tokens) + 200 "
                                         f"new tokens = {prompt_len + 200} exceeds the model's max_seq_len=128; "
                                         f"allowed: decoder.max_new_tokens <= {128 - prompt_len} for this prompt, "
                                         "or a shorter --prompt\n"),
    ]
    for flags, line in cases:
        done = subprocess.run([RIZZRUN, "generate", "--model", str(model_folder), "--prompt", "the cat", *flags],
                              capture_output=True, text=True, cwd=REPO)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", line)


def test_the_length_check_accepts_exactly_what_fits():
    from rizzrun.errors import InputError
    from rizzrun.runner.generate import check_length

    check_length(5, 123, 128, given=True)  # 128 tokens: fits
    with pytest.raises(InputError, match=r"^decoder.max_new_tokens=124: .* = 129 exceeds .*max_seq_len=128; "
                                         r"allowed: decoder.max_new_tokens <= 123 for this prompt"):
        check_length(5, 124, 128, given=True)
    with pytest.raises(InputError, match=r"^--prompt \(the decoder's max_new_tokens=64\): the prompt \(130 tokens\).*; "
                                         r"shorten --prompt$"):
        check_length(130, 64, 128, given=False)
