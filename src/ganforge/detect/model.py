"""The YOLO v1 detectors and their registry (`DETECTORS`).

Output tensor order (this project's choice; darknet stores all class blocks, then all confidences,
then all coordinates): the last FC's S*S*(5B+C) outputs are viewed as ``N x S x S x (5B + C)``,
cells in row-major order (row = y, column = x), and each cell holds

    [x, y, sqrt(w), sqrt(h), confidence] for predictor 1, ..., for predictor B, then C class scores

where x, y are the box centre's offset inside its cell (0..1), sqrt(w), sqrt(h) are square roots of
the box size relative to the image (predicted directly, as darknet does, so squaring decodes them),
and every output is linear (no sigmoid, no softmax), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ganforge.detect.layers import (FAST_CONVS, FAST_HEAD, SMALL_CONVS, SMALL_HEAD, YOLOV1_CONVS,
                                    YOLOV1_HEAD, conv_layers, head_layers, param_count, trunk_shape)
from ganforge.errors import ConfigError
from ganforge.registry import Registry

GRID = 7  # S
BOXES = 2  # B


class YoloV1(nn.Module):
    """A convolutional trunk, then fully connected layers to an S x S x (5B + C) grid."""

    def __init__(self, convs: tuple, head: tuple, input_size: int, num_classes: int,
                 grid: int = GRID, boxes: int = BOXES, batchnorm: bool = False,
                 in_channels: int = 3) -> None:
        super().__init__()
        channels, side = trunk_shape(convs, input_size, in_channels)
        if side != grid:
            raise ConfigError(f"input {input_size} gives a {side}x{side} trunk, not {grid}x{grid}: "
                              f"use an input size of {input_size * grid // max(side, 1)}")
        self.input_size, self.grid, self.boxes, self.num_classes = input_size, grid, boxes, num_classes
        self.features = conv_layers(convs, in_channels, batchnorm)
        self.head = head_layers(head, channels * side * side, grid * grid * (5 * boxes + num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x H x W (H = W = input_size), floats in [0, 1]
        h = self.features(x)  # N x C_last x S x S
        out = self.head(h)  # N x S*S*(5B+C)
        return out.view(-1, self.grid, self.grid, 5 * self.boxes + self.num_classes)  # N x S x S x (5B+C)


@dataclass(frozen=True)
class DetectorInfo:
    """A registered detector: how to build it and what it needs."""

    name: str
    convs: tuple
    head: tuple
    input_size: int  # square input side in pixels
    description: str
    batchnorm: bool = False  # the default of the BatchNorm option
    cpu_channels_last: bool = False  # measured faster in channels_last on the CPU
    speed: dict = field(default_factory=dict)  # other per-model speed properties

    def build(self, num_classes: int, *, batchnorm: bool | None = None,
              fc_width: int | None = None, dropout: float | None = None) -> YoloV1:
        """The module for `num_classes` classes (C). `fc_width` narrows the first FC with dropout
        (the paper's 4096); `batchnorm` adds BatchNorm after every conv; `dropout` changes the
        rate after that FC (the paper's 0.5). None keeps this model's default."""
        if num_classes < 1:
            raise ConfigError(f"a detector needs at least one class, got {num_classes}")
        bn = self.batchnorm if batchnorm is None else batchnorm
        return YoloV1(self.convs, self._head(fc_width, dropout), self.input_size, num_classes,
                      batchnorm=bn)

    def params(self, num_classes: int, *, batchnorm: bool | None = None,
               fc_width: int | None = None) -> dict[str, int]:
        """Parameter counts derived from the layer list (see docs/DETECTION.md)."""
        bn = self.batchnorm if batchnorm is None else batchnorm
        out = GRID * GRID * (5 * BOXES + num_classes)
        return param_count(self.convs, self._head(fc_width), self.input_size, out, batchnorm=bn)

    def _head(self, fc_width: int | None, dropout: float | None = None) -> tuple:
        if fc_width is not None and fc_width < 1:
            raise ConfigError(f"fc_width must be a positive number of units, got {fc_width}")
        if dropout is not None and not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        head = []
        for fc in self.head:
            if fc.dropout:  # the hidden FC of the paper's head
                fc = replace(fc, width=fc_width or fc.width,
                             dropout=fc.dropout if dropout is None else dropout)
            head.append(fc)
        return tuple(head)


DETECTORS: Registry[DetectorInfo] = Registry("detector")
for _info in (
    DetectorInfo("yolov1", YOLOV1_CONVS, YOLOV1_HEAD, 448,
                 "the paper's network: 24 convs with 1x1 reductions, FC 4096, 448 input"),
    DetectorInfo("fast-yolov1", FAST_CONVS, FAST_HEAD, 448,
                 "Fast YOLO (yolo-tiny.cfg): 9 convs of 3x3, FC 256 -> 4096, 448 input"),
    DetectorInfo("yolov1-s", SMALL_CONVS, SMALL_HEAD, 112,
                 "small variant for two CPU cores: 9 convs (3 with 1x1 reductions), 112 input, "
                 "BatchNorm, FC 256",
                 batchnorm=True, cpu_channels_last=True),  # training step 2x faster in channels_last
):
    DETECTORS.register(_info.name, _info)


def build_detector(name: str, num_classes: int, **options) -> YoloV1:
    """`DETECTORS.get(name).build(num_classes, **options)`; unknown names are a one-line error."""
    return DETECTORS.get(name).build(num_classes, **options)


