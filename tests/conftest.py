"""Shared fixtures. Runs and caches go to temporary folders, never into the repository."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache folder for the whole session: the pydoc corpus is extracted once."""
    path = tmp_path_factory.mktemp("rizzrun-cache")
    os.environ["RIZZRUN_CACHE"] = str(path)
    return path
