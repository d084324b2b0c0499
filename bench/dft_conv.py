"""`dft_conv` layer by layer: PyTorch's own convolution (oneDNN on the CPU) against the DFT path
(`ganforge.speed.dftconv`), in the same process, alternating, at each thread count.

    python bench/dft_conv.py [--threads 1,2] [--repeat 9] [--out docs/benchmarks/cpu/dft-conv.json]

For each layer: the forward pass alone, and the forward pass with the input and weight gradients,
wall-clock medians in ms; the ratio direct / DFT (above 1: the DFT is faster); the largest
difference from the direct output, relative to its largest value; and whether `pays` lets a model
take the path. Besides the stride-1 layers, two stride-2 layers of the TF tutorial run through the
DFT in polyphase form (each of the 4 input or output phases a stride-1 layer with a 3x3 kernel):
the measurement behind keeping strided layers on PyTorch's convolution.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ganforge  # noqa: F401  (before torch, as the CLI: its OpenMP setting)
import torch
from torch import nn
from torch.nn import functional as F

from ganforge.speed.dftconv import dft_conv2d, pays, plan
from record import time_sides


def strided_conv(conv: nn.Conv2d, shape: tuple[int, ...]):
    """A 5x5 stride-2 'same' conv on an even map as one stride-1 DFT layer over 4 input phases."""
    c_out, c_in = conv.weight.shape[:2]
    n, _, h, w = shape
    p = plan(h // 2, w // 2, 3, 3, 1, 1, False)

    def run(x):
        xp = x.view(n, c_in, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c_in * 4, h // 2, w // 2)
        wp = F.pad(conv.weight, (0, 1, 0, 1)).view(c_out, c_in, 3, 2, 3, 2).permute(0, 1, 3, 5, 2, 4)
        return dft_conv2d(xp, wp.reshape(c_out, c_in * 4, 3, 3), conv.bias, p, False)
    return run, p, (c_in * 4, c_out)


def strided_convt(convt: nn.ConvTranspose2d, shape: tuple[int, ...]):
    """A 5x5 stride-2 'same' transposed conv as one stride-1 DFT layer with 4 output phases each."""
    c_in, c_out = convt.weight.shape[:2]
    p = plan(shape[2], shape[3], 3, 3, 1, 1, True)

    def run(x):
        wp = F.pad(convt.weight, (0, 1, 0, 1)).view(c_in, c_out, 3, 2, 3, 2).permute(0, 1, 3, 5, 2, 4)
        return F.pixel_shuffle(dft_conv2d(x, wp.reshape(c_in, c_out * 4, 3, 3), None, p, True), 2)
    return run, p, (c_in, c_out * 4)


def stride1(layer: nn.Module, shape: tuple[int, ...]):
    transposed = isinstance(layer, nn.ConvTranspose2d)
    kh, kw = layer.kernel_size
    p = plan(shape[2], shape[3], kh, kw, layer.padding[0], layer.padding[1], transposed)
    return (lambda x: dft_conv2d(x, layer.weight, layer.bias, p, transposed)), p, (layer.in_channels, layer.out_channels)


def layers(batch: int):
    """(name, layer, input shape, DFT version builder)."""
    return [
        ("tf-dcgan G ConvT 256->128 5x5 s1, 7x7", nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False),
         (batch, 256, 7, 7), stride1),
        ("tf-dcgan D Conv 64->128 5x5 s2, 14x14 (polyphase)", nn.Conv2d(64, 128, 5, 2, 2),
         (batch, 64, 14, 14), strided_conv),
        ("tf-dcgan G ConvT 128->64 5x5 s2, 7x7 (polyphase)",
         nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1, bias=False), (batch, 128, 7, 7), strided_convt),
        ("seed001 G Conv 128->128 3x3 s1, 14x14", nn.Conv2d(128, 128, 3, 1, 1),
         (batch // 8, 128, 14, 14), stride1),
    ]


def measure(name, layer, shape, build, threads: int, repeat: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    dft, p, channels = build(layer, shape)
    x = torch.randn(*shape, requires_grad=True)
    with torch.no_grad():
        ref = layer(x)
        err = ((dft(x) - ref).abs().max() / ref.abs().max()).item()
    gy = torch.randn_like(ref)
    med = time_sides({"direct": layer, "dft": dft}, x, gy, (layer,), repeat)
    row = {"layer": name, "threads": threads, "input": list(shape), "bins": p.bins,
           "pays": pays(p, *channels), "max_rel_error": float(f"{err:.2e}"), **med,
           "fwd_ratio": round(med["fwd_direct"] / med["fwd_dft"], 2),
           "both_ratio": round(med["both_direct"] / med["both_dft"], 2)}
    print(f"{name}, {threads} thread(s): forward {med['fwd_direct']} vs {med['fwd_dft']} ms "
          f"({row['fwd_ratio']}x), with gradients {med['both_direct']} vs {med['both_dft']} ms "
          f"({row['both_ratio']}x); {p.bins} bins, pays={row['pays']}, max rel. error {err:.1e}", flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=9, help="alternating rounds per layer")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    rows = [measure(*spec, threads=int(t), repeat=args.repeat)
            for t in args.threads.split(",") for spec in layers(args.batch)]
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__,
                                              "command": " ".join(["python", "bench/dft_conv.py", *sys.argv[1:]])},
                                             indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
