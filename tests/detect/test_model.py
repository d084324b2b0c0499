"""Architecture: layer counts, output shapes and parameter counts of the registered detectors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.detect.layers import LEAKY_SLOPE
from ganforge.detect.model import DETECTORS, build_detector
from ganforge.errors import ConfigError

# The counts of docs/DETECTION.md, worked out there by hand from the paper's layer list (C = 20).
YOLOV1_CONV = 60_155_968
YOLOV1_FC = 50_176 * 4096 + 4096 + 4096 * 1470 + 1470
FAST_CONV = 25_168_800
FAST_FC = 50_176 * 256 + 256 + 256 * 4096 + 4096 + 4096 * 1470 + 1470


def _meta(name: str, classes: int = 20, **options) -> nn.Module:
    with torch.device("meta"):  # shapes and counts without allocating yolov1's 1 GB of weights
        return build_detector(name, classes, **options)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_yolov1_is_the_papers_network():
    model = _meta("yolov1")
    convs = _convs(model)
    assert len(convs) == 24
    assert [c.kernel_size[0] for c in convs].count(1) == 9  # the 1x1 reductions: 2 + 5 + 2
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2) and convs[0].out_channels == 64
    assert convs[-3].stride == (2, 2) and convs[-1].out_channels == 1024
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(7 * 7 * 1024, 4096), (4096, 1470)]
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 25 and all(m.negative_slope == LEAKY_SLOPE == 0.1 for m in leaky)
    dropout = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropout) == 1 and dropout[0].p == 0.5
    assert isinstance(list(model.head)[-1], nn.Linear)  # linear last layer
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name,side", [("yolov1", 448), ("fast-yolov1", 448), ("yolov1-s", 112)])
def test_output_grid_shape(name, side):
    assert DETECTORS.get(name).input_size == side
    with torch.device("meta"):
        out = _meta(name)(torch.empty(2, 3, side, side))
    assert out.shape == (2, 7, 7, 30)
    assert _meta(name, 3)(torch.empty(1, 3, side, side, device="meta")).shape == (1, 7, 7, 13)


def test_fast_yolov1_has_nine_3x3_convs_and_the_tiny_head():
    model = _meta("fast-yolov1")
    convs = _convs(model)
    assert len(convs) == 9 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 6
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [256, 4096, 1470]


@pytest.mark.parametrize("name,classes,options,total", [
    ("yolov1", 20, {}, 271_703_550), ("yolov1", 10, {}, 269_696_020),
    ("yolov1", 20, {"batchnorm": True}, 271_716_734),
    ("fast-yolov1", 20, {}, 45_089_374), ("fast-yolov1", 10, {}, 43_081_844),
    ("yolov1-s", 20, {}, 4_390_190), ("yolov1-s", 10, {}, 4_264_260)])
def test_parameter_counts_are_the_documented_table(name, classes, options, total):
    """The figures of docs/DETECTION.md's model table, as printed there."""
    assert sum(p.numel() for p in _meta(name, classes, **options).parameters()) == total


@pytest.mark.parametrize("name,conv,fc", [("yolov1", YOLOV1_CONV, YOLOV1_FC),
                                          ("fast-yolov1", FAST_CONV, FAST_FC)])
def test_parameter_counts_match_the_documented_arithmetic(name, conv, fc):
    info = DETECTORS.get(name)
    assert info.params(20) == {"conv": conv, "fc": fc, "total": conv + fc}
    assert sum(p.numel() for p in _meta(name).parameters()) == conv + fc


def test_yolov1_total_is_271_703_550():
    assert DETECTORS.get("yolov1").params(20)["total"] == 271_703_550


def test_options_batchnorm_and_narrow_fc_change_the_counts_as_derived():
    info = DETECTORS.get("yolov1")
    plain = info.params(20, batchnorm=False)
    with_bn = info.params(20, batchnorm=True)
    # BN: each conv loses its bias (c_out) and gains scale + shift (2 c_out): + sum of c_out
    assert with_bn["conv"] - plain["conv"] == sum(c.out_channels for c in _convs(_meta("yolov1")))
    model = _meta("yolov1", batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 24
    assert all(c.bias is None for c in _convs(model))
    narrow = info.params(20, fc_width=512)
    assert narrow["fc"] == 50_176 * 512 + 512 + 512 * 1470 + 1470
    assert sum(p.numel() for p in _meta("yolov1", fc_width=512).parameters()) == narrow["total"]


def test_dropout_option_changes_only_the_rate():
    model = _meta("fast-yolov1", dropout=0.2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2]
    assert DETECTORS.get("fast-yolov1").params(20, fc_width=None) == DETECTORS.get("fast-yolov1").params(20)
    with pytest.raises(ConfigError, match="dropout must be in"):
        build_detector("yolov1-s", 3, dropout=1.5)


def test_small_variant_is_small_and_runs_for_real():
    torch.manual_seed(0)
    info = DETECTORS.get("yolov1-s")
    model = info.build(10)
    assert info.batchnorm and sum(p.numel() for p in model.parameters()) == info.params(10)["total"]
    assert info.params(10)["total"] < 5_000_000
    out = model.eval()(torch.rand(2, 3, 112, 112))
    assert out.shape == (2, 7, 7, 20) and torch.isfinite(out).all()


def test_fast_yolov1_forward_at_448():
    torch.manual_seed(0)
    model = build_detector("fast-yolov1", 20).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 448, 448))
    assert out.shape == (1, 7, 7, 30) and torch.isfinite(out).all()


def test_unknown_detector_and_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown detector 'yolo9'; valid detectors: yolov1, fast-yolov1, yolov1-s"):
        build_detector("yolo9", 20)
    with pytest.raises(ConfigError, match="at least one class"):
        build_detector("yolov1-s", 0)
    with pytest.raises(ConfigError, match="fc_width"):
        build_detector("yolov1-s", 3, fc_width=0)
