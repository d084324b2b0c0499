"""Per-dataset classifier networks whose penultimate layer is the metric space for FID, KID and P/R.

Inception-v3 features are the standard for photographs, but they are a poor ruler for 28x28 digits
(and their weights cannot always be had offline). Following the common practice for MNIST-like data,
each labelled dataset gets a small CNN (`ganforge.metrics.classifier`) trained on its own training
split, on first use, on the CPU. A folder with one subfolder per class is labelled too: its net
trains on a fixed 80 % of the folder and is measured on the other 20 % (the split the offline
datasets use, `ganforge.data.embedded.split_indices`).

The trained net is cached under ``cache_dir()/feature_nets/<dataset>-<hash16>/`` as
``model.safetensors`` (loads without executing code) plus ``record.json``. The hash covers the exact
dataset content and the training recipe, so a changed dataset or recipe can never reuse a stale net,
and the hash printed next to every score names the ruler it was measured with. The cache is
optional: when it cannot be written, the net is trained, used and not kept (one warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from ganforge import paths
from ganforge.errors import DataError
from ganforge.io import atomic_writer, display_path, write_json
from ganforge.metrics.classifier import (  # noqa: F401  (re-exported: the public names live here)
    DEFAULT_RECIPE,
    FORMAT_VERSION,
    MIN_IMAGE_SIZE,
    ClassifierNet,
    FeatureNet,
    FeatureNetRecipe,
    train_classifier,
)

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
    dataset_name: str, *, quiet: bool = False, recipe: FeatureNetRecipe = DEFAULT_RECIPE, dataset=None
) -> FeatureNet:
    """The feature network of a labelled dataset: loaded from the cache, or trained now and cached.

    `dataset_name` is a registered name or a folder; `dataset` (optional) is that folder already
    loaded, at the shape it is scored at."""
    from ganforge.data import DATASETS, holdout_split, load_dataset

    if dataset_name in DATASETS:
        if not DATASETS[dataset_name].num_classes:
            raise _unlabelled(dataset_name)
        train = load_dataset(dataset_name, split="train", quiet=quiet)
        test = load_dataset(dataset_name, split="test", quiet=quiet)
    else:
        data = dataset if dataset is not None else load_dataset(dataset_name, split="all", quiet=quiet,
                                                                  stream=None)
        if data.labels is None or not data.num_classes:
            raise _unlabelled(dataset_name)
        train, test = holdout_split(data)
    if train.labels is None or test.labels is None or not train.num_classes:
        raise _unlabelled(dataset_name)
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


def _unlabelled(dataset_name: str) -> DataError:
    from ganforge.data import DATASETS

    labelled = ", ".join(name for name, info in DATASETS.items() if info.num_classes)
    return DataError(
        f"{display_path(dataset_name)} is not a labelled dataset, so it has no classifier feature "
        f"network (those are: {labelled}, and folders with one subfolder per class); use --features "
        "inception"
    )


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
    cached = paths.write_cache(lambda: _save(folder, module, record))
    if not quiet:
        kept = f"cached in {display_path(folder)}" if cached else "not cached"
        print(
            f"feature net {record['id']} ({digest[:12]}): "
            f"test accuracy {accuracy:.2%} on {len(test)} images, "
            f"trained in {seconds:.0f}s, {kept}",
            file=sys.stderr,
            flush=True,
        )
    # Score with the net exactly as a later run will load it, so a cold-cache evaluation and a warm
    # rerun use the same weights, bit for bit, whatever the training left behind in memory.
    reloaded = _load_cached(folder, digest) if cached else None
    return reloaded if reloaded is not None else FeatureNet(module, record)


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """An advisory lock on one cache entry (POSIX flock). Where there is no flock, or the cache
    cannot be written (so nothing will be saved to race over), there is no lock."""
    try:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "w")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    # Weights first, record last, each atomically: a reader that sees record.json sees a whole entry,
    # and two processes training the same net at once each write a complete, identical pair.
    with atomic_writer(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    write_json(folder / "record.json", record)
