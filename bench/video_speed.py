"""Video detection end to end against the model alone, on the same frames and runtime, in one run.

End to end is `detect predict --source clip.mp4`'s own loop (`predict_video`): decode, preprocess,
infer, postprocess, draw, encode the annotated MP4, and write the labels and JSON lines. Model only
is the same runtime's forward on the same decoded frames, already preprocessed, at batch 1. The
ratio end-to-end FPS / model-only FPS says whether video I/O is the bottleneck (goal >= 90 %). The
two are measured in alternating rounds and each keeps its median, so a neighbour's burst on a
shared machine hits both alike. `predict_video` decodes ahead of inference and draws, encodes
and writes behind it on threads of their own, so its per-stage ms (each timed in its own thread)
overlap and need not add up to the wall time; `inference_waited_ms` is how long inference waited
for a decoded frame and for room in the output queue. The output's time is also split by step
(draw, encode, label files) on the same frames and detections, one after another, to show where
it goes.

The clip is digits-det canvases scaled to --size (a synthetic scene whose frames change); the
weights are random (speed does not depend on them), so --conf sets how many boxes are drawn.

    nice python bench/video_speed.py --threads 2 --out docs/benchmarks/cpu/video-speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from record import load_avg, write_record

from ganforge.detect.digits import load_digits_det
from ganforge.detect.draw import draw_detections
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.use import detection_records, from_net
from ganforge.detect.video import predict_video
from ganforge.export import load_exported
from ganforge.export.write import export_trained
from ganforge.io import atomic_write_text
from ganforge.outputs import OutputFolder
from ganforge.video import VideoWriter, frames


def make_clip(path: Path, count: int, width: int, height: int) -> Path:
    data = load_digits_det("val", count=count)
    with VideoWriter(path, fps=25) as writer:
        for i in range(count):
            writer.write(F.resize(data.image(i), [height, width], antialias=True))
    return path


def model_only_fps(model, decoded: list[torch.Tensor]) -> float:
    """Frames/s of the runtime's forward alone over the decoded frames, preprocessed beforehand."""
    inputs = [[x.to(model.device) for x in model.preprocess([image])] for image in decoded]
    model(*inputs[0])  # warm-up
    start = time.perf_counter()
    with torch.no_grad():
        for x in inputs:
            model(*x)
    return len(inputs) / (time.perf_counter() - start)


def end_to_end(model, clip: Path, root: Path, conf: float, predict=predict_video) -> dict:
    """`predict_video` into a fresh folder: its frames/s and per-stage ms per frame."""
    out = OutputFolder(Path(tempfile.mkdtemp(dir=root)) / "out", "detect predict", inputs=[clip]).check()
    result = predict(model, str(clip), out, conf=conf, iou=0.5)
    n = result["frames"]
    # each stage timed in its own thread (decode, inference, output overlap): they need not sum to the wall time
    ms = {k: round(v / n * 1000, 2) for k, v in result["clock"].items()}
    waited = {k: round(v / n * 1000, 2) for k, v in result.get("waited", {}).items()}
    return {"fps": n / result["seconds"], "ms": ms, "inference_waited_ms": waited,
            "boxes_per_frame": result["boxes"] / n}


def after_inference(model, decoded: list[torch.Tensor], root: Path, conf: float) -> dict:
    """ms per frame of each step after postprocessing, on the same frames and detections."""
    names = model.meta["class_names"]
    dets = []
    for image in decoded:
        raw = model(*(x.to(model.device) for x in model.preprocess([image])))
        dets.append({k: v.cpu() for k, v in model.postprocess(raw, [tuple(image.shape[-2:])], conf=conf)[0].items()})
    n, ms = len(decoded), {}
    start = time.perf_counter()
    drawn = [draw_detections(image, det, names) for image, det in zip(decoded, dets)]
    ms["draw"] = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    with VideoWriter(root / "encode.mp4", fps=25) as writer:
        for image in drawn:
            writer.write(image)
    ms["encode"] = (time.perf_counter() - start) / n * 1000
    (root / "labels").mkdir(exist_ok=True)
    start = time.perf_counter()
    for i, (image, det) in enumerate(zip(decoded, dets)):
        lines, _ = detection_records(det, names, image.shape[2], image.shape[1])
        atomic_write_text(root / "labels" / f"f_{i:06d}.txt", "".join(s + "\n" for s in lines),
                          durable=False)
    ms["label files"] = (time.perf_counter() - start) / n * 1000
    return {k: round(v, 2) for k, v in ms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov1-s", help="a detector of the registry (random weights)")
    p.add_argument("--runtimes", default="eager,onnxruntime")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", default="640x480", help="the clip's WIDTHxHEIGHT")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side keeps its median")
    p.add_argument("--conf", type=float, default=0.05, help="score threshold (sets the boxes drawn)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--against", type=Path, default=None,
                   help="another version of src/ganforge/detect/video.py (`git show REV:src/ganforge/detect/video.py "
                        "> FILE`): its predict_video runs in the same alternating rounds, on the same clip and model")
    args = p.parse_args()
    other = None
    if args.against:
        spec = importlib.util.spec_from_file_location("video_against", args.against)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = map(int, args.size.lower().split("x"))
    torch.manual_seed(0)
    names = [str(d) for d in range(10)]
    net = build_detector(args.model, len(names))
    trained = from_net(net, replace(get_recipe("adam"), model=args.model), names)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_clip(root / "clip.mp4", args.frames, width, height)
        decoded = [image for _, image in frames(clip)]
        for runtime in args.runtimes.split(","):
            model = trained if runtime == "eager" else load_exported(
                export_trained(trained, root / f"m-{runtime}.onnx", batch=1), "cpu")
            model_fps, e2e, against = [], [], []
            for r in range(args.rounds):
                model_fps.append(model_only_fps(model, decoded))
                if other is not None and r % 2:  # the two versions take turns going first
                    against.append(end_to_end(model, clip, root, args.conf, other.predict_video)["fps"])
                e2e.append(end_to_end(model, clip, root, args.conf))
                if other is not None and not r % 2:
                    against.append(end_to_end(model, clip, root, args.conf, other.predict_video)["fps"])
            best = sorted(e2e, key=lambda r: r["fps"])[len(e2e) // 2]
            row = {"model": args.model, "runtime": runtime, "frames": args.frames, "size": args.size,
                   "model_only_fps": round(statistics.median(model_fps), 1), "end_to_end_fps": round(best["fps"], 1),
                   "ratio": round(best["fps"] / statistics.median(model_fps), 3), "ms_per_frame": best["ms"],
                   "inference_waited_ms": best["inference_waited_ms"],
                   "boxes_per_frame": round(best["boxes_per_frame"], 2),
                   "after_inference_ms": after_inference(model, decoded, root, args.conf),
                   "rounds_fps": {"model_only": [round(f, 1) for f in model_fps],
                                  "end_to_end": [round(r["fps"], 1) for r in e2e]}}
            if other is not None:
                row["against"] = {"file": args.against.name, "end_to_end_fps": round(statistics.median(against), 1),
                                  "rounds_fps": [round(f, 1) for f in against],
                                  "ratio": round(statistics.median(against) / statistics.median(model_fps), 3)}
                print(f"  against {args.against.name}: end to end {row['against']['end_to_end_fps']} FPS "
                      f"({row['against']['ratio']:.1%} of model only)", flush=True)
            rows.append(row)
            print(f"{args.model} {runtime}: end to end {row['end_to_end_fps']} FPS, model only "
                  f"{row['model_only_fps']} FPS: {row['ratio']:.1%} (goal >= 90%); ms/frame {row['ms_per_frame']}; "
                  f"inference waited (ms/frame) {row['inference_waited_ms']}; "
                  f"after inference {row['after_inference_ms']}; {row['boxes_per_frame']} boxes/frame", flush=True)
    write_record(args.out, rows, load_avg=load_avg())

if __name__ == "__main__":
    main()
