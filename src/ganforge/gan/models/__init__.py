"""Model registry: a config's `model` names an entry of :data:`MODELS`, which builds the networks.

Importing this package registers every GAN family (mlp.py, keras_dcgan.py, dcgan.py). Every
discriminator is a trunk (`features(x)`) and a head (`layers.Discriminator`).
"""

from __future__ import annotations

from torch import nn

from dataclasses import replace

from . import dcgan, infogan, keras_dcgan, mlp  # noqa: F401  (each module registers its models)
from .conditioning import ConditionalGenerator, LatentInput, QHead, condition_discriminator, feature_dim
from .layers import INITS, Discriminator, init_weights, spectral_norm_all
from .registry import MODELS, ModelInfo, count_params, gan_models, register

__all__ = ["INITS", "MODELS", "Discriminator", "ModelInfo", "build_models", "build_q", "count_params",
           "gan_models", "init_weights", "latent_input", "register"]


def latent_input(cfg) -> LatentInput:
    """What G's input vector is made of: z, the class embedding and the InfoGAN codes."""
    classes = cfg.num_classes if cfg.conditional != "none" else 0
    return LatentInput(cfg.latent_dim, classes, cfg.class_embed if classes else 0, cfg.info_categorical,
                       cfg.info_continuous)


def build_models(cfg) -> tuple[nn.Module, nn.Module]:
    """Build and initialise (G, D) for a GAN config. Uses torch's global RNG for the init.

    A conditional or InfoGAN config gets the family's G built for the joined input vector behind a
    ConditionalGenerator, and a D with projection (and AC-GAN) conditioning; `spectral_norm`
    normalises D's weights. An unconditional G and D are the family's own, unchanged."""
    inputs = latent_input(cfg)
    wrapped = inputs.out_dim != cfg.latent_dim
    generator, discriminator = MODELS.get(cfg.model).build(replace(cfg, latent_dim=inputs.out_dim) if wrapped
                                                           else cfg)
    init_weights(generator, cfg.init)
    init_weights(discriminator, cfg.init)
    if wrapped:
        generator = ConditionalGenerator(inputs, generator)
    condition_discriminator(discriminator, cfg.conditional, cfg.num_classes, cfg.channels, cfg.image_size)
    if cfg.spectral_norm:
        spectral_norm_all(discriminator)
    return generator, discriminator


def build_q(cfg, discriminator: nn.Module) -> QHead | None:
    """InfoGAN's Q head on D's trunk, or None when the config has no codes."""
    if not (cfg.info_categorical or cfg.info_continuous):
        return None
    q = QHead(feature_dim(discriminator, cfg.channels, cfg.image_size), cfg.info_categorical,
              cfg.info_continuous, cfg.info_learned_std, bn_momentum=cfg.bn_momentum, bn_eps=cfg.bn_eps)
    init_weights(q, cfg.init)
    return q
