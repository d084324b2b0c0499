"""`TranslateConfig`: everything that defines a pix2pix or CycleGAN run, one field per line.

It derives from `runs.config.RunConfig` (the fields every task's run has) and adds translation's;
where translation's default or meaning differs (batch 1, Adam beta1 0.5, an epoch over the larger
domain), the field is declared again, which keeps its name and place, so config.json files written
before the base existed load unchanged. `resume=True` marks what a resumed run may change. Saved as config.json in the run folder and in every
checkpoint. The learning-rate schedule is `linear_decay`: constant, then linearly down to 0 at the
end of the budget (the papers': 100 epochs constant + 100 decaying).
"""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.config import option
from ganforge.errors import ConfigError
from ganforge.runs.config import RunConfig
from ganforge.translate.models import GENERATORS, NORMS, PATCH_LAYERS

MODES = ("pix2pix", "cyclegan")
ADVERSARIAL = ("vanilla", "lsgan")
CYCLES = ("both", "forward")  # forward: only A -> B -> A (CycleGAN Table 4's "GAN + forward cycle")


def linear_decay(step: int, total: int, decay_from: float) -> float:
    """The factor of `lr` for optimizer step `step` (0-based) of `total`: 1 until the step
    `round(decay_from * total)`, then falling linearly to reach 0 at `total`."""
    start = round(decay_from * total)
    if step < start:
        return 1.0
    return max(0.0, (total - step) / max(1, total - start))


@dataclass
class TranslateConfig(RunConfig):
    """A translation run. Recipes (translate/recipes.py) say what each preset changes; the fields
    every task shares (cadences, faults, execution) are RunConfig's."""

    VERSION = 1

    mode: str = option("pix2pix", "pix2pix (paired: G(x) against its target) or cyclegan (unpaired: two "
                       "generators, two discriminators, cycle consistency)", choices=MODES)
    recipe: str = option("pix2pix", "the preset this config started from")
    task: str = option("translate", "what this run trains (always translate)", choices=("translate",))
    # -- data --
    data: str = option("edges2mnist", "a built-in (edges2mnist, thin2thick, thin2thick-unpaired, digits2mnist, "
                       "horse2zebra-toy) or a folder: A/ + B/, side-by-side AB images, or trainA/ + trainB/")
    workers: int = option(0, "not used: translation decodes its data once, into memory", ge=0, resume=True)
    direction: str = option("AtoB", "paired data: which side is the input", choices=("AtoB", "BtoA"))
    image_size: int = option(256, "side of the square the networks train on (the random crop)", gt=0)
    load_size: int = option(286, "images are resized to this square first; a random image_size crop "
                            "follows (the papers' jitter; = image_size: no crop)", gt=0)
    flip: bool = option(True, "random horizontal mirror (one for both images of a pair)")
    channels_a: int = option(3, "channels of domain A (input): 1 grey or 3 colour", choices=(1, 3))
    channels_b: int = option(3, "channels of domain B (target): 1 grey or 3 colour", choices=(1, 3))
    # -- networks --
    model: str = option("unet", "generator: unet (skip connections) or resnet (residual blocks)",
                        choices=GENERATORS)
    unet_downs: int = option(8, "U-Net halvings: 8 takes 256 px to 1 x 1, 5 takes 32 px", ge=5)
    resnet_blocks: int = option(0, "ResNet residual blocks (0 = the CycleGAN code's: 9 at 256 px and up, 6 "
                                "below)", ge=0)
    ngf: int = option(64, "generator filters in its first/last stage", gt=0)
    ndf: int = option(64, "discriminator filters in its first stage", gt=0)
    g_norm: str = option("batch", "generator normalisation", choices=NORMS)
    d_norm: str = option("batch", "discriminator normalisation", choices=NORMS)
    dropout: float = option(0.5, "U-Net: dropout in the 3 decoder blocks nearest the bottleneck; ResNet: in "
                            "each block", ge=0, lt=1)
    patch: int = option(70, "PatchGAN patch (receptive field) in pixels", choices=tuple(PATCH_LAYERS))
    # -- objective --
    loss: str = option("vanilla", "adversarial loss: vanilla (cross-entropy on logits) or lsgan (least "
                       "squares)", choices=ADVERSARIAL)
    lambda_gan: float = option(1.0, "weight of G's adversarial term (0: L1 or cycle alone)", ge=0)
    lambda_l1: float = option(100.0, "pix2pix: weight of |G(x) - y|", ge=0)
    lambda_cyc: float = option(10.0, "cyclegan: weight of each cycle term |G_BA(G_AB(a)) - a|", ge=0)
    lambda_idt: float = option(0.5, "cyclegan: identity term |G_AB(b) - b| weight, times lambda_cyc (needs "
                               "channels_a = channels_b)", ge=0)
    cycle: str = option("both", "cyclegan: cycle terms: both directions, or forward (A -> B -> A) only",
                        choices=CYCLES)
    pool_size: int = option(50, "cyclegan: past fakes kept per discriminator (0 = the latest only)", ge=0)
    # -- optimisation --
    batch_size: int = option(1, "image pairs per step (the global batch, split over the processes of a "
                             "torchrun / --nproc run)", gt=0)
    lr: float = option(2e-4, "Adam learning rate of every net (the schedule scales it)", gt=0, resume=True)
    beta1: float = option(0.5, "Adam beta1", ge=0, lt=1)
    opt_eps: float = option(1e-8, "Adam epsilon", gt=0)
    decay_from: float = option(0.5, "fraction of the budget after which lr decays linearly to 0 (1 = constant)",
                               ge=0, le=1)
    # -- budget --
    epochs: float | None = option(None, "or total epochs (one epoch: every image of the larger domain once)",
                                  gt=0)
    # -- inference --
    test_mode: str = option("eval", "apply/eval: eval (dropout off, BatchNorm's running statistics) or paper "
                            "(pix2pix sec. 3.3: dropout on, the batch's statistics)", choices=("eval", "paper"),
                            resume=True)
    # -- outputs --
    eval_every: int = option(0, "steps between held-out scores (`translate eval`'s, on eval_n images) and the best "
                             "checkpoint, by held-out L1 (paired) or FID, else cycle L1 (unpaired); 0 = off", ge=0,
                             resume=True)
    eval_n: int = option(200, "held-out images scored at each eval_every", gt=0, resume=True)
    sample_every: int = option(250, "steps between input | output | target grids in samples/", gt=0, resume=True)
    sample_images: int = option(8, "held-out images shown in each grid", gt=0)
    # -- execution --
    seed: int = option(0, "seed of init, data order, crops, flips, dropout and the pools", ge=0)
    version: int = option(VERSION, "config format version")

    def check(self) -> None:
        super().check()
        if self.load_size < self.image_size:
            raise ConfigError(f"load_size={self.load_size} is below image_size={self.image_size}: the crop "
                              "must fit in the loaded image")
        if self.model == "unet" and self.image_size % (2 ** self.unet_downs):
            raise ConfigError(f"image_size={self.image_size} is not a multiple of 2^unet_downs="
                              f"{2 ** self.unet_downs}: set unet_downs to log2 of the size (8 for 256, 5 for 32)")
        if self.mode == "cyclegan" and self.lambda_idt > 0 and self.channels_a != self.channels_b:
            raise ConfigError("the identity term feeds B images to G_AB: it needs channels_a = channels_b; "
                              "set lambda_idt=0")

    def blocks(self) -> int:
        """The ResNet's residual blocks (the CycleGAN code picks 6 below 256 px)."""
        return self.resnet_blocks or (9 if self.image_size >= 256 else 6)

    def source_channels(self) -> int:
        """Channels of the generator's input (pix2pix's `direction` may swap the sides)."""
        return self.channels_b if self.mode == "pix2pix" and self.direction == "BtoA" else self.channels_a

    def target_channels(self) -> int:
        return self.channels_a if self.mode == "pix2pix" and self.direction == "BtoA" else self.channels_b
