"""The translation networks, built from a few blocks as in the pix2pix / CycleGAN papers' code:

- `UNet`: an encoder-decoder with a skip from every encoder stage to its mirror (pix2pix's G). It
  is built from the inside out, one `SkipBlock` around the next; `num_downs` halvings take a
  2^num_downs image down to 1 x 1.
- `ResNetGenerator`: two stride-2 convolutions, `blocks` residual blocks, two transposed
  convolutions; reflection padding, instance norm (CycleGAN's G; 9 blocks at 256 px, 6 at 128).
- `PatchGAN`: a fully convolutional D whose every output cell judges one square patch of its input;
  `n_layers` sets the patch (receptive field): 0 -> 1 px (the per-pixel D), 1 -> 16, 2 -> 34, 3 -> 70.

Biases: a convolution followed by BatchNorm has none (BatchNorm's shift replaces it); with instance
norm (no affine shift) or no norm it keeps its bias. Those are the choices that give the papers'
parameter counts, pinned by tests. Weights start from N(0, 0.02) (`init_weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge.registry import Registry

NORMS = ("batch", "instance", "none")
# patch size in pixels -> PatchGAN n_layers (0 is the 1 x 1 "pixel" D)
PATCH_LAYERS = {1: 0, 16: 1, 34: 2, 70: 3}


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # no affine parameters, no running statistics: the CycleGAN code's choice
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    return norm != "batch"


# ---- U-Net ---------------------------------------------------------------------------------------------

class SkipBlock(nn.Module):
    """down -> inner -> up, and (except outermost) the input concatenated to the output.

    `outer` channels come in (and go out); the block's own convolution makes `inner` channels at
    half the size. The innermost block has no inner block; the outermost ends in tanh and no skip."""

    def __init__(self, outer: int, inner: int, inner_block: nn.Module | None = None, *, in_channels: int | None = None,
                 outermost: bool = False, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        in_channels = outer if in_channels is None else in_channels
        down = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=bias)
        # the inner block returns its input concatenated to its output: twice the channels
        up_in = inner if inner_block is None else inner * 2
        if outermost:
            layers = [down, inner_block, nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1),
                      nn.Tanh()]
        elif inner_block is None:  # innermost: 1 x 1, nothing to normalise over on the way down
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner), inner_block, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # B x (outer + outer) x H x W


class UNet(nn.Module):
    """pix2pix's generator: `num_downs` halvings (8 for 256 px, 5 for 32 px), `ngf` filters in the
    outermost stage doubling to 8 * ngf; dropout in the `dropout_blocks` decoder blocks nearest the
    bottleneck (the three 8 * ngf blocks of U-Net-256)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: float = 0.5, dropout_blocks: int = 3) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("a U-Net needs at least 5 downsamplings (ngf -> 8 * ngf takes 4)")
        self.multiple = 2 ** num_downs  # input sides must be multiples of this
        block = SkipBlock(ngf * 8, ngf * 8, norm=norm)  # innermost: 8 * ngf at 1 x 1 for 256 px
        for i in range(num_downs - 5):
            block = SkipBlock(ngf * 8, ngf * 8, block, norm=norm, dropout=dropout if i < dropout_blocks else 0.0)
        for mult in (4, 2, 1):
            block = SkipBlock(ngf * mult, ngf * mult * 2, block, norm=norm)
        self.model = SkipBlock(out_channels, ngf, block, in_channels=in_channels, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # B x out_channels x H x W, in [-1, 1]


# ---- ResNet-k ------------------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """x + (pad, conv 3x3, norm, ReLU, pad, conv 3x3, norm)(x), reflection padding."""

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
                  nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-ngf, d2ngf, d4ngf, `blocks` x R4ngf, u2ngf, ungf, c7s1-out (tanh)."""

    multiple = 4  # two stride-2 stages

    def __init__(self, in_channels: int = 3, out_channels: int = 3, blocks: int = 9, ngf: int = 64,
                 norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for mult in (1, 2):  # B x ngf x H x W -> B x 4ngf x H/4 x W/4
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       norm_layer(norm, ngf * mult * 2), nn.ReLU(True)]
        layers += [ResidualBlock(ngf * 4, norm, dropout) for _ in range(blocks)]
        for mult in (4, 2):  # back to B x ngf x H x W
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=bias), norm_layer(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---- PatchGAN ------------------------------------------------------------------------------------------

class PatchGAN(nn.Module):
    """A grid of logits, one per input patch. n_layers >= 1: C64 (no norm), then n_layers - 1
    stride-2 and one stride-1 stage doubling the filters up to 8 * ndf, then a 1-channel
    convolution; all 4 x 4. n_layers 0: three 1 x 1 convolutions, one logit per pixel."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        if n_layers == 0:
            layers = [nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(norm, ndf * 2), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf * 2, 1, 1, bias=bias)]
        else:
            layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
            mult = 1
            for n in range(1, n_layers + 1):
                prev, mult = mult, min(2 ** n, 8)
                stride = 2 if n < n_layers else 1
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                           norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # B x 1 x h x w logits


# ---- registry and init ---------------------------------------------------------------------------------

GENERATORS: Registry = Registry("generator")
GENERATORS.register("unet", UNet)
GENERATORS.register("resnet", ResNetGenerator)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Convolutions from N(0, gain), biases 0; BatchNorm scales from N(1, gain), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_generator(cfg, in_channels: int, out_channels: int) -> nn.Module:
    """The config's generator (`cfg`: a TranslateConfig) from `in_channels` to `out_channels`."""
    if cfg.model == "unet":
        return UNet(in_channels, out_channels, cfg.unet_downs, cfg.ngf, cfg.g_norm, cfg.dropout)
    return ResNetGenerator(in_channels, out_channels, cfg.blocks(), cfg.ngf, cfg.g_norm, cfg.dropout)


def net_names(cfg) -> tuple[str, ...]:
    """The names of a run's networks, as checkpoints hold them."""
    return ("G", "D") if cfg.mode == "pix2pix" else ("G_AB", "G_BA", "D_A", "D_B")


def build_nets(cfg) -> dict[str, nn.Module]:
    """The named networks of a run, initialised from N(0, 0.02) under the current RNG. pix2pix: G and
    D (on the concatenated pair); cyclegan: G_AB, G_BA, D_A (judges domain A), D_B."""
    layers = PATCH_LAYERS[cfg.patch]
    if cfg.mode == "pix2pix":
        src, tgt = cfg.source_channels(), cfg.target_channels()
        nets = {"G": build_generator(cfg, src, tgt), "D": PatchGAN(src + tgt, cfg.ndf, layers, cfg.d_norm)}
    else:
        a, b = cfg.channels_a, cfg.channels_b
        nets = {"G_AB": build_generator(cfg, a, b), "G_BA": build_generator(cfg, b, a),
                "D_A": PatchGAN(a, cfg.ndf, layers, cfg.d_norm), "D_B": PatchGAN(b, cfg.ndf, layers, cfg.d_norm)}
    return {name: init_weights(net) for name, net in nets.items()}
