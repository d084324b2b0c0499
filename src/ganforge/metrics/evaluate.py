"""Score generated images against a reference dataset, with the protocol written next to every number.

A FID is only comparable to another FID measured with the same feature network, the same reference
split and the same numbers of images. So the result of :func:`evaluate_images` carries a `protocol`
block naming all of them, and :func:`format_table` prints it under the scores.

Real-data features depend only on (feature network, reference images), so they are cached on disk
under ``cache_dir()/metric_stats/`` keyed by a hash of both: evaluating the next checkpoint costs
only the fake images' features. That cache is optional: when it cannot be written, the features
are computed each time (one warning).
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

import ganforge
from ganforge import paths
from ganforge.errors import ConfigError, DataError, GanforgeError
from ganforge.io import display_path
from ganforge.metrics import scores
from ganforge.metrics.registry import IS_SPLITS, METRICS, Features
from ganforge.metrics.feature_nets import FeatureExtractor, cache_slug

FEATURE_CHOICES = ("auto", "classifier", "inception")
REAL_SUBSET_SEED = 0  # the reference subset is fixed, whatever the evaluation seed, so its cache is reused
# A 3-channel fake image counts as grayscale when its channels differ by at most this much on average
# (out of 255): generators trained on gray data replicated to RGB never output exactly equal channels.
GRAY_TOLERANCE = 16.0


STREAM_REFERENCE = 10_000  # reference images decoded from a folder too big to hold in memory


def evaluate_images(
    fake: torch.Tensor,
    data: str,
    *,
    features: str = "auto",
    n_real: int | None = None,
    split: str = "test",
    seed: int = 0,
    inception_path: str | os.PathLike | None = None,
    kid_subsets: int = 10,
    kid_subset_size: int = 1000,
    quiet: bool = False,
    folder_shape: tuple[int, int] | None = None,
    sharded: bool = False,
) -> dict | None:
    """FID, KID, precision/recall (k=3) and Inception Score of uint8 `fake` images against `data`.

    fake: uint8 N x C x H x W from a generator; converted to the feature space's channels and size.
    data: a registered dataset name or a folder of images (a folder has one split: "test" means "all").
    features: "classifier" (the dataset's own CNN), "inception" (local FID weights) or "auto"
        (classifier for labelled datasets, else Inception if its weights are present).
    n_real: reference images to use (None: the whole split); a fixed subset, independent of `seed`.
    seed: drives KID's subsets and the Inception Score's shuffling.
    folder_shape: (channels, image_size) to read a folder reference at, as the run trained on it
        (None: the folder's own shape).
    sharded: under torchrun, `fake` is this process's share of the images and every process calls
        this: rank 0 prepares the reference first, each rank extracts its share's features, and
        rank 0 gathers them and scores (the other ranks get None).
    Returns a JSON-able dict of scores plus a "protocol" dict that says how they were measured.
    """
    from ganforge import distributed as dist
    from ganforge.data import DATASETS, load_dataset

    _check_fake(fake)
    if features not in FEATURE_CHOICES:
        raise ConfigError(f"unknown feature space {features!r}: choose one of {', '.join(FEATURE_CHOICES)}")
    if data not in DATASETS and split == "test":
        split = "all"  # a folder has no held-out part: it is the reference as a whole
    channels, size = folder_shape if folder_shape and data not in DATASETS else (None, None)
    real = load_dataset(data, split=split, quiet=quiet, stream=None, channels=channels, image_size=size)
    if not real.in_memory:  # a folder too big to hold: a fixed random subset of it is the reference
        n_real = min(n_real or STREAM_REFERENCE, len(real))
        real_images = real.decode(reference_subset(len(real), n_real).tolist())
    else:
        real_images = real.images
    check_compatible(fake, real_images, display_path(real.name))
    if sharded and dist.active():
        # Rank 0 first: it may train and cache the feature network and the reference features.
        real_feats = dist.main_decides(
            lambda: real_features(select_extractor(real, features, inception_path=inception_path, quiet=quiet),
                                  real_images, real.name, split, n_real))
        extractor = select_extractor(real, features, inception_path=inception_path, quiet=True)
        fake_feats, fake_logits = extractor.extract(fake)
        fake_feats, fake_logits = dist.gather_rows(fake_feats), dist.gather_rows(fake_logits)
        if not dist.is_main():
            return None
        fake = torch.empty(fake_feats.shape[0], 0)  # only its count is read below
    else:
        extractor = select_extractor(real, features, inception_path=inception_path, quiet=quiet)
        real_feats = real_features(extractor, real_images, real.name, split, n_real)
        fake_feats, fake_logits = extractor.extract(fake)

    feats = Features(fake_feats, real_feats, fake_logits, seed, kid_subsets, kid_subset_size)
    values: dict[str, float] = {}
    for metric in METRICS.values():
        values.update(metric.compute(feats))
    return {
        **values,
        "protocol": {
            "metrics": {m.name: m.protocol for m in METRICS.values()},
            "features": extractor.id,
            "feature_hash": extractor.hash,
            "feature_test_accuracy": extractor.test_accuracy,
            "feature_dim": int(fake_feats.shape[1]),
            "n_fake": int(fake.shape[0]),
            "n_real": int(real_feats.shape[0]),
            "reference": f"{display_path(real.name)}:{split}",
            "seed": seed,
            "kid_subsets": kid_subsets,
            "kid_subset_size": scores.effective_kid_subset_size(
                kid_subset_size, fake.shape[0], real_feats.shape[0]
            ),
            "pr_k": scores.PR_NEIGHBOURHOOD,
            "is_splits": min(IS_SPLITS, int(fake.shape[0])),
            "ganforge_version": ganforge.__version__,
        },
    }


def select_extractor(real, features: str, *, inception_path=None, quiet: bool = False) -> FeatureExtractor:
    """The feature space for a reference dataset, per the `features` choice (see evaluate_images)."""
    from ganforge.metrics.feature_nets import get_feature_net
    from ganforge.metrics.inception import InceptionFeatures, find_inception_weights, missing_weights_hint

    labelled = real.labels is not None and bool(real.num_classes)
    if features == "classifier" or (features == "auto" and labelled):
        if not labelled:
            raise ConfigError(
                f"{display_path(real.name)} has no labels to train a classifier feature network on: "
                "use --features inception, or a labelled --data such as mnist"
            )
        return get_feature_net(real.name, quiet=quiet, dataset=real)
    if features == "auto" and find_inception_weights(inception_path) is None:
        raise GanforgeError(
            f"{display_path(real.name)} has no labels for a classifier feature network and the Inception-v3 "
            f"FID weights are absent: {missing_weights_hint()}, or score against a labelled --data "
            "(mnist, fashion-mnist, cifar10, ...)"
        )
    return InceptionFeatures(inception_path)


def check_compatible(fake: torch.Tensor, real_images: torch.Tensor, reference: str) -> None:
    """Refuse comparisons that image conversion cannot make meaningful (colour vs grayscale)."""
    fake_c, real_c = fake.shape[1], real_images.shape[1]
    if fake_c == real_c:
        return
    if fake_c == 1:
        raise DataError(
            f"the generated images are grayscale but {reference} is colour (3 channels): "
            "score them against a grayscale dataset, or train the generator with 3 channels"
        )
    spread = (fake.amax(dim=1).float() - fake.amin(dim=1).float()).mean().item()
    if spread > GRAY_TOLERANCE:
        raise DataError(
            f"the generated images are colour (RGB, mean channel spread {spread:.0f}/255) but {reference} "
            "is grayscale: score them against the colour dataset they were trained on"
        )


def reference_subset(n: int, n_real: int) -> torch.Tensor:
    """Sorted indices of the fixed `n_real` of `n` reference images (independent of any seed)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(REAL_SUBSET_SEED))
    return order[:n_real].sort().values


def real_features(
    extractor: FeatureExtractor, images: torch.Tensor, reference: str, split: str, n_real: int | None
) -> torch.Tensor:
    """Features of the reference images (a fixed subset of `n_real`), from the disk cache when possible."""
    if n_real is not None and n_real < 2:
        raise ConfigError(f"n_real must be at least 2, got {n_real}")
    if n_real is not None and n_real < len(images):
        images = images[reference_subset(len(images), n_real)]
    key = hashlib.sha256()
    key.update(
        json.dumps(
            {"features": extractor.hash, "reference": reference, "split": split, "n": len(images)}
        ).encode()
    )
    key.update(images.contiguous().numpy().tobytes())
    path = (
        paths.cache_dir()
        / "metric_stats"
        / f"{cache_slug(reference)}-{split}-{len(images)}-{key.hexdigest()[:16]}.safetensors"
    )
    cached = paths.read_tensors(path)
    if cached is not None and "features" in cached[0]:
        return cached[0]["features"].double()
    # The cache keeps float32 (the feature networks' own precision), and a cold run scores with the
    # very values a warm rerun will read back, so the two print the same FID to the last digit even
    # for an extractor that computes in float64.
    feats = extractor.extract(images)[0].to(torch.float32)
    paths.save_tensors(path, {"features": feats})  # optional: warns once on failure
    return feats.double()


def format_table(result: dict) -> str:
    """A small aligned text table of the scores, with the protocol underneath."""
    p = result["protocol"]
    # Subsets as large as the sets themselves all hold the same images: KID then has no spread.
    whole = p.get("kid_subset_size", 0) >= min(p.get("n_fake", 0), p.get("n_real", 0))
    kid_spread = "(no spread: one subset)" if whole else f"± {result['kid_std']:.6f}"
    rows = [
        ("FID", f"{result['fid']:.4f}", "fid", ".4f"),
        ("KID", f"{result['kid_mean']:.6f} {kid_spread}", "kid_mean", ".6f"),
        ("precision", f"{result['precision']:.4f}", "precision", ".4f"),
        ("recall", f"{result['recall']:.4f}", "recall", ".4f"),
        ("Inception Score", f"{result['inception_score']:.3f} ± {result.get('inception_score_std', 0.0):.3f}",
         "inception_score", ".3f"),
    ]
    baselines = {k: v for k, v in (result.get("baselines") or {}).items() if v}
    titles = {"real_images": "real images", "untrained_generator": "untrained G"}
    width = max(len(name) for name, *_ in rows)
    vwidth = max(len(value) for _, value, *_ in rows)
    head = f"{'metric':<{width}}  {'value':<{vwidth}}" + "".join(f"  {titles.get(k, k):>12}" for k in baselines)
    lines = [head.rstrip()]
    for name, value, key, fmt in rows:
        extra = "".join(f"  {format(b[key], fmt) if key in b else 'n/a':>12}" for b in baselines.values())
        lines.append(f"{name:<{width}}  {value:<{vwidth}}{extra}".rstrip())
    if baselines:
        lines.append("real images: as many real training images, scored the same way (the best a generator "
                     "can expect); untrained G: the run's generator at its initial weights")
    accuracy = p.get("feature_test_accuracy")
    accuracy_text = f", test accuracy {accuracy:.2%}" if accuracy is not None else ""
    lines.append(
        f"protocol: features {p['features']} (sha256 {p['feature_hash'][:12]}{accuracy_text}); "
        f"{p['n_fake']} fake vs {p['n_real']} real ({p['reference']}); seed {p['seed']}; "
        f"KID {p.get('kid_subsets', '?')}x{p.get('kid_subset_size', '?')}; P/R k={p.get('pr_k', 3)}; "
        f"ganforge {p['ganforge_version']}"
    )
    return "\n".join(lines)


def _check_fake(fake: torch.Tensor) -> None:
    if (
        not torch.is_tensor(fake)
        or fake.dtype != torch.uint8
        or fake.dim() != 4
        or fake.shape[1] not in (1, 3)
    ):
        described = f"{fake.dtype} {tuple(fake.shape)}" if torch.is_tensor(fake) else type(fake).__name__
        raise DataError(f"generated images must be a uint8 N x 1|3 x H x W tensor, got {described}")
    if fake.shape[0] <= scores.PR_NEIGHBOURHOOD:
        raise DataError(
            f"need more than {scores.PR_NEIGHBOURHOOD} generated images to score, got {fake.shape[0]}"
        )
