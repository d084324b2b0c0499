"""R6 `infogan-mnist`: the MNIST networks of InfoGAN's appendix (Chen et al. 2016).

G's input is z joined with the codes (74 = 62 + 10 + 2 for the paper's setup); the joining is
models/conditioning.py's, so here `latent_dim` is the width of that whole vector. Q's head is
conditioning.QHead on this D's trunk (the FC 1024 features).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Discriminator
from .registry import register


class InfoGANGenerator(nn.Module):
    def __init__(self, latent_dim: int = 74, channels: int = 1, bn_momentum: float = 0.1,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 1024, bias=False), nn.BatchNorm1d(1024, bn_eps, bn_momentum), nn.ReLU(True),
            nn.Linear(1024, 128 * 7 * 7, bias=False), nn.BatchNorm1d(128 * 7 * 7, bn_eps, bn_momentum),
            nn.ReLU(True),
            nn.Unflatten(1, (128, 7, 7)),                                               # 128 x 7 x 7
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64, bn_eps, bn_momentum),
            nn.ReLU(True),                                                              # 64 x 14 x 14
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Tanh(),                       # C x 28 x 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class InfoGANDiscriminator(Discriminator):
    def __init__(self, channels: int = 1, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> None:
        act = lambda: nn.LeakyReLU(0.1, True)  # noqa: E731  (the paper's leaky rate)
        super().__init__([
            nn.Conv2d(channels, 64, 4, 2, 1), act(),                                    # 64 x 14 x 14
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128, bn_eps, bn_momentum), act(),  # 128 x 7 x 7
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1024, bias=False),
            nn.BatchNorm1d(1024, bn_eps, bn_momentum), act(),                           # 1,024 features
            nn.Linear(1024, 1),                                                         # 1 logit
        ])


@register("infogan", "InfoGAN's MNIST nets: FC 1024, FC 7x7x128, 2 up-convs G; 2 convs + FC 1024 D/Q trunk",
          sizes=(28,))
def build_infogan(c) -> tuple[nn.Module, nn.Module]:
    return (InfoGANGenerator(c.latent_dim, c.channels, c.bn_momentum, c.bn_eps),
            InfoGANDiscriminator(c.channels, c.bn_momentum, c.bn_eps))
