"""One typed training config, the named recipes, and `key=value` overrides.

A recipe is a named preset of :class:`TrainConfig`. Every field can be overridden from the command
line (`ganforge train dcgan g_lr=1e-4 batch_size=64`); unknown keys and bad values fail with one line
that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigError

CONFIG_VERSION = 1

MODELS = ("mlp", "upconv", "tf-dcgan", "cifar-dcgan", "dcgan", "default")
LOOPS = ("alternating", "simultaneous")
D_UPDATES = ("separate", "accumulate", "concat")
LOSSES = ("ns", "minimax", "hinge")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
INITS = ("keras", "dcgan", "torch")
SAMPLING = ("replacement", "epoch")
UNITS = ("step", "epoch")
SPEEDS = ("auto", "eager", "fast")
DATA_MODES = ("auto", "memory", "stream")
# Switches `speed` can add (`+feature`) or remove (`+no_feature`) after a preset; see accel.Speed.
SPEED_FEATURES = ("fused", "channels_last", "bf16", "autotune", "async_guard", "compile", "cudagraphs",
                  "fast_dropout")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as `config.json` in the run and every checkpoint."""

    recipe: str = "default"  # the preset this config started from
    # -- data --
    data: str = "mnist5k"  # registry name or a folder of images
    merge_test: bool = False  # train on train+test (seed 000 does this with CIFAR-100)
    data_mode: str = "auto"  # folders: memory (decode once, keep), stream (DataLoader workers), auto
    workers: int = 0  # decoding workers of a streamed folder (0 = by core count)
    pixel_range: str = "pm1"  # "pm1": x/127.5-1; "01": x/255 (seed 000's literal `imgae` typo)
    # -- model --
    model: str = "default"  # architecture family, see models.MODELS
    image_size: int = 28  # side of the square images the model makes
    channels: int = 1  # image channels the model makes (data is converted)
    latent_dim: int = 100  # size of z ~ N(0, I)
    g_hidden: int = 128  # MLP generator hidden width (model=mlp)
    d_hidden: int = 128  # MLP discriminator hidden width (model=mlp)
    base_filters: int = 64  # DCGAN feature width f (model=dcgan/default)
    init: str = "keras"  # weight init: keras (glorot_uniform / zero bias), dcgan (N(0,0.02)), torch
    bn_momentum: float = 0.01  # PyTorch convention; Keras momentum 0.99 == 0.01 here
    bn_eps: float = 1e-3  # Keras BatchNormalization epsilon
    # -- objective and loop --
    loss: str = "ns"  # ns: -log D(G(z)); minimax: log(1-D(G(z))); hinge
    logit_clip: bool = False  # emulate Keras BCE's probability clip to [1e-7, 1-1e-7]
    loop: str = "alternating"  # alternating (train_on_batch style) or simultaneous (one pass, two tapes)
    d_update: str = "separate"  # separate: two D steps (real, fake); accumulate: one step; concat: one batch
    d_steps: int = 1  # k: D steps per G step (Goodfellow Algorithm 1)
    g_same_noise: bool = False  # G step reuses the z of the D step's fakes (seed 001)
    g_reuse_fake: bool = False  # G step reuses the D step's G(z) forward (pytorch/examples dcgan)
    g_eval_for_d: bool = False  # fakes for D come from G in inference mode (Keras `predict` / call)
    frozen_d_bn: str = "train"  # "eval": a frozen Keras D runs its BatchNorm in inference mode
    # -- optimisation --
    batch_size: int = 64
    g_optimizer: str = "adam"
    d_optimizer: str = "adam"
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5  # Adam beta1
    beta2: float = 0.999  # Adam beta2
    opt_eps: float = 1e-8  # Adam / RMSprop epsilon (Keras: 1e-7)
    rho: float = 0.9  # RMSprop decay (Keras rho)
    momentum: float = 0.9  # SGD momentum
    ema: float = 0.0  # EMA decay of G's weights for samples and eval (0 = off)
    # -- budget and data order --
    unit: str = "step"  # the unit of `steps`/`epochs` cadences below: step or epoch
    steps: int | None = None  # total optimisation steps of the whole run (one G step each)
    epochs: int | None = None  # or total epochs (converted to steps)
    max_seconds: float = 0.0  # also stop (checkpointed, resumable) after this much training time; 0 = no limit
    sampling: str = "epoch"  # epoch: shuffled epochs; replacement: random indices with replacement
    drop_last: bool = False  # drop the last partial batch of each epoch
    # -- outputs --
    log_every: int = 50  # steps between metric lines (and the only host syncs for them)
    sample_every: int = 200  # in `unit`s: fixed-latent grid cadence
    sample_name: str = "step_{step:06d}"  # grid filename template (step, epoch, iteration)
    grid_rows: int = 4  # grid is grid_rows x grid_rows fixed latents
    checkpoint_every: int = 500  # in `unit`s: the rolling latest checkpoint
    milestone_every: int = 0  # in `unit`s: checkpoints that are never pruned (0 = none)
    keep_last: int = 2  # rolling checkpoints kept
    gif_name: str = ""  # an extra copy of progress.gif under the source's name
    eval_every: int = 0  # in `unit`s: compute FID etc. during training (0 = off)
    eval_n: int = 2000  # generated images per in-training evaluation
    # -- robustness --
    max_skips: int = 10  # consecutive non-finite steps before rollback / stop
    rollback_lr_factor: float = 0.0  # >0: roll back to last checkpoint with lrs times this; 0: stop
    # -- execution --
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    speed: str = "auto"  # auto, eager or fast, then +feature / +no_feature (e.g. fast+no_compile)
    threads: int = 0  # CPU intra-op threads (0 = torch default: one per physical core)
    version: int = CONFIG_VERSION

    # ---- derived helpers ----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}

# Keras defaults shared by the Keras-sourced recipes (see SEED-RECIPES.md, "Keras -> PyTorch facts").
_KERAS = dict(init="keras", bn_momentum=0.01, bn_eps=1e-3, opt_eps=1e-7, logit_clip=True)

RECIPES: dict[str, TrainConfig] = {
    # The project's own recommended setup: DCGAN-style G/D for 28x28 and 32x32 data, NS loss,
    # Adam(2e-4, 0.5), EMA of G, torch BN defaults and N(0, 0.02) init.
    "default": TrainConfig(
        recipe="default", model="default", data="mnist5k", image_size=28, channels=1,
        base_filters=16, init="dcgan", bn_momentum=0.1, bn_eps=1e-5, loss="ns", loop="alternating",
        d_update="accumulate", g_reuse_fake=True, batch_size=64, g_lr=2e-4, d_lr=2e-4, beta1=0.5,
        ema=0.999, unit="step", steps=2000, sampling="epoch", log_every=50, sample_every=100,
        sample_name="step_{step:06d}", grid_rows=8, checkpoint_every=500,
    ),
    # R1: the fully connected "DNN-GAN" (layers are a documented project choice).
    "seed004-mlp-mnist": TrainConfig(
        recipe="seed004-mlp-mnist", model="mlp", data="mnist", image_size=28, channels=1,
        **{**_KERAS, "logit_clip": True}, loss="ns", loop="alternating", d_update="separate",
        batch_size=300, g_lr=2e-4, d_lr=2e-4, beta1=0.5, unit="step", steps=5000,
        sampling="replacement", log_every=50, sample_every=50, sample_name="img-{iteration}",
        grid_rows=4, checkpoint_every=500,
    ),
    # R2: Keras DCGAN with UpSampling + Conv generator (Taeho Jo's textbook).
    "seed001-dcgan-mnist": TrainConfig(
        recipe="seed001-dcgan-mnist", model="upconv", data="mnist", image_size=28, channels=1,
        **_KERAS, loss="ns", loop="alternating", d_update="separate", g_same_noise=True,
        g_eval_for_d=True, frozen_d_bn="eval", batch_size=32, g_optimizer="adam",
        d_optimizer="adam", g_lr=1e-3, d_lr=1e-3, beta1=0.9, beta2=0.999, unit="step", steps=4001,
        sampling="replacement", log_every=1, sample_every=200, sample_name="gan_mnist_{iteration}",
        grid_rows=5, checkpoint_every=500,
    ),
    # R3: the TensorFlow DCGAN tutorial: logits, one forward pass updates both nets.
    "tf-dcgan-mnist": TrainConfig(
        recipe="tf-dcgan-mnist", model="tf-dcgan", data="mnist", image_size=28, channels=1,
        **{**_KERAS, "logit_clip": False}, loss="ns", loop="simultaneous", batch_size=256,
        g_lr=1e-4, d_lr=1e-4, beta1=0.9, beta2=0.999, unit="epoch", epochs=50, sampling="epoch",
        drop_last=False, log_every=50, sample_every=1, sample_name="image_at_epoch_{epoch:04d}",
        grid_rows=4, checkpoint_every=1, milestone_every=15, gif_name="dcgan.gif",
    ),
    # R4: colour DCGAN on CIFAR-100 train+test (Hands-On ML 2nd ed. adaptation).
    "seed000-dcgan-cifar100": TrainConfig(
        recipe="seed000-dcgan-cifar100", model="cifar-dcgan", data="cifar100", merge_test=True,
        image_size=32, channels=3, **_KERAS, loss="ns", loop="alternating", d_update="concat",
        g_eval_for_d=True, frozen_d_bn="eval", batch_size=30, g_optimizer="rmsprop",
        d_optimizer="rmsprop", g_lr=1e-3, d_lr=1e-3, rho=0.9, unit="epoch", epochs=10,
        sampling="epoch", drop_last=True, log_every=100, sample_every=1,
        sample_name="epoch_{epoch:04d}", grid_rows=4, checkpoint_every=1,
    ),
    # R5: canonical DCGAN (Radford et al. 2015), 64x64 (32x32 variant via image_size=32).
    "dcgan": TrainConfig(
        recipe="dcgan", model="dcgan", data="cifar10", image_size=64, channels=3, base_filters=64,
        init="dcgan", bn_momentum=0.1, bn_eps=1e-5, loss="ns", loop="alternating",
        d_update="accumulate", g_reuse_fake=True, batch_size=128, g_lr=2e-4, d_lr=2e-4, beta1=0.5,
        unit="epoch", epochs=25, sampling="epoch", log_every=50, sample_every=1,
        sample_name="epoch_{epoch:04d}", grid_rows=8, checkpoint_every=1,
    ),
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return replace(RECIPES[name])


def _parse_value(key: str, raw: str) -> Any:
    kind = FIELD_TYPES[key]
    text = raw.strip()
    try:
        if "None" in kind and text.lower() in ("none", "null", ""):
            return None
        if kind.startswith("bool"):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind.startswith("int"):
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"bad value {key}={raw!r}: expected {kind.split(' |')[0]}") from None
    return text


def apply_overrides(cfg: TrainConfig, overrides: list[str] | dict[str, Any]) -> TrainConfig:
    """Return a copy of `cfg` with `key=value` strings (or a dict) applied, then validated."""
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"bad override {item!r}: write key=value (e.g. g_lr=1e-4)")
            key, raw = item.split("=", 1)
            items.append((key.strip(), raw))
    changes: dict[str, Any] = {}
    for key, raw in items:
        if key not in FIELD_TYPES or key in ("version",):
            valid = ", ".join(k for k in FIELD_TYPES if k != "version")
            raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")
        changes[key] = _parse_value(key, raw) if isinstance(raw, str) else raw
    out = replace(cfg, **changes)
    validate(out)
    return out


def _choice(cfg: TrainConfig, key: str, valid: tuple[str, ...]) -> None:
    value = getattr(cfg, key)
    if value not in valid:
        raise ConfigError(f"bad value {key}={value!r}; valid: {', '.join(valid)}")


def _positive(cfg: TrainConfig, key: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, key)
    if value is None:
        return
    bad = (value < 0) if allow_zero else (value <= 0)
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        need = "zero or more" if allow_zero else "greater than zero"
        raise ConfigError(f"bad value {key}={value!r}: must be {need}")


# Image sizes each architecture can make.
VALID_SIZES = {
    "mlp": None, "upconv": (28,), "tf-dcgan": (28,), "cifar-dcgan": (32,), "dcgan": (32, 64),
    "default": (28, 32),
}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError (one line) for any invalid value; return cfg unchanged otherwise."""
    for key, valid in (("model", MODELS), ("loop", LOOPS), ("d_update", D_UPDATES),
                       ("loss", LOSSES), ("g_optimizer", OPTIMIZERS), ("d_optimizer", OPTIMIZERS),
                       ("init", INITS), ("sampling", SAMPLING), ("unit", UNITS),
                       ("pixel_range", ("pm1", "01")), ("frozen_d_bn", ("train", "eval")),
                       ("data_mode", DATA_MODES)):
        _choice(cfg, key, valid)
    for key in ("batch_size", "latent_dim", "g_hidden", "d_hidden", "base_filters", "g_lr", "d_lr",
                "d_steps", "log_every", "grid_rows", "keep_last", "image_size", "channels",
                "steps", "epochs", "sample_every", "checkpoint_every", "max_skips", "eval_n"):
        _positive(cfg, key)
    for key in ("opt_eps", "bn_eps", "momentum", "rho", "ema", "milestone_every", "eval_every",
                "rollback_lr_factor", "threads", "seed", "bn_momentum", "max_seconds", "workers"):
        _positive(cfg, key, allow_zero=True)
    for key in ("beta1", "beta2", "ema", "momentum", "rho", "bn_momentum"):
        if not 0.0 <= getattr(cfg, key) < 1.0 + (key == "bn_momentum"):
            raise ConfigError(f"bad value {key}={getattr(cfg, key)!r}: must be in [0, 1)")
    parse_speed(cfg.speed)
    if cfg.channels not in (1, 3):
        raise ConfigError(f"bad value channels={cfg.channels}: must be 1 or 3")
    sizes = VALID_SIZES[cfg.model]
    if sizes is not None and cfg.image_size not in sizes:
        raise ConfigError(
            f"bad value image_size={cfg.image_size} for model {cfg.model!r}: valid sizes are "
            f"{', '.join(map(str, sizes))}"
        )
    if cfg.loop == "simultaneous" and cfg.d_steps != 1:
        raise ConfigError("d_steps must be 1 with loop=simultaneous (one pass updates both nets)")
    if cfg.g_reuse_fake and (cfg.g_eval_for_d or cfg.d_steps != 1):
        raise ConfigError("g_reuse_fake needs g_eval_for_d=false and d_steps=1")
    if cfg.steps is None and cfg.epochs is None:
        raise ConfigError("set a budget: steps=N or epochs=N")
    try:
        cfg.sample_name.format(step=0, epoch=0, iteration=0)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"bad value sample_name={cfg.sample_name!r}: may use {{step}}, {{epoch}}, {{iteration}}"
        ) from None
    return cfg


def parse_speed(text: str) -> list[str]:
    """`speed` tokens: a preset (auto, eager, fast) and/or `feature` / `no_feature`, joined by +."""
    tokens = [t.strip() for t in str(text).split("+")]
    valid = SPEEDS + SPEED_FEATURES + tuple(f"no_{f}" for f in SPEED_FEATURES)
    if not all(t in valid for t in tokens):
        raise ConfigError(
            f"bad value speed={text!r}; valid: auto, eager or fast, optionally followed by +FEATURE or "
            f"+no_FEATURE with FEATURE one of {', '.join(SPEED_FEATURES)} (e.g. fast+no_compile)"
        )
    return tokens


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved by `to_dict`, refusing newer formats and unknown keys."""
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"config format version {version} is newer than this ganforge understands "
            f"({CONFIG_VERSION}): upgrade ganforge"
        )
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"config has unknown keys {', '.join(unknown)}: was it made by another tool?")
    return validate(TrainConfig(**data))
