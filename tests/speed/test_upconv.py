"""upsample_conv: nearest upsampling followed by a convolution, folded into one transposed
convolution, gives the pair's numbers forward and backward for every shape it accepts, leaves every
other pair alone, and keeps the parameters and checkpoints of the model it folds."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from ganforge import speed as accel
from ganforge.config import apply_overrides
from ganforge.gan.models import build_models
from ganforge.gan.recipes import get_recipe
from ganforge.speed.upconv import FoldedUpsample, UpsampledConv2d, fold_matrix


def _pair(scale, k, pad, c_in=3, c_out=4, bias=True, dtype=torch.float64) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=scale), nn.Conv2d(c_in, c_out, k, padding=pad, bias=bias)).to(dtype)


def _cases():
    """(scale, kernel, padding, h, w): square and oblong scales and kernels, every padding the fold
    accepts (none to k-1, beyond 'same'), square and oblong maps down to 1 x 1."""
    for scale, k, (h, w) in itertools.product((2, 3, (2, 3)), ((3, 3), (5, 5), (2, 2), (4, 3), (3, 1)),
                                              ((1, 1), (4, 4), (3, 5))):
        sh, sw = scale if isinstance(scale, tuple) else (scale, scale)
        for ph, pw in itertools.product(range(k[0]), range(k[1])):
            if sh * h + 2 * ph >= k[0] and sw * w + 2 * pw >= k[1]:  # the pair's own size limit
                yield scale, k, (ph, pw), h, w


def test_fold_matrix_for_x2_and_3x3():
    # Transposed-kernel tap q collects the 3x3 taps r that read the same small pixel (flipped,
    # as a transposed convolution is).
    assert fold_matrix(3, 2).tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert fold_matrix(3, 1).tolist() == torch.eye(3).flip(1).tolist()


def test_folded_pair_is_the_pair_in_float64():
    torch.manual_seed(0)
    cases = list(_cases())
    assert len(cases) > 150
    folded_any = 0
    for scale, k, pad, h, w in cases:
        ref = _pair(scale, k, pad)
        fast = copy.deepcopy(ref)
        n = accel.upsample_conv(fast, enabled=True)
        assert n == 1, (scale, k, pad)
        folded_any += n
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        y, y2 = ref(x), fast(x2)
        assert y2.shape == y.shape
        torch.testing.assert_close(y2, y, rtol=0, atol=1e-11, msg=str((scale, k, pad, h, w)))
        g = torch.randn_like(y)
        y.backward(g), y2.backward(g)
        torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-11)
        for p, p2 in zip(ref.parameters(), fast.parameters()):
            torch.testing.assert_close(p2.grad, p.grad, rtol=0, atol=1e-10)
    assert folded_any > 100


def test_gradients_pass_gradcheck_and_gradgradcheck():
    """Gradient penalties differentiate twice: the fold is made of differentiable operations."""
    torch.manual_seed(0)
    pair = _pair(2, 3, 1, c_in=2, c_out=2)
    accel.upsample_conv(pair, enabled=True)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pair, (x,))
    assert torch.autograd.gradgradcheck(pair, (x,))


@pytest.mark.parametrize("build", [
    lambda: nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2, 2, 3, padding=1)),
    lambda: nn.Sequential(nn.Upsample(size=(8, 8)), nn.Conv2d(2, 2, 3, padding=1)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=1.5), nn.Conv2d(2, 2, 3, padding=1)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, stride=2, padding=1)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, dilation=2, padding=2)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, groups=2, padding=1)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding="same")),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=3)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 1)),
    lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)),
    lambda: nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Upsample(scale_factor=2)),
])
def test_other_pairs_are_left_alone(build):
    model = build()
    classes = [type(m) for m in model.modules()]
    assert accel.upsample_conv(model, enabled=True) == 0
    assert [type(m) for m in model.modules()] == classes
    assert not accel.upsample_folded(model)


def test_reused_modules_are_never_folded():
    """A module object used in two places would change in both: such pairs stay as they are."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4)
    up, conv, act = nn.Upsample(scale_factor=2), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
    cases = [nn.Sequential(act, up, act, conv),  # children() would list act once and pair up with conv
             nn.ModuleList([nn.Sequential(up, conv), nn.Sequential(up, nn.Conv2d(3, 3, 1))]),
             nn.ModuleList([nn.Sequential(up, conv), nn.Sequential(conv)])]
    for model in cases:
        ref = copy.deepcopy(model)
        assert accel.upsample_conv(model, enabled=True) == 0
        runs = [model] if isinstance(model, nn.Sequential) else list(model)
        for a, b in zip(runs, [ref] if isinstance(ref, nn.Sequential) else list(ref)):
            torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # The same pair in two separate models is still folded in each.
    assert accel.upsample_conv(_pair(2, 3, 1), _pair(2, 3, 1), enabled=True) == 2


def test_unbatched_input_goes_the_pairs_own_way():
    torch.manual_seed(0)
    ref = _pair(2, 3, 1, dtype=torch.float32)
    fast = copy.deepcopy(ref)
    accel.upsample_conv(fast, enabled=True)
    x = torch.randn(3, 5, 6)  # nn.Upsample reads (C, H, W) as a 1-D batch: it widens W only
    torch.testing.assert_close(fast(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(fast(x[None]), ref(x[None]), rtol=1e-5, atol=1e-5)


def test_seed001_generator_folds_both_upsamplings_and_keeps_its_checkpoint():
    cfg = apply_overrides(get_recipe("seed001-dcgan-mnist"), ["device=cpu"])
    torch.manual_seed(0)
    G, D = build_models(cfg)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    assert accel.upsample_conv(G2, D2, enabled=False) == 0
    assert accel.upsample_conv(G2, D2, enabled=True) == 2
    assert accel.upsample_folded(G2) and not accel.upsample_folded(D2)
    assert sum(isinstance(m, UpsampledConv2d) for m in G2.modules()) == 2
    assert sum(isinstance(m, FoldedUpsample) for m in G2.modules()) == 2
    # The same parameters and buffers under the same names: checkpoints load both ways.
    assert G2.state_dict().keys() == G.state_dict().keys()
    plain = copy.deepcopy(G)
    plain.load_state_dict(G2.state_dict())
    # As a run uses it: per-layer NHWC on the CPU as well, in training mode (BN batch statistics).
    # In float64: at batch 8, training-mode BatchNorm's backward magnifies fp32 rounding (NHWC
    # alone moves G's first gradients by 0.3 %), which would hide a real difference.
    accel.channels_last(G2, enabled=True, device=torch.device("cpu"))
    G, G2 = G.double(), G2.double()
    z = torch.randn(8, cfg.latent_dim, dtype=torch.float64)
    y, y2 = G(z), G2(z)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    y.backward(g), y2.backward(g)
    for (name, p), p2 in zip(G.named_parameters(), G2.parameters()):
        # Conv biases before BatchNorm have a true gradient of 0: both sides give ~1e-13 noise there.
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)
    assert any(isinstance(m, UpsampledConv2d) and m.weight.dtype == torch.float64 for m in G2.modules())


def test_bf16_autocast_runs_the_folded_pair_within_bf16_tolerance():
    torch.manual_seed(0)
    ref = _pair(2, 3, 1, c_in=16, c_out=8, dtype=torch.float32)
    fast = copy.deepcopy(ref)
    accel.upsample_conv(fast, enabled=True)
    x = torch.randn(2, 16, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y2 = ref(x), fast(x)
    assert y2.dtype == y.dtype == torch.bfloat16
    torch.testing.assert_close(y2.float(), y.float(), rtol=3e-2, atol=3e-2)


def test_runs_name_the_fold_only_where_it_acts(tmp_path):
    from ganforge.gan.run import GANRun

    def run(name, speed, *extra):
        cfg = apply_overrides(get_recipe(name), ["data=digits", "device=cpu", "threads=1", f"speed={speed}", *extra])
        return GANRun(cfg, tmp_path / f"{name}-{speed}", quiet=True)

    s001 = run("seed001-dcgan-mnist", "auto", "batch_size=8")
    assert s001.features.upsample_conv and "upsample_conv" in s001.speed.split("+")
    assert accel.upsample_folded(s001.G)
    assert "upsample_conv" not in run("seed001-dcgan-mnist", "auto+no_upsample_conv", "batch_size=8").speed
    assert not accel.upsample_folded(run("seed001-dcgan-mnist", "eager", "batch_size=8").G)
    default = run("default", "auto", "batch_size=8")
    assert default.features.upsample_conv and "upsample_conv" not in default.speed  # nothing to fold
