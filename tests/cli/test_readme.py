"""The README's command reference, run as written, in order, in a fresh directory (issue 20).

Every ```bash block under "## Command reference" is run line by line (a trailing backslash joins
lines, `# ...` comments are dropped) with `.venv/bin` first on PATH, and each must exit 0. Then the
claims the README makes about them are checked: the rerun skips every block, the files it names
are written, the rebuilt table keeps its correction, search writes its outputs, and so on.

Rules, as the README's own text says (so the commands and flags stay the same):
- `--space tiny` of `profile-device`, `train-supernet` and `search` becomes `--space micro`, a
  smaller space of the same structure (the YAML file `micro` in the working directory, below): the
  whole of `tiny` takes ~20 min to profile on a 2-core host. The file has no `.yaml` suffix because
  a run records the space's *name*, and build-table finds a space file by that name.
- `--target-ms`/`--targets`/`--window-ms` values are host-dependent (the README says a target
  outside the table's range is an error that prints the range): they are set inside the range of the
  table these commands built.
- Skipped: `torchrun` (two training processes; the trainer's DDP path has its own test) and
  everything under "Profile your phone" (needs a phone; tests/cli/test_readme_adbd.py and
  tests/device_agents run the simulated one).
The exported-model cache is the user's (`LUTNAS_CACHE` or ~/.cache/lutnas/models), as for any run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = {"torchrun": "two training processes; the DDP path has its own test"}
SPACE_COMMANDS = ("profile-device", "lutnas train-supernet", "lutnas search")
# tiny's structure with one resolution and fewer choices: 26 unique blocks, 64 subnets.
MICRO = """name: micro
num_classes: 10
activation: hswish
resolutions: [32]
stem: {widths: [16], kernel: 3, stride: 2, depths: [1], kernels: [3]}
stages:
  - {name: stage1, type: mbconv, depths: [1, 2], widths: [16, 24], expands: [3, 6],
     kernels: [3], stride: 2, se: false}
  - {name: stage2, type: mbconv, depths: [1], widths: [24, 32], expands: [4],
     kernels: [3], stride: 2, se: true}
  - {name: stage3, type: transformer, depths: [1, 2], widths: [32], mlp_ratios: [2],
     v_scales: [2], head_dim: 16, stride: 1}
  - {name: stage4, type: transformer, depths: [1], widths: [48, 64], mlp_ratios: [2],
     v_scales: [2], head_dim: 16, stride: 2}
downsample: {expand: 6, kernel: 3, se: true}
head: {expand: 6, hidden: 128}
"""


def readme_commands(text: str) -> list[str]:
    """The command lines of every bash block in the command reference, continuations joined."""
    section = text.split("## Command reference", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(" ".join(shlex.quote(w) if not any(c in w for c in "*>") else w
                                         for w in words))
    return commands


def _adapt(command: str, micro: Path, targets: tuple[float, float] | None) -> str:
    if command.startswith(SPACE_COMMANDS):
        command = command.replace("--space tiny", f"--space {micro.name}")
    if targets is not None and command.startswith("lutnas search"):
        low, high = targets
        top = low + 0.95 * (high - low)  # at or above the slowest subnet, a cap constrains nothing
        mid = (low + top) / 2
        command = re.sub(r"--target-ms \S+", f"--target-ms {top:.4f}", command)
        command = re.sub(r"--targets \S+", f"--targets {mid:.4f},{top:.4f}", command)
        command = re.sub(r"--window-ms \S+", f"--window-ms {top - low:.4f}", command)
    return command


def _range(table: Path, micro: Path) -> tuple[float, float]:
    """Predicted latency (ms) of the micro space's smallest and largest subnets, as search prices
    them: the table's LUT with its correction when it has one (the raw sum put a target above the
    corrected slowest subnet once the correction's scale fell below 1)."""
    from lutnas.predictors.lut import LutPredictor
    from lutnas.space import SearchSpace
    from lutnas.tables.table import LatencyTable

    space = SearchSpace.load(str(micro))
    loaded = LatencyTable.load(table)
    predictor = LutPredictor(space, corrected=bool(loaded.correction)).fit(loaded)
    low, high = (float(v) for v in predictor.predict([space.smallest(), space.largest()]))
    return low, high


@pytest.mark.slow(minutes=10)  # was ~10 min on 2 cores; its 17 .tflite subnets are now stitched
def test_the_readme_command_reference_runs_as_written(tmp_path) -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) > 25, commands
    micro = tmp_path / "micro"
    micro.write_text(MICRO)
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the README names files of the repository
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    outputs: dict[str, str] = {}
    targets = None
    for command in commands:
        if any(word in SKIP for word in command.split()):
            continue
        if targets is None and command.startswith("lutnas search"):
            targets = _range(tmp_path / "tables" / "tiny-host.parquet", micro)
        adapted = _adapt(command, micro, targets)
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", adapted], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        print(f"{time.monotonic() - started:6.1f} s  {adapted}")
        assert done.returncode == 0, f"{adapted}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs[command] = outputs.get(command, "") + done.stdout + done.stderr
    _check_claims(tmp_path, commands, outputs)


def _check_claims(where: Path, commands: list[str], outputs: dict[str, str]) -> None:
    """What the README says these commands do."""
    rerun = next(c for c in commands if c.startswith("profile-device") and "--limit 8" in c)
    assert re.search(r"\b8\b", outputs[rerun]) and "skipped" in outputs[rerun]
    for name in ("largest.json", "measurements.sqlite", "tiny-host.csv", "t.csv", "t.json",
                 "t.meta.json", "diff.png", "m.sqlite", "tables/tiny-host.parquet",
                 "tables/tiny-ort.parquet", "tables/ofa-note10.parquet", "tables/tiny-transfer.parquet",
                 "tables/tiny-host.learned.predictor.npz", "tables/tiny-host.analytic.predictor.npz",
                 "tables/tiny-transfer.transfer.predictor.npz", "runs/tiny/log.csv",
                 "runs/search/best.json", "runs/search/candidates.csv", "runs/search/pareto.png",
                 "runs/search/best.tflite", "runs/search/best.onnx", "runs/search-targets/winners.json"):
        assert (where / name).is_file(), name
    assert "#" not in (where / "t.csv").read_text().splitlines()[0]  # a plain CSV
    shows = [out for c, out in outputs.items() if c.startswith("lutnas table show")]
    assert shows and all("correction: none" not in out for out in shows)  # kept by the rebuild
    verify = next(out for c, out in outputs.items() if "--verify-on" in c)
    assert "prediction error" in verify
    best = json.loads((where / "runs/search/best.json").read_text())
    assert "verification" in best and "config" in best
    log = (where / "runs/tiny/log.csv").read_text().splitlines()
    assert len(log) >= 3  # header + the first run's epoch + the resumed one
    assert any(c.startswith("lutnas predict") and "best.json" in c for c in commands)
