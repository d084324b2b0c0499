"""Paired and unpaired translation data, decoded once into memory at the run's `load_size`.

A dataset is a built-in name (translate/builtins.py) or a folder, recognised by its layout:
- unpaired: `trainA/` and `trainB/` (and `testA/`, `testB/`), as the CycleGAN datasets ship;
- paired, two folders: `A/` and `B/` holding the same file names (stems; the extension may differ);
- paired, side by side: images whose left half is A and right half is B, as the pix2pix datasets ship;
and each paired layout may sit in `train/`, `val/` and `test/` split folders.
A split that is not there is taken from train: every tenth item (sorted by name) is held out as test.

Bad pairs are collected with their files (a missing partner, sizes that differ, an unreadable
image) and reported once by the run; a folder with nothing usable, or an unpaired folder with one
side empty, is refused in one line. Pixels go through the shared decoder's rules
(`ganforge.data.decode`: every Pillow mode, alpha onto white), then to 1 or 3 channels and a
`load_size` square.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ganforge.data.decode import open_image, to_8bit
from ganforge.data.folder import list_images
from ganforge.errors import DataError
from ganforge.io import display_path
from ganforge.translate.builtins import BUILTINS, PAIRED, builtin

HOLDOUT_EVERY = 10
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)


@dataclass
class TranslationData:
    """One split: uint8 N x C x L x L images of each side (paired: item i of A goes with item i of B),
    labels where the source has them (built-ins), names for messages, and the problems found."""

    name: str
    paired: bool
    a: torch.Tensor
    b: torch.Tensor
    labels_a: torch.Tensor | None = None
    labels_b: torch.Tensor | None = None
    names_a: list[str] = field(default_factory=list)
    names_b: list[str] = field(default_factory=list)
    issues: list[tuple[str, str]] = field(default_factory=list)  # (file, what is wrong)

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))


# ---- pixels --------------------------------------------------------------------------------------------

def read_image(path: Path, channels: int | None = None) -> Image.Image:
    """A file as an 8-bit L or RGB Pillow image, upright, by the shared decoder's rules; `channels`
    converts it (1: luminance, 3: grey repeated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open_image(path) as image:
            image = to_8bit(ImageOps.exif_transpose(image))
            if channels is not None:
                image = image.convert("L" if channels == 1 else "RGB")
            image.load()
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Pillow L / RGB -> uint8 C x H x W."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).reshape(image.size[1], image.size[0], -1).permute(2, 0, 1)


def square(image: Image.Image, size: int) -> torch.Tensor:
    """Resized (not cropped) to size x size, as the papers' code loads its images."""
    return to_tensor(image.resize((size, size), Image.Resampling.BICUBIC))


def resize_u8(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 N x C x h x w -> N x `channels` x size x size (grey repeated, or luminance)."""
    if images.shape[1] != channels:
        images = images.repeat(1, 3, 1, 1) if channels == 3 else (
            images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


# ---- layouts -------------------------------------------------------------------------------------------

def _holdout(items: list, split: str) -> list:
    if len(items) < 2:
        return items
    keep = [i for i in range(len(items)) if (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (split == "test")]
    return [items[i] for i in keep] or items


def _split_dir(root: Path, split: str) -> tuple[Path, bool]:
    """(the folder of `split`, whether it is held out of train)."""
    if (root / "train").is_dir():
        for name in ((split,) if split == "train" else (split, "val") if split == "test" else (split, "test")):
            if (root / name).is_dir():
                return root / name, False
        return root / "train", True
    return root, True  # no split folders: test is every tenth item, train the rest


def layout(root: Path) -> str:
    if (root / "trainA").is_dir() or (root / "trainB").is_dir():
        return "unpaired"
    base = root / "train" if (root / "train").is_dir() else root
    if (base / "A").is_dir() or (base / "B").is_dir():
        return "two-folders"
    return "side-by-side"


def _decode_all(files: list[Path], channels: int, size: int, issues: list, split_ab: str | None = None
                ) -> tuple[list[torch.Tensor], list[Path]]:
    out, kept = [], []
    for path in files:
        try:
            image = read_image(path, channels)
        except BAD_IMAGE_ERRORS as err:
            issues.append((display_path(path), f"unreadable ({type(err).__name__})"))
            continue
        if split_ab is not None:
            width, height = image.size
            if width < 2:
                issues.append((display_path(path), "too narrow to hold A and B side by side"))
                continue
            half = width // 2
            image = image.crop((0, 0, half, height)) if split_ab == "A" else image.crop((half, 0, 2 * half, height))
        out.append(square(image, size))
        kept.append(path)
    return out, kept


def _stack(images: list[torch.Tensor], channels: int, size: int) -> torch.Tensor:
    return torch.stack(images) if images else torch.zeros(0, channels, size, size, dtype=torch.uint8)


def _paired_two_folders(folder: Path, split: str, held: bool, size: int, ca: int, cb: int) -> TranslationData:
    issues: list[tuple[str, str]] = []
    side_a, side_b = {p.stem: p for p in list_images(folder / "A")}, {p.stem: p for p in list_images(folder / "B")}
    for stem in sorted(set(side_a) ^ set(side_b)):
        lone = side_a.get(stem) or side_b.get(stem)
        issues.append((display_path(lone), f"no partner in {'B' if stem in side_a else 'A'}/"))
    stems = _holdout(sorted(set(side_a) & set(side_b)), split) if held else sorted(set(side_a) & set(side_b))
    a, b, names = [], [], []
    for stem in stems:
        try:
            ia, ib = read_image(side_a[stem], ca), read_image(side_b[stem], cb)
        except BAD_IMAGE_ERRORS as err:
            issues.append((f"{display_path(side_a[stem])} / {display_path(side_b[stem])}",
                           f"unreadable ({type(err).__name__})"))
            continue
        if ia.size != ib.size:
            issues.append((f"{display_path(side_a[stem])} / {display_path(side_b[stem])}",
                           f"sizes differ ({ia.size[0]}x{ia.size[1]} and {ib.size[0]}x{ib.size[1]})"))
            continue
        a.append(square(ia, size))
        b.append(square(ib, size))
        names.append(side_a[stem].name)
    return TranslationData(str(folder), True, _stack(a, ca, size), _stack(b, cb, size), names_a=names,
                           names_b=list(names), issues=issues)


def _paired_side_by_side(folder: Path, split: str, held: bool, size: int, ca: int, cb: int) -> TranslationData:
    files = list_images(folder)
    if held:
        files = _holdout(files, split)
    issues: list[tuple[str, str]] = []
    a, kept = _decode_all(files, ca, size, issues, "A")
    b, _ = _decode_all(kept, cb, size, [], "B")
    names = [p.name for p in kept]
    return TranslationData(str(folder), True, _stack(a, ca, size), _stack(b, cb, size), names_a=names,
                           names_b=list(names), issues=issues)


def _unpaired(root: Path, split: str, size: int, ca: int, cb: int) -> TranslationData:
    issues: list[tuple[str, str]] = []
    sides = {}
    for side, channels in (("A", ca), ("B", cb)):
        folder = root / f"{split}{side}"
        files = list_images(folder) if folder.is_dir() else []
        if not files and split != "train":  # no test split: every tenth training image
            files = _holdout(list_images(root / f"train{side}") if (root / f"train{side}").is_dir() else [], split)
        elif split == "train" and not (root / f"test{side}").is_dir():
            files = _holdout(files, "train")
        images, kept = _decode_all(files, channels, size, issues)
        if not images:
            where = display_path(root / f"train{side}")
            raise DataError(f"{where} has no readable images: an unpaired folder needs images in both trainA/ and "
                            "trainB/")
        sides[side] = (_stack(images, channels, size), [p.name for p in kept])
    return TranslationData(str(root), False, sides["A"][0], sides["B"][0], names_a=sides["A"][1],
                           names_b=sides["B"][1], issues=issues)


# ---- the entry point -----------------------------------------------------------------------------------

def open_translation_data(spec: str, split: str, *, load_size: int, channels_a: int, channels_b: int
                          ) -> TranslationData:
    """The `split` ("train" or "test") of a built-in or a folder, at load_size x load_size."""
    if spec in BUILTINS:
        a, la, b, lb = builtin(spec, "test" if split != "train" else "train")
        return TranslationData(spec, PAIRED[spec], resize_u8(a, load_size, channels_a),
                               resize_u8(b, load_size, channels_b), la, lb)
    from ganforge.translate.download import ARCHIVES, dataset_folder

    root = Path(spec).expanduser()
    if spec in ARCHIVES and not root.is_dir():
        root = dataset_folder(spec)
        if root is None:
            raise DataError(f"--data {spec}: not downloaded yet: run `ganforge translate download {spec}` first")
    if not root.is_dir():
        raise DataError(f"--data {spec}: not a built-in ({', '.join(BUILTINS)}), a downloadable dataset "
                        f"(`ganforge translate download`) nor a folder")
    kind = layout(root)
    if kind == "unpaired":
        data = _unpaired(root, split, load_size, channels_a, channels_b)
    else:
        folder, held = _split_dir(root, split)
        make = _paired_two_folders if kind == "two-folders" else _paired_side_by_side
        data = make(folder, split, held, load_size, channels_a, channels_b)
        if len(data.a) == 0:
            shown = "; ".join(f"{f}: {why}" for f, why in data.issues[:3])
            hint = (f" ({shown}{' ...' if len(data.issues) > 3 else ''})" if data.issues else
                    ": give A/ and B/ with the same file names, or side-by-side AB images, or trainA/ + trainB/")
            raise DataError(f"{display_path(folder)} has no usable image pair{hint}")
    return data


def issues_line(data: TranslationData, limit: int = 5) -> str:
    """The problems of a split in one line, naming their files."""
    kinds: dict[str, int] = {}
    for _, why in data.issues:
        key = why.split(" (")[0]
        kinds[key] = kinds.get(key, 0) + 1
    files = [f for f, _ in data.issues]
    shown = ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return f"{counts}; skipped: {shown}"


# ---- the jitter ----------------------------------------------------------------------------------------

def jitter(images: list[torch.Tensor], size: int, generator: torch.Generator, flip: bool) -> list[torch.Tensor]:
    """One random size x size crop and (with `flip`) one random mirror, the same for every image
    given (the two sides of a pair)."""
    height, width = images[0].shape[-2:]
    top = int(torch.randint(height - size + 1, (), generator=generator))
    left = int(torch.randint(width - size + 1, (), generator=generator))
    mirror = flip and float(torch.rand((), generator=generator)) < 0.5
    out = []
    for image in images:
        crop = image[..., top:top + size, left:left + size]
        out.append(crop.flip(-1) if mirror else crop)
    return out
