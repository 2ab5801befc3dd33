"""Bad input ends in one clear line on stderr and exit code 2, through the real console script."""

import subprocess
import sys

import pytest


def lutnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lutnas", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["space", "show", "mobilenetv9"], "unknown search space 'mobilenetv9'"),
    (["space", "block", "mbconv:hw=56"], "block kind 'mbconv' takes fields"),
    (["space", "blocks", "tiny", "--config", "{\"resolution\": 32"], "not valid JSON"),
    (["space", "blocks", "tiny", "--config", "missing.json"], "config file 'missing.json' does not exist"),
    (["space", "blocks", "tiny", "--config", "smalest"], "neither a JSON file nor JSON text"),
])
def test_bad_input_is_one_line_exit_2(args, needle) -> None:
    result = lutnas(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_malformed_space_yaml(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("stages: [ {type: mbconv\n")
    result = lutnas("space", "show", str(path))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_space_show_prints_counts() -> None:
    result = lutnas("space", "show", "tiny")
    assert result.returncode == 0
    assert "unique blocks" in result.stdout and "operators" in result.stdout
