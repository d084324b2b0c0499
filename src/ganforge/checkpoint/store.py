"""Checkpoints: one self-describing folder per snapshot, written atomically, loaded without pickle.

A checkpoint is a directory::

    step-000000120/
      tensors.safetensors   every tensor, flat string keys
      meta.json             everything else (config, counters, optimizer groups, RNG state)
      MANIFEST.json         sha256 + size of the two files above; written last

The manifest is the commit mark: a folder without a parseable manifest is not a checkpoint. A
checkpoint is built under a hidden temporary name (``.NAME.tmp-TOKEN``) and renamed into place once
its manifest is on disk, so a crash at any instant leaves either the previous or the new complete
checkpoint findable. Replacing an existing name goes through ``.NAME.old-TOKEN``; readers resolve
those half-swapped states and the next save tidies them. One process writes a given root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ganforge.documents import loads_json
from ganforge.errors import CheckpointError, ConfigError
from ganforge.io import atomic_write_bytes, fsync_dir

# 2: named-module state (checkpoint/state.py); version-1 checkpoints still load and resume.
FORMAT_VERSION = 2
FORMAT_NAME = "ganforge-checkpoint"
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
MANIFEST_FILE = "MANIFEST.json"

_DAMAGED = "the checkpoint is damaged; use an earlier checkpoint"
_STEP_RE = re.compile(r"^step-(\d+)$")
# Hidden siblings: tmp = being built (or built, not yet swapped in), old = previous version being
# swapped out, del = being pruned. Only tmp/old can hold the one findable copy of a checkpoint.
_HIDDEN_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|del)-[0-9a-f]+$")
_RESUME_HINT = "continue the run from its last checkpoint with --resume"
_SETTLE_TRIES = 3  # looks at a checkpoints folder before a failing checkpoint is called corrupt
_SETTLE_SECONDS = 0.2


# ----------------------------------------------------------------------------------------------
# Disk errors and test hooks


def _os_error_message(err: OSError, where: Path, hint: str | None) -> str:
    """One line naming what went wrong on disk and how to continue (`hint`: what the caller knows
    will work, e.g. the resume command of its run)."""
    hint = hint or _RESUME_HINT  # the run layer passes the exact command
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        quota = " (quota exceeded)" if err.errno != errno.ENOSPC else ""
        return f"disk full{quota} while saving checkpoint to {where}: free some space and {hint}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write checkpoint to {where} ({err.strerror}): check permissions of the run folder"
    reason = err.strerror or str(err) or type(err).__name__
    return f"could not write checkpoint to {where} ({reason}): check the disk and {hint}"


def _test_pause() -> None:
    """Test hook, off unless GANFORGE_TEST_SLOW_SAVE=SECONDS is set: sleep between the stages of a
    save, so reliability tests (tests/runs/test_reliability.py, bench/soak.py) can land a kill or a
    signal inside a checkpoint write. Never set it in real runs."""
    delay = os.environ.get("GANFORGE_TEST_SLOW_SAVE")
    if delay:
        time.sleep(float(delay))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Saving


def _prepare_tensors(name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate and turn tensors into contiguous, unshared CPU tensors safetensors accepts."""
    out: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"cannot save checkpoint {name}: entry {key!r} is not a str -> Tensor pair")
        t = tensor.detach()
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"refusing to save checkpoint {name}: tensor '{key}' holds NaN or Inf (training "
                "diverged); lower the learning rate or resume from the previous checkpoint")
        t = t.to("cpu").contiguous()
        storage = t.untyped_storage()
        # safetensors rejects tensors that share memory (tied weights, views); copies are cheap here.
        if storage.data_ptr() in seen_storages or storage.nbytes() != t.nbytes:
            t = t.clone()
        seen_storages.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _serialize(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, bytes]:
    """The bytes of tensors.safetensors and meta.json, built before anything touches the disk."""
    try:
        meta_json = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": meta}, indent=1)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"cannot save checkpoint {name}: meta is not JSON-serialisable ({err})") from None
    return {
        TENSORS_FILE: safetensors.torch.save(_prepare_tensors(name, tensors), metadata={
            "format": FORMAT_NAME, "version": str(FORMAT_VERSION)}),
        META_FILE: meta_json.encode(),
    }


def _write_checkpoint_dir(directory: Path, blobs: dict[str, bytes], step: int | None,
                          milestone: bool) -> None:
    """Fill an empty directory with the blobs and, last, the manifest that commits them."""
    for file_name, data in blobs.items():
        _test_pause()
        atomic_write_bytes(directory / file_name, data)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "files": {n: {"sha256": sha256_hex(d), "bytes": len(d)} for n, d in blobs.items()},
                "step": step, "milestone": milestone}
    _test_pause()
    atomic_write_bytes(directory / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    fsync_dir(directory)
    _test_pause()  # committed under the hidden name, not yet renamed into place


def _swap_in(new: Path, final: Path) -> None:
    """Rename a committed ``new`` directory to ``final``, replacing any previous one."""
    if not os.path.lexists(final):
        os.replace(new, final)
        fsync_dir(final.parent)
        return
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        try:
            os.replace(old, final)
        except OSError:
            pass  # Half-swapped: readers and the next save resolve `old`/`new` by name.
        raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(root: str | Path, name: str, tensors: dict[str, torch.Tensor], meta: dict,
                    *, keep_last: int = 2, milestone: bool = False, hint: str | None = None) -> Path:
    """Atomically write checkpoint ``root/name`` (e.g. ``step-000000120`` or ``best``), then prune.
    `hint` ends a disk error's message: how to continue.

    Tensors are copied to contiguous CPU tensors; a floating tensor holding NaN/Inf is refused.
    An existing checkpoint of the same name is replaced so that the old or the new one is always
    findable. Milestones and non-step names are never pruned; of the other ``step-*`` checkpoints
    only the newest ``keep_last`` survive, pruned after the new one has committed. Disk errors become
    a one-line :class:`CheckpointError`, leaving older checkpoints intact.
    """
    root = Path(root)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise CheckpointError(
            f"invalid checkpoint name {name!r}: use a plain name like 'step-000000120' or 'best'")
    if keep_last < 1:
        raise ConfigError(f"keep_last must be >= 1, got {keep_last}: keep at least the newest checkpoint")
    match = _STEP_RE.match(name)
    step = meta.get("step", int(match.group(1)) if match else None)
    blobs = _serialize(name, tensors, meta)

    final = root / name
    tmp = root / f".{name}.tmp-{secrets.token_hex(4)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _recover(root)
        tmp.mkdir()
        _write_checkpoint_dir(tmp, blobs, step, milestone)
        _swap_in(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(_os_error_message(err, final, hint)) from err
        raise
    _prune(root, keep_last, protect=final, protect_counts=bool(match) and not milestone)
    return final


def _prune(root: Path, keep_last: int, protect: Path, protect_counts: bool) -> None:
    """Delete all but the newest ``keep_last`` non-milestone step checkpoints (never ``protect``,
    which takes one of the ``keep_last`` places when ``protect_counts``)."""
    prunable = [p for p in list_checkpoints(root)
                if p.parent == root and p != protect and not _read_manifest_quiet(p).get("milestone")]
    keep_others = keep_last - 1 if protect_counts else keep_last
    doomed = prunable[:max(len(prunable) - keep_others, 0)]
    for path in doomed:
        # Rename first so a half-deleted folder is never mistaken for a (corrupt) checkpoint.
        trash = path.with_name(f".{path.name}.del-{secrets.token_hex(4)}")
        try:
            os.replace(path, trash)
        except OSError:
            continue  # Pruning is housekeeping; the next save tries again.
        shutil.rmtree(trash, ignore_errors=True)


def _recover(root: Path) -> None:
    """Finish or undo interrupted swaps and delete leftovers of interrupted saves and prunes."""
    hidden = [(m, root / m.string) for m in map(_HIDDEN_RE.match, os.listdir(root)) if m]
    # Committed new copies first: they are newer than any `old` copy of the same name.
    for match, path in sorted(hidden, key=lambda mp: {"tmp": 0, "old": 1, "del": 2}[mp[0]["kind"]]):
        final = root / match["name"]
        if match["kind"] != "del" and not os.path.lexists(final) and _is_committed(path):
            os.replace(path, final)
            fsync_dir(root)
        else:
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Finding and loading


def _read_manifest_quiet(directory: Path) -> dict:
    try:
        manifest = loads_json((directory / MANIFEST_FILE).read_bytes(), MANIFEST_FILE, CheckpointError)
    except (OSError, CheckpointError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _is_committed(directory: Path) -> bool:
    return _read_manifest_quiet(directory).get("format") == FORMAT_NAME


def _resolve_half_swapped(path: Path) -> Path | None:
    """A checkpoint missing under its name may sit under a hidden tmp/old name mid-swap."""
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return None
    by_kind: dict[str, Path] = {}
    for match in filter(None, map(_HIDDEN_RE.match, entries)):
        candidate = path.parent / match.string
        if match["name"] == path.name and match["kind"] != "del" and _is_committed(candidate):
            by_kind.setdefault(match["kind"], candidate)
    return by_kind.get("tmp") or by_kind.get("old")


def list_checkpoints(root: str | Path) -> list[Path]:
    """Committed ``step-*`` checkpoints under ``root``, oldest to newest by step (not verified)."""
    root = Path(root)
    try:
        entries = os.listdir(root)
    except OSError:
        return []
    found: dict[str, Path] = {}
    for entry in entries:
        if _STEP_RE.match(entry) and (root / entry / MANIFEST_FILE).is_file():
            found[entry] = root / entry
    for match in filter(None, map(_HIDDEN_RE.match, entries)):
        name = match["name"]
        if _STEP_RE.match(name) and name not in found:
            resolved = None if os.path.lexists(root / name) else _resolve_half_swapped(root / name)
            # A concurrent save may have renamed it into place since the listing above.
            if resolved is None and (root / name / MANIFEST_FILE).is_file():
                resolved = root / name
            if resolved is not None:
                found[name] = resolved
    return [found[n] for n in sorted(found, key=lambda n: int(_STEP_RE.match(n).group(1)))]


def _check_version(version: Any, where: Path) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"checkpoint {where} has an unknown format version {version!r}: "
                              "it was not written by ganforge")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {where} was made by a newer ganforge (format {version} > "
                              f"{FORMAT_VERSION}): upgrade ganforge")


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Verify and load a checkpoint folder; returns ``(tensors, meta)``.

    Every file's size and sha256 must match the manifest, and the format version must be one this
    ganforge knows. Tensors load through safetensors and meta through json: nothing is unpickled.
    """
    path = Path(path)
    if not os.path.lexists(path):
        resolved = _resolve_half_swapped(path)
        if resolved is None:
            raise CheckpointError(
                f"no checkpoint at {path}: check the path or list the run's checkpoints folder")
        path = resolved
    if not path.is_dir():
        from ganforge.checkpoint.pickles import refuse_pickle

        refuse_pickle(path)
        raise CheckpointError(
            f"{path} is not a ganforge checkpoint: pass the checkpoint folder that holds {MANIFEST_FILE}")
    try:
        raw = (path / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a complete ganforge checkpoint (no {MANIFEST_FILE}): "
                              "use an earlier checkpoint") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable manifest ({err}): {_DAMAGED}") from None
    manifest = loads_json(raw, f"checkpoint {path}: its {MANIFEST_FILE}", CheckpointError, _DAMAGED)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is not a ganforge checkpoint (unknown manifest): use an earlier checkpoint")
    _check_version(manifest.get("version"), path)

    files = manifest.get("files")
    if not isinstance(files, dict) or not {TENSORS_FILE, META_FILE} <= files.keys():
        raise CheckpointError(f"checkpoint {path} has an incomplete manifest: use an earlier checkpoint")
    blobs: dict[str, bytes] = {}
    for file_name, record in files.items():
        # The manifest is untrusted input: only plain names inside the folder are ever opened.
        if file_name not in (TENSORS_FILE, META_FILE) or not isinstance(record, dict):
            raise CheckpointError(
                f"checkpoint {path} lists an unexpected file {file_name!r}: refusing to load it")
        try:
            data = (path / file_name).read_bytes()
        except OSError as err:
            raise CheckpointError(f"checkpoint {path} is corrupt ({file_name}: {err.strerror or err}): "
                                  "use an earlier checkpoint") from None
        if len(data) != record.get("bytes") or sha256_hex(data) != record.get("sha256"):
            raise CheckpointError(f"checkpoint {path} is corrupt ({file_name} does not match its checksum): "
                                  "use an earlier checkpoint")
        blobs[file_name] = data

    try:
        doc = loads_json(blobs[META_FILE], f"checkpoint {path}: its {META_FILE}", CheckpointError, _DAMAGED)
        tensors = safetensors.torch.load(blobs[TENSORS_FILE])
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure means the checkpoint is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(err).__name__}): use an earlier checkpoint") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME or not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"checkpoint {path} has a malformed {META_FILE}: use an earlier checkpoint")
    _check_version(doc.get("version"), path)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, doc["meta"]


def load_latest(root: str | Path, *, device: str | torch.device = "cpu", log: Callable[[str], Any] = print,
                check: Callable[[dict], None] | None = None, purpose: str = "resuming from"
                ) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """Load the newest step checkpoint that verifies (and whose meta passes `check`, which raises
    CheckpointError for a malformed one), logging one line if newer ones are corrupt.

    Readers take no lock, so a checkpoint may be renamed into place or pruned while they read: a
    checkpoint that failed is only called corrupt when it still fails after the folder has
    settled, and one that vanished meanwhile was pruned, not corrupt. `purpose` words the message
    ("resuming from" for training, "using" for sample and eval)."""
    for attempt in range(_SETTLE_TRIES):
        candidates, skipped = list_checkpoints(root), []
        found = None
        for path in reversed(candidates):
            try:
                tensors, meta = load_checkpoint(path, device=device)
                if check is not None:
                    check(meta)
            except CheckpointError as err:
                if os.path.lexists(path):  # else it was pruned while we read it: not corrupt
                    skipped.append((path, err))
                continue
            found = (path, tensors, meta)
            break
        last = attempt + 1 == _SETTLE_TRIES
        if found is not None and (not skipped or last):
            if skipped:
                names = ", ".join(p.name for p, _ in skipped)
                log(f"skipping corrupt checkpoint {names} ({skipped[0][1]}); {purpose} {found[0].name}")
            return found
        if not candidates or last:
            break
        time.sleep(_SETTLE_SECONDS)  # a save or a prune in flight: look again before calling anything corrupt
    if not candidates:
        # A step folder without its manifest is a damaged checkpoint, not one still to come.
        damaged = sorted(e for e in (os.listdir(root) if os.path.isdir(root) else []) if _STEP_RE.match(e))
        what = (f"{', '.join(damaged)} has no readable {MANIFEST_FILE}: it is damaged (a partial copy?)"
                if damaged else "the run cannot be resumed; start a new run" if purpose.startswith("resuming")
                else "the run has not saved one yet: wait for its first checkpoint")
        raise CheckpointError(f"no checkpoint in {root}: {what}")
    use = "resumed" if purpose.startswith("resuming") else "used"
    raise CheckpointError(f"none of the {len(candidates)} checkpoints in {root} verifies (newest: "
                          f"{skipped[0][1] if skipped else 'unreadable'}); the run cannot be {use}")
