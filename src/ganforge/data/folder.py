"""A folder of images (searched recursively) as an unlabelled dataset.

A folder that fits (MAX_DECODED_BYTES decoded) is decoded once into one uint8 tensor held in
memory and cached on disk, so a second run starts instantly. A bigger one (or any, with
`stream=True`) becomes a :class:`FolderStream`: files are decoded on access, by DataLoader workers
during training (see `ganforge.data.stream`). Files that are not readable images (truncated,
corrupt, decompression bombs) are skipped and reported on one line; if more than MAX_BAD_FRACTION
of the files are bad, the folder is refused before anything trains, because that is rarely an
accident.

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
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ganforge import paths
from ganforge.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEFAULT_MAX_SIZE = 64
MAX_BAD_FRACTION = 0.01
MAX_DECODED_BYTES = 4 * 2**30
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused


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


def _open(path: Path) -> Image.Image:
    """Open lazily; PIL only warns between MAX_IMAGE_PIXELS and twice that, we refuse."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _probe(path: Path) -> tuple[bool, int]:
    """(is grayscale, shorter side) from the file's header, without decoding pixels."""
    with _open(path) as image:
        return image.mode in GRAY_MODES, min(image.size)


def _decode(path: Path, channels: int, image_size: int) -> np.ndarray:
    """Decode one file to uint8 H x W x C: EXIF-upright, converted, shorter side resized, centre-cropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.draft(None, (image_size, image_size))  # JPEG: decode at a reduced scale, much faster
            image = ImageOps.exif_transpose(image)
            image = image.convert("L" if channels == 1 else "RGB")
            image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
    return array.reshape(image_size, image_size, channels)


def _cache_path(folder: Path, files: list[Path], image_size: int | None, channels: int | None) -> Path:
    listing = []
    for f in files:
        st = f.stat()
        listing.append([str(f.relative_to(folder)), st.st_size, st.st_mtime_ns])
    key = json.dumps(
        {
            "version": CACHE_VERSION,
            "folder": str(folder),
            "files": listing,
            "image_size": image_size,
            "channels": channels,
        },
        separators=(",", ":"),
    )
    return paths.cache_dir() / "folders" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")


def _warn_skipped(skipped: int, total: int, first: str) -> None:
    if skipped:
        print(
            f"warning: skipped {skipped} of {total} files that are not readable images (first: {first})",
            file=sys.stderr,
        )


def _check_bad(folder: Path, bad: list[Path], total: int) -> None:
    if len(bad) > MAX_BAD_FRACTION * total:
        first = min(bad).relative_to(folder)
        raise DataError(
            f"{len(bad)} of {total} files in {folder} are not readable images (first: {first}); "
            f"more than {MAX_BAD_FRACTION:.0%} is refused: fix or remove them"
        )


def _scan(folder: Path, files: list[Path], image_size: int | None, channels: int | None
          ) -> tuple[list[Path], list[Path], int, int]:
    """Headers only, of the image `files` listed in `folder`: (readable ones, bad ones, channels,
    image_size)."""
    other = _non_images(folder)
    if other:
        print(f"warning: ignored {len(other)} files that are not images (first: "
              f"{other[0].relative_to(folder)})", file=sys.stderr)
    if not files:
        raise DataError(
            f"{folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
            "add some or pick another folder"
        )
    bad: list[Path] = []
    probes: dict[Path, tuple[bool, int]] = {}
    for f in files:
        try:
            probes[f] = _probe(f)
        except Exception:  # PIL's format plugins raise many exception types on hostile input
            bad.append(f)
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
    long run never dies on one bad file, and batches keep their shape.
    """

    in_memory = False
    labels = None
    num_classes = None

    def __init__(self, folder: Path, files: list[Path], channels: int, image_size: int) -> None:
        self.folder, self.files = folder, files
        self.channels, self.image_size = channels, image_size
        self.name, self.source = f"folder:{folder}", f"{folder} (streamed from disk)"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(uint8 C x S x S image, the indices of the unreadable files tried before it: () when file
        i itself decoded)."""
        bad: list[int] = []
        for k in range(min(len(self.files), 100)):
            j = (i + k) % len(self.files)
            try:
                array = _decode(self.files[j], self.channels, self.image_size)
            except Exception:  # as in load_folder: any decoder failure means "not a readable image"
                bad.append(j)
                continue
            return torch.tensor(array).permute(2, 0, 1).contiguous(), tuple(bad)
        raise DataError(f"100 files in a row from {self.files[i].relative_to(self.folder)} on could not "
                        f"be decoded: check {self.folder} (was it changed during the run?)")

    def decode(self, indices: list[int]) -> torch.Tensor:
        """uint8 N x C x S x S of the given items, decoded here (for a few images: grids, metrics)."""
        if not indices:
            return torch.empty((0, self.channels, self.image_size, self.image_size), dtype=torch.uint8)
        return torch.stack([self[i][0] for i in indices])


def load_folder(
    folder: str | os.PathLike,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    quiet: bool = False,
    stream: bool | None = None,
) -> tuple[torch.Tensor | FolderStream, str]:
    """Decode every image under `folder` into uint8 N x C x S x S; returns it and a source string.

    stream: None decodes into memory when the folder fits in MAX_DECODED_BYTES and streams it
    otherwise; True always streams (a FolderStream comes back instead of a tensor); False never does,
    and refuses a folder over the limit."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: give a folder of images or a dataset name")
    files = list_images(folder)
    cache = _cache_path(folder, files, image_size, channels) if files and not stream else None
    if cache is not None and cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as f:
                meta = f.metadata() or {}
            images = load_file(str(cache))["images"]
            _warn_skipped(int(meta.get("skipped", 0)), len(files), meta.get("first_bad", ""))
            return images, f"{folder} (cached {cache.name})"
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # an unreadable cache is rebuilt below

    good, bad, channels, image_size = _scan(folder, files, image_size, channels)
    decoded_bytes = len(good) * channels * image_size * image_size
    if stream is None and decoded_bytes > MAX_DECODED_BYTES:
        stream = True
        if not quiet:
            print(f"note: {folder} takes {decoded_bytes / 2**30:.1f} GiB decoded, over the "
                  f"{MAX_DECODED_BYTES / 2**30:g} GiB in-memory limit: images are decoded as training "
                  "reads them", file=sys.stderr)
    if stream:
        if bad:
            _warn_skipped(len(bad), len(files), str(min(bad).relative_to(folder)))
        streamed = FolderStream(folder, good, channels, image_size)
        return streamed, streamed.source
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DataError(
            f"{folder} would take {decoded_bytes / 2**30:.1f} GiB decoded at "
            f"{image_size}x{image_size}x{channels}, over the {MAX_DECODED_BYTES / 2**30:g} GiB "
            "in-memory limit: use a smaller image size, a subset, or data_mode=stream"
        )

    # Full decode; truncated files are often only detected here.
    array = np.empty((len(good), image_size, image_size, channels), dtype=np.uint8)
    kept = 0
    for f in tqdm(
        good, desc=f"decoding {folder.name}", unit="img", disable=quiet, file=sys.stderr, leave=False
    ):
        try:
            array[kept] = _decode(f, channels, image_size)
            kept += 1
        except Exception:  # as above: any decoder failure means "not a readable image"
            bad.append(f)
    bad.sort()
    _check_bad(folder, bad, len(files))
    images = torch.from_numpy(array[:kept]).permute(0, 3, 1, 2).contiguous()

    first_bad = str(bad[0].relative_to(folder)) if bad else ""
    _warn_skipped(len(bad), len(files), first_bad)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        part = cache.with_name(cache.name + f".{os.getpid()}.part")
        save_file(
            {"images": images},
            str(part),
            metadata={"folder": str(folder), "skipped": str(len(bad)), "first_bad": first_bad},
        )
        os.replace(part, cache)  # atomic: a concurrent or interrupted run never sees half a cache
    return images, str(folder)
