"""Model registry: `model` names in the config map to (generator, discriminator) builders."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .dcgan import DCGANDiscriminator, DCGANGenerator, DefaultDiscriminator, DefaultGenerator
from .keras_dcgan import (CifarDiscriminator, CifarGenerator, TFDiscriminator, TFGenerator,
                          UpConvDiscriminator, UpConvGenerator)
from .layers import init_weights
from .mlp import MLPDiscriminator, MLPGenerator

Builder = Callable[["TrainConfig"], tuple[nn.Module, nn.Module]]  # noqa: F821


def _mlp(c):
    return (MLPGenerator(c.latent_dim, c.g_hidden, c.channels, c.image_size),
            MLPDiscriminator(c.d_hidden, c.channels, c.image_size))


def _upconv(c):
    return (UpConvGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps),
            UpConvDiscriminator(c.channels, c.bn_momentum, c.bn_eps))


def _tf(c):
    return (TFGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps), TFDiscriminator(c.channels))


def _cifar(c):
    return (CifarGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps),
            CifarDiscriminator(c.channels, c.bn_momentum, c.bn_eps))


def _dcgan(c):
    return (DCGANGenerator(c.latent_dim, c.channels, c.base_filters, c.image_size),
            DCGANDiscriminator(c.channels, c.base_filters, c.image_size))


def _default(c):
    return (DefaultGenerator(c.latent_dim, c.channels, c.base_filters, c.image_size, c.bn_momentum, c.bn_eps),
            DefaultDiscriminator(c.channels, c.base_filters, c.image_size, c.bn_momentum, c.bn_eps))


MODELS: dict[str, Builder] = {
    "mlp": _mlp, "upconv": _upconv, "tf-dcgan": _tf, "cifar-dcgan": _cifar, "dcgan": _dcgan,
    "default": _default,
}


def build_models(cfg) -> tuple[nn.Module, nn.Module]:
    """Build and initialise (G, D) for a TrainConfig. Uses torch's global RNG for the init."""
    generator, discriminator = MODELS[cfg.model](cfg)
    init_weights(generator, cfg.init)
    init_weights(discriminator, cfg.init)
    return generator, discriminator


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, non_trainable) the Keras way: parameters, and BN moving mean + variance."""
    trainable = sum(p.numel() for p in module.parameters())
    non_trainable = sum(b.numel() for name, b in module.named_buffers()
                        if name.endswith(("running_mean", "running_var")))
    return trainable, non_trainable
