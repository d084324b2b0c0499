"""`ganforge translate eval RUN`: how good is a translation run, measured on held-out data.

Paired runs: L1 (pixels in [0, 1]), PSNR and SSIM (torchmetrics, data range 1) of G(x) against the
held-out targets, the inputs' own L1 to the targets (what translation must beat), and for data
whose targets are MNIST-like digits (the built-ins), the analogue of the pix2pix paper's FCN-score:
the mnist5k classifier's accuracy on G(x) against the source's label, beside its accuracy on the
real targets (the ceiling), and FID in that classifier's feature space.

Unpaired runs (A -> B): label preservation (the classifier on G_AB(a) against a's label), the
target-domain rate (a logistic regression trained to tell real A from real B calls G_AB(a) B),
the cycle L1 |G_BA(G_AB(a)) - a|, FID of G_AB(a) to the real B images, and on thin2thick the stroke
width shift G_AB(a) - a against the known one, B - A.

The classifier is the mnist5k feature network of `ganforge.metrics` (trained once, cached); it
sees the 28 x 28 middle of the 32 x 32 built-in images, where MNIST's digits are. The result goes
to RUN/eval.json and an eval row of metrics.jsonl, with the protocol (split, image count,
checkpoint, step, classifier hash). With `eval_every`, training scores its generators the same way
every so many steps (`training_score`) and keeps the best checkpoint by `best_key`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganforge.data.pixels import normalize, to_uint8
from ganforge.io import MetricsLog, write_json
from ganforge.translate.builtins import stroke_width
from ganforge.translate.data import TranslationData
from ganforge.translate.run import open_split
from ganforge.trained import Trained
from ganforge.translate.use import load_trained, trained_from_state

MNIST_TARGETS = {"edges2mnist", "thin2thick", "thin2thick-unpaired", "digits2mnist"}


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def pixel_scores(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """L1, PSNR (dB) and SSIM of uint8 images against their targets (same shapes)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    f, r = _f(fake), _f(real)
    return {"l1": float((f - r).abs().mean()),
            "psnr": float(peak_signal_noise_ratio(f, r, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(f, r, data_range=1.0))}


def _middle(images: torch.Tensor, size: int) -> torch.Tensor:
    """The classifier's view: the middle `size` x `size` of 32 x 32 digits (MNIST padded by 2)."""
    if images.shape[-1] == 32 and size == 28:
        return images[..., 2:30, 2:30]
    return images


def translate_all(model: Trained, images: torch.Tensor, batch: int = 200) -> torch.Tensor:
    """uint8 N x C x H x W (sides the generator takes) -> its uint8 outputs, in batches."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            y = model(normalize(images[start:start + batch].to(model.device)))
            outputs.append(to_uint8(y))
    return torch.cat(outputs)


def _classifier(quiet: bool):
    from ganforge.metrics.feature_nets import get_feature_net

    return get_feature_net("mnist5k", quiet=quiet)


def _accuracy(net, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    feats, logits = net.extract(_middle(images, net.image_size))
    return float((logits.argmax(1) == labels).double().mean()), feats


def _domain_rate(data_train: TranslationData, fake: torch.Tensor) -> float:
    """The share of `fake` that a logistic regression on 16 x 16 pixels, trained on real A (0) against
    real B (1), calls B."""
    from sklearn.linear_model import LogisticRegression
    import torch.nn.functional as F

    def flat(x: torch.Tensor) -> np.ndarray:
        x = x.float().mean(1, keepdim=True) / 255.0
        return F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False).flatten(1).numpy()

    n = min(len(data_train.a), len(data_train.b), 2000)
    features = np.concatenate([flat(data_train.a[:n]), flat(data_train.b[:n])])
    target = np.concatenate([np.zeros(n), np.ones(n)])
    model = LogisticRegression(max_iter=1000).fit(features, target)
    return float(model.predict(flat(fake)).mean())


def evaluate_run(run_dir: str | Path, checkpoint: str | None = None, *, n: int = 1000, device: str = "cpu",
                 quiet: bool = False) -> dict:
    """Score a run's generator(s) on `n` held-out images; write RUN/eval.json and an eval row."""
    run = Path(run_dir)
    model = load_trained(run, checkpoint, device)
    back = load_trained(run, checkpoint, device, direction="BtoA") if model.config.mode == "cyclegan" else None
    result = {"checkpoint": model.source.name, "step": model.meta["step"], **score(model, back, n, quiet)}
    write_json(run / "eval.json", result)
    with MetricsLog(run / "metrics.jsonl") as mlog:
        mlog.eval(model.meta["step"], **{k: v for k, v in result.items() if k != "step"})
    return result


def score(model: Trained, back: Trained | None, n: int, quiet: bool = False) -> dict:
    """The scores of generator `model` (and of `back`, a CycleGAN's B -> A one) on `n` held-out
    images of its run's data, with their protocol (split, count, data, mode, test_mode)."""
    cfg = model.config
    test = open_split(cfg, "test", cfg.image_size)
    count = min(n, len(test.a))
    result: dict = {"split": "test", "images": count, "data": cfg.data, "mode": cfg.mode, "test_mode": cfg.test_mode}
    digits = cfg.data in MNIST_TARGETS
    net = _classifier(quiet) if digits else None
    if net is not None:
        result["classifier"] = {"id": net.id, "hash": net.hash[:16], "test_accuracy": net.test_accuracy}
    if cfg.mode == "pix2pix":
        src, tgt = (test.b, test.a) if cfg.direction == "BtoA" else (test.a, test.b)
        src, tgt = src[:count], tgt[:count]
        fake = translate_all(model, src)
        result.update(pixel_scores(fake, tgt))
        if src.shape == tgt.shape:
            result["input_l1"] = pixel_scores(src, tgt)["l1"]
        if net is not None:
            labels = test.labels_b[:count]
            result["classifier_score"], fake_feats = _accuracy(net, fake, labels)
            result["classifier_ceiling"], real_feats = _accuracy(net, tgt, labels)
            from ganforge.metrics.scores import fid

            result["fid"] = fid(fake_feats, real_feats)
    else:
        a, b = test.a[:count], test.b[:count]
        fake = translate_all(model, a)
        result["cycle_l1"] = float((_f(translate_all(back, fake)) - _f(a)).abs().mean())
        result["target_domain_rate"] = _domain_rate(open_split(cfg, "train", cfg.image_size), fake)
        if net is not None:
            result["label_preservation"], fake_feats = _accuracy(net, fake, test.labels_a[:count])
            result["classifier_ceiling"], real_feats = _accuracy(net, b, test.labels_b[:count])
            from ganforge.metrics.scores import fid

            result["fid"] = fid(fake_feats, real_feats)
    if cfg.data.startswith("thin2thick"):
        src = test.a[:count]
        known = float(stroke_width(test.b[:count]).mean() - stroke_width(src).mean())
        shift = float(stroke_width(fake).mean() - stroke_width(src).mean())
        result["stroke_width_shift"] = {"measured": shift, "known": known,
                                        "relative_error": abs(shift - known) / max(abs(known), 1e-9)}
    return result


def best_key(result: dict) -> str:
    """The score that picks a run's best checkpoint (lower is better): a paired run's held-out L1;
    an unpaired run's FID to the target domain where its data has a classifier, else its cycle L1."""
    if result["mode"] == "pix2pix":
        return "l1"
    return "fid" if "fid" in result else "cycle_l1"


def training_score(run) -> dict:
    """`eval_every`'s scores of a training run (a TranslateRun, on rank 0): `score` on `eval_n`
    held-out images of copies of its generators, as `translate eval` would score a checkpoint of
    this step, without touching the run's modules or random streams. Adds `score` and
    `score_name` (best_key)."""
    cfg = run.cfg
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):  # building draws too
        models = [trained_from_state(cfg, direction, run.step, run.generator(direction).state_dict(), run.device)
                  for direction in (("AtoB", "BtoA") if cfg.mode == "cyclegan" else ("AtoB",))]
        result = score(models[0], models[1] if len(models) > 1 else None, cfg.eval_n, quiet=True)
    name = best_key(result)
    return {**result, "score_name": name, "score": result[name]}
