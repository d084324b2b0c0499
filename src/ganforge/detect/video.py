"""`detect predict` on a video, a folder of frames, a camera or a stream: frame by frame (never the
whole video in memory), with the same pre- and post-processing as on images, writing an annotated
video, YOLO txt per frame and one JSON line per frame, and timing each stage."""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import torch

from ganforge.detect.draw import draw_detections
from ganforge.detect.use import detection_records
from ganforge.io import atomic_write_text, fsync_dir
from ganforge.outputs import OutputFolder
from ganforge.trained import Trained
from ganforge.video import VideoStopped, VideoWriter, fps_of, frames, kind

STAGES = ("decode", "preprocess", "inference", "postprocess")


def source_stem(source: str) -> str:
    what = kind(source)
    if what == "camera":
        return f"camera{source}"
    if what == "stream":
        return "stream"
    return Path(source).name if what == "frames" else Path(source).stem


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # inference time is the GPU's, not the launch's
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_video(model: Trained, source: str, out: OutputFolder, *, conf: float, iou: float, stride: int = 1,
                  max_frames: int | None = None, suffix: str = ".mp4") -> dict:
    """Detect in every `stride`-th frame of `source` (at most `max_frames`) and write into `out`
    (opened by the caller): <stem>.mp4 with the boxes drawn, labels/<stem>_<frame>.txt (YOLO: class
    xc yc w h score, normalised) and <stem>.jsonl (per frame: its number, size and detections in
    pixels). Returns counts, seconds per stage, and the error that stopped a broken video."""
    from tqdm import tqdm

    clock = dict.fromkeys(STAGES, 0.0)
    stream = frames(source, stride=stride, max_frames=max_frames, clock=clock)
    stopped: VideoStopped | None = None
    begin = time.perf_counter()
    try:
        first = next(stream)  # bad input is refused before any output exists
    except StopIteration:
        first = None
    stem, names, device = source_stem(source), model.meta["class_names"], model.device
    counts = {"frames": 0, "boxes": 0, "shape": None, "stopped": None}
    if first is None:
        return {**counts, "clock": clock, "seconds": 0.0}
    out.open()
    label = None
    writer = VideoWriter(out.target(f"{stem}{suffix}"), fps_of(source) / stride)
    lines_out = open(out.target(f"{stem}.jsonl"), "w", encoding="utf-8")
    bar = tqdm(desc="detect", unit="frame", total=max_frames, disable=not sys.stderr.isatty(), leave=False)
    try:
        for index, image in itertools.chain([first], stream):
            height, width = image.shape[-2:]
            t0 = time.perf_counter()
            inputs = [x.to(device) for x in model.preprocess([image])]
            _sync(device)
            t1 = time.perf_counter()
            raw = model(*inputs)
            _sync(device)
            t2 = time.perf_counter()
            det = {k: v.cpu() for k, v in model.postprocess(raw, [(height, width)], conf=conf, iou=iou)[0].items()}
            t3 = time.perf_counter()
            clock["preprocess"] += t1 - t0
            clock["inference"] += t2 - t1
            clock["postprocess"] += t3 - t2
            lines, items = detection_records(det, names, width, height)
            # one fsync for the folder at the end, not two a frame (they cost more than a small model)
            label = atomic_write_text(out.target(f"labels/{stem}_{index:06d}.txt"), "".join(s + "\n" for s in lines),
                                      durable=False)
            lines_out.write(json.dumps({"frame": index, "width": width, "height": height, "detections": items}) + "\n")
            writer.write(draw_detections(image, det, names))
            counts["frames"] += 1
            counts["boxes"] += len(items)
            counts["shape"] = tuple(inputs[0].shape)
            bar.update()
    except VideoStopped as err:
        stopped = err  # what was decoded before the break is kept and written
    finally:
        writer.close()
        lines_out.close()
        bar.close()
        if label is not None:
            fsync_dir(label.parent)
    return {**counts, "clock": clock, "seconds": time.perf_counter() - begin, "stopped": stopped,
            "video": writer.path}


def speed_line(result: dict, runtime: str) -> str:
    """The one line people quote: ms per frame for each stage, and the end-to-end FPS."""
    n = max(result["frames"], 1)
    stages = ", ".join(f"{result['clock'][s] / n * 1000:.1f} ms {s}" for s in STAGES)
    shape = "x".join(map(str, result["shape"] or ()))
    fps = result["frames"] / result["seconds"] if result["seconds"] else 0.0
    return (f"Speed: {stages} per frame at shape {shape}; end to end {fps:.1f} FPS over {result['frames']} frames "
            f"({runtime}, drawing and encoding included)")
