"""Where a command writes its results, checked so that no output destroys an input.

Every command that writes files (``detect predict``, ``sample``, ``explore``, ``report``, ``eval``,
``detect val``, and any added later) goes through this module. It knows no task. The rules:

1. Never write into or over the command's own input: the source files and folders, and the entries
   of a run folder being read (its config, log, summary, checkpoints, pictures). Paths are compared
   by identity (``os.path.samefile``), so a symlink, a hard link or a name that differs only in case
   on a case-insensitive disk is the same input.
2. Never overwrite a file ganforge did not make. An output folder carries a marker file
   (``.ganforge-output``) listing what it holds; a folder with files and no marker is not ganforge's.
   A single output file (a report page, a JSON result) is recognised by its content (``ours``).
3. ``--force`` follows ``train --force``: it replaces a previous output folder of the same command
   (only the files its marker lists are deleted) or an output file, and never lifts rule 1 or lets a
   command write into a folder of files that ganforge did not make.
4. Two outputs never share a name: :func:`distinct_stems` gives clashing sources distinct result
   names, and :meth:`OutputFolder.target` refuses a name it already gave out (case-insensitively).

Each refusal is one :class:`~ganforge.errors.ConfigError` line that says what was refused and that
nothing was written. Use:

    out = OutputFolder(args.out, "detect predict", inputs=[source, *run_record(run)], force=args.force)
    out.check()                 # before slow setup: bad --out costs nothing
    out.open()                  # creates the folder (with --force: deletes the previous outputs)
    path = out.target("a.png")  # a checked path to write; its name is recorded first
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

from ganforge.errors import ConfigError
from ganforge.io import display_path

MARKER = ".ganforge-output"  # in every output folder ganforge makes: a JSON header, then one name a line


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies inside it, following symlinks on the way. Checked by
    identity, walking up `path`'s existing ancestors (so a new output inside an input counts)."""
    path = Path(os.path.abspath(path))
    return any(_same(p, folder) for p in (path, *path.parents))


def run_record(run_dir: str | os.PathLike, own: Iterable[str] = ()) -> list[Path]:
    """The entries of a run folder that a command reading the run must never write over: every
    entry but the command's own outputs there (`own`, e.g. ``report.html``, ``explore``)."""
    run = Path(run_dir)
    keep = {name.casefold() for name in own}
    if not run.is_dir():
        return []
    return [p for p in run.iterdir() if p.name.casefold() not in keep]


def _refuse_input(path: Path, inputs: Sequence[Path], flag: str) -> None:
    for src in map(Path, inputs):
        if _same(path, src) or src.is_dir() and _within(path, src):
            raise ConfigError(f"{flag} {display_path(path)} would write into this command's own input "
                              f"{display_path(src)}: choose an {flag} outside it; nothing was written")


def check_file(path: str | os.PathLike, *, inputs: Sequence[Path] = (), force: bool = False,
               ours: Callable[[Path], bool] = lambda p: False, flag: str = "--out") -> Path:
    """Check one output file before anything slow: refuse an input (or a path inside one), a
    folder, and an existing file that `ours` does not recognise as ganforge's (unless `force`)."""
    path = Path(path)
    _refuse_input(path, inputs, flag)
    if path.is_dir():
        raise ConfigError(f"{flag} {display_path(path)} is a folder: name a file; nothing was written")
    if (path.exists() or path.is_symlink()) and not force and not is_ours(path, ours):
        raise ConfigError(f"{flag} {display_path(path)} exists and ganforge did not write it: pass --force to "
                          f"replace it, or choose another {flag}; nothing was written")
    return path


def is_ours(path: Path, ours: Callable[[Path], bool]) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return bool(ours(path))
    except (OSError, ValueError):
        return False


def starts_with(*signatures: bytes, within: int = 4096) -> Callable[[Path], bool]:
    """An `ours` test: the file's first `within` bytes hold one of `signatures`."""
    def test(path: Path) -> bool:
        with open(path, "rb") as fh:
            head = fh.read(within)
        return any(s in head for s in signatures)
    return test


def json_with(*keys: str, within: int = 1 << 20) -> Callable[[Path], bool]:
    """An `ours` test: the file is a JSON object (under `within` bytes) with all of `keys`."""
    def test(path: Path) -> bool:
        if path.stat().st_size > within:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(doc, dict) and all(k in doc for k in keys)
    return test


def distinct_stems(files: Sequence[Path]) -> list[str]:
    """A result name per source file, distinct even where names differ only in case: the stem
    (``a`` for ``a.jpg``) where no other source shares it, else the whole name (``a.jpg``), and
    a ``-2``, ``-3`` suffix where even that is shared."""
    stems = [Path(f).stem for f in files]
    count: dict[str, int] = {}
    for s in stems:
        count[s.casefold()] = count.get(s.casefold(), 0) + 1
    wanted = [s if count[s.casefold()] == 1 else Path(f).name for s, f in zip(stems, files)]
    taken: set[str] = set()
    out = []
    for name in wanted:
        final, k = name, 1
        while final.casefold() in taken:
            k += 1
            final = f"{name}-{k}"
        taken.add(final.casefold())
        out.append(final)
    return out


class OutputFolder:
    """A folder of one command's results (see the module's rules)."""

    def __init__(self, path: str | os.PathLike, command: str, *, inputs: Sequence[Path] = (),
                 force: bool = False, flag: str = "--out") -> None:
        self.path = Path(path)
        self.command = command  # e.g. "detect predict": the marker records it, messages name it
        self.inputs = [Path(p) for p in inputs]
        self.force = force
        self.flag = flag
        self._given: dict[str, str] = {}  # casefolded name -> name, given out by target()

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def listed(self) -> list[str] | None:
        """The names the marker lists (None: no readable marker, not an output folder of ganforge)."""
        try:
            lines = self.marker.read_text(encoding="utf-8").splitlines()
            head = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not isinstance(head, dict) or head.get("format") != "ganforge-output":
            return None
        return [line for line in lines[1:] if line]

    def adopt(self, made: Callable[[str], bool]) -> None:
        """Take a folder from before markers existed as this command's: when it has no marker and
        every file in it (a relative ``/`` name) is one `made` says the command writes, and none is
        a symlink, its marker is written listing them. Otherwise nothing changes."""
        if not self.path.is_dir() or self.path.is_symlink() or self.marker.exists():
            return
        names = []
        for root, dirs, files in os.walk(self.path):
            for entry in dirs + files:
                if os.path.islink(os.path.join(root, entry)):
                    return
            names += [Path(root, f).relative_to(self.path).as_posix() for f in files]
        if names and all(made(name) for name in names):
            head = json.dumps({"format": "ganforge-output", "command": self.command})
            self.marker.write_text("\n".join([head, *sorted(names)]) + "\n", encoding="utf-8")

    def check(self) -> OutputFolder:
        """Refuse an input, a file, a folder of files ganforge did not make, and (without --force)
        a previous output folder. Nothing is written."""
        where = display_path(self.path)
        _refuse_input(self.path, self.inputs, self.flag)
        for src in self.inputs:  # a folder input inside the output: --force could reach it
            if Path(src).is_dir() and self.path.is_dir() and _within(src, self.path) and not _same(src, self.path):
                raise ConfigError(f"{self.flag} {where} holds this command's input {display_path(src)}: choose an "
                                  f"{self.flag} of its own; nothing was written")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.flag} {where} is a file: name a folder; nothing was written")
        try:
            contents = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        except OSError as err:
            raise ConfigError(f"cannot read {self.flag} {where}: {err.strerror or err}: choose another "
                              f"{self.flag}") from None
        if not contents:
            return self
        listed = self.listed()
        if listed is None:
            raise ConfigError(f"{self.flag} {where} holds files that ganforge did not write (first: "
                              f"{display_path(contents[0])}): choose a new or empty {self.flag}; nothing was written")
        if not self.force:
            raise ConfigError(f"{self.flag} {where} holds earlier results: pass --force to replace them, or "
                              f"choose another {self.flag}; nothing was written")
        return self

    def open(self) -> OutputFolder:
        """Check again, create the folder and its marker; with --force, first delete the files the
        previous marker lists (and folders they leave empty), nothing else: a listed name that
        leads out of the folder (``..``, a symlinked sub-folder) or to an input is left alone."""
        self.check()
        root = self.path.resolve() if self.path.is_dir() else None
        for name in self.listed() or []:
            path = self.path / name
            parent = Path(os.path.realpath(path.parent))
            if root is None or not (parent == root or root in parent.parents) or not self._inside(path):
                continue
            if not (path.is_file() or path.is_symlink()) or any(_same(path, src) for src in self.inputs):
                continue
            path.unlink()
            for folder in path.parents:
                if folder == self.path or not self._inside(folder):
                    break
                try:
                    folder.rmdir()
                except OSError:
                    break
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            head = json.dumps({"format": "ganforge-output", "command": self.command})
            self.marker.write_text(head + "\n", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot write into {self.flag} {display_path(self.path)}: {err.strerror or err}: "
                              f"choose a writable {self.flag}") from None
        return self

    def _inside(self, path: Path) -> bool:
        return os.path.normpath(path).startswith(os.path.normpath(self.path) + os.sep)

    def target(self, name: str) -> Path:
        """The path to write result `name` (may hold ``/`` for a sub-folder), after checking that
        the name is new in this folder and is no input, and recording it in the marker first (so a
        command killed half-way leaves a folder whose files --force may replace)."""
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.name == MARKER:
            raise ValueError(f"bad output name {name!r}")
        key = rel.as_posix().casefold()
        path = self.path.joinpath(*rel.parts)
        if key in self._given:
            raise ConfigError(f"two results of this {self.command} would both be named {display_path(name)}: "
                              "rename one of the inputs; the first was not overwritten")
        _refuse_input(path, self.inputs, self.flag)
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{display_path(path)} exists and ganforge did not write it: choose a new or "
                              f"empty {self.flag}; it was not overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_input(path.parent, self.inputs, self.flag)  # a sub-folder symlinked into an input
        self._given[key] = name
        with open(self.marker, "a", encoding="utf-8") as fh:
            fh.write(rel.as_posix() + "\n")
        return path

    def remove(self) -> None:
        """Delete the folder if this command wrote nothing into it (bad input found late)."""
        if not self._given and self.path.is_dir() and [p.name for p in self.path.iterdir()] == [MARKER]:
            shutil.rmtree(self.path, ignore_errors=True)
