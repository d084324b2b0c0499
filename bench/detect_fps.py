"""Detector FPS on the CPU, eager PyTorch against ONNX Runtime, measured in one run.

For each model and runtime: the model alone at batch 1 and 64 (448 x 448 inputs), and end to end
at batch 1 from a decoded uint8 frame (--frame, e.g. a 640 x 480 video frame) to its boxes:
resize and scale, forward, decode and NMS, the same `preprocess`/`postprocess` that `detect
predict` runs. Weights are random (speed does not depend on them); C = 20 (VOC). Each figure is
the median of timed calls after a warm-up, within --budget seconds per figure, so the slow ones
(yolov1 is ~40 GFLOP an image) stay short. The 1-minute load average is printed with every row:
on a shared machine it says what else was running.

    nice python bench/detect_fps.py --threads 2 --out docs/benchmarks/cpu/detect-fps.json
    nice python bench/detect_fps.py --models yolov1 --batches 1 --runtimes eager
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from record import load_avg, write_record

from ganforge.detect.infer import DRAW_CONF, NMS_IOU
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.use import from_net
from ganforge.export import load_exported
from ganforge.export.write import export_trained


def median_seconds(call, budget: float, most: int = 50) -> tuple[float, int]:
    """Median seconds of `call()` after one warm-up call; stops after `most` calls or `budget` s."""
    call()
    times = []
    start = time.perf_counter()
    while len(times) < most and (len(times) < 2 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def measure(model, runtime: str, batches: list[int], frame: torch.Tensor, budget: float) -> list[dict]:
    size = model.meta["image_size"]
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size)
        seconds, calls = median_seconds(lambda: model(x), budget)
        rows.append({"what": "model", "batch": batch, "fps": round(batch / seconds, 1),
                     "ms_per_image": round(seconds / batch * 1000, 2), "calls": calls})

    def frame_to_boxes():
        raw = model(*model.preprocess([frame]))
        return model.postprocess(raw, [tuple(frame.shape[-2:])], conf=DRAW_CONF, iou=NMS_IOU)

    seconds, calls = median_seconds(frame_to_boxes, budget)
    rows.append({"what": "frame->boxes", "batch": 1, "fps": round(1 / seconds, 1),
                 "ms_per_image": round(seconds * 1000, 2), "calls": calls})
    for row in rows:
        row.update(runtime=runtime, load_1min=round(os.getloadavg()[0], 2))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="yolov1-s,fast-yolov1")
    p.add_argument("--runtimes", default="eager,onnxruntime")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--frame", default="640x480", help="WIDTHxHEIGHT of the decoded frame end to end")
    p.add_argument("--budget", type=float, default=4.0, help="seconds of timed calls per figure")
    p.add_argument("--threads", type=int, default=None, help="CPU threads, torch's and ONNX Runtime's")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the ONNX Runtime session takes the same count
    width, height = map(int, args.frame.lower().split("x"))
    frame = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name in args.models.split(","):
            torch.manual_seed(0)
            names = [f"class{c}" for c in range(20)]
            trained = from_net(build_detector(name, len(names)), replace(get_recipe("adam"), model=name), names)
            for runtime in args.runtimes.split(","):
                model = trained if runtime == "eager" else load_exported(
                    export_trained(trained, Path(tmp) / f"{name}.onnx", batch=None), "cpu")
                for row in measure(model, runtime, batches, frame, args.budget):
                    row["model"] = name
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del model
    write_record(args.out, rows, frame=args.frame, load_avg_end=load_avg())


if __name__ == "__main__":
    main()
