"""It learns: a few hundred steps of the fully connected GAN on real digits move the generator's
samples measurably towards the data, by the classifier-feature FID. A sign error in a loss, a
swapped label or a D that never steps leaves the FID where the untrained generator has it."""

from __future__ import annotations

import pytest
import torch

from ganforge.config import apply_overrides
from ganforge.gan.latents import LatentSpec
from ganforge.gan.recipes import get_recipe
from ganforge.gan.sampling import generate, load_generator
from ganforge.gan.train import train
from ganforge.metrics.evaluate import evaluate_images
from ganforge.gan.models import build_models

pytestmark = pytest.mark.usefixtures("shared_metrics_cache", "no_network")


def test_mlp_gan_learns_digits(tmp_path):
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"),
                          ["data=digits", "image_size=8", "batch_size=64", "sampling=epoch", "g_lr=1e-3",
                           "d_lr=1e-3", "device=cpu", "sample_every=100", "checkpoint_every=400"])
    run = train(cfg, tmp_path / "run", steps=400, quiet=True)
    torch.manual_seed(cfg.seed)  # the same initial weights the run started from
    untrained, _ = build_models(cfg)
    trained, _, _ = load_generator(run)
    spec = LatentSpec.from_config(cfg)
    scores = {name: evaluate_images(generate(g, 1000, spec, seed=5), "digits", quiet=True)
              for name, g in (("untrained", untrained), ("trained", trained))}
    # Measured: about 180 untrained and 38 trained (classifier features of `digits`).
    assert scores["trained"]["fid"] < 0.5 * scores["untrained"]["fid"], scores
    assert scores["trained"]["recall"] > scores["untrained"]["recall"] + 0.2, scores
