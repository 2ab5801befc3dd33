"""pytest fixtures for the simulated phone; test modules import the ones they use."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lutnas.device_agents.adb_keys import KEY_ENV, load_signer
from tests.adbd.server import RUNNER_DOUBLE, SimulatedAdbd


@pytest.fixture(scope="session")
def _session_adb_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("adbkey") / "adbkey"
    load_signer(path)  # RSA key generation costs ~0.3 s: once per session
    return path


@pytest.fixture
def adb_key(_session_adb_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key pair outside the real home, named by $LUTNAS_ADB_KEY for every agent the test opens."""
    path = tmp_path / "android" / "adbkey"
    path.parent.mkdir()
    shutil.copy(_session_adb_key, path)
    shutil.copy(f"{_session_adb_key}.pub", f"{path}.pub")
    path.chmod(0o600)
    monkeypatch.setenv(KEY_ENV, str(path))
    return path


@pytest.fixture
def phone(tmp_path: Path, adb_key: Path) -> Iterator[SimulatedAdbd]:
    """A simulated Pixel 7 that already trusts the test's key."""
    with SimulatedAdbd(tmp_path / "pixel7", "pixel7", trusted_keys=[Path(f"{adb_key}.pub")]) as server:
        yield server


@pytest.fixture
def runner() -> Path:
    return RUNNER_DOUBLE


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small conv .tflite exported with litert-torch (as lutnas exports blocks)."""
    import litert_torch
    import torch

    path = tmp_path_factory.mktemp("models") / "conv.tflite"
    module = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).eval()
    module = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
    litert_torch.convert(module, (torch.randn(1, 16, 16, 8),)).export(str(path))
    return path
