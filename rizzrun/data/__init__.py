"""Datasets: where examples come from and how they are batched.

`PyDocCorpus` (pydoc.py, built-in stdlib-docstring corpus), `TextFiles` (text.py, local
.txt/.jsonl/.parquet) and `HFDataset` (hf.py, a Hugging Face `datasets` corpus) share the LM
pipeline in `lm.py` (tokenize, pack with a padded last block, batch). HFDataset's other jobs
each have a module: hf_source.py (find and load the source, check its text column),
hf_fingerprint.py, holdout.py (which rows validate), hf_stream.py (the streaming plan and its
resume bookkeeping), hf_views.py (stream adapters). Pairs for preference objectives: pairs.py
(`PairData`: tokenize, truncate as TRL, filter, batch), preference.py (`PreferencePairs`: files,
a save_to_disk folder or a Hub dataset) and arithmetic.py (the built-in verifiable task:
`ArithmeticSFT` corpus, `ArithmeticPairs`, `ArithmeticPrompts`). Prompts for on-policy objectives:
prompts.py (`PromptData`: tokenize, left-pad, batch, hand rows' columns to the rewards), tasks.py
(built-in string tasks sort / reverse / count: `TaskSFT`, `TaskPrompts`), prompt_file.py (`PromptFile`:
prompts from files, a folder or the Hub). actions.py: `ActionChunks`, synthetic robot trajectories
cut into chunks and turned into FAST coefficient strings (arXiv 2501.09747). Imported lazily: importing this package costs nothing
and pulls in neither torch nor datasets.
"""

__all__ = ["ActionChunks", "ArithmeticPairs", "ArithmeticPrompts", "ArithmeticRetrySFT", "ArithmeticSFT", "PairData", "PreferencePairs",
           "PromptData", "PromptFile", "PyDocCorpus", "PyDocSlice", "ReasoningSFT", "SignedPrompts", "SignedSFT", "TaskPrompts", "TaskSFT", "TextFiles"]

_MODULES = {"ActionChunks": "actions", "ArithmeticPairs": "arithmetic", "ArithmeticPrompts": "arithmetic",
            "ArithmeticRetrySFT": "retry", "ArithmeticSFT": "arithmetic", "PairData": "pairs", "PreferencePairs": "preference", "PromptData": "prompts",
            "PromptFile": "prompt_file", "PyDocSlice": "pydoc_slice", "ReasoningSFT": "reasoning", "SignedPrompts": "signed",
            "SignedSFT": "signed", "TaskPrompts": "tasks", "TaskSFT": "tasks"}


def __getattr__(name):
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(f"rizzrun.data.{_MODULES[name]}"), name)
    if name == "PyDocCorpus":
        from rizzrun.data.pydoc import PyDocCorpus

        return PyDocCorpus
    if name == "TextFiles":
        from rizzrun.data.text import TextFiles

        return TextFiles
    raise AttributeError(f"module 'rizzrun.data' has no attribute {name!r}")
