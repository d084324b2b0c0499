"""What a score means: the two numbers printed beside every `ganforge eval` score.

- **real images**: as many real images from the training split, scored against the same reference
  under the same protocol: what a generator that reproduced the data exactly would score (the
  ceiling; not 0, because two finite samples of one distribution differ).
- **untrained G**: the run's generator at its initial weights (the same config and seed), scored the
  same way: where training started.

Both are cached: the ceiling under the cache folder (it depends only on the dataset and protocol),
the untrained score in the run folder (it depends on the run's config).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ganforge import paths
from ganforge.io import write_json

SCORES = ("fid", "kid_mean", "kid_std", "precision", "recall", "inception_score")


def _key(protocol: dict, extra: dict) -> str:
    fields = {k: protocol.get(k) for k in ("features", "feature_hash", "n_fake", "n_real", "reference", "seed",
                                           "kid_subsets", "kid_subset_size", "pr_k")}
    return hashlib.sha256(json.dumps({**fields, **extra}, sort_keys=True).encode()).hexdigest()[:20]


def _cached(path: Path, key: str, compute) -> dict | None:
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and key in stored:
            return stored[key]
    except (OSError, ValueError):
        stored = {}
    scores = compute()
    if scores is None:
        return None
    stored = {**(stored if isinstance(stored, dict) else {}), key: scores}
    paths.write_cache(lambda: (path.parent.mkdir(parents=True, exist_ok=True), write_json(path, stored)))
    return scores


def real_ceiling(data: str, protocol: dict, score) -> dict | None:
    """Scores of real training-split images against the reference (None for a folder: it has no
    split of its own to hold out). `score(images)` runs the same protocol."""
    from ganforge.data import DATASETS, load_dataset
    from ganforge.metrics.evaluate import reference_subset

    if data not in DATASETS:
        return None

    def compute() -> dict:
        train = load_dataset(data, split="train", quiet=True)
        n = min(int(protocol["n_fake"]), len(train))
        return _only_scores(score(train.images[reference_subset(len(train), n)]))

    path = paths.cache_dir() / "metric_baselines" / "real_ceiling.json"
    return _cached(path, _key(protocol, {"data": data, "what": "real train images"}), compute)


def untrained_generator(run_dir: Path, cfg, protocol: dict, n: int, seed: int, score) -> dict:
    """Scores of the run's generator at its initial weights (drawn as the run drew them)."""
    from ganforge.gan.latents import LatentSpec
    from ganforge.gan.sampling import generate
    from ganforge.gan.models import build_models

    def compute() -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the run's own initialisation
            generator, _ = build_models(cfg)
        fake = generate(generator, n, LatentSpec.from_config(cfg), seed=seed, pixel_range=cfg.pixel_range)
        return _only_scores(score(fake))

    config = {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "epochs", "device", "speed")}
    return _cached(Path(run_dir) / "eval_baselines.json", _key(protocol, {"config": config}), compute)


def _only_scores(result: dict) -> dict:
    return {**{k: result[k] for k in SCORES if k in result}, "n_images": result["protocol"]["n_fake"]}
