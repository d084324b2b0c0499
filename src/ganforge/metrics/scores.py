"""Distances between two sets of features: FID, KID, precision/recall and the Inception Score.

The maths comes from torch-fidelity's feature-level functions (the same code its `calculate_metrics`
runs on Inception features), so these numbers match what the community computes once the feature
space is fixed. What this module adds is the float64 discipline, argument checks that fail with one
readable line, and names that say which argument is the generated set.

Every function takes `fake` first and `real` second: the convention of torch-fidelity's
precision/recall, where precision asks "is each fake sample inside the real manifold?".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganforge.errors import GanforgeError

# Kynkäänniemi et al. 2019 use the 3rd nearest neighbour to estimate each sample's manifold radius.
PR_NEIGHBOURHOOD = 3


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set in float64: all FID needs from one side."""

    mean: np.ndarray  # D
    cov: np.ndarray  # D x D, unbiased (N - 1)
    count: int


def _as_float64(features: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(features) or features.dim() != 2:
        raise GanforgeError(
            f"{what} features must be a 2-D tensor (N x D), got {getattr(features, 'shape', type(features))}"
        )
    if not torch.isfinite(features).all():
        raise GanforgeError(
            f"{what} features contain NaN or inf; check the images given to the feature network"
        )
    return features.detach().to("cpu", torch.float64)


def _check_pair(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fake, real = _as_float64(fake, "fake"), _as_float64(real, "real")
    if fake.shape[1] != real.shape[1]:
        raise GanforgeError(
            f"fake and real features differ in width ({fake.shape[1]} vs {real.shape[1]}): "
            "use one feature network for both"
        )
    return fake, real


def gaussian_stats(features: torch.Tensor) -> GaussianStats:
    """Mean and unbiased covariance of N x D features, computed in float64."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    features = _as_float64(features, "")
    if features.shape[0] < 2:
        raise GanforgeError("FID needs at least 2 images on each side; generate more images")
    stats = fid_features_to_statistics(features)
    return GaussianStats(mean=stats["mu"], cov=np.atleast_2d(stats["sigma"]), count=features.shape[0])


def fid_from_stats(fake: GaussianStats, real: GaussianStats) -> float:
    """Fréchet distance ||mu_f - mu_r||^2 + Tr(S_f + S_r - 2 (S_f S_r)^1/2) between two Gaussians."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    if fake.mean.shape != real.mean.shape:
        raise GanforgeError(
            f"fake and real statistics differ in width ({fake.mean.shape[0]} vs {real.mean.shape[0]}): "
            "use one feature network for both"
        )
    out = fid_statistics_to_metric(
        {"mu": fake.mean, "sigma": fake.cov}, {"mu": real.mean, "sigma": real.cov}, verbose=False
    )
    return float(out["frechet_inception_distance"])


def fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet Inception Distance between two N x D feature sets (float64)."""
    fake, real = _check_pair(fake, real)
    return fid_from_stats(gaussian_stats(fake), gaussian_stats(real))


def kid(
    fake: torch.Tensor, real: torch.Tensor, *, subsets: int = 10, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over random subsets.

    The kernel is the cubic polynomial k(x, y) = (x.y / D + 1)^3 of Bińkowski et al. 2018. A subset
    larger than either set is shrunk to fit, so small evaluations still return a number; the caller
    records the size it asked for and the sets' sizes in the protocol.
    """
    from torch_fidelity.metric_kid import kid_features_to_metric

    fake, real = _check_pair(fake, real)
    if subsets < 1:
        raise GanforgeError(f"KID needs at least 1 subset, got {subsets}")
    size = effective_kid_subset_size(subset_size, fake.shape[0], real.shape[0])
    out = kid_features_to_metric(
        fake, real, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    return float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"])


def effective_kid_subset_size(requested: int, n_fake: int, n_real: int) -> int:
    """The KID subset size actually used: the request, capped by both set sizes."""
    size = min(requested, n_fake, n_real)
    if size < 2:
        raise GanforgeError(
            f"KID needs subsets of at least 2 images (have {n_fake} fake, {n_real} real): "
            "generate more images"
        )
    return size


def precision_recall(
    fake: torch.Tensor, real: torch.Tensor, *, k: int = PR_NEIGHBOURHOOD, batch_size: int = 2000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifold radii.

    Precision: the share of fake samples within the k-NN radius of some real sample.
    Recall: the share of real samples within the k-NN radius of some fake sample.
    Distances are computed in blocks of `batch_size` rows so memory stays O(batch x N).
    """
    from torch_fidelity.metric_prc import prc_features_to_metric

    fake, real = _check_pair(fake, real)
    if min(fake.shape[0], real.shape[0]) <= k:
        raise GanforgeError(
            f"precision/recall with k={k} needs more than {k} images on each side; generate more images"
        )
    out = prc_features_to_metric(
        fake, real, prc_neighborhood=k, prc_batch_size=batch_size, save_cpu_ram=True, verbose=False
    )
    # torch-fidelity averages 0/1 flags in float32; snapping back to count / N gives the exact fraction.
    n_fake, n_real = fake.shape[0], real.shape[0]
    return round(out["precision"] * n_fake) / n_fake, round(out["recall"] * n_real) / n_real


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` shuffled chunks of the logits.

    With a dataset classifier as p(y|x) this is the classifier-based Inception Score: its ceiling is
    the number of classes, reached when every image is classified confidently and classes are balanced.
    """
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = _as_float64(logits, "classifier")
    splits = max(1, min(splits, logits.shape[0]))
    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return float(out["inception_score_mean"]), float(out["inception_score_std"])
