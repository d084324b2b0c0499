"""The detector's inference speed layer (ganforge.detect.speed): the fast forward (channels_last,
bf16 autocast, on CUDA a captured graph) returns what the plain eager forward returns, within bf16's
precision, and leaves the detections the same."""

from __future__ import annotations

import pytest
import torch

from ganforge.detect.infer import postprocess
from ganforge.detect.model import build_detector
from ganforge.detect.speed import eager_forward, fast_forward

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector("yolov1-s", 10).to(device).eval()


def _close(fast: torch.Tensor, eager: torch.Tensor) -> None:
    assert fast.dtype == torch.float32 and fast.shape == eager.shape
    # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 per op, a few per cent over a deep net
    scale = eager.abs().max().item()
    assert (fast - eager).abs().max().item() <= 0.05 * scale + 1e-3


def test_fast_forward_matches_eager_on_cpu():
    model = _model()
    x = torch.rand(4, 3, 112, 112)
    eager = eager_forward(model)(x)
    fast = fast_forward(model, x)(x)
    _close(fast, eager)
    assert fast.shape == (4, 7, 7, 2 * 5 + 10)
    # without bf16 the two are the same computation up to float32 reassociation
    exact = fast_forward(model, x, bf16=False)(x)
    torch.testing.assert_close(exact, eager, rtol=1e-4, atol=1e-4)


def test_fast_forward_keeps_the_confident_detections():
    model = _model()
    x = torch.rand(2, 3, 112, 112)
    eager = postprocess(eager_forward(model)(x), [(112, 112)] * 2, model.boxes, conf=0.0)
    fast = postprocess(fast_forward(model, x, bf16=False)(x), [(112, 112)] * 2, model.boxes, conf=0.0)
    for e, f in zip(eager, fast):
        assert len(e["scores"]) == len(f["scores"]) > 0
        torch.testing.assert_close(f["boxes"], e["boxes"], rtol=1e-4, atol=1e-3)


@cuda
def test_cuda_graph_replay_matches_eager_and_follows_new_inputs():
    model = _model("cuda")
    first = torch.rand(1, 3, 112, 112, device="cuda")
    second = torch.rand(1, 3, 112, 112, device="cuda")
    eager = eager_forward(model)
    expect_first, expect_second = eager(first).clone(), eager(second).clone()
    forward = fast_forward(model, first)
    _close(forward(first).clone(), expect_first)
    _close(forward(second).clone(), expect_second)  # the replay reads the new input, not the captured one
