"""CIFAR-10 and CIFAR-100 from the official python tarballs.

The batches inside are pickles, and unpickling can run arbitrary code, so they are read with an
unpickler that can only rebuild numpy arrays. The tarball is extracted by hand, member by member,
after every member has been checked: an archive can write nowhere but under `root`.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ganforge.data import download
from ganforge.errors import DataError
from ganforge.io import atomic_writer, display_path, first_line


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and labels."""

    archive: str  # the tarball's file name
    folder: str  # the top-level folder inside it
    batches: dict[str, tuple[str, ...]]  # split -> batch files
    label_key: str
    num_classes: int


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        batches={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        label_key="labels",
        num_classes=10,
    ),
    "cifar100": CifarLayout(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        batches={"train": ("train",), "test": ("test",)},
        label_key="fine_labels",
        num_classes=100,
    ),
}


def _numpy_module(name: str) -> Any:
    """numpy 2 moved numpy.core to numpy._core; pickles may name either."""
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_module("multiarray"), _numpy_module("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays and dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


_ALLOWED = _allowed_globals()


def load_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: images uint8 N x 3 x 32 x 32 and labels int64 N."""
    try:
        # latin1 is how Python 3 reads the Python 2 pickles of the official batches.
        entry = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{display_path(path)} is not a valid CIFAR batch ({first_line(exc)}): delete it and download "
            "the archive again"
        ) from None
    if not isinstance(entry, dict):
        raise DataError(f"{display_path(path)} is not a valid CIFAR batch: delete it and download the "
                        "archive again")
    # Batches written by Python 3 with bytes keys and the official ones with str keys both occur.
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{display_path(path)} has no uint8 N x 3072 'data' array: delete it and download "
                        "it again")
    labels_np = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels_np.shape != (len(data),):
        raise DataError(
            f"{display_path(path)} has no '{label_key}' list matching its images: delete it and download "
            "it again"
        )
    if labels_np.size and not 0 <= labels_np.min() <= labels_np.max() < num_classes:
        raise DataError(f"{display_path(path)} has labels outside 0..{num_classes - 1}: delete it and "
                        "download it again")
    # Rows are the red plane, then green, then blue, each 32 x 32 in row-major order.
    return data.reshape(-1, 3, 32, 32), labels_np


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject any member that could write outside the extraction folder."""
    name = member.name
    # Backslashes are separators on Windows, and "C:" starts an absolute Windows path.
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise DataError(f"{display_path(archive)} has a member with an absolute path "
                        f"({display_path(name)}): refusing to extract it")
    if ".." in path.parts:
        raise DataError(f"{display_path(archive)} has a member that escapes its folder "
                        f"({display_path(name)}): refusing to extract it")
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"{display_path(archive)} has a member that is a link or device ({display_path(member.name)}): "
            "refusing to extract it"
        )


def safe_extract(archive: Path, root: Path) -> None:
    """Extract regular files and folders of a tar archive under `root`, after checking every member."""
    root_resolved = root.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:  # all checks before the first write
                _check_member(member, archive)
            for member in members:
                target = root / member.name
                if not target.resolve().is_relative_to(root_resolved):  # e.g. via a pre-existing link
                    raise DataError(f"{display_path(archive)} member {display_path(member.name)} would "
                                    f"land outside {display_path(root)}: refusing")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # regular files always have a payload
                with atomic_writer(target) as part, source, part.open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot extract {display_path(archive)} ({first_line(exc)}): delete it and "
                        "download it again") from None


def load_cifar_split(
    dataset: str, split: str, root: Path, *, download_missing: bool, quiet: bool
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images (uint8 N x 3 x 32 x 32), labels (int64 N) and a source description for one split."""
    layout = LAYOUTS[dataset]
    folder = root / layout.folder
    batch_paths = [folder / name for name in layout.batches[split]]
    if not all(p.is_file() for p in batch_paths):
        archive = root / layout.archive
        if not archive.is_file():
            if not download_missing:
                raise DataError(
                    f"{dataset}: neither {display_path(folder)} nor {display_path(archive)} exists; put "
                    f"{layout.archive} in {display_path(root)} "
                    "or allow downloading, or use the offline datasets mnist5k or digits"
                )
            download.fetch(dataset, layout.archive, root, quiet=quiet)
        safe_extract(archive, root)
        missing = [p.name for p in batch_paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{display_path(archive)} does not contain {layout.folder}/{missing[0]}: delete it and "
                "download it again"
            )
    parts = [load_batch(p, layout.label_key, layout.num_classes) for p in batch_paths]
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate([p[0] for p in parts])))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return images, labels, str(folder)
