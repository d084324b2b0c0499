"""Translation's named presets: each is TranslateConfig's defaults plus what it changes.

`pix2pix` and `cyclegan` are the papers' and their authors' code; `pix2pix-tf` and `cyclegan-tf`
the tensorflow.org tutorials where they differ (budget, schedule, CycleGAN's U-Net with instance
norm, its cross-entropy loss and no image pool). The TF tutorials' U-Net differs from the authors'
in small ways (a normalised bottleneck, no biases); ours keeps the authors' blocks, so their
parameter counts are this project's, not TensorFlow's. The `-small` recipes are this project's, for
32 x 32 greyscale data on two CPU cores.
"""

from __future__ import annotations


from ganforge.runs.recipes import Recipe, RecipeBook
from ganforge.translate.config import TranslateConfig


RECIPES = RecipeBook("translation recipe", TranslateConfig)

ISOLA = "Isola et al. 2017, Image-to-Image Translation with Conditional Adversarial Networks, and the authors' code"
ZHU = "Zhu et al. 2017, Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks, and the authors' code"
# What both papers share: Adam 2e-4 (beta1 0.5), batch 1, 286 -> 256 jitter + mirror, 100 + 100 epochs.
PAPERS = dict(lr=2e-4, beta1=0.5, batch_size=1, image_size=256, load_size=286, flip=True, epochs=200,
              decay_from=0.5, sample_every=1000, checkpoint_every=5000, log_every=100)
CYCLEGAN = dict(mode="cyclegan", model="resnet", g_norm="instance", d_norm="instance", dropout=0.0, loss="lsgan",
                pool_size=50, lambda_cyc=10.0, lambda_idt=0.5)
SMALL = dict(image_size=32, load_size=36, channels_a=1, channels_b=1, ngf=16, ndf=16, log_every=25,
             sample_every=100, checkpoint_every=250)


def recipe(name: str, source: str, about: str, *bases: dict, **changes) -> Recipe:
    """Register a recipe: TranslateConfig's defaults, then each of `bases`, then `changes`."""
    merged = {k: v for base in bases for k, v in base.items()} | changes
    return RECIPES.add(name, source, about, **merged)


recipe("pix2pix", ISOLA, "U-Net-256 G (BatchNorm, dropout .5), 70 x 70 PatchGAN on the pair, cross-entropy GAN "
       "+ 100 L1, 100 epochs constant then 100 decaying to 0",
       PAPERS, mode="pix2pix", model="unet", unet_downs=8, patch=70, loss="vanilla", lambda_l1=100.0,
       data="facades")

recipe("pix2pix-tf", "the tensorflow.org pix2pix tutorial",
       "pix2pix's nets and loss for 40k steps at a constant learning rate",
       PAPERS, epochs=None, decay_from=1.0, steps=40_000, mode="pix2pix", model="unet", unet_downs=8,
       patch=70, loss="vanilla", lambda_l1=100.0, data="facades")

recipe("cyclegan", ZHU, "ResNet-9 G (6 below 256 px), instance norm, 70 x 70 PatchGAN, least-squares GAN, "
       "pool of 50, cycle 10, identity 0.5, 100 + 100 epochs",
       PAPERS, CYCLEGAN, data="horse2zebra")

recipe("cyclegan-tf", "the tensorflow.org CycleGAN tutorial",
       "U-Net G with instance norm, cross-entropy GAN, no pool, cycle 10, identity 0.5, 10 epochs at a constant "
       "learning rate",
       PAPERS, CYCLEGAN, dropout=0.5, loss="vanilla", pool_size=0, epochs=10, decay_from=1.0,
       model="unet", unet_downs=8, data="horse2zebra")

recipe("pix2pix-small", "this project's pix2pix for 32 x 32 data on two CPU cores",
       "U-Net-32 (5 halvings, ngf 16), 34 x 34 PatchGAN, cross-entropy + 100 L1, Adam 2e-4, batch 16",
       SMALL, mode="pix2pix", model="unet", unet_downs=5, patch=34, loss="vanilla", lambda_l1=100.0,
       batch_size=16, steps=1500, decay_from=0.5, data="edges2mnist")

recipe("cyclegan-small", "this project's CycleGAN for 32 x 32 data on two CPU cores",
       "ResNet-6 G (ngf 16), instance norm, 34 x 34 PatchGAN, least squares, pool 50, cycle 10, identity .5, "
       "batch 4",
       SMALL, CYCLEGAN, resnet_blocks=6, patch=34, batch_size=4, steps=2000, decay_from=0.5,
       data="thin2thick-unpaired")


def get_recipe(name: str) -> TranslateConfig:
    """A fresh copy of the named recipe's config."""
    return RECIPES.config(name)
