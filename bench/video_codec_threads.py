"""FFmpeg's own threads inside `detect predict --source clip.mp4`, measured in alternating rounds.

Decoding and encoding already run on threads of their own beside inference (ganforge.overlap), and
FFmpeg adds its own on top: frame threads for the decoder (`thread_type=AUTO`, one per core) and
x264's (1.5 per core, by default). On two cores shared with other work, fewer threads can be
faster (issue 25, part 1). This runs `predict_video` on the same clip and model once per setting
per round, the order reversed every other round, and keeps each setting's median end-to-end FPS;
a setting is worth adopting only if it wins clearly, round after round.

    nice python bench/video_codec_threads.py --threads 1 --rounds 6 --out docs/benchmarks/cpu/video-codec-threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from video_speed import end_to_end, make_clip

import ganforge.video as video
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.use import from_net
from ganforge.export import load_exported
from ganforge.export.write import export_trained

SETTINGS = {  # name: (decoder codec-context attributes, x264 options added to the writer's)
    "decode AUTO, x264 default": ({"thread_type": "AUTO"}, {}),
    "decode AUTO, x264 threads=1": ({"thread_type": "AUTO"}, {"threads": "1"}),
    "decode 1 thread, x264 default": ({"thread_count": 1}, {}),
    "decode 1 thread, x264 threads=1": ({"thread_count": 1}, {"threads": "1"}),
}


def use(setting: str) -> None:
    decode, x264 = SETTINGS[setting]
    video.DECODE_THREADS.clear()
    video.DECODE_THREADS.update(decode)
    video.X264.pop("threads", None)
    video.X264.update(x264)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov1-s")
    p.add_argument("--runtime", default="onnxruntime", choices=["eager", "onnxruntime"])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", default="640x480")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = map(int, args.size.lower().split("x"))
    torch.manual_seed(0)
    names = [str(d) for d in range(10)]
    trained = from_net(build_detector(args.model, len(names)), replace(get_recipe("adam"), model=args.model), names)
    load_start = [round(v, 2) for v in os.getloadavg()]
    fps: dict[str, list[float]] = {name: [] for name in SETTINGS}
    default = (dict(video.DECODE_THREADS), dict(video.X264))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            clip = make_clip(root / "clip.mp4", args.frames, width, height)
            model = trained if args.runtime == "eager" else load_exported(
                export_trained(trained, root / "m.onnx", batch=1), "cpu")
            order = list(SETTINGS)
            for r in range(args.rounds):
                for setting in order if r % 2 == 0 else order[::-1]:
                    use(setting)
                    fps[setting].append(round(end_to_end(model, clip, root, conf=0.05)["fps"], 1))
    finally:
        video.DECODE_THREADS.clear()
        video.DECODE_THREADS.update(default[0])
        video.X264.clear()
        video.X264.update(default[1])
    result = {"model": args.model, "runtime": args.runtime, "frames": args.frames, "size": args.size,
              "threads": torch.get_num_threads(), "cores": os.cpu_count(), "rounds": args.rounds,
              "median_fps": {k: statistics.median(v) for k, v in fps.items()}, "fps": fps,
              "load_avg_start": load_start, "load_avg_end": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
