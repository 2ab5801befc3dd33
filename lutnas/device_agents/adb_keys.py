"""The host's ADB RSA key pair: the same `~/.android/adbkey` the stock adb uses, so a phone that
already trusts this computer's adb trusts lutnas too."""

from __future__ import annotations

import os
from pathlib import Path

from lutnas.errors import BadInputError

KEY_ENV = "LUTNAS_ADB_KEY"


def key_path(override: Path | None = None) -> Path:
    """AgentOptions.adb_key, else $LUTNAS_ADB_KEY, else ~/.android/adbkey (tests set the env var)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    return Path.home() / ".android" / "adbkey"


def load_signer(path: Path):
    """A signer for adb-shell; the key pair is created (private key 0600) when it is missing."""
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file 0600 before any key byte is written to it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        keygen(str(path))
        os.chmod(path, 0o600)
    if not Path(f"{path}.pub").exists():
        from adb_shell.auth.keygen import write_public_keyfile

        write_public_keyfile(str(path), f"{path}.pub")
    try:
        return PythonRSASigner.FromRSAKeyPath(str(path))
    except Exception as exc:  # noqa: BLE001 - rsa/pyasn1 raise many types for a bad file
        raise BadInputError(f"cannot read the ADB key {path} ({exc}); move it away and lutnas will "
                            f"create a new one (the phone will ask to allow it)") from exc
