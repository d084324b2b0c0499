"""The run folder: the full record of one run. It is checked before any slow setup and created
after it, so bad input leaves nothing behind."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ganforge import __version__
from ganforge.config import Config
from ganforge.errors import ConfigError
from ganforge.io import display_path, write_json
from ganforge.runs.lock import LOCK_NAME, RunLock


MARKER = ".ganforge-run"  # written into every run folder ganforge makes: what --force may replace


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def is_run_folder(path: Path) -> bool:
    """Whether ganforge made `path` as a run folder (its marker; or, for runs made before markers
    existed, a config.json beside a metrics log or a checkpoints folder)."""
    if (path / MARKER).is_file():
        return True
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested past Python's limit
        return False
    return isinstance(config, dict) and "recipe" in config and (
        (path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir())


class RunFolder:
    """The run folder: the full record of one run (config, log, pictures, checkpoints, summary)."""

    def __init__(self, path: str | os.PathLike, outputs: tuple[str, ...] = ("samples", "checkpoints"),
                 command: str = "ganforge train") -> None:
        self.path = Path(path)
        self.outputs = outputs  # sub-folders the run writes into
        self.command = command  # the command that makes and resumes this kind of run, for messages
        self.lock = RunLock(self.path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")

    def _contents(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.name != LOCK_NAME) if self.path.is_dir() else []

    def check_new(self, force: bool, protect: tuple[Path, ...] = (), scanned: tuple[Path, ...] = ()) -> None:
        """Refuse a run folder inside a data folder the run reads images from (`scanned`: its
        pictures would become training data), refuse to overwrite an existing run unless `force`,
        and refuse what `--force` must never delete: a folder ganforge did not make, the current
        folder, a home folder, a parent of either, or the data being trained on (`protect`).
        Checked before any slow setup."""
        where = display_path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {where} is a file: choose a folder path")
        target = self.path.resolve()
        for p in scanned:
            if _within(target, Path(p).resolve()):
                raise ConfigError(f"--out {where} lies inside the data being trained on ({display_path(p)}): "
                                  "choose a run folder outside it; nothing was written")
        if not self._contents():
            return
        self.lock.check_free()  # a writer at work (a --force half-way through) is "in use", not foreign
        if not force:
            raise ConfigError(f"run folder {where} already exists: continue it with `{self.command} --resume "
                              f"{shlex.quote(where)}`, or pass --force to overwrite it")
        for keep, what in [(Path.cwd().resolve(), "the current folder"), (Path.home().resolve(), "your home folder"),
                           *((Path(p).resolve(), "the data being trained on") for p in protect)]:
            if _within(keep, target):
                raise ConfigError(f"--force would delete {what} ({display_path(keep)}): --out must name a run "
                                  "folder of its own; nothing was deleted")
        if not is_run_folder(self.path):
            first = display_path(self._contents()[0].name)
            raise ConfigError(f"--out {where} holds files that ganforge did not write (first: {first}): "
                              "--force only replaces a run folder; choose another --out. Nothing was deleted")

    def prepare(self, force: bool, protect: tuple[Path, ...] = (), scanned: tuple[Path, ...] = ()) -> None:
        """Lock the run folder and create it (after data and models loaded, so bad input leaves
        nothing behind); with `force`, the previous run in it is deleted first. The lock is held
        until `release()`: a second writer is refused with the holder's PID."""
        self.check_new(force, protect, scanned)
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
            self.check_new(force, protect, scanned)  # again, under the lock: another process may have been first
        except BaseException:
            self.lock.release()
            if created and not self._contents():
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        # A previous run's files (force). The marker goes last, so that a run killed half-way through
        # this is still a run folder that --force may replace. The lock file stays, held.
        for item in sorted(self._contents(), key=lambda p: p.name == MARKER):
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        write_json(self.path / MARKER, {"format": "ganforge-run", "ganforge_version": __version__})
        self.ensure_outputs()

    def open_existing(self) -> None:
        """Lock an existing run folder to continue it (resume), before anything in it is read."""
        where = display_path(self.path)
        if not self.path.exists():
            raise ConfigError(f"cannot resume: {where} does not exist")
        if not self.path.is_dir():
            raise ConfigError(f"cannot resume: {where} is a file, not a run folder: give the run's folder")
        if not is_run_folder(self.path) and not self.checkpoints.is_dir():
            raise ConfigError(f"cannot resume: {where} is not a ganforge run folder (no config.json or "
                              f"checkpoints/): give the folder that `{self.command} --out` wrote")
        self.lock.acquire()
        self.ensure_outputs()

    def release(self) -> None:
        self.lock.release()

    def ensure_outputs(self) -> None:
        """Create any missing output folder (a resumed run whose samples/ was deleted goes on)."""
        for name in self.outputs:
            (self.path / name).mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: Config) -> None:
        write_json(self.config, cfg.to_dict())

    def is_finished(self) -> bool:
        """Whether summary.json records a finished run (a missing or unreadable one does not)."""
        try:
            return json.loads(self.summary.read_text()).get("finished") is True
        except (OSError, ValueError, AttributeError, RecursionError):
            return False

    def write_summary(self, task: str, status: str, *, outputs: Callable[[], None] | None = None,
                      **fields: Any) -> dict:
        """Write summary.json. With `outputs` (the end-of-run GIF, plots and report, which read the
        summary), the summary is written twice: before them with `finished` false, and again once
        they exist, so a run killed while writing them is not taken for a finished one."""
        summary = {"task": task, "status": status, "finished": status == "finished", **fields,
                   "ganforge_version": __version__}
        if outputs is not None:
            write_json(self.summary, {**summary, "finished": False})
            outputs()
        write_json(self.summary, summary)
        return summary
