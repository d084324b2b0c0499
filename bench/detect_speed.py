"""Detector inference speed: images/s at batch 1 and 64, 448 x 448, for yolov1 and fast-yolov1.

Each figure stands beside a plain eager float32 PyTorch forward of the same model, measured in the
same run: the fast side is channels_last + bf16 autocast (+ a CUDA graph of the forward on CUDA).
Weights are random (speed does not depend on them); C = 20 (VOC).

    nice python bench/detect_speed.py --device cpu --threads 2 --out docs/benchmarks/cpu/detect-speed.json
    python bench/detect_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ganforge.detect.model import DETECTORS
from ganforge.detect.speed import eager_forward, fast_forward


def images_per_second(forward, x: torch.Tensor, iters: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        forward(x)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        forward(x)
    sync()
    return iters * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--models", default="yolov1,fast-yolov1")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        info = DETECTORS.get(name)
        for batch in (int(b) for b in args.batches.split(",")):
            # the CPU at batch 64 is slow (yolov1: ~40 GFLOP an image): one warm-up, two timed calls
            iters, warmup = ((2, 1) if batch > 8 else (10, 2)) if cpu else ((20, 5) if batch > 8 else (200, 20))
            x = torch.rand(batch, 3, info.input_size, info.input_size, device=device)
            model = info.build(20).to(device)
            eager = images_per_second(eager_forward(model), x, iters, warmup)
            fast = images_per_second(fast_forward(model, x), x, iters, warmup)
            row = {"model": name, "batch": batch, "device": device.type, "eager_img_s": round(eager, 2),
                   "fast_img_s": round(fast, 2), "speedup": round(fast / eager, 2),
                   "fast": "channels_last+bf16" + ("+cuda_graph" if device.type == "cuda" else "")}
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor()
            or platform.machine(), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
