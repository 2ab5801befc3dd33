"""The stock `adb` client (Debian package `adb`) talks to the simulated adbd: the simulation follows
the real protocol, not only adb-shell's reading of it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from lutnas.device_agents.adb_keys import load_signer
from tests.adbd import SimulatedAdbd

ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="needs the Debian package adb (apt-get install adb)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_adb_connect_shell_push(tmp_path: Path):
    port = free_port()
    env = dict(os.environ, HOME=str(tmp_path / "home"), ANDROID_SDK_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()

    def adb(*args: str, timeout: float = 30) -> str:
        done = subprocess.run([ADB, "-P", str(port), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        return done.stdout + done.stderr

    payload = tmp_path / "model with space.bin"
    payload.write_bytes(os.urandom(300_000))  # several sync DATA chunks
    # adb reads its key from $HOME/.android/adbkey: write one (same format) that the phone trusts,
    # so adb must sign the AUTH token and the simulator must verify the signature.
    key = tmp_path / "home" / ".android" / "adbkey"
    load_signer(key)
    with SimulatedAdbd(tmp_path / "sb", "pixel7", trusted_keys=[Path(f"{key}.pub")],
                       accept_new_keys=False) as server:
        try:
            assert "connected to" in adb("connect", server.address)
            assert adb("-s", server.address, "shell", "getprop ro.product.model").strip() == "Pixel 7"
            assert adb("-s", server.address, "shell", "echo $((6*7)); cat /proc/cpuinfo | grep -c processor"
                       ).split() == ["42", "8"]
            out = adb("-s", server.address, "push", str(payload), "/data/local/tmp/")
            assert "1 file pushed" in out, out
            assert (server.device_tmp / payload.name).read_bytes() == payload.read_bytes()
            pulled = tmp_path / "pulled.bin"
            adb("-s", server.address, "pull", f"/data/local/tmp/{payload.name}", str(pulled))
            assert pulled.read_bytes() == payload.read_bytes()
        finally:
            adb("kill-server", timeout=10)
    assert server.prompts == 0  # adb signed the token with the trusted key
