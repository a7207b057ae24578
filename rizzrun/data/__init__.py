"""Datasets: where examples come from and how they are batched.

`PyDocCorpus` (built-in stdlib-docstring corpus) and `TextFiles` (local .txt/.jsonl/.parquet)
share the LM pipeline in `rizzrun.data.lm`. Imported lazily: importing this package costs
nothing and pulls in neither torch nor datasets.
"""

__all__ = ["PyDocCorpus", "TextFiles"]


def __getattr__(name):
    if name == "PyDocCorpus":
        from rizzrun.data.pydoc import PyDocCorpus

        return PyDocCorpus
    if name == "TextFiles":
        from rizzrun.data.text import TextFiles

        return TextFiles
    raise AttributeError(f"module 'rizzrun.data' has no attribute {name!r}")
