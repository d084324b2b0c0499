"""Is the latent space what it claims to be? Measurements for `ganforge eval` on conditional and
InfoGAN runs, each written to eval.json with the protocol that produced it.

- Class fidelity: the dataset's classifier (the feature network the metrics already train) labels
  images made for class k; per-class and mean accuracy. The same classifier on the real test
  images of each class gives the ceiling (its per-class recall), reported beside it.
- InfoGAN's categorical code: images made for each code value are labelled by that classifier;
  agreement is the share that falls on the best one-to-one matching of code values to classes
  (Hungarian algorithm on the confusion matrix, `scipy.optimize.linear_sum_assignment`).
- InfoGAN's continuous codes: for each of `sweeps` random latents, one code is swept over
  [-2, 2] (`SWEEP_VALUES` values) with everything else fixed; each image's slant and stroke width
  are measured, and the Spearman correlation of the code value with each property is taken along
  that sweep. Reported: the mean over the sweeps (sweeps on which a property does not vary count 0).

Slant is the angle (degrees) between the vertical and the principal axis of the image's ink, from
its second-order central moments. Stroke width is the ink area over the length of its skeleton
(pixels above half intensity, thinned to one pixel with scikit-image's `skeletonize`): for a
stroke of length L and width w, area L*w over skeleton length L is w.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ganforge.gan.latents import LatentSpec
from ganforge.gan.sampling import generate, generate_latent

SWEEP_VALUES = 9
SWEEP_RANGE = (-2.0, 2.0)
INK_THRESHOLD = 0.5


def slant(images: torch.Tensor) -> np.ndarray:
    """Principal-axis angle from the vertical, degrees, of uint8 N x 1 x H x W images (bright ink)."""
    w = images[:, 0].double() / 255.0  # N x H x W ink weights
    h, wd = w.shape[1:]
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(wd, dtype=torch.float64).view(1, 1, wd)
    mass = w.sum((1, 2)).clamp_min(1e-9)
    cy = (w * ys).sum((1, 2)) / mass
    cx = (w * xs).sum((1, 2)) / mass
    dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
    mu20, mu02, mu11 = ((w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2)))
    return np.degrees(0.5 * torch.atan2(2 * mu11, mu02 - mu20).numpy())


def stroke_width(images: torch.Tensor) -> np.ndarray:
    """Ink area over skeleton length (pixels) of uint8 N x 1 x H x W images; 0 for a blank image."""
    from skimage.morphology import skeletonize

    ink = (images[:, 0].numpy() / 255.0) > INK_THRESHOLD
    out = np.zeros(len(ink))
    for i, mask in enumerate(ink):
        length = int(skeletonize(mask).sum())
        out[i] = mask.sum() / length if length else 0.0
    return out


def _classify(net, images: torch.Tensor) -> torch.Tensor:
    return net.extract(images)[1].argmax(1)


def class_fidelity(generator, spec: LatentSpec, net, real_test, n_per_class: int, seed: int,
                   device="cpu", pixel_range: str = "pm1") -> dict:
    """Accuracy of the classifier on `n_per_class` images made for each class, and its ceiling on
    the real test images of each class."""
    per_class, ceiling = {}, {}
    real_pred = _classify(net, real_test.images)
    for k in range(spec.num_classes):
        fake = generate(generator, n_per_class, spec, seed=seed + k, device=device, pixel_range=pixel_range,
                        labels=[k])
        per_class[str(k)] = float((_classify(net, fake) == k).float().mean())
        mine = real_test.labels == k
        ceiling[str(k)] = float((real_pred[mine] == k).float().mean()) if mine.any() else None
    known = [v for v in ceiling.values() if v is not None]
    return {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class,
            "ceiling_mean": float(np.mean(known)) if known else None, "ceiling_per_class": ceiling,
            "protocol": {"classifier": net.id, "classifier_hash": net.hash,
                         "classifier_test_accuracy": net.test_accuracy, "n_per_class": n_per_class,
                         "seed": seed, "ceiling": f"the classifier's per-class recall on {len(real_test)} real "
                                                  "test images"}}


def category_agreement(generator, spec: LatentSpec, net, n: int, seed: int, device="cpu",
                       pixel_range: str = "pm1") -> dict:
    """Share of images whose classifier label is the class matched to their categorical code."""
    rng = torch.Generator().manual_seed(seed)
    latent = spec.sample(n, rng, "cpu")
    cat = torch.arange(n) % spec.categorical
    latent["codes"][:, :spec.categorical] = torch.nn.functional.one_hot(cat, spec.categorical).float()
    pred = _classify(net, generate_latent(generator, latent, device=device, pixel_range=pixel_range))
    out = agreement_of(cat, pred, spec.categorical, int(net.module.num_classes))
    out["protocol"] = {"classifier": net.id, "classifier_hash": net.hash, "n": n, "seed": seed,
                       "matching": "scipy.optimize.linear_sum_assignment on the code x class counts",
                       "other_codes": "continuous codes drawn from U(-1, 1), z from N(0, I)"}
    return out


def agreement_of(codes: torch.Tensor, labels: torch.Tensor, categories: int, classes: int) -> dict:
    """Agreement of code values with classifier labels under the best one-to-one matching."""
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((categories, classes), dtype=np.int64)
    np.add.at(confusion, (codes.numpy(), labels.numpy()), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return {"agreement": float(confusion[rows, cols].sum() / max(1, len(codes))),
            "matching": {str(r): int(c) for r, c in zip(rows, cols)},
            "confusion": confusion.tolist()}


def class_changes(labels: np.ndarray) -> dict:
    """Along each sweep (a row of classifier labels), whether the class stays; the changes seen
    (first label -> first different one), most frequent first."""
    changes: dict[tuple[int, int], int] = {}
    for row in labels:
        moved = row[row != row[0]]
        if len(moved):
            pair = (int(row[0]), int(moved[0]))
            changes[pair] = changes.get(pair, 0) + 1
    kept = 1.0 - sum(changes.values()) / max(1, len(labels))
    ranked = sorted(changes.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"class_kept": kept, "class_changes": [[a, b, n] for (a, b), n in ranked]}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(y) == 0:
        return 0.0
    rho = spearmanr(x, y).statistic
    return 0.0 if rho is None or math.isnan(rho) else float(rho)


def continuous_codes(generator, spec: LatentSpec, sweeps: int, seed: int, device="cpu",
                     pixel_range: str = "pm1", net=None) -> dict:
    """Spearman correlation of each continuous code with slant and stroke width along sweeps, and
    (given the dataset's classifier `net`) whether the class stays the same along each sweep."""
    rng = torch.Generator().manual_seed(seed)
    base = spec.sample(sweeps, rng, "cpu")
    values = np.linspace(*SWEEP_RANGE, SWEEP_VALUES)
    out = {}
    for j in range(spec.continuous):
        col = spec.categorical + j
        latent = {k: v.repeat_interleave(SWEEP_VALUES, 0) for k, v in base.items()}  # sweep-major
        latent["codes"][:, col] = torch.tensor(values, dtype=torch.float32).repeat(sweeps)
        images = generate_latent(generator, latent, device=device, pixel_range=pixel_range)
        props = {"slant": slant(images).reshape(sweeps, -1), "width": stroke_width(images).reshape(sweeps, -1)}
        out[f"c{j + 1}"] = {name: float(np.mean([_spearman(values, p) for p in prop]))
                            for name, prop in props.items()}
        if net is not None:  # a code that turns one digit into another carries the class, not style
            out[f"c{j + 1}"].update(class_changes(_classify(net, images).numpy().reshape(sweeps, -1)))
    slant_code = max(out, key=lambda c: abs(out[c]["slant"])) if out else None
    width_code = max((c for c in out if c != slant_code), key=lambda c: abs(out[c]["width"]), default=None)
    return {"codes": out, "slant_code": slant_code, "width_code": width_code,
            "protocol": {"sweeps": sweeps, "values": values.tolist(), "seed": seed,
                         "statistic": "mean over sweeps of the Spearman rho between the code value and the property",
                         "slant": "principal-axis angle from the vertical (degrees), from image moments",
                         "width": "ink area / skeleton length (skimage skeletonize of pixels > half intensity)"}}


def latent_measurements(generator, cfg, *, n: int, seed: int, device="cpu", quiet: bool = False) -> dict:
    """eval.json's `class_fidelity` (a conditional run) and `infogan` (a run with codes) entries."""
    spec = LatentSpec.from_config(cfg)
    if not (spec.conditional or spec.code_dim):
        return {}
    from ganforge.data import DATASETS, holdout_split, load_dataset
    from ganforge.metrics.feature_nets import get_feature_net

    shape = {} if cfg.data in DATASETS else {"channels": cfg.channels, "image_size": cfg.image_size}
    if cfg.data in DATASETS:
        net, test = get_feature_net(cfg.data, quiet=quiet), load_dataset(cfg.data, split="test", quiet=quiet)
    else:
        data = load_dataset(cfg.data, split="all", quiet=quiet, stream=None, **shape)
        net, test = get_feature_net(data.name, quiet=quiet, dataset=data), holdout_split(data)[1]
    out: dict = {}
    kw = {"device": device, "pixel_range": cfg.pixel_range}
    if spec.conditional:
        out["class_fidelity"] = class_fidelity(generator, spec, net, test, max(1, n // spec.num_classes), seed,
                                               **kw)
    if spec.code_dim:
        info: dict = {}
        if spec.categorical:
            info["categorical"] = category_agreement(generator, spec, net, n, seed, **kw)
        if spec.continuous and cfg.channels == 1:
            info["continuous"] = continuous_codes(generator, spec, max(1, min(n // SWEEP_VALUES, 500)), seed,
                                                  net=net, **kw)
        out["infogan"] = info
    from ganforge.gan.verdict import latent_verdict

    out["verdict"] = latent_verdict(out, getattr(cfg, "info_invariance", None), getattr(cfg, "info_axes", None))
    return out


def format_latent(result: dict) -> list[str]:
    """Text lines for `ganforge eval`'s table."""
    lines = []
    fid = result.get("class_fidelity")
    if fid:
        ceiling = f" (ceiling on real test images {fid['ceiling_mean']:.2%})" if fid.get("ceiling_mean") else ""
        lines.append(f"class fidelity: mean {fid['mean']:.2%}{ceiling}; per class " + ", ".join(
            f"{k} {v:.0%}" for k, v in fid["per_class"].items()))
    info = result.get("infogan") or {}
    if "categorical" in info:
        lines.append(f"InfoGAN categorical code: agreement {info['categorical']['agreement']:.2%} with the "
                     "classifier after one-to-one matching")
    if "continuous" in info:
        cont = info["continuous"]
        lines.append("InfoGAN continuous codes (Spearman rho): " + "; ".join(
            f"{c} slant {v['slant']:+.2f} width {v['width']:+.2f}" for c, v in cont["codes"].items()))
    from ganforge.gan.verdict import format_verdict

    return lines + format_verdict(result.get("verdict"))
