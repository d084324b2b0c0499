"""The three Keras-sourced convolutional GANs (SEED-RECIPES.md R2, R3, R4).

Layer for layer as in their sources. Keras `padding='same'` maps to `conv_same`/`convt_same`.
Discriminators return logits; where the source ends in a sigmoid, the loss applies it (and can
emulate Keras' probability clip with `logit_clip`).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Discriminator, Reshape, batch_norm, conv_same, convt_same, he
from .registry import register


# ---- R2 seed001-dcgan-mnist: UpSampling + Conv generator -----------------------------------------

class UpConvGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, channels: int = 1, bn_momentum: float = 0.01,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        bn = lambda c: batch_norm(c, bn_momentum, bn_eps)  # noqa: E731
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128 * 7 * 7), nn.ReLU(),
            Reshape(128, 7, 7),                                                   # 128 x 7 x 7
            nn.Upsample(scale_factor=2), conv_same(128, 128, 3), bn(128), nn.ReLU(),  # 128 x 14 x 14
            nn.Upsample(scale_factor=2), conv_same(128, 64, 3), bn(64), nn.ReLU(),    # 64 x 28 x 28
            conv_same(64, channels, 3), nn.Tanh(),                                # C x 28 x 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class UpConvDiscriminator(Discriminator):
    def __init__(self, channels: int = 1, bn_momentum: float = 0.01, bn_eps: float = 1e-3) -> None:
        bn = lambda c: batch_norm(c, bn_momentum, bn_eps)  # noqa: E731
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        super().__init__([
            conv_same(channels, 32, 3, 2), act(), nn.Dropout(0.25),          # 32 x 14 x 14
            conv_same(32, 64, 3, 2), bn(64), act(), nn.Dropout(0.25),        # 64 x 7 x 7
            conv_same(64, 128, 3, 2), bn(128), act(), nn.Dropout(0.25),      # 128 x 4 x 4
            conv_same(128, 256, 3, 2), bn(256), act(), nn.Dropout(0.25),     # 256 x 2 x 2
            nn.Flatten(),                                                    # 1,024 features
            nn.Linear(2 * 2 * 256, 1),                                       # 1 logit
        ])


# ---- R3 tf-dcgan-mnist: the TensorFlow DCGAN tutorial ----------------------------------------------

class TFGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, channels: int = 1, bn_momentum: float = 0.01,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        act = lambda: nn.LeakyReLU(0.3)  # Keras LeakyReLU() default slope  # noqa: E731
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 7 * 7 * 256, bias=False),
            batch_norm(7 * 7 * 256, bn_momentum, bn_eps, dims=1), act(),  # BN over all 12,544 units
            Reshape(256, 7, 7),                                          # 256 x 7 x 7
            convt_same(256, 128, 5, 1, bias=False), batch_norm(128, bn_momentum, bn_eps), act(),  # 128 x 7 x 7
            convt_same(128, 64, 5, 2, bias=False), batch_norm(64, bn_momentum, bn_eps), act(),    # 64 x 14 x 14
            convt_same(64, channels, 5, 2, bias=False), nn.Tanh(),       # C x 28 x 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class TFDiscriminator(Discriminator):
    def __init__(self, channels: int = 1) -> None:
        act = lambda: nn.LeakyReLU(0.3)  # noqa: E731
        super().__init__([
            conv_same(channels, 64, 5, 2), act(), nn.Dropout(0.3),   # 64 x 14 x 14
            conv_same(64, 128, 5, 2), act(), nn.Dropout(0.3),        # 128 x 7 x 7
            nn.Flatten(),                                            # 6,272 features
            nn.Linear(7 * 7 * 128, 1),                               # 1 logit
        ])


# ---- R4 seed000-dcgan-cifar100: colour DCGAN (Hands-On ML adaptation) -----------------------------

class CifarGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, channels: int = 3, bn_momentum: float = 0.01,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        bn = lambda c: batch_norm(c, bn_momentum, bn_eps)  # noqa: E731
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 8 * 8 * 128), Reshape(128, 8, 8), bn(128),   # 128 x 8 x 8
            he(convt_same(128, 64, 5, 2)), nn.ELU(), bn(64),                    # 64 x 16 x 16
            he(convt_same(64, 32, 5, 2)), nn.ELU(), bn(32),                     # 32 x 32 x 32
            nn.Dropout(0.4),
            # The author's experiment: an ELU output layer, not tanh.
            he(convt_same(32, channels, 5, 1)), nn.ELU(),                       # C x 32 x 32
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class CifarDiscriminator(Discriminator):
    def __init__(self, channels: int = 3, bn_momentum: float = 0.01, bn_eps: float = 1e-3) -> None:
        super().__init__([
            he(conv_same(channels, 128, 5, 2)), nn.LeakyReLU(0.3),               # 128 x 16 x 16
            nn.Dropout(0.5), batch_norm(128, bn_momentum, bn_eps),
            he(conv_same(128, 256, 5, 2)), nn.LeakyReLU(0.3),                    # 256 x 8 x 8
            nn.Dropout(0.4),
            nn.Flatten(), batch_norm(8 * 8 * 256, bn_momentum, bn_eps, dims=1),  # 16,384 features
            nn.Linear(8 * 8 * 256, 1),                                           # 1 logit
        ])


# ---- registry entries -------------------------------------------------------------------------------

@register("upconv", "seed 001: Dense + 2 x (UpSampling, Conv, BN) G; 4 strided-conv D", sizes=(28,),
          cpu_channels_last=True)
def build_upconv(c) -> tuple[nn.Module, nn.Module]:
    return (UpConvGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps),
            UpConvDiscriminator(c.channels, c.bn_momentum, c.bn_eps))


@register("tf-dcgan", "TensorFlow DCGAN tutorial: Dense + 3 ConvT G; 2 strided-conv D", sizes=(28,),
          cpu_channels_last=True)
def build_tf_dcgan(c) -> tuple[nn.Module, nn.Module]:
    return TFGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps), TFDiscriminator(c.channels)


@register("cifar-dcgan", "seed 000 (Hands-On ML): Dense + 3 ConvT G with ELU output; 2-conv D",
          sizes=(32,))
def build_cifar_dcgan(c) -> tuple[nn.Module, nn.Module]:
    return (CifarGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps),
            CifarDiscriminator(c.channels, c.bn_momentum, c.bn_eps))
