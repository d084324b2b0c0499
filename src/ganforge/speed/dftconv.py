"""Small stride-1 convolutions through the discrete Fourier transform (the `dft_conv` feature).

A stride-1 convolution of an H x W map is a circular convolution on a P x P grid, once the grid is
large enough that the wrap-around lands only on zeros. The DFT turns it into one channel-mixing
product per frequency. Real maps have conjugate-symmetric spectra, so each pair of conjugate
frequencies is one complex product, done as three real ones (Gauss's trick): the whole layer is

    y = T_out @ bmm(T_in @ x, T_w @ w)

three real matrix products whose small matrices (`Plan`) depend only on the shapes. For the TF
tutorial's 256->128 5x5 transposed convolution at 7x7 this does 121 products per channel pair
instead of the direct kernel's 841, and measured 2.3-3.0x faster forward and backward on one
and two CPU cores (docs/BENCHMARKS.md). The result is the same convolution, rounded differently (relative error
about 1e-6 in fp32), and autograd differentiates the three products, so the gradients are exact
too. A layer uses it only where the count of multiplications says it pays (`pays`), in fp32,
outside autocast and outside torch.compile; everywhere else the module runs PyTorch's own
convolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ganforge.speed.swap import graph_grads, swap_classes, torch_path

# Use the DFT only where the direct multiplications outnumber its own by this factor: its matrix
# products run at about half the speed of oneDNN's direct convolution kernels on the CPUs
# measured, and its transforms are memory-bound.
_MIN_GAIN = 3.0


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: `plan` makes one per shape
class Plan:
    """The three matrices of one layer shape (float64; cast per dtype and device by `_cast`)."""

    t_in: torch.Tensor  # (R, H*W): the input map's spectrum, as R real values
    t_w: torch.Tensor  # (R, Kh*Kw): the kernel's spectrum, as R real values
    t_out: torch.Tensor  # (Hout*Wout, R): from R real products to the output map
    out_size: tuple[int, int]
    taps: int  # the direct convolution's multiplications per channel pair (padding's zeros skipped)

    @property
    def bins(self) -> int:
        return self.t_in.shape[0]


def _taps(size: int, kernel: int, pad: int, out: int) -> int:
    """Products of a stride-1 correlation along one axis that read data, not padding."""
    return sum(min(kernel, size + pad - i) - max(0, pad - i) for i in range(out))


def _grid(size: int, kernel: int, pad: int) -> tuple[int, int]:
    """(output size, DFT size) of a stride-1 correlation with `pad` zeros each side. The DFT size
    is the smallest whose wrap-around hits only zeros: indices below 0 must wrap past the data
    (P >= size + pad) and the largest index read must not wrap (P >= out + kernel - 1 - pad)."""
    out = size + 2 * pad - kernel + 1
    return out, max(size + pad, out + kernel - 1 - pad, size, out)


@functools.lru_cache(maxsize=64)
def plan(h: int, w: int, kh: int, kw: int, ph: int, pw: int, transposed: bool) -> Plan:
    """The matrices for a stride-1 layer on an h x w input. For a transposed convolution (stride 1,
    padding p) the same correlation runs with the kernel flipped and padding k - 1 - p."""
    if transposed:
        ph, pw = kh - 1 - ph, kw - 1 - pw
    (ho, big_h), (wo, big_w) = _grid(h, kh, ph), _grid(w, kw, pw)
    d = torch.float64
    k1, k2 = torch.meshgrid(torch.arange(big_h), torch.arange(big_w), indexing="ij")
    k1, k2 = k1.flatten(), k2.flatten()
    n1, n2 = (-k1) % big_h, (-k2) % big_w
    code, neg = k1 * big_w + k2, n1 * big_w + n2
    real, pair = code == neg, code < neg  # self-conjugate bins; one of each conjugate pair
    kr = torch.stack([k1[real], k2[real]], 1).to(d)
    kp = torch.stack([k1[pair], k2[pair]], 1).to(d)

    def phase(k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # (bins, positions)
        return 2 * math.pi * (k[:, :1] * pos[:, 0] / big_h + k[:, 1:] * pos[:, 1] / big_w)

    def positions(rows: int, cols: int) -> torch.Tensor:
        i, j = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        return torch.stack([i.flatten(), j.flatten()], 1).to(d)

    x_pos = positions(h, w)
    w_pos = positions(kh, kw)
    if transposed:
        w_pos = torch.stack([kh - 1 - w_pos[:, 0], kw - 1 - w_pos[:, 1]], 1)
    y_pos = torch.tensor([ph, pw], dtype=d) - positions(ho, wo)  # y_i takes the phase of (p - i)

    # X_k = sum_m x_m e^{+i k.m}; W_k = sum_a w_a e^{-i k.a}; y_i = 1/P^2 sum_k e^{i k.(p-i)} X_k W_k.
    # A conjugate pair contributes 2 Re(c Z) with Z = X W done as K1 = (Xr+Xi) Wr,
    # K2 = Xr (Wi-Wr), K3 = Xi (Wr+Wi): Re Z = K1 - K3, Im Z = K1 + K2.
    xr, xi = torch.cos(phase(kp, x_pos)), torch.sin(phase(kp, x_pos))
    wr, wi = torch.cos(phase(kp, w_pos)), -torch.sin(phase(kp, w_pos))
    cr, ci = torch.cos(phase(kp, y_pos)), torch.sin(phase(kp, y_pos))
    t_in = torch.cat([torch.cos(phase(kr, x_pos)), torch.stack([xr + xi, xr, xi], 1).flatten(0, 1)])
    t_w = torch.cat([torch.cos(phase(kr, w_pos)), torch.stack([wr, wi - wr, wr + wi], 1).flatten(0, 1)])
    t_out = torch.cat([torch.cos(phase(kr, y_pos)),
                       torch.stack([2 * (cr - ci), -2 * ci, -2 * cr], 1).flatten(0, 1)]) / (big_h * big_w)
    return Plan(t_in, t_w, t_out.T.contiguous(), (ho, wo), _taps(h, kh, ph, ho) * _taps(w, kw, pw, wo))


@functools.lru_cache(maxsize=64)
def _cast(p: Plan, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """t_in, t_w, t_out in `dtype` on `device`, and t_in.T, t_out.T laid out for the backward."""
    t_in, t_w, t_out = (m.to(device=device, dtype=dtype) for m in (p.t_in, p.t_w, p.t_out))
    return t_in, t_w, t_out, t_in.T.contiguous(), t_out.T.contiguous()


def pays(p: Plan, c_in: int, c_out: int) -> bool:
    """Whether the direct convolution's multiplications per channel pair outnumber the DFT's
    (its products plus its two transforms, shared over the other side's channels) by _MIN_GAIN."""
    h_w, (ho, wo) = p.t_in.shape[1], p.out_size
    dft = p.bins * (1 + h_w / c_out + ho * wo / c_in)
    return p.taps >= _MIN_GAIN * dft


def _onednn_matmul_works() -> bool:
    try:
        a = torch.ones(2, 3)
        return bool(torch.equal(torch.ops.mkldnn._linear_pointwise(a, a, None, "none", [], ""), a @ a.T))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_ONEDNN = _onednn_matmul_works()


def _at_bt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T. On the CPU in fp32 through oneDNN's matmul where this PyTorch build has it: for the
    transforms' thin shapes (one side 49 or 121 wide) it ran 1.5-2.6x faster than MKL's sgemm, which
    `@` uses (docs/BENCHMARKS.md). It has no autograd formula, so `_DFTConv` calls it only outside
    autograd."""
    if _ONEDNN and a.device.type == "cpu" and a.dtype == torch.float32 and not torch.is_grad_enabled():
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return a @ b.T


def _products(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: Plan, transposed: bool,
              nhwc: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, the input's spectrum, the kernel's spectrum): the three products. Inside `_DFTConv`'s
    forward (no autograd) the transforms run through oneDNN; with autograd on, every product is
    PyTorch's own, which autograd differentiates any number of times."""
    t_in, t_w, t_out = _cast(p, x.dtype, x.device)[:3]
    n, c_in = x.shape[:2]
    c_out = weight.shape[1] if transposed else weight.shape[0]
    bins = p.bins
    xs = _at_bt(t_in, x.reshape(n * c_in, -1)).view(bins, n, c_in)
    ws = _at_bt(t_w, weight.reshape(weight.shape[0] * weight.shape[1], -1))
    ws = ws.view(bins, c_in, c_out) if transposed else ws.view(bins, c_out, c_in).transpose(1, 2)
    ys = torch.bmm(xs, ws).view(bins, n * c_out)
    y = _at_bt(t_out, ys.T)  # (HWo, N*C_out): one copy lays it out as NCHW or NHWC
    if nhwc:
        y = y.view(*p.out_size, n, c_out).permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)
    else:
        y = y.T.reshape(n, c_out, *p.out_size)
    return (y if bias is None else y + bias.view(1, -1, 1, 1)), xs, ws


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: Plan,
               transposed: bool) -> torch.Tensor:
    """The layer through PyTorch's own products (double backward, and float64 in the tests)."""
    with torch.enable_grad():
        return _products(x, weight, bias, p, transposed)[0]


class _DFTConv(torch.autograd.Function):
    """The same three products with hand-written backward passes (each a product too), so that the
    thin transforms can run through oneDNN. A backward that builds a graph (double backward, as in
    gradient penalties) goes through `_reference` instead."""

    @staticmethod
    def forward(ctx, x, weight, bias, p: Plan, transposed: bool, nhwc: bool):
        y, xs, ws = _products(x, weight, bias, p, transposed, nhwc)
        ctx.save_for_backward(x, weight, bias, xs, ws)
        ctx.p, ctx.transposed = p, transposed
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, bias, xs, ws = ctx.saved_tensors
        p, transposed = ctx.p, ctx.transposed
        if torch.is_grad_enabled():  # create_graph: differentiate the differentiable version
            return graph_grads(ctx, gy, lambda x, w, b: _reference(x, w, b, p, transposed),
                               (x, weight, bias)) + (None, None, None)
        _, t_w, _, t_in_t, t_out_t = _cast(p, gy.dtype, gy.device)
        n, c_in = x.shape[:2]
        c_out = gy.shape[1]
        bins = p.bins
        gys = _at_bt(t_out_t, gy.reshape(n * c_out, -1)).view(bins, n, c_out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gxs = torch.bmm(gys, ws.transpose(1, 2)).view(bins, n * c_in)
            gx = _at_bt(t_in_t, gxs.T).T.reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gws = torch.bmm(xs.transpose(1, 2), gys)  # (bins, C_in, C_out)
            gws = gws if transposed else gws.transpose(1, 2)
            gw = (gws.reshape(bins, -1).T @ t_w).view(weight.shape)
        if bias is not None and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


def dft_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: Plan,
               transposed: bool, nhwc: bool = False) -> torch.Tensor:
    """The layer's output for a batch x (N, C_in, H, W), through the plan's three products, laid out
    as NCHW or (`nhwc`) channels_last."""
    return _DFTConv.apply(x, weight, bias, p, transposed, nhwc)


def _eligible(module: nn.Module) -> bool:
    """A plain stride-1 2D convolution or transposed convolution with zero padding."""
    if type(module) not in (nn.Conv2d, nn.ConvTranspose2d):
        return False
    if module.stride != (1, 1) or module.dilation != (1, 1) or module.groups != 1:
        return False
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        return False
    return not isinstance(module, nn.ConvTranspose2d) or module.output_padding == (0, 0)


class DFTMixin:
    """Runs the DFT path for fp32 inputs whose shape pays, PyTorch's convolution otherwise."""

    dft_used = False
    nhwc_out = False  # set by speed.channels_last: the DFT path's output goes on in NHWC

    def _dft(self, x: torch.Tensor) -> torch.Tensor | None:
        if torch_path(self, x):
            return None
        transposed = isinstance(self, nn.ConvTranspose2d)
        kh, kw = self.kernel_size
        p = plan(x.shape[2], x.shape[3], kh, kw, self.padding[0], self.padding[1], transposed)
        if not pays(p, self.in_channels, self.out_channels):
            return None
        self.dft_used = True
        return dft_conv2d(x, self.weight, self.bias, p, transposed, self.nhwc_out)


class DFTConv2d(DFTMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._dft(x)
        return super().forward(x) if y is None else y


class DFTConvTranspose2d(DFTMixin, nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        y = None if output_size is not None else self._dft(x)
        return super().forward(x, output_size) if y is None else y


def dft_conv(*modules: nn.Module, enabled: bool) -> int:
    """Let every eligible convolution take the DFT path where it pays. The modules keep their
    parameters, buffers and hooks (checkpoints are unchanged). Returns how many may."""
    if not enabled:
        return 0
    return swap_classes(modules, lambda m: None if not _eligible(m) else
                        DFTConv2d if type(m) is nn.Conv2d else DFTConvTranspose2d)


def dft_used(*modules: nn.Module) -> bool:
    """Whether any layer of these modules has run the DFT path in this process."""
    return any(getattr(m, "dft_used", False) for model in modules for m in model.modules())
