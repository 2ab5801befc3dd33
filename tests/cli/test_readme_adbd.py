"""The README's phone-less walk-through: the simulated adbd started in the background and stopped
with `kill` (SIGTERM) or Ctrl-C (SIGINT) leaves no /tmp/lutnas-adbd-* sandbox behind (issue 20)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test run inherits SIGINT ignored
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # and an xdist worker, maybe blocked


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_the_simulated_adbd_removes_its_sandbox_when_stopped(tmp_path, number) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "tests.adbd", "--port", "0", "--profile", "pixel7"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT, preexec_fn=_default_sigint)
    try:
        line = server.stdout.readline()
        sandbox = Path(re.search(r"\(sandbox (\S+)\)", line).group(1))
        assert sandbox.is_dir() and sandbox.name.startswith("lutnas-adbd-") and sandbox.parent == tmp_path
        server.send_signal(number)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert "Traceback" not in server.stderr.read()
    assert not sandbox.exists() and not list(tmp_path.glob("lutnas-adbd-*"))


def test_a_given_sandbox_is_kept(tmp_path) -> None:
    sandbox = tmp_path / "phone"
    server = subprocess.Popen([sys.executable, "-m", "tests.adbd", "--port", "0", "--sandbox", str(sandbox)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        server.stdout.readline()
        server.terminate()
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert sandbox.is_dir()
