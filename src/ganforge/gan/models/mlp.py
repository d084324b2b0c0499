"""R1 `seed004-mlp-mnist`: the fully connected "DNN-GAN".

The source does not show its layers; these widths are the project's documented choice
(SEED-RECIPES.md R1) and are recipe options (`g_hidden`, `d_hidden`).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Discriminator
from .registry import register


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, hidden: int = 128, channels: int = 1,
                 image_size: int = 28) -> None:
        super().__init__()
        self.shape = (channels, image_size, image_size)
        out = channels * image_size * image_size
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),  # B x hidden
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, out),  # B x C*H*W
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.shape)  # B x C x H x W


class MLPDiscriminator(Discriminator):
    def __init__(self, hidden: int = 128, channels: int = 1, image_size: int = 28) -> None:
        super().__init__([
            nn.Flatten(),  # B x C*H*W
            nn.Linear(channels * image_size * image_size, hidden),
            nn.LeakyReLU(0.2),  # B x hidden: the features
            nn.Linear(hidden, 1),  # B x 1 logit (the source's sigmoid lives in the loss)
        ])


@register("mlp", "fully connected G 100->hidden->C*H*W and D C*H*W->hidden->1 (seed 004)")
def build_mlp(c) -> tuple[nn.Module, nn.Module]:
    return (MLPGenerator(c.latent_dim, c.g_hidden, c.channels, c.image_size),
            MLPDiscriminator(c.d_hidden, c.channels, c.image_size))
