"""A real OpenSSH server on loopback for the SSH agent's tests (no mocks).

`Sshd` writes a temporary host key, client key pair, authorized_keys and sshd_config, starts
`sshd -D -e -f CONFIG` as a foreground child on a free port of 127.0.0.1 and stops it (and every
session process it forked) when the `with` block ends. The board it serves is this machine, logged
into as the user running the tests. `scripts/system-deps.sh` installs Debian's openssh-server.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_missing() -> str | None:
    """Why sshd cannot run here (a pytest skip reason), or None when it can."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        return ("needs Debian's openssh-server and openssh-client (bash scripts/system-deps.sh as root, "
                "or apt-get install openssh-server openssh-client)")
    if os.geteuid() == 0:
        # sshd's privilege separation directory, which Debian's service unit creates at boot.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    return None


def keygen(path: Path) -> Path:
    """A new unencrypted ed25519 key pair at `path` (+ .pub)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lutnas-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sshd:
    """sshd on 127.0.0.1:`port` trusting `client_key`; `known_hosts` trusts its host key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(root / "host_key")
        self.client_key = keygen(root / "client_key")
        self.authorized_keys = root / "authorized_keys"
        shutil.copy(f"{self.client_key}.pub", self.authorized_keys)
        self.port = free_port()
        self.known_hosts = root / "known_hosts"
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"ssh:{self.user}@127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        # SHLVL=1: bash sources ~/.bashrc for a shell sshd starts at level 1 (Debian's
        # SSH_SOURCE_BASHRC); on these machines it runs `pyenv rehash`, and a session killed
        # mid-rehash (the drop and kill tests) leaves pyenv's lock file behind, after which every
        # later session waits 60 s for it. The tests measure lutnas, not the account's dotfiles.
        self.config.write_text("\n".join([
            "SetEnv SHLVL=1",
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}", "PidFile none",
            f"AuthorizedKeysFile {self.authorized_keys}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", f"AllowUsers {self.user}", "MaxStartups 100",
            "Subsystem sftp internal-sftp", "LogLevel INFO", ""]))

    def start(self) -> "Sshd":
        self._write_config()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited {self.process.returncode}: {self.log.read_text()[-800:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()[-800:]}")

    def kill(self) -> None:
        """Kill sshd and every process it forked (the sessions), as a crashed board would drop."""
        if self.process is None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self.process = None

    def drop_sessions(self) -> None:
        """Kill the open sessions but keep sshd listening: a dropped connection, not a dead board."""
        if self.process is not None:
            for pid in _descendants(self.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> "Sshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found by their parent pid in /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
