"""Per-dataset classifier networks whose penultimate layer is the metric space for FID, KID and P/R.

Inception-v3 features are the standard for photographs, but they are a poor ruler for 28x28 digits
(and their weights cannot always be had offline). Following the common practice for MNIST-like data,
each labelled dataset gets a small CNN trained on its own training split, on first use, on the CPU.

The trained net is cached under ``cache_dir()/feature_nets/<dataset>-<hash16>/`` as
``model.safetensors`` (loads without executing code) plus ``record.json``. The hash covers the exact
dataset content and the training recipe, so a changed dataset or recipe can never reuse a stale net,
and the hash printed next to every score names the ruler it was measured with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganforge import paths
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


class FeatureExtractor(Protocol):
    """What evaluation needs from a feature space: an identity to print and uint8 -> features."""

    id: str
    hash: str
    test_accuracy: float | None
    channels: int
    image_size: int

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N x C x H x W -> (N x D features, N x K logits), both float64."""
        ...


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


def content_hash(dataset_name: str, train, test, recipe: FeatureNetRecipe) -> str:
    """sha256 over the recipe and the exact uint8 images and labels of both splits."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"dataset": dataset_name, "recipe": recipe.to_dict(), "net": ClassifierNet.__name__},
            sort_keys=True,
        ).encode()
    )
    for ds in (train, test):
        h.update(repr((tuple(ds.images.shape), tuple(ds.labels.shape))).encode())
        h.update(ds.images.contiguous().numpy().tobytes())
        h.update(ds.labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def get_feature_net(
    dataset_name: str, *, quiet: bool = False, recipe: FeatureNetRecipe = DEFAULT_RECIPE
) -> FeatureNet:
    """The feature network of a labelled dataset: loaded from the cache, or trained now and cached."""
    from ganforge.data import DATASETS, load_dataset

    if dataset_name not in DATASETS or not DATASETS[dataset_name].num_classes:
        labelled = ", ".join(name for name, info in DATASETS.items() if info.num_classes)
        raise DataError(
            f"{dataset_name} is not a labelled dataset, so it has no classifier feature network "
            f"(those are: {labelled}); use --features inception"
        )
    train = load_dataset(dataset_name, split="train", quiet=quiet)
    test = load_dataset(dataset_name, split="test", quiet=quiet)
    if train.labels is None or test.labels is None or not train.num_classes:
        raise DataError(
            f"{dataset_name} has no labels to train a feature network on; use --features inception"
        )
    digest = content_hash(train.name, train, test, recipe)
    folder = paths.cache_dir() / "feature_nets" / f"{cache_slug(train.name)}-{digest[:16]}"
    net = _load_cached(folder, digest)
    if net is not None:
        return net
    with _exclusive(folder):
        # Another process (a parallel test worker, a second `ganforge eval`) may have trained it while
        # we waited for the lock: look again before spending minutes of CPU.
        net = _load_cached(folder, digest)
        return net if net is not None else _train_and_cache(train, test, recipe, folder, digest, quiet)


def _train_and_cache(
    train, test, recipe: FeatureNetRecipe, folder: Path, digest: str, quiet: bool
) -> FeatureNet:
    module, accuracy, seconds = train_classifier(train, test, recipe, quiet=quiet)
    record = {
        "id": f"cnn-{cache_slug(train.name)}",
        "hash": digest,
        "dataset": train.name,
        "test_accuracy": accuracy,
        "n_train": len(train),
        "n_test": len(test),
        "seconds": round(seconds, 2),
        "channels": module.in_channels,
        "image_size": module.image_size,
        "num_classes": module.num_classes,
        "recipe": recipe.to_dict(),
        "torch_version": torch.__version__,
    }
    record = json.loads(json.dumps(record))  # as it will read back from disk (tuples become lists)
    _save(folder, module, record)
    if not quiet:
        print(
            f"feature net {record['id']} ({digest[:12]}): "
            f"test accuracy {accuracy:.2%} on {len(test)} images, "
            f"trained in {seconds:.0f}s, cached in {folder}",
            file=sys.stderr,
            flush=True,
        )
    return FeatureNet(module, record)


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
def _exclusive(folder: Path) -> Iterator[None]:
    """An advisory lock on one cache entry (POSIX flock; elsewhere, no lock: writes are atomic anyway)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _num_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def cache_slug(name: str) -> str:
    """A dataset name as a readable, path-safe cache-folder prefix."""
    # Folder datasets are named "folder:/abs/path": keep the last component, readable and path-safe.
    tail = name.rstrip("/").split("/")[-1].removeprefix("folder:") or "data"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tail)


def _load_cached(folder: Path, digest: str) -> FeatureNet | None:
    from safetensors.torch import load_file

    record_path, weights_path = folder / "record.json", folder / "model.safetensors"
    if not (record_path.is_file() and weights_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
        if record.get("hash") != digest:
            return None
        recipe = record["recipe"]
        module = ClassifierNet(
            record["channels"],
            record["image_size"],
            record["num_classes"],
            tuple(recipe["widths"]),
            recipe["feature_dim"],
            recipe["dropout"],
        )
        module.load_state_dict(load_file(str(weights_path)))
    except Exception:  # noqa: BLE001 - safetensors raises its own error type; any failure means "retrain"
        # A cache entry is disposable: a truncated or foreign one is retrained, never trusted.
        return None
    return FeatureNet(module, record)


def _save(folder: Path, module: ClassifierNet, record: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # Weights first, record last, each via rename: a reader that sees record.json sees a whole entry,
    # and two processes training the same net at once each write a complete, identical pair.
    tmp = folder / f"model.safetensors.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    tmp = folder / f"record.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / "record.json")
