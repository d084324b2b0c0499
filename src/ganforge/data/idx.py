"""MNIST-family datasets in LeCun's IDX format (MNIST, Fashion-MNIST).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the raw uint8 payload. Files may be gzip-compressed or raw.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ganforge.data import download
from ganforge.errors import DataError
from ganforge.io import display_path, first_line

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions: N x rows x cols
IMAGE_SHAPE = (28, 28)  # rows x cols of every MNIST-family image
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension: N

# The four official files, by split: (images, labels).
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Places searched after `root`, per dataset. Debian's `dataset-fashion-mnist` package installs the
# official files here; a module-level table so tests can take the system copy out of the search.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (raw or .gz) whose magic number must be `magic`; uint8 array of its shape."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # the gzip signature: accept either form whatever the name says
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {display_path(path)} ({first_line(exc)}): delete it and download it "
                        "again") from None
    if len(raw) < 4:
        raise DataError(f"{display_path(path)} is too short to be an IDX file: delete it and download it "
                        "again")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{display_path(path)} has IDX magic number 0x{found:08x}, expected 0x{magic:08x}: "
            "delete it and download it again"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{display_path(path)} has a truncated IDX header: delete it and download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{display_path(path)} holds {len(raw) - header} bytes of data but its header {shape} needs "
            f"{expected}: "
            "delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_file(stem: str, dirs: Sequence[Path]) -> Path | None:
    """The first `stem` or `stem.gz` in `dirs`, or None."""
    for folder in dirs:
        for name in (stem, stem + ".gz"):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def load_idx_split(
    dataset: str, split: str, root: Path, *, download_missing: bool, quiet: bool
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images (uint8 N x 1 x 28 x 28), labels (int64 N) and a source description for one split."""
    dirs = (root, *SYSTEM_DIRS.get(dataset, ()))
    stems = FILES[split]
    paths = {stem: find_file(stem, dirs) for stem in stems}
    missing = [stem + ".gz" for stem, path in paths.items() if path is None]
    if missing and not download_missing:
        searched = ", ".join(display_path(d) for d in dirs)
        raise DataError(
            f"{dataset}: {', '.join(missing)} not found in {searched}; put the files in "
            f"{display_path(root)} or "
            "allow downloading, or use the offline datasets mnist5k or digits"
        )
    for name in missing:
        download.fetch(dataset, name, root, quiet=quiet, needed=missing)
        paths[name[: -len(".gz")]] = root / name

    images_path, labels_path = (paths[stem] for stem in stems)
    assert images_path is not None and labels_path is not None
    images = read_idx(images_path, IMAGES_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE:
        # A consistent header with another image shape (14 x 56 holds as many bytes as 28 x 28) is
        # another dataset or a damaged file, never something to resize.
        raise DataError(
            f"{display_path(images_path)} holds {images.shape[1]}x{images.shape[2]} images, but {dataset} "
            f"images are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}: delete it and download it again"
        )
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{display_path(images_path)} has {len(images)} images but {display_path(labels_path)} has "
            f"{len(labels)} labels: "
            "delete both and download them again"
        )
    if labels.size and labels.max() > 9:
        raise DataError(
            f"{display_path(labels_path)} has label {labels.max()}, expected 0..9: delete it and download "
            "it again"
        )
    # frombuffer arrays are read-only views: copy once into an owned, contiguous tensor.
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    return images_t, labels_t, str(images_path.parent)
