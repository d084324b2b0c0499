"""The small classifier CNN whose penultimate layer is a metric space, and how it is trained.

:class:`ClassifierNet` is three conv-BN-ReLU-pool stages and a hidden layer; :func:`train_classifier`
trains it deterministically on the CPU from a :class:`FeatureNetRecipe`; :class:`FeatureNet` wraps a
trained one with the record that identifies it (see `ganforge.metrics.feature_nets` for the cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganforge.errors import DataError

FORMAT_VERSION = 1  # bump when the cache layout or the meaning of a recipe field changes
MIN_IMAGE_SIZE = 8  # three 2x poolings must leave at least one pixel


@dataclass(frozen=True)
class FeatureNetRecipe:
    """How a feature network is built and trained. Every field enters the cache hash."""

    widths: tuple[int, int, int] = (16, 32, 64)  # conv channels of the three conv-BN-ReLU-pool stages
    feature_dim: int = 128  # width of the penultimate layer: the dimension D of the metric space
    dropout: float = 0.3  # before the classifier head only, so the features themselves are not dropped
    batch_size: int = 128
    learning_rate: float = 3e-3  # peak of a one-cycle schedule
    weight_decay: float = 5e-4
    epochs: int = 3  # passes over the training split...
    min_train_images: int = 60_000  # ...but at least this many images, so small datasets still converge
    seed: int = 0
    # One intra-op thread makes the float reductions run in a fixed order, so the same recipe and data
    # give the same weights on any machine; it also keeps a shared or busy CPU from thrashing, where
    # OpenMP threads spinning for a core cost far more than the parallelism gains on these tiny convs.
    threads: int = 1
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_RECIPE = FeatureNetRecipe()


class ClassifierNet(nn.Module):
    """Three conv stages and a hidden layer; `embed` returns the hidden layer, `forward` the logits."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: tuple[int, int, int] = (16, 32, 64),
        feature_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise DataError(
                f"feature networks need images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels, "
                f"got {image_size}"
            )
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        stages, channels = [], in_channels
        for width in widths:
            # Bias-free conv: the BatchNorm right after it has its own shift.
            stages += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.conv = nn.Sequential(*stages)
        # state size: widths[-1] x (image_size // 8) x (image_size // 8)
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * (image_size // 8) ** 2, feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    @property
    def feature_dim(self) -> int:
        return self.hidden[1].out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x S x S in [-1, 1] -> N x feature_dim penultimate activations."""
        return self.hidden(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x S x S in [-1, 1] -> N x num_classes logits."""
        return self.head(self.embed(x))


class FeatureNet:
    """A trained classifier plus the record that identifies it; extracts float64 features."""

    def __init__(self, module: ClassifierNet, record: dict) -> None:
        self.module = module.eval()
        self.record = record

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def hash(self) -> str:
        return self.record["hash"]

    @property
    def test_accuracy(self) -> float:
        return self.record["test_accuracy"]

    @property
    def channels(self) -> int:
        return self.module.in_channels

    @property
    def image_size(self) -> int:
        return self.module.image_size

    def _batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise DataError(
                f"{self.id} expects N x {self.channels} x H x W images, got {tuple(images.shape)}"
            )
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(torch.float32)
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(
                    x,
                    size=(self.image_size, self.image_size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
            yield x

    @torch.no_grad()
    def features_and_logits(
        self, images: torch.Tensor, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [-1, 1] (resized if needed) -> (N x D features, N x K logits), both float64."""
        feats, logits = [], []
        for x in self._batches(images, batch_size):
            h = self.module.embed(x)
            feats.append(h.double())
            logits.append(self.module.head(h).double())
        if not feats:
            raise DataError("no images to extract features from")
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Float images in [-1, 1] -> N x D float64 penultimate-layer features."""
        return self.features_and_logits(images, batch_size)[0]

    def logits(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Float images in [-1, 1] -> N x K float64 class logits."""
        return self.features_and_logits(images, batch_size)[1]

    def extract(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N x C x H x W (channels converted, size resized) -> float64 (features, logits)."""
        from ganforge.data import convert_images, to_float

        feats, logits = [], []
        # Chunked so a 50k-image evaluation never holds a float copy of every image at once.
        for start in range(0, images.shape[0], 10 * batch_size):
            chunk = convert_images(images[start : start + 10 * batch_size], channels=self.channels)
            chunk_feats, chunk_logits = self.features_and_logits(to_float(chunk), batch_size)
            feats.append(chunk_feats)
            logits.append(chunk_logits)
        if not feats:
            raise DataError("no images to extract features from")
        return torch.cat(feats), torch.cat(logits)


def train_classifier(
    train, test, recipe: FeatureNetRecipe = DEFAULT_RECIPE, *, quiet: bool = False
) -> tuple[ClassifierNet, float, float]:
    """Train on `train`, measure accuracy on `test`: (module in eval mode, test accuracy, seconds)."""
    from tqdm import tqdm

    from ganforge.data import to_float

    start = time.perf_counter()
    n = len(train)
    steps = max(1, -(-max(recipe.epochs * n, recipe.min_train_images) // recipe.batch_size))
    # fork_rng: a fixed seed makes training reproducible without resetting the caller's RNG streams.
    with torch.random.fork_rng(devices=[]), _num_threads(recipe.threads):
        torch.manual_seed(recipe.seed)
        order = torch.Generator().manual_seed(recipe.seed)
        module = ClassifierNet(
            train.channels,
            train.image_size,
            int(train.num_classes),
            recipe.widths,
            recipe.feature_dim,
            recipe.dropout,
        )
        module = module.to(memory_format=torch.channels_last)  # ~20% faster convs on the CPU
        opt = torch.optim.AdamW(
            module.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.learning_rate, total_steps=steps, pct_start=0.15
        )
        module.train()
        perm, cursor = torch.randperm(n, generator=order), 0
        for _ in tqdm(
            range(steps), desc=f"feature net {train.name}", unit="step", disable=quiet, leave=False
        ):
            if cursor + recipe.batch_size > n:  # reshuffle each epoch; the ragged tail is dropped
                perm, cursor = torch.randperm(n, generator=order), 0
            idx = perm[cursor : cursor + recipe.batch_size]
            cursor += recipe.batch_size
            x = to_float(train.images[idx]).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(module(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        # Back to the default layout: a net loaded from the cache has it, and the fresh one must give
        # bit-identical features (and accuracy) to its cached copy.
        module = module.to(memory_format=torch.contiguous_format).eval()
        accuracy = _accuracy(module, test)
    return module, accuracy, time.perf_counter() - start


@torch.no_grad()
def _accuracy(module: ClassifierNet, test, batch_size: int = 1000) -> float:
    from ganforge.data import to_float

    correct = 0
    for start in range(0, len(test), batch_size):
        pred = module(to_float(test.images[start : start + batch_size])).argmax(1)
        correct += int((pred == test.labels[start : start + batch_size]).sum())
    return correct / max(1, len(test))


@contextlib.contextmanager
def _num_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
