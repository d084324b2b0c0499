"""The layer-swapping speed features layer by layer, against PyTorch's own layers (oneDNN on the CPU),
forward alone and with every gradient:

- `upsample_conv`: nearest upsampling and its convolution against the pair folded into one transposed
  convolution, on seed 001's generator layers at its batch of 32;
- `thin_conv`: the tf-dcgan discriminator's first (1-channel) convolution and the generator's last
  (1-channel) transposed convolution at batch 256.

    python bench/conv_swaps.py [--feature upsample_conv,thin_conv] [--threads 1,2] [--repeat 15]
        [--layout nchw,nhwc] [--out FILE.json]

The two sides alternate round by round (the order swapped every round), so a busy machine slows
both alike. Wall-clock medians in ms; the ratio is PyTorch's time over the swapped layer's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import ganforge  # noqa: F401  (before torch, as the CLI: its OpenMP setting)
import torch
from torch import nn

from ganforge import speed as accel
from record import time_sides

SWAPS = {"upsample_conv": accel.upsample_conv, "thin_conv": accel.thin_conv}


def layers(feature: str):
    """(name, PyTorch's layer or pair, input shape), as SEED-RECIPES.md R2 and R3 build them."""
    if feature == "upsample_conv":  # seed 001's G, batch 32
        return [
            ("seed001 G Up x2 + Conv 128->128 3x3, 7x7 -> 14x14",
             nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(128, 128, 3, padding=1)), (32, 128, 7, 7)),
            ("seed001 G Up x2 + Conv 128->64 3x3, 14x14 -> 28x28",
             nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 3, padding=1)), (32, 128, 14, 14)),
        ]
    return [  # tf-dcgan, batch 256
        ("tf-dcgan D Conv 1->64 5x5 s2, 28x28", nn.Conv2d(1, 64, 5, 2, 2), (256, 1, 28, 28)),
        ("tf-dcgan G ConvT 64->1 5x5 s2, 14x14 -> 28x28",
         nn.ConvTranspose2d(64, 1, 5, 2, 2, output_padding=1, bias=False), (256, 64, 14, 14)),
    ]


def measure(feature: str, name: str, layer: nn.Module, shape, threads: int, layout: str, repeat: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    swapped = copy.deepcopy(layer)
    assert SWAPS[feature](swapped, enabled=True) == 1
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    for side in (layer, swapped):
        side.to(memory_format=fmt)
    x = torch.randn(*shape).contiguous(memory_format=fmt).requires_grad_()
    with torch.no_grad():
        ref = layer(x)
        err = ((swapped(x) - ref).abs().max() / ref.abs().max()).item()
    gy = torch.randn_like(ref)
    med = time_sides({"torch": layer, "swapped": swapped}, x, gy, (layer, swapped), repeat)
    row = {"feature": feature, "layer": name, "threads": threads, "layout": layout, "input": list(shape),
           "max_rel_error": float(f"{err:.2e}"), **med,
           "fwd_ratio": round(med["fwd_torch"] / med["fwd_swapped"], 2),
           "both_ratio": round(med["both_torch"] / med["both_swapped"], 2)}
    print(f"{name}, {threads} thread(s), {layout}: forward {med['fwd_torch']} vs {med['fwd_swapped']} ms "
          f"({row['fwd_ratio']}x), with gradients {med['both_torch']} vs {med['both_swapped']} ms "
          f"({row['both_ratio']}x); max rel. error {err:.1e}", flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=15, help="alternating rounds per layer")
    ap.add_argument("--feature", default="upsample_conv,thin_conv", help="comma-separated: " + ", ".join(SWAPS))
    ap.add_argument("--layout", default="nchw,nhwc", help="comma-separated: nchw, nhwc")
    ap.add_argument("--out", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}", flush=True)
    rows = [measure(feature, *spec, threads=int(t), layout=layout, repeat=args.repeat)
            for feature in args.feature.split(",") for t in args.threads.split(",")
            for layout in args.layout.split(",") for spec in layers(feature)]
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__,
                                              "command": " ".join(["python", "bench/conv_swaps.py", *sys.argv[1:]])},
                                             indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
