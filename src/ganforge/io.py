"""Small file and message helpers every part of ganforge shares.

- Atomic writes: a file is written under a hidden temporary name in its own folder, flushed to disk
  and renamed over the target, so a crash or a full disk leaves the old file or the new one, never
  half of one, and never a stray temporary file.
- :func:`first_line`: the one line of an exception that a user-facing message quotes.
- The typed metrics log: every row of ``metrics.jsonl`` says what it is (``kind``), and
  :func:`read_metrics` is the one reader that curves, summaries and reports share.
- :func:`display_path`: a path as text that any message can show, whatever bytes its name holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

_WRITE_CHUNK = 1 << 24


# ---- atomic writes ------------------------------------------------------------------------------

def fsync_dir(path: Path) -> None:
    """Persist a folder's entries (renames, creations); a no-op where the OS cannot do it."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; NTFS renames are journaled
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden, unique name beside `path` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}{suffix}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write `data` to `path` atomically: temporary file, fsync, rename, fsync the folder. Without
    `durable` the two fsyncs are skipped (still all or nothing for the processes that read it, but
    not across a power cut): for many small files written in a loop, such as a video's per-frame
    labels, where two fsyncs a file cost more than the work itself.

    Raw `os.write` (not a buffered file) so that ENOSPC and EIO surface here as OSError with an
    errno. On any failure the temporary file is removed and the target is untouched."""
    path = Path(path)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view[:_WRITE_CHUNK])
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    """UTF-8 text, written atomically; a path with bytes that are not UTF-8 (a file name from
    another system, carried as surrogates) is written back as its own bytes, never a crash."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"), durable)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """`obj` as indented, key-sorted JSON, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """For libraries that write files themselves (imageio, matplotlib, safetensors): yields a
    temporary path to write; on success it is fsynced and renamed to `path`, on failure removed.
    `suffix` (default: the target's) lets a writer pick its format from the name."""
    path = Path(path)
    tmp = temp_sibling(path, path.suffix if suffix is None else suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# ---- messages -------------------------------------------------------------------------------------

def first_line(err: BaseException, limit: int = 160, with_type: bool = False) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0][:limit]
    return f"{type(err).__name__}: {text}" if with_type else text


# ---- the typed metrics log --------------------------------------------------------------------------

KINDS = ("train", "eval", "event", "warning")  # what a row of metrics.jsonl records


def row_kind(row: dict) -> str:
    """A row's kind; rows written before kinds existed are recognised by their keys."""
    kind = row.get("kind")
    if kind in KINDS:
        return kind
    if "event" in row:
        return "event"
    if "warning" in row:
        return "warning"
    if "fid" in row or "map" in row:
        return "eval"
    return "train"


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """The rows of a metrics log (of one `kind` when given), each with its `kind` filled in. A line
    cut short by a crash is skipped, not fatal; a missing log reads as empty."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # a cut line, a number past Python's limit, or nesting
            continue
        if not isinstance(row, dict):
            continue
        row["kind"] = row_kind(row)
        if kind is None or row["kind"] == kind:
            rows.append(row)
    return rows


class MetricsLog:
    """Appends typed rows to ``metrics.jsonl``, one JSON object per line, flushed at once.

    Every row carries ``kind`` and ``step``; `train` rows hold a log window's means, `eval` rows
    scores, `event` rows what happened (``event``: resumed, rolled_back, skipped_nonfinite_step,
    ...), `warning` rows a message a person should read (``warning``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh: TextIO | None = None

    def __enter__(self) -> "MetricsLog":
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write(self, kind: str, step: int, **fields: Any) -> dict:
        if kind not in KINDS:
            raise ValueError(f"unknown metrics row kind {kind!r}")
        row = {"kind": kind, "step": int(step), **fields}
        line = json.dumps(row) + "\n"
        if self._fh is None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
        else:
            self._fh.write(line)
            self._fh.flush()
        return row

    def train(self, step: int, **values: Any) -> dict:
        return self.write("train", step, **values)

    def eval(self, step: int, **scores: Any) -> dict:
        return self.write("eval", step, **scores)

    def event(self, step: int, name: str, **fields: Any) -> dict:
        return self.write("event", step, event=name, **fields)

    def warning(self, step: int, message: str, **fields: Any) -> dict:
        return self.write("warning", step, warning=message, **fields)

    def truncate_after(self, step: int, partial: bool = False) -> None:
        """Drop rows written after `step` (a resume or rollback to the checkpoint at `step`), so the
        log has no rows of the steps that are about to be run again; with `partial`, also the train
        row at `step` itself (a log window cut short by the stop, which the resumed run completes)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) < step or (
            r.get("step", 0) == step and not (partial and r["kind"] == "train"))]
        reopen = self._fh is not None
        self.close()
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if reopen:
            self.__enter__()


# ---- paths in messages ----------------------------------------------------------------------------

def display_path(path: str | os.PathLike | bytes) -> str:
    """A path as printable text: bytes that are not UTF-8 (a folder or file name from another
    system) show as ``\\xNN`` escapes instead of breaking an encoder or a terminal."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def os_error_advice(err: OSError) -> str | None:
    """What to do about a file system error that a person caused by a path they gave ('a file where
    a folder goes'), or None when the cause is the disk (full, read-only, permissions, hardware)."""
    where = display_path(err.filename) if getattr(err, "filename", None) else "a path"
    if isinstance(err, FileExistsError) and os.path.isfile(err.filename or ""):
        return f"{where} is a file, where a folder is needed: give the path of a folder (new or existing)"
    if isinstance(err, NotADirectoryError):
        return f"{where}: part of this path is a file, not a folder: give a path made of folders"
    if isinstance(err, IsADirectoryError):
        return f"{where} is a folder, where a file is needed: give a file path"
    return None
