"""R5 the canonical DCGAN (Radford, Metz, Chintala 2015) and the project's `default` model."""

from __future__ import annotations

import torch
from torch import nn

from .layers import Discriminator
from .registry import register


class DCGANGenerator(nn.Module):
    """z -> 8f x 4 x 4 -> ... -> nc x 64 x 64 (one block fewer for 32 x 32)."""

    def __init__(self, latent_dim: int = 100, channels: int = 3, base_filters: int = 64,
                 image_size: int = 64) -> None:
        super().__init__()
        f = base_filters
        widths = [8 * f, 4 * f, 2 * f, f] if image_size == 64 else [4 * f, 2 * f, f]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),  # w0 x 4 x 4
            nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):  # each block doubles the side
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)  # nc x image_size x image_size

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(Discriminator):
    """Mirror of the generator: strided convs, LeakyReLU(0.2), no BN on the first layer, one logit."""

    def __init__(self, channels: int = 3, base_filters: int = 64, image_size: int = 64) -> None:
        f = base_filters
        widths = [f, 2 * f, 4 * f, 8 * f] if image_size == 64 else [f, 2 * f, 4 * f]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]  # f x size/2
        for c_in, c_out in zip(widths, widths[1:]):  # each block halves the side
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        # features: w x 4 x 4
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]  # 1 x 1 x 1 logit
        super().__init__(layers)


class DefaultGenerator(nn.Module):
    """The project's recommended G for 28x28 / 32x32: a projected 4f x s/4 map, two ConvT x2 blocks,
    and a 3x3 output conv (smoother than a ConvT output on small images)."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, base_filters: int = 32,
                 image_size: int = 28, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        f, s = base_filters, image_size // 4
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 4 * f * s * s, bias=False),
            nn.Unflatten(1, (4 * f, s, s)),                                          # 4f x s/4
            nn.BatchNorm2d(4 * f, bn_eps, bn_momentum), nn.ReLU(True),
            nn.ConvTranspose2d(4 * f, 2 * f, 4, 2, 1, bias=False),                   # 2f x s/2
            nn.BatchNorm2d(2 * f, bn_eps, bn_momentum), nn.ReLU(True),
            nn.ConvTranspose2d(2 * f, f, 4, 2, 1, bias=False),                       # f x s
            nn.BatchNorm2d(f, bn_eps, bn_momentum), nn.ReLU(True),
            nn.Conv2d(f, channels, 3, 1, 1), nn.Tanh(),                              # C x s
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class DefaultDiscriminator(Discriminator):
    """Two strided convs (no BN on the first), a third at stride 1, and a linear logit."""

    def __init__(self, channels: int = 1, base_filters: int = 32, image_size: int = 28,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> None:
        f, s = base_filters, image_size // 4
        super().__init__([
            nn.Conv2d(channels, f, 4, 2, 1), nn.LeakyReLU(0.2, True),                # f x s/2
            nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * f, bn_eps, bn_momentum), nn.LeakyReLU(0.2, True),     # 2f x s/4
            nn.Conv2d(2 * f, 4 * f, 3, 1, 1, bias=False),
            nn.BatchNorm2d(4 * f, bn_eps, bn_momentum), nn.LeakyReLU(0.2, True),     # 4f x s/4
            nn.Flatten(),                                                            # 4f*s*s features
            nn.Linear(4 * f * s * s, 1),                                             # 1 logit
        ])


# ---- registry entries -------------------------------------------------------------------------------

@register("dcgan", "Radford et al. 2015: ConvT G and strided-conv D, BN, 64x64 (or 32x32)",
          sizes=(32, 64), cpu_channels_last=True)
def build_dcgan(c) -> tuple[nn.Module, nn.Module]:
    return (DCGANGenerator(c.latent_dim, c.channels, c.base_filters, c.image_size),
            DCGANDiscriminator(c.channels, c.base_filters, c.image_size))


@register("default", "this project's DCGAN-style pair for 28x28 / 32x32 (3x3 output conv)",
          sizes=(28, 32), cpu_channels_last=True)
def build_default(c) -> tuple[nn.Module, nn.Module]:
    return (DefaultGenerator(c.latent_dim, c.channels, c.base_filters, c.image_size, c.bn_momentum, c.bn_eps),
            DefaultDiscriminator(c.channels, c.base_filters, c.image_size, c.bn_momentum, c.bn_eps))
