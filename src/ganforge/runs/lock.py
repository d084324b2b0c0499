"""One writer per run folder: an OS lock (`flock` on ``RUN/.lock``) that a training process holds for
as long as it writes the run, and that dies with the process, so a crash or a `kill -9` never
leaves a stale lock. Readers (`sample`, `eval`, `report`) take no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from ganforge.errors import ConfigError
from ganforge.io import display_path

try:
    import fcntl
except ImportError:  # not POSIX: no OS lock (documented in docs/RELIABILITY.md)
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """`acquire()` or refuse with one line naming the process that holds the run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check_free(self) -> None:
        """Refuse, as `acquire` would, when another process holds the lock now; take nothing. Lets
        an early check say "in use" rather than judge a folder that its writer is half-way through."""
        if self._fd is not None or fcntl is None or not self.path.is_file():
            return
        self.acquire()
        self.release()

    def acquire(self) -> "RunLock":
        if self._fd is not None or fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else holder
            raise ConfigError(f"run folder {display_path(self.folder)} is in use by {who}, which is writing it: "
                              "wait for it to finish or stop it (Ctrl-C saves a checkpoint), then try again"
                              ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk: the lock still ends with the descriptor
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
