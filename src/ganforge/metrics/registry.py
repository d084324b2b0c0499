"""The metrics `ganforge eval` reports, by name: each says what it measures and how (its protocol),
and computes its named values from one set of features. `evaluate_images` runs every entry, so a new
metric is one registration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ganforge.metrics import scores
from ganforge.registry import Registry

IS_SPLITS = 10


@dataclass(frozen=True)
class Features:
    """What every metric may read: float64 features of both sets, the fake set's class logits, and
    the evaluation's options."""

    fake: torch.Tensor
    real: torch.Tensor
    fake_logits: torch.Tensor
    seed: int = 0
    kid_subsets: int = 10
    kid_subset_size: int = 1000


@dataclass(frozen=True)
class Metric:
    name: str
    protocol: str  # what it measures, in words, with its fixed choices
    compute: Callable[[Features], dict[str, float]]


METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, protocol: str):
    def add(compute: Callable[[Features], dict[str, float]]) -> Callable:
        METRICS.register(name, Metric(name, protocol, compute))
        return compute
    return add


@_register("fid", "Frechet distance between Gaussians fitted to the two feature sets (lower is better)")
def _fid(f: Features) -> dict[str, float]:
    return {"fid": scores.fid(f.fake, f.real)}


@_register("kid", "unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets")
def _kid(f: Features) -> dict[str, float]:
    mean, std = scores.kid(f.fake, f.real, subsets=f.kid_subsets, subset_size=f.kid_subset_size, seed=f.seed)
    return {"kid_mean": mean, "kid_std": std}


@_register("precision_recall", f"improved precision and recall, k={scores.PR_NEIGHBOURHOOD} nearest-neighbour "
                               "manifolds (Kynkaanniemi et al. 2019)")
def _precision_recall(f: Features) -> dict[str, float]:
    precision, recall = scores.precision_recall(f.fake, f.real, k=scores.PR_NEIGHBOURHOOD)
    return {"precision": precision, "recall": recall}


@_register("inception_score", f"exp(E KL(p(y|x) || p(y))) of the feature network's classes, {IS_SPLITS} splits")
def _inception_score(f: Features) -> dict[str, float]:
    mean, std = scores.inception_score(f.fake_logits, splits=IS_SPLITS, seed=f.seed)
    return {"inception_score": mean, "inception_score_std": std}
