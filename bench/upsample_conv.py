"""`upsample_conv` layer by layer: PyTorch's nearest upsampling followed by its convolution (oneDNN on
the CPU) against the same pair folded into one transposed convolution, on seed 001's generator
layers at its batch of 32, forward alone and with the gradients a training step takes.

    python bench/upsample_conv.py [--threads 1,2] [--repeat 15] [--layout nchw,nhwc] [--out FILE.json]

The two sides alternate round by round (the order swapped every round), so a busy machine slows
both alike. Wall-clock medians in ms; the ratio is unfolded over folded.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import ganforge  # noqa: F401  (before torch, as the CLI: its OpenMP setting)
import torch
from torch import nn

from ganforge import speed as accel


def layers(batch: int):
    """(name, unfolded pair, input shape): seed 001's G, as SEED-RECIPES.md R2 builds it."""
    return [
        ("seed001 G Up x2 + Conv 128->128 3x3, 7x7 -> 14x14",
         nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(128, 128, 3, padding=1)), (batch, 128, 7, 7)),
        ("seed001 G Up x2 + Conv 128->64 3x3, 14x14 -> 28x28",
         nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 3, padding=1)), (batch, 128, 14, 14)),
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(name: str, pair: nn.Sequential, shape, threads: int, layout: str, repeat: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    folded = copy.deepcopy(pair)
    assert accel.upsample_conv(folded, enabled=True) == 1
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    for side in (pair, folded):
        side.to(memory_format=fmt)
    x = torch.randn(*shape).contiguous(memory_format=fmt).requires_grad_()
    with torch.no_grad():
        ref = pair(x)
        err = ((folded(x) - ref).abs().max() / ref.abs().max()).item()
    gy = torch.randn_like(ref)

    def fwd(f):
        def run():
            with torch.no_grad():
                f(x)
        return run

    def both(f):
        def run():
            x.grad = None
            f.zero_grad(set_to_none=True)
            f(x).backward(gy)
        return run

    times: dict[str, list[float]] = {k: [] for k in ("fwd_pair", "fwd_folded", "both_pair", "both_folded")}
    for f in (pair, folded):  # warm-up: oneDNN primitives, allocations
        fwd(f)(), both(f)()
    for r in range(repeat):
        order = [("pair", pair), ("folded", folded)] if r % 2 == 0 else [("folded", folded), ("pair", pair)]
        for side, f in order:
            times[f"fwd_{side}"].append(timed(fwd(f)))
            times[f"both_{side}"].append(timed(both(f)))
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    row = {"layer": name, "threads": threads, "layout": layout, "input": list(shape),
           "max_rel_error": float(f"{err:.2e}"), **med,
           "fwd_ratio": round(med["fwd_pair"] / med["fwd_folded"], 2),
           "both_ratio": round(med["both_pair"] / med["both_folded"], 2)}
    print(f"{name}, {threads} thread(s), {layout}: forward {med['fwd_pair']} vs {med['fwd_folded']} ms "
          f"({row['fwd_ratio']}x), with gradients {med['both_pair']} vs {med['both_folded']} ms "
          f"({row['both_ratio']}x); max rel. error {err:.1e}", flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=15, help="alternating rounds per layer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layout", default="nchw,nhwc", help="comma-separated: nchw, nhwc")
    ap.add_argument("--out", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}", flush=True)
    rows = [measure(*spec, threads=int(t), layout=layout, repeat=args.repeat)
            for t in args.threads.split(",") for layout in args.layout.split(",") for spec in layers(args.batch)]
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__,
                                              "command": " ".join(["python", "bench/upsample_conv.py", *sys.argv[1:]])},
                                             indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
