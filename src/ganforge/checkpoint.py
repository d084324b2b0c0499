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
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from ganforge.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
FORMAT_NAME = "ganforge-checkpoint"
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
MANIFEST_FILE = "MANIFEST.json"

_STEP_RE = re.compile(r"^step-(\d+)$")
# Hidden siblings: tmp = being built (or built, not yet swapped in), old = previous version being
# swapped out, del = being pruned. Only tmp/old can hold the one findable copy of a checkpoint.
_HIDDEN_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|del)-[0-9a-f]+$")
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}
_WRITE_CHUNK = 1 << 24
_RESUME_HINT = "resume with `ganforge train --resume RUN`"


# ----------------------------------------------------------------------------------------------
# Low-level atomic file operations


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames, creations); a no-op where the OS cannot do it."""
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS renames are journaled.
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    # Raw os.write (not a buffered file) so that ENOSPC/EIO surface here as OSError with an errno.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view[:_WRITE_CHUNK])
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _os_error_message(err: OSError, where: Path) -> str:
    """One line naming what went wrong on disk and how to continue."""
    # A training run keeps its checkpoints in RUN/checkpoints: name the run to resume.
    hint = (f"resume with `ganforge train --resume {where.parent.parent}`"
            if where.parent.name == "checkpoints" else _RESUME_HINT)
    if err.errno == errno.ENOSPC:
        return f"disk full while saving checkpoint to {where}: free some space and {hint}"
    if err.errno == getattr(errno, "EDQUOT", None):
        return f"disk full (quota exceeded) while saving checkpoint to {where}: free some space and {hint}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write checkpoint to {where} ({err.strerror}): check permissions of the run folder"
    reason = err.strerror or str(err) or type(err).__name__
    return f"could not write checkpoint to {where} ({reason}): check the disk and {hint}"


def _test_pause() -> None:
    """Test hook, off unless GANFORGE_TEST_SLOW_SAVE=SECONDS is set: sleep between the stages of a
    save, so reliability tests (tests/test_reliability.py, bench/soak.py) can land a kill or a
    signal inside a checkpoint write. Never set it in real runs."""
    delay = os.environ.get("GANFORGE_TEST_SLOW_SAVE")
    if delay:
        time.sleep(float(delay))


def _sha256(data: bytes) -> str:
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
        _write_bytes(directory / file_name, data)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "files": {n: {"sha256": _sha256(d), "bytes": len(d)} for n, d in blobs.items()},
        "step": step,
        "milestone": milestone,
    }
    _test_pause()
    _write_bytes(directory / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
    _fsync_dir(directory)
    _test_pause()  # committed under the hidden name, not yet renamed into place


def _swap_in(new: Path, final: Path) -> None:
    """Rename a committed ``new`` directory to ``final``, replacing any previous one."""
    if not os.path.lexists(final):
        os.replace(new, final)
        _fsync_dir(final.parent)
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
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(root: str | Path, name: str, tensors: dict[str, torch.Tensor], meta: dict,
                    *, keep_last: int = 2, milestone: bool = False) -> Path:
    """Atomically write checkpoint ``root/name`` (e.g. ``step-000000120`` or ``best``), then prune.

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
            raise CheckpointError(_os_error_message(err, final)) from err
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
            _fsync_dir(root)
        else:
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Finding and loading


def _read_manifest_quiet(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError):
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
        refuse_pickle(path)
        raise CheckpointError(
            f"{path} is not a ganforge checkpoint: pass the checkpoint folder that holds {MANIFEST_FILE}")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a complete ganforge checkpoint (no {MANIFEST_FILE}): "
                              "use an earlier checkpoint") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} has an unreadable manifest ({err}): use an earlier checkpoint") from None
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
        if len(data) != record.get("bytes") or _sha256(data) != record.get("sha256"):
            raise CheckpointError(f"checkpoint {path} is corrupt ({file_name} does not match its checksum): "
                                  "use an earlier checkpoint")
        blobs[file_name] = data

    try:
        doc = json.loads(blobs[META_FILE])
        tensors = safetensors.torch.load(blobs[TENSORS_FILE])
    except Exception as err:  # noqa: BLE001 - any parse failure means the checkpoint is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(err).__name__}): use an earlier checkpoint") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME or not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"checkpoint {path} has a malformed {META_FILE}: use an earlier checkpoint")
    _check_version(doc.get("version"), path)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, doc["meta"]


def load_latest(root: str | Path, *, device: str | torch.device = "cpu",
                log: Callable[[str], Any] = print) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """Load the newest step checkpoint that verifies, logging one line if newer ones are corrupt."""
    candidates = list_checkpoints(root)
    if not candidates:
        raise CheckpointError(f"no checkpoint in {root}: the run cannot be resumed; start a new run")
    skipped: list[tuple[Path, CheckpointError]] = []
    for path in reversed(candidates):
        try:
            tensors, meta = load_checkpoint(path, device=device)
        except CheckpointError as err:
            skipped.append((path, err))
            continue
        if skipped:
            names = ", ".join(p.name for p, _ in skipped)
            log(f"skipping corrupt checkpoint {names} ({skipped[0][1]}); resuming from {path.name}")
        return path, tensors, meta
    raise CheckpointError(f"none of the {len(candidates)} checkpoints in {root} verifies (newest: "
                          f"{skipped[0][1]}); the run cannot be resumed")


# ----------------------------------------------------------------------------------------------
# Refusing pickles


def refuse_pickle(path: str | Path) -> None:
    """Raise :class:`CheckpointError` if ``path`` is a pickle-based checkpoint (torch zip or raw pickle).

    Only the first bytes and the suffix are inspected; the file is never unpickled. Returns quietly
    for files that look like neither, so the caller can report them in its own words.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err}): check the path") from None
    is_zip = head.startswith(b"PK\x03\x04")  # torch.save's default container
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # PROTO opcode
    if is_zip or is_pickle or path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based checkpoint, which can run code when loaded; ganforge only loads "
            f"safetensors checkpoints (a folder with {MANIFEST_FILE}): convert it where you trust its origin")


def torch_load_weights_only(path: str | Path) -> Any:
    """Import plain weights saved with ``torch.save``, refusing anything beyond tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the restricted unpickler raises several types
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} holds more than plain weights, and loading it could run code "
                              f"({first_line[:160]}): refusing to load it") from None


# ----------------------------------------------------------------------------------------------
# Optimizer and RNG state <-> (tensors, JSON)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``value``; tensors go to ``tensors[key]``, tuples are tagged to come back."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"cannot store {key} in a checkpoint: dict keys must be strings")
        return {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store {key} ({type(value).__name__}) in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            if value["__tensor__"] not in tensors:
                raise CheckpointError(
                    f"checkpoint is missing tensor {value['__tensor__']!r}: use an earlier checkpoint")
            return tensors[value["__tensor__"]]
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def pack_optimizer(state_dict: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors named ``prefix.state.<idx>.<key>`` and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    state = {str(idx): _encode(per_param, f"{prefix}.state.{idx}", tensors)
             for idx, per_param in state_dict["state"].items()}
    groups = _encode(state_dict["param_groups"], f"{prefix}.param_groups", tensors)
    return tensors, {"state": state, "param_groups": groups}


def unpack_optimizer(tensors: dict[str, torch.Tensor], meta_part: dict, prefix: str) -> dict:
    """Inverse of :func:`pack_optimizer`: a dict for ``optimizer.load_state_dict``."""
    del prefix  # Tensor names are recorded in meta_part; the prefix only shaped them when packing.
    # JSON turned the integer parameter ids into strings; torch matches them as ints.
    state = {int(idx): _decode(per_param, tensors) for idx, per_param in meta_part["state"].items()}
    return {"state": state, "param_groups": _decode(meta_part["param_groups"], tensors)}


def capture_rng(cuda: bool | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Python, NumPy, torch CPU and (if ``cuda``, default: when available) CUDA RNG states."""
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors = {"rng.torch": torch.get_rng_state()}
    use_cuda = torch.cuda.is_available() if cuda is None else cuda and torch.cuda.is_available()
    cuda_states = torch.cuda.get_rng_state_all() if use_cuda else []
    for i, device_state in enumerate(cuda_states):
        tensors[f"rng.cuda.{i}"] = device_state
    meta = {
        "python": [version, list(internal), gauss_next],
        "numpy": [bit_generator, keys.tolist(), pos, has_gauss, cached_gaussian],
        "cuda_devices": len(cuda_states),
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta_part: dict) -> None:
    """Restore what :func:`capture_rng` captured (CUDA: as many devices as both runs have)."""
    version, internal, gauss_next = meta_part["python"]
    random.setstate((version, tuple(internal), gauss_next))
    bit_generator, keys, pos, has_gauss, cached_gaussian = meta_part["numpy"]
    np.random.set_state((bit_generator, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(tensors["rng.torch"].to("cpu", torch.uint8))
    saved = meta_part.get("cuda_devices", 0)
    if saved and torch.cuda.is_available():
        for i in range(min(saved, torch.cuda.device_count())):
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"].to("cpu", torch.uint8), i)
