"""`lutnas cache info|prune` (issue 20): the model cache is named, measured and trimmed safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lutnas.cli.cache import cache_dir, parse_size

ROOT = Path(__file__).resolve().parents[2]


def lutnas(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LUTNAS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lutnas", "cache", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


def _model(folder: Path, digest: str, size: int, days_old: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = 1_700_000_000 if days_old > 1000 else __import__("time").time() - days_old * 86400
    for suffix, n in ((".onnx", size), (".json", 10)):
        path = folder / f"{digest}{suffix}"
        path.write_bytes(b"x" * n)
        os.utime(path, (stamp, stamp))
    return folder / f"{digest}.onnx"


def test_cache_dir_agrees_with_the_exporter(monkeypatch, tmp_path) -> None:
    from lutnas.profiler.export import default_cache_dir

    for env in ({"LUTNAS_CACHE": str(tmp_path / "a")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {}):
        monkeypatch.delenv("LUTNAS_CACHE", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert cache_dir()[0] == default_cache_dir()


def test_parse_size() -> None:
    assert parse_size("2G") == 2 * 2**30 and parse_size("500M") == 500 * 2**20
    assert parse_size("1.5k") == 1536 and parse_size("100") == 100


def test_info_then_prune_by_age_and_size(tmp_path) -> None:
    cache = tmp_path / "cache"
    old = _model(cache / "onnx", "a" * 24, 1000, days_old=40)
    mid = _model(cache / "onnx", "b" * 24, 1000, days_old=10)
    new = _model(cache / "tflite", "c" * 24, 1000, days_old=0)
    keep = cache / "notes.txt"  # not a cache entry: never touched
    keep.write_text("mine")
    info = json.loads(lutnas("info", "--json", cache=cache).stdout)
    assert info["path"] == str(cache) and info["source"] == "LUTNAS_CACHE" and info["files"] == 6
    assert info["formats"]["onnx"]["files"] == 4
    shown = lutnas("info", cache=cache).stdout
    assert str(cache) in shown and "LUTNAS_CACHE" in shown
    dry = lutnas("prune", "--older-than", "30", "--dry-run", cache=cache)
    assert "would delete 2 of 6 files" in dry.stdout and old.exists()
    assert lutnas("prune", "--older-than", "30", cache=cache).returncode == 0
    assert not old.exists() and mid.exists() and new.exists()
    assert lutnas("prune", "--max-size", "1100", cache=cache).returncode == 0
    assert not mid.exists() and new.exists() and keep.exists()
    assert "deleted 2 of 2" in lutnas("prune", "--all", cache=cache).stdout
    assert keep.read_text() == "mine"


def test_prune_needs_a_rule(tmp_path) -> None:
    result = lutnas("prune", cache=tmp_path)
    assert result.returncode == 2 and "--older-than" in result.stderr


@pytest.mark.parametrize("command", [["profile-device", "--help"], ["cache", "--help"]])
def test_help_names_the_cache_and_its_variable(command) -> None:
    result = subprocess.run([sys.executable, "-m", "lutnas", *command], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert "LUTNAS_CACHE" in result.stdout and ".cache/lutnas/models" in result.stdout
