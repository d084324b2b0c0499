"""`GANConfig`: everything that defines a GAN training run, one field per line with its help.

Saved as `config.json` in the run folder and inside every checkpoint. Choices come from the
registries they name (models, losses, D updates, optimizers, init schemes, datasets' sampling
modes), so a name is declared once. `resume=True` marks what a resumed run may change.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.config import option
from ganforge.data import DATA_MODES
from ganforge.data.pixels import PIXEL_RANGES
from ganforge.data.sampler import MODES as SAMPLING_MODES
from ganforge.errors import ConfigError
from ganforge.losses import LOSSES
from ganforge.gan.step import D_UPDATES, LOOPS
from ganforge.gan.augment import parse_policy
from ganforge.gan.invariance import parse_axes, parse_invariance
from ganforge.gan.models import INITS, MODELS, gan_models
from ganforge.gan.models.conditioning import CONDITIONING
from ganforge.optim import OPTIMIZERS
from ganforge.runs.config import RunConfig
from ganforge.speed import parse_speed

UNITS = ("step", "epoch")


@dataclass
class GANConfig(RunConfig):
    """A GAN run. The defaults are a plain alternating GAN; recipes (gan/recipes.py) say what each
    source does differently. The fields every task shares are RunConfig's."""

    VERSION = 1

    # -- data --
    data: str = option("mnist5k", "registry name or a folder of images")
    merge_test: bool = option(False, "train on train+test (seed 000 does this with CIFAR-100)")
    data_mode: str = option("auto", "folders: memory (decode once, keep), stream (DataLoader workers), auto",
                            choices=tuple(DATA_MODES), resume=True)
    workers: int = option(0, "decoding workers of a streamed folder (0 = by core count)", ge=0, resume=True)
    pixel_range: str = option("pm1", "pm1: x/127.5-1; 01: x/255 (seed 000's literal `imgae` typo)",
                              choices=PIXEL_RANGES)
    # -- model --
    model: str = option("default", "architecture family (see `ganforge recipes`)", choices=gan_models)
    image_size: int = option(28, "side of the square images the model makes", gt=0)
    channels: int = option(1, "image channels the model makes (data is converted)", choices=(1, 3))
    latent_dim: int = option(100, "size of z ~ N(0, I)", gt=0)
    g_hidden: int = option(128, "MLP generator hidden width (model=mlp)", gt=0)
    d_hidden: int = option(128, "MLP discriminator hidden width (model=mlp)", gt=0)
    base_filters: int = option(64, "DCGAN feature width f (model=dcgan/default)", gt=0)
    init: str = option("keras", "weight init: keras (glorot_uniform / zero bias), dcgan (N(0,0.02)), torch",
                       choices=INITS)
    bn_momentum: float = option(0.01, "PyTorch convention; Keras momentum 0.99 == 0.01 here", ge=0, le=1)
    bn_eps: float = option(1e-3, "BatchNorm epsilon (Keras: 1e-3)", ge=0)
    # -- conditioning and InfoGAN codes (docs/LATENT.md) --
    conditional: str = option("none", "class conditioning: none; projection (G embeds the class, D projects "
                              "it); acgan (D also classifies)", choices=CONDITIONING)
    num_classes: int = option(0, "classes of a conditional run (taken from the data's labels at the start)",
                              ge=0)
    class_embed: int = option(32, "width of the class embedding G joins to z", gt=0)
    acgan_weight: float = option(1.0, "weight of AC-GAN's class cross-entropy in D's and G's objectives", ge=0)
    info_categorical: int = option(0, "InfoGAN: values of the categorical code (0 = none)", ge=0)
    info_continuous: int = option(0, "InfoGAN: continuous codes drawn from U(-1, 1)", ge=0)
    info_lambda: float = option(1.0, "InfoGAN: weight lambda of the mutual-information bound", ge=0)
    info_learned_std: bool = option(False, "InfoGAN: Q learns the continuous codes' std (else fixed at 1)")
    info_invariance: str = option("", "InfoGAN: Q also reads the categorical code from a copy of half the fakes "
                                  "through these transforms: rotation,thickness (empty = off; gan/invariance.py)")
    info_axes: str = option("", "InfoGAN: the axis each continuous code should carry, in order (slant, width), read "
                            "back through the info_invariance transform that keeps it (empty = off; "
                            "gan/invariance.py)")
    q_lr: float = option(1e-3, "InfoGAN: Q head's learning rate", gt=0, resume=True)
    # -- regularisers (docs/LATENT.md; all off in the seed recipes) --
    spectral_norm: bool = option(False, "spectral normalisation of D's conv and linear weights")
    gp_lambda: float = option(0.0, "WGAN-GP gradient penalty weight on real/fake interpolates (0 = off)", ge=0)
    r1_gamma: float = option(0.0, "R1 penalty gamma/2 * |grad D(x)|^2 on real images (0 = off)", ge=0)
    diffaugment: str = option("", "DiffAugment policy for every image D sees: color,translation,cutout "
                              "(empty = off)")
    # -- objective and loop --
    loss: str = option("ns", "ns: -log D(G(z)); minimax: log(1-D(G(z))); hinge; wgan (with gp_lambda)", choices=LOSSES)
    logit_clip: bool = option(False, "emulate Keras BCE's probability clip to [1e-7, 1-1e-7]")
    loop: str = option("alternating", "alternating (train_on_batch style) or simultaneous (one pass, two tapes)",
                       choices=LOOPS)
    d_update: str = option("separate", "separate: two D steps (real, fake); accumulate: one step; "
                           "concat: one batch", choices=D_UPDATES)
    d_steps: int = option(1, "k: D steps per G step (Goodfellow Algorithm 1)", gt=0)
    g_same_noise: bool = option(False, "G step reuses the z of the D step's fakes (seed 001)")
    g_reuse_fake: bool = option(False, "G step reuses the D step's G(z) forward (pytorch/examples dcgan)")
    g_eval_for_d: bool = option(False, "fakes for D come from G in inference mode (Keras `predict` / call)")
    frozen_d_bn: str = option("train", "eval: a frozen Keras D runs its BatchNorm in inference mode",
                              choices=("train", "eval"))
    # -- optimisation --
    g_optimizer: str = option("adam", "G's optimizer", choices=OPTIMIZERS)
    d_optimizer: str = option("adam", "D's optimizer", choices=OPTIMIZERS)
    g_lr: float = option(2e-4, "G's learning rate", gt=0, resume=True)
    d_lr: float = option(2e-4, "D's learning rate", gt=0, resume=True)
    beta1: float = option(0.5, "Adam beta1", ge=0, lt=1)
    ema: float = option(0.0, "EMA decay of G's weights for samples and eval (0 = off)", ge=0, lt=1)
    # -- budget and data order --
    unit: str = option("step", "the unit of `steps`/`epochs` cadences below: step or epoch", choices=UNITS)
    epochs: int | None = option(None, "or total epochs (converted to steps)", gt=0)
    sampling: str = option("epoch", "epoch: shuffled epochs; replacement: random indices with replacement",
                           choices=SAMPLING_MODES)
    drop_last: bool = option(False, "drop the last partial batch of each epoch")
    # -- outputs --
    sample_every: int = option(200, "in `unit`s: fixed-latent grid cadence", gt=0, resume=True)
    sample_name: str = option("step_{step:06d}", "grid filename template (step, epoch, iteration)")
    grid_rows: int = option(4, "grid is grid_rows x grid_rows fixed latents", gt=0)
    checkpoint_every: int = option(500, "in `unit`s: the rolling latest checkpoint", gt=0, resume=True)
    milestone_every: int = option(0, "in `unit`s: checkpoints that are never pruned (0 = none)", ge=0,
                                  resume=True)
    gif_name: str = option("", "an extra copy of progress.gif under the source's name")
    eval_every: int = option(0, "in `unit`s: compute FID etc. during training (0 = off)", ge=0, resume=True)
    eval_n: int = option(2000, "generated images per in-training evaluation", gt=0, resume=True)
    # -- execution --
    speed: str = option("auto", "auto, eager or fast, then +feature / +no_feature (e.g. fast+no_compile)",
                        resume=True)
    version: int = option(VERSION, "config format version")

    def check(self) -> None:
        super().check()
        parse_speed(self.speed)
        sizes = MODELS.get(self.model).sizes
        if sizes is not None and self.image_size not in sizes:
            raise ConfigError(f"bad value image_size={self.image_size} for model {self.model!r}: valid sizes "
                              f"are {', '.join(map(str, sizes))}")
        if self.loop == "simultaneous" and self.d_steps != 1:
            raise ConfigError("d_steps must be 1 with loop=simultaneous (one pass updates both nets)")
        if self.g_reuse_fake and (self.g_eval_for_d or self.d_steps != 1):
            raise ConfigError("g_reuse_fake needs g_eval_for_d=false and d_steps=1")
        parse_policy(self.diffaugment)
        if self.info_categorical == 1:
            raise ConfigError("info_categorical=1 is a code with one value: use 0 (none) or 2 or more")
        invariance = parse_invariance(self.info_invariance)
        if invariance and not self.info_categorical:
            raise ConfigError("info_invariance needs a categorical code to read: set info_categorical (e.g. 10)")
        parse_axes(self.info_axes, self.info_continuous, invariance)
        try:
            name = self.sample_name.format(step=0, epoch=0, iteration=0)
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"bad value sample_name={self.sample_name!r}: may use {{step}}, {{epoch}}, "
                              "{iteration}") from None
        for key, value in (("sample_name", name), ("gif_name", self.gif_name)):
            if key == "gif_name" and not value:
                continue
            if "/" in value or "\\" in value or value.startswith(".") or not value.strip():
                raise ConfigError(f"bad value {key}={getattr(self, key)!r}: must be a plain file name "
                                  "(no folders, not hidden); files go into the run folder")
