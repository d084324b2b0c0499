"""A folder of images (searched recursively) as a dataset: unlabelled, or labelled by class folders.

A folder that fits (MAX_DECODED_BYTES decoded) is decoded once into one uint8 tensor held in
memory and cached on disk (when the cache can be written), so a second run starts instantly. A
bigger one (or any, with `stream=True`) becomes a :class:`FolderStream`: files are decoded on
access, by DataLoader workers during training (see `ganforge.data.stream`). Pixels are decoded by
`ganforge.data.decode` (every Pillow mode; alpha onto white). Files that are not readable images
(truncated, corrupt, decompression bombs, dangling symlinks, symlink loops) are skipped and reported
on one line; if more than MAX_BAD_FRACTION of the files are bad, the folder is refused before
anything trains, because that is rarely an accident.

Labels, as torchvision's ImageFolder assigns them: when every image sits under a first-level
subfolder, there are at least two such subfolders and nothing else is visible at the top level,
the subfolder names, sorted, are the classes and each image's label is the index of its subfolder.
Any other folder is unlabelled.

Shape rules, when the caller does not fix them:
- channels: 1 if every image is grayscale, else 3 (grayscale images are repeated to RGB).
- image_size: the shorter side of the first image (in sorted path order), capped at DEFAULT_MAX_SIZE.
Every image is resized so its shorter side is image_size, then centre-cropped to a square.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from ganforge import paths
from ganforge.data.decode import IMAGE_SUFFIXES, decode_file, probe
from ganforge.errors import DataError
from ganforge.io import display_path

IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES)
DEFAULT_MAX_SIZE = 64
MAX_BAD_FRACTION = 0.01
MAX_DECODED_BYTES = 4 * 2**30
CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused (2: every mode, labels)

# Module-level names, looked up at call time, so tests can make a file fail after the scan.
_decode = decode_file
_probe = probe


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted; hidden files and folders are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def _non_images(folder: Path) -> list[Path]:
    """Visible files whose extension is not an image's: reported, never decoded."""
    other = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        other += [Path(dirpath) / n for n in filenames
                  if not n.startswith(".") and Path(n).suffix.lower() not in IMAGE_EXTENSIONS]
    return sorted(other)


def _shown(folder: Path, file: Path) -> str:
    return display_path(file.relative_to(folder))


def class_names(folder: Path, files: list[Path], *, quiet: bool = True) -> list[str] | None:
    """The sorted class-subfolder names if `folder` is laid out one subfolder per class, else None."""
    tops = [f.relative_to(folder).parts for f in files]
    if not tops or any(len(parts) == 1 for parts in tops):
        return None  # an image at the top level: not a class layout
    classes = sorted({parts[0] for parts in tops})
    if len(classes) < 2:
        return None
    strays = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and not e.is_dir())
    if strays:
        if not quiet:
            print(f"note: {display_path(folder)} is read without labels: {display_path(strays[0])} sits "
                  f"beside its {len(classes)} subfolders; move it away to label the images by subfolder",
                  file=sys.stderr)
        return None
    return classes


def _labels_of(folder: Path, files: list[Path], classes: list[str] | None) -> torch.Tensor | None:
    if classes is None:
        return None
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[f.relative_to(folder).parts[0]] for f in files], dtype=torch.int64)


def _cache_path(folder: Path, files: list[Path], image_size: int | None, channels: int | None) -> Path:
    listing = []
    for f in files:
        try:
            st = f.stat()
            listing.append([str(f.relative_to(folder)), st.st_size, st.st_mtime_ns])
        except OSError:  # a dangling link or a link loop: unreadable, and listed as such
            listing.append([str(f.relative_to(folder)), None, None])
    key = json.dumps(
        {
            "version": CACHE_VERSION,
            "folder": str(folder),
            "files": listing,
            "image_size": image_size,
            "channels": channels,
        },
        separators=(",", ":"),
    )  # json escapes every non-ASCII character, so names that are not UTF-8 encode too
    return paths.cache_dir() / "folders" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")


def _warn_skipped(skipped: int, total: int, first: str) -> None:
    if skipped:
        print(
            f"warning: skipped {skipped} of {total} files that are not readable images (first: {first})",
            file=sys.stderr,
        )


def _check_bad(folder: Path, bad: list[Path], total: int) -> None:
    if len(bad) > MAX_BAD_FRACTION * total:
        raise DataError(
            f"{len(bad)} of {total} files in {display_path(folder)} are not readable images (first: "
            f"{_shown(folder, min(bad))}); more than {MAX_BAD_FRACTION:.0%} is refused: fix or remove them"
        )


def _scan(folder: Path, files: list[Path], image_size: int | None, channels: int | None
          ) -> tuple[list[Path], list[Path], int, int]:
    """Headers only, of the image `files` listed in `folder`: (readable ones, bad ones, channels,
    image_size)."""
    other = _non_images(folder)
    if other:
        print(f"warning: ignored {len(other)} files that are not images (first: "
              f"{_shown(folder, other[0])})", file=sys.stderr)
    if not files:
        raise DataError(
            f"{display_path(folder)} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
            "add some or pick another folder"
        )
    bad: list[Path] = []
    probes: dict[Path, tuple[bool, int]] = {}
    for f in files:
        try:
            probes[f] = _probe(f)
        except Exception:  # PIL's format plugins raise many exception types on hostile input
            bad.append(f)  # (and a dangling link or a link loop raises OSError here)
    _check_bad(folder, bad, len(files))
    good = [f for f in files if f in probes]
    if channels is None:
        channels = 1 if all(probes[f][0] for f in good) else 3
    if image_size is None:
        image_size = min(probes[good[0]][1], DEFAULT_MAX_SIZE)
    return good, bad, channels, image_size


class FolderStream(torch.utils.data.Dataset):
    """A folder too big to hold decoded: item i is file i decoded to uint8 C x S x S on access.

    The files were listed and their headers read up front (so unreadable headers are already
    skipped). A file that fails only now (truncated, deleted or replaced mid-run) is replaced by the
    next file that decodes, and the item says so, so the caller can count and report it: a
    long run never dies on one bad file, and batches keep their shape. A class folder streams with
    its labels (`labels[i]` is file i's class; :meth:`load` says which file stood in).
    """

    in_memory = False

    def __init__(self, folder: Path, files: list[Path], channels: int, image_size: int,
                 labels: torch.Tensor | None = None, class_names: list[str] | None = None) -> None:
        self.folder, self.files = folder, files
        self.channels, self.image_size = channels, image_size
        self.labels, self.class_names = labels, class_names
        self.num_classes = len(class_names) if class_names else None
        self.name = f"folder:{folder}"
        self.source = f"{display_path(folder)} (streamed from disk)"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> tuple[torch.Tensor, int, tuple[int, ...]]:
        """(uint8 C x S x S image, the index of the file it came from, the indices of the unreadable
        files tried before it: () when file i itself decoded)."""
        bad: list[int] = []
        for k in range(min(len(self.files), 100)):
            j = (i + k) % len(self.files)
            try:
                array = _decode(self.files[j], self.channels, self.image_size)
            except Exception:  # as in load_folder: any decoder failure means "not a readable image"
                bad.append(j)
                continue
            return torch.tensor(array).permute(2, 0, 1).contiguous(), j, tuple(bad)
        raise DataError(f"100 files in a row from {_shown(self.folder, self.files[i])} on could not be "
                        f"decoded: check {display_path(self.folder)} (was it changed during the run?)")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(uint8 C x S x S image, the indices of the unreadable files tried before it)."""
        image, _, bad = self.load(i)
        return image, bad

    def decode(self, indices: list[int]) -> torch.Tensor:
        """uint8 N x C x S x S of the given items, decoded here (for a few images: grids, metrics)."""
        if not indices:
            return torch.empty((0, self.channels, self.image_size, self.image_size), dtype=torch.uint8)
        return torch.stack([self[i][0] for i in indices])


class DecodedFolder(NamedTuple):
    """A folder decoded into memory."""

    images: torch.Tensor  # uint8 N x C x S x S
    labels: torch.Tensor | None  # int64 N (class folders), else None
    class_names: list[str] | None
    source: str


def _read_cache(cache: Path, folder: Path, total: int, classes: list[str] | None) -> DecodedFolder | None:
    entry = paths.read_tensors(cache)
    if entry is None or "images" not in entry[0] or (classes is not None and "labels" not in entry[0]):
        return None  # missing or unreadable: rebuilt
    tensors, meta = entry
    _warn_skipped(int(meta.get("skipped", 0)), total, meta.get("first_bad", ""))
    return DecodedFolder(tensors["images"], tensors.get("labels") if classes else None, classes,
                         f"{display_path(folder)} (cached {cache.name})")


def load_folder(
    folder: str | os.PathLike,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    quiet: bool = False,
    stream: bool | None = None,
) -> DecodedFolder | FolderStream:
    """Decode every image under `folder` into uint8 N x C x S x S (with class labels for a class
    folder).

    stream: None decodes into memory when the folder fits in MAX_DECODED_BYTES and streams it
    otherwise; True always streams (a FolderStream comes back instead); False never does, and
    refuses a folder over the limit."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"{display_path(folder)} is not a folder: give a folder of images or a dataset name")
    files = list_images(folder)
    classes = class_names(folder, files, quiet=quiet)
    cache = _cache_path(folder, files, image_size, channels) if files and not stream else None
    cached = _read_cache(cache, folder, len(files), classes) if cache is not None else None
    if cached is not None:
        return cached

    good, bad, channels, image_size = _scan(folder, files, image_size, channels)
    decoded_bytes = len(good) * channels * image_size * image_size
    if stream is None and decoded_bytes > MAX_DECODED_BYTES:
        stream = True
        if not quiet:
            print(f"note: {display_path(folder)} takes {decoded_bytes / 2**30:.1f} GiB decoded, over the "
                  f"{MAX_DECODED_BYTES / 2**30:g} GiB in-memory limit: images are decoded as training "
                  "reads them", file=sys.stderr)
    if stream:
        if bad:
            _warn_skipped(len(bad), len(files), _shown(folder, min(bad)))
        return FolderStream(folder, good, channels, image_size, _labels_of(folder, good, classes), classes)
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DataError(
            f"{display_path(folder)} would take {decoded_bytes / 2**30:.1f} GiB decoded at "
            f"{image_size}x{image_size}x{channels}, over the {MAX_DECODED_BYTES / 2**30:g} GiB "
            "in-memory limit: use a smaller image size, a subset, or data_mode=stream"
        )

    # Full decode; truncated files are often only detected here.
    array = np.empty((len(good), image_size, image_size, channels), dtype=np.uint8)
    kept: list[Path] = []
    for f in tqdm(good, desc=f"decoding {display_path(folder.name)}", unit="img", disable=quiet,
                  file=sys.stderr, leave=False):
        try:
            array[len(kept)] = _decode(f, channels, image_size)
            kept.append(f)
        except Exception:  # as above: any decoder failure means "not a readable image"
            bad.append(f)
    bad.sort()
    _check_bad(folder, bad, len(files))
    images = torch.from_numpy(array[: len(kept)]).permute(0, 3, 1, 2).contiguous()
    labels = _labels_of(folder, kept, classes)

    first_bad = _shown(folder, bad[0]) if bad else ""
    _warn_skipped(len(bad), len(files), first_bad)
    if cache is not None:
        tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
        meta = {"folder": display_path(folder), "skipped": str(len(bad)), "first_bad": first_bad}
        paths.save_tensors(cache, tensors, meta)
    return DecodedFolder(images, labels, classes, display_path(folder))
