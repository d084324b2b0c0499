"""`detect predict` on a video, a folder of frames, a camera or a stream: frame by frame (never the
whole video in memory), with the same pre- and post-processing as on images, writing an annotated
video, YOLO txt per frame and one JSON line per frame, and timing each stage."""

from __future__ import annotations

import contextlib
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
from ganforge.overlap import Ahead, Behind, Terminated, sigterm_as_interrupt
from ganforge.trained import Trained
from ganforge.video import VideoStopped, VideoWriter, fps_of, frames, kind

STAGES = ("decode", "preprocess", "inference", "postprocess", "output")
AHEAD = BEHIND = 4  # frames decoded ahead of inference, and inferred ahead of the output: memory stays small


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
    pixels). Returns counts, seconds per stage, and what stopped it early: the error of a broken
    video (`stopped`) or Ctrl-C/SIGTERM (`interrupted`); the frames before either are all written.

    Three threads overlap: decoding and preprocessing run ahead of inference, and drawing, encoding
    and the label files behind it (bounded queues of a few frames, in order), so inference waits for I/O only
    when no core is free. Each stage's seconds are measured in its own thread, so they add up to
    more than the wall time."""
    from tqdm import tqdm

    clock = dict.fromkeys(STAGES, 0.0)

    def prepared():  # the decode thread: decode and preprocess ahead of inference
        with contextlib.closing(frames(source, stride=stride, max_frames=max_frames, clock=clock)) as decoding:
            for index, image in decoding:
                start = time.perf_counter()
                inputs = model.preprocess([image])
                clock["preprocess"] += time.perf_counter() - start
                yield index, image, inputs

    begin = time.perf_counter()
    decoded = Ahead(prepared(), depth=AHEAD, name="decode")
    try:
        first = next(decoded, None)  # bad input is refused before any output exists
    except BaseException:
        decoded.close()
        raise
    stem, names, device = source_stem(source), model.meta["class_names"], model.device
    counts = {"frames": 0, "boxes": 0, "shape": None, "stopped": None, "interrupted": None}
    if first is None:
        return {**counts, "clock": clock, "seconds": 0.0}
    out.open()
    writer = VideoWriter(out.target(f"{stem}{suffix}"), fps_of(source) / stride)
    lines_out = open(out.target(f"{stem}.jsonl"), "w", encoding="utf-8")
    bar = tqdm(desc="detect", unit="frame", total=max_frames, disable=not sys.stderr.isatty(), leave=False)
    label_dir: list[Path] = []  # where the label files went (the folder gets one fsync at the end)

    def write(item: tuple) -> None:  # the output thread: draw, encode, label files, JSON line
        index, image, det = item
        start = time.perf_counter()
        height, width = image.shape[-2:]
        lines, boxes = detection_records(det, names, width, height)
        # one fsync for the folder at the end, not two a frame (they cost more than a small model)
        label = atomic_write_text(out.target(f"labels/{stem}_{index:06d}.txt"), "".join(s + "\n" for s in lines),
                                  durable=False)
        label_dir[:] = [label.parent]
        lines_out.write(json.dumps({"frame": index, "width": width, "height": height, "detections": boxes}) + "\n")
        writer.write(draw_detections(image, det, names))
        counts["frames"] += 1
        counts["boxes"] += len(boxes)
        bar.update()
        clock["output"] += time.perf_counter() - start

    written = Behind(write, depth=BEHIND, name="encode")
    with sigterm_as_interrupt():
        try:
            for index, image, inputs in itertools.chain([first], decoded):
                t0 = time.perf_counter()
                inputs = [x.to(device) for x in inputs]
                _sync(device)
                t1 = time.perf_counter()
                raw = model(*inputs)
                _sync(device)
                t2 = time.perf_counter()
                height, width = image.shape[-2:]
                det = {k: v.cpu() for k, v in model.postprocess(raw, [(height, width)], conf=conf, iou=iou)[0].items()}
                t3 = time.perf_counter()
                clock["preprocess"] += t1 - t0
                clock["inference"] += t2 - t1
                clock["postprocess"] += t3 - t2
                counts["shape"] = tuple(inputs[0].shape)
                written.put((index, image, det))
        except VideoStopped as err:
            counts["stopped"] = err  # what was decoded before the break is kept and written
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: keep what was inferred, a playable video
            counts["interrupted"] = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
        finally:
            decoded.close()
            try:
                written.finish()
            finally:
                writer.close()
                lines_out.close()
                bar.close()
                if label_dir:
                    fsync_dir(label_dir[0])
    waited = {"for frames": decoded.waited, "for output": written.waited}
    return {**counts, "clock": clock, "waited": waited, "seconds": time.perf_counter() - begin,
            "video": writer.path}


def speed_line(result: dict, runtime: str) -> str:
    """The one line people quote: ms per frame for each stage, and the end-to-end FPS."""
    n = max(result["frames"], 1)
    stages = ", ".join(f"{result['clock'][s] / n * 1000:.1f} ms {s}" for s in STAGES[:4])
    output = result["clock"]["output"] / n * 1000
    shape = "x".join(map(str, result["shape"] or ()))
    fps = result["frames"] / result["seconds"] if result["seconds"] else 0.0
    return (f"Speed: {stages} per frame at shape {shape}, and {output:.1f} ms drawing, encoding and writing "
            f"(decoding with preprocessing, and the output, run on threads of their own, overlapping inference); end to end {fps:.1f} FPS "
            f"over {result['frames']} frames ({runtime})")
