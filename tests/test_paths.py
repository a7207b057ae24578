"""`rizzrun.paths.cache_root`: the one place the cache root is decided (torch-free), and the
config's default `cache_dir` spelling the same rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rizzrun.config import load
from rizzrun.paths import cache_root


def test_cache_root_order_given_then_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("RIZZRUN_CACHE", "/srv/rz-cache")
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    assert cache_root("~/mine") == Path("/home/someone/mine")
    assert cache_root() == cache_root(None) == cache_root("") == Path("/srv/rz-cache")
    monkeypatch.setenv("RIZZRUN_CACHE", "~/rz")
    assert cache_root() == Path("/home/someone/rz")
    monkeypatch.delenv("RIZZRUN_CACHE")
    assert cache_root() == Path("/home/someone/.cache/rizzrun")


def test_the_config_default_is_cache_root(monkeypatch):
    """conf/config.yaml spells the rule as an interpolation (so a run's config.yaml records the
    folder it used); it must name the folder `cache_root()` names, with and without the variable."""
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("RIZZRUN_CACHE", "/srv/rz-cache")
    assert cache_root(load([]).cache_dir) == cache_root() == Path("/srv/rz-cache")
    monkeypatch.delenv("RIZZRUN_CACHE")
    assert cache_root(load([]).cache_dir) == cache_root() == Path("/home/someone/.cache/rizzrun")


def test_paths_imports_no_torch():
    code = "import sys, rizzrun.paths; rizzrun.paths.cache_root(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
