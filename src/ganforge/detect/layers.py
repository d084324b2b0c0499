"""Layer lists of the YOLO v1 networks, and the parameter counts they imply.

A network is a list of convolutions (`Conv`) and 2x2 stride-2 max-pools (`POOL`), then a head of
fully connected layers (`FC`). Each list is the single source of truth: the module is built from
it and the documented parameter counts are derived from it (``param_count``), so the two cannot
disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

LEAKY_SLOPE = 0.1  # the paper's leaky rectifier: phi(x) = x if x > 0 else 0.1 x


@dataclass(frozen=True)
class Conv:
    """A k x k convolution with `out` filters, 'same' padding (k // 2, as darknet's pad=1)."""

    k: int
    out: int
    stride: int = 1


@dataclass(frozen=True)
class FC:
    """A fully connected layer; `width=None` is the output layer S*S*(5B+C)."""

    width: int | None
    act: str = "leaky"  # "leaky" or "linear"
    dropout: float = 0.0  # dropout after the activation


POOL = "pool"  # 2x2 max-pool, stride 2

# The paper's Fig. 3: 24 convolutions, 1x1 reductions between 3x3 layers (448 -> 7).
YOLOV1_CONVS: tuple = (
    Conv(7, 64, 2), POOL,                                     # 448 -> 224 -> 112
    Conv(3, 192), POOL,                                       # 112 -> 56
    Conv(1, 128), Conv(3, 256), Conv(1, 256), Conv(3, 512), POOL,  # 56 -> 28
    *(Conv(1, 256), Conv(3, 512)) * 4, Conv(1, 512), Conv(3, 1024), POOL,  # 28 -> 14
    *(Conv(1, 512), Conv(3, 1024)) * 2, Conv(3, 1024), Conv(3, 1024, 2),  # 14 -> 7
    Conv(3, 1024), Conv(3, 1024),                             # 7
)
YOLOV1_HEAD = (FC(4096, "leaky", 0.5), FC(None, "linear"))

# Fast YOLO, the authors' yolo-tiny.cfg of Nov. 2015: nine 3x3 convolutions (448 -> 7).
FAST_CONVS: tuple = (
    *(x for width in (16, 32, 64, 128, 256, 512) for x in (Conv(3, width), POOL)),
    Conv(3, 1024), Conv(3, 1024), Conv(3, 1024),
)
FAST_HEAD = (FC(256, "linear"), FC(4096, "leaky", 0.5), FC(None, "linear"))

# yolov1-s, this project's small variant for two CPU cores: 112 x 112 input, the paper's pattern of
# 3x3 layers with 1x1 reductions at 1/4..1/16 of its widths, the same S x S x (5B+C) head with a
# 256-wide first FC. 112 -> 7 with four pools.
SMALL_CONVS: tuple = (
    Conv(3, 16), POOL,                                        # 112 -> 56
    Conv(3, 32), POOL,                                        # 56 -> 28
    Conv(1, 16), Conv(3, 64), POOL,                           # 28 -> 14
    Conv(1, 32), Conv(3, 128), POOL,                          # 14 -> 7
    Conv(1, 64), Conv(3, 256), Conv(3, 256),                  # 7
)
SMALL_HEAD = (FC(256, "leaky", 0.5), FC(None, "linear"))


def conv_layers(convs: tuple, in_channels: int = 3, batchnorm: bool = False) -> nn.Sequential:
    """The convolutional trunk: conv (+ BatchNorm) + leaky ReLU 0.1 for each `Conv`, pools for POOL.

    With BatchNorm the convolution has no bias (BN's shift replaces it), as darknet does."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in convs:
        if item == POOL:
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(channels, item.out, item.k, item.stride, item.k // 2, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(item.out))
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        channels = item.out
    return nn.Sequential(*layers)


def head_layers(head: tuple, in_features: int, out_features: int) -> nn.Sequential:
    """Flatten, then each `FC` (its activation, its dropout); the last one is the output layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for fc in head:
        width = out_features if fc.width is None else fc.width
        layers.append(nn.Linear(features, width))
        if fc.act == "leaky":
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        if fc.dropout:
            layers.append(nn.Dropout(fc.dropout))
        features = width
    return nn.Sequential(*layers)


def trunk_shape(convs: tuple, input_size: int, in_channels: int = 3) -> tuple[int, int]:
    """(channels, side) after the trunk, for a square input of `input_size`."""
    channels, side = in_channels, input_size
    for item in convs:
        if item == POOL:
            side //= 2
        else:
            channels = item.out
            side = (side + 2 * (item.k // 2) - item.k) // item.stride + 1
    return channels, side


def param_count(convs: tuple, head: tuple, input_size: int, out_features: int,
                batchnorm: bool = False, in_channels: int = 3) -> dict[str, int]:
    """Parameters implied by the layer lists, counted by arithmetic (not by building the module).

    conv: k*k*c_in*c_out weights + c_out biases (or + 2*c_out BN scale and shift without a bias);
    fc: n_in*n_out + n_out. Returns the conv, fc and total counts."""
    conv = 0
    channels = in_channels
    for item in convs:
        if item == POOL:
            continue
        conv += item.k * item.k * channels * item.out + (2 if batchnorm else 1) * item.out
        channels = item.out
    last_channels, side = trunk_shape(convs, input_size, in_channels)
    fc, features = 0, last_channels * side * side
    for layer in head:
        width = out_features if layer.width is None else layer.width
        fc += features * width + width
        features = width
    return {"conv": conv, "fc": fc, "total": conv + fc}
