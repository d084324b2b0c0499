"""Time single layers of the TF-tutorial DCGAN in NCHW and NHWC, and dropout-mask draws: the
measurements behind the CPU layout and dropout choices in docs/BENCHMARKS.md.

    python bench/layers.py [--batch 256] [--threads 0] [--repeat 4]

Each conv layer is timed forward only, forward + input gradient, forward + weight gradient, and
forward + both, in each memory format, on random data (costs do not depend on values).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, repeat: int) -> float:
    """Median-free, simple: the mean over `repeat` calls after two warm-up calls, in ms."""
    fn(), fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def conv_layer(name, x_shape, w_shape, fwd, flops, repeat: int) -> None:
    for fmt in ("NCHW", "NHWC"):
        layout = torch.channels_last if fmt == "NHWC" else torch.contiguous_format
        x = torch.randn(x_shape).contiguous(memory_format=layout).requires_grad_(True)
        w = (torch.randn(w_shape) * 0.02).contiguous(memory_format=layout).requires_grad_(True)
        gy = torch.randn_like(fwd(x, w))
        t_f = timed(lambda: fwd(x.detach(), w.detach()), repeat)
        t_i = timed(lambda: torch.autograd.grad(fwd(x, w), x, gy), repeat)
        t_w = timed(lambda: torch.autograd.grad(fwd(x, w), w, gy), repeat)
        t_b = timed(lambda: torch.autograd.grad(fwd(x, w), (x, w), gy), repeat)
        print(f"{name:34s} {fmt}  fwd {t_f:6.1f} ms ({flops / t_f / 1e6:5.1f} GFLOP/s)  "
              f"+grad_in {t_i:6.1f}  +grad_w {t_w:6.1f}  +both {t_b:6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="0: one per core")
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, r = args.batch, args.repeat
    print(f"batch {b}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    ct = F.conv_transpose2d
    conv_layer("G convT 256->128 5x5 s1 @7x7", (b, 256, 7, 7), (256, 128, 5, 5),
               lambda x, w: ct(x, w, padding=2), 2 * b * 49 * 256 * 128 * 25, r)
    conv_layer("  same, as a conv2d", (b, 256, 7, 7), (128, 256, 5, 5),
               lambda x, w: F.conv2d(x, w, padding=2), 2 * b * 49 * 256 * 128 * 25, r)
    conv_layer("G convT 128->64 5x5 s2 ->14x14", (b, 128, 7, 7), (128, 64, 5, 5),
               lambda x, w: ct(x, w, stride=2, padding=2, output_padding=1), 2 * b * 49 * 128 * 64 * 25, r)
    conv_layer("G convT 64->1 5x5 s2 ->28x28", (b, 64, 14, 14), (64, 1, 5, 5),
               lambda x, w: ct(x, w, stride=2, padding=2, output_padding=1), 2 * b * 196 * 64 * 25, r)
    conv_layer("D conv 1->64 5x5 s2 ->14x14", (b, 1, 28, 28), (64, 1, 5, 5),
               lambda x, w: F.conv2d(x, w, stride=2, padding=2), 2 * b * 196 * 64 * 25, r)
    conv_layer("D conv 64->128 5x5 s2 ->7x7", (b, 64, 14, 14), (128, 64, 5, 5),
               lambda x, w: F.conv2d(x, w, stride=2, padding=2), 2 * b * 49 * 128 * 64 * 25, r)
    x = torch.randn(b, 64, 14, 14)
    print(f"dropout mask for {tuple(x.shape)}:  bernoulli_ {timed(lambda: torch.empty_like(x).bernoulli_(0.7), 10):.1f} ms"
          f"  rand < keep {timed(lambda: torch.rand_like(x).lt_(0.7), 10):.1f} ms"
          f"  F.dropout {timed(lambda: F.dropout(x, 0.3, True), 10):.1f} ms")
    a, m = torch.randn(4096, 4096), torch.randn(4096, 4096)
    t = timed(lambda: a @ m, 3)
    print(f"matmul 4096^3: {2 * 4096 ** 3 / t / 1e6:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
