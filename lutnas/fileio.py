"""The one atomic-write helper: write to a temporary file beside the target, then rename.

An interrupted save (Ctrl-C, kill -9, full disk) never leaves half a table, predictor, checkpoint or
model behind: readers see the old file or the new one. `mkstemp` creates files readable by the owner
only; the result gets the mode any other tool would give it (0666 minus the umask), so a table meant
to be shared can be read by others on a shared machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask_mode() -> int:
    # os.umask can only be read by setting it; set it straight back (single-threaded at this point).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on normal exit it replaces `path`, else it is removed.

    The parent directory is created. Raises whatever the writer raised (the target is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _umask_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks). OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
