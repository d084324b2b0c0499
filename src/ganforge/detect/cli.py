"""The ``ganforge detect`` command group: ``train``, ``val``, ``predict``, ``recipes`` and ``map``.

`add_detect_parser(subparsers)` adds the group to the main parser; each subcommand sets ``func``
to a function of the parsed arguments that returns the exit code. Bad input raises a
:class:`~ganforge.errors.GanforgeError`, which the main CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from pathlib import Path

from ganforge.detect.odm import BOX_FORMATS
from ganforge.detect.voc_eval import METRICS, APResult, evaluate
from ganforge.errors import GanforgeError
from ganforge.io import display_path, write_json


def cmd_recipes(args: argparse.Namespace) -> int:
    """The training presets: model, data, optimizer, batch and budget, and where each comes from."""
    from ganforge.detect.recipes import RECIPES

    rows = []
    for name, entry in RECIPES.items():
        cfg = entry.config
        budget = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs:g} epochs"
        rows.append({"name": name, "source": entry.source, "about": entry.about, "model": cfg.model,
                     "data": cfg.data, "optimizer": cfg.optimizer, "lr": cfg.lr, "schedule": cfg.schedule,
                     "batch_size": cfg.batch_size, "budget": budget})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'recipe':<10}{'model':<13}{'data':<12}{'optimizer':<10}{'lr':>8}  {'schedule':<9}{'batch':>6}  budget")
    for r in rows:
        print(f"{r['name']:<10}{r['model']:<13}{r['data']:<12}{r['optimizer']:<10}{r['lr']:>8g}  "
              f"{r['schedule']:<9}{r['batch_size']:>6}  {r['budget']}")
    print()
    for r in rows:
        print(f"{r['name']}: {r['about']}. Source: {r['source']}.")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Every config key of a detector recipe: its value, type and meaning (like `ganforge config`)."""
    from ganforge.detect.recipes import RECIPES

    return RECIPES.print_config(args.recipe, args.json)


# The keys of a run's config that `val` and `predict` may change: where and how fast they run, never
# what the model is.
RUNTIME_KEYS = ("device", "threads")


def _runtime(args: argparse.Namespace) -> str:
    """Apply `threads=` and return the device (`device=` wins over --device)."""
    from ganforge.config import apply_overrides, split_overrides
    from ganforge.detect.recipes import RECIPES
    from ganforge.speed.cpu import set_threads

    given = dict(split_overrides(args.overrides))
    wrong = [k for k in given if k not in RUNTIME_KEYS]
    if wrong:
        raise GanforgeError(f"{wrong[0]!r} cannot change when using a trained run; `detect "
                            f"{args.detect_command}` takes {', '.join(k + '=' for k in RUNTIME_KEYS)}")
    cfg = apply_overrides(RECIPES.get("adam").config, given)  # checks the values as training would
    if "threads" in given:
        set_threads(cfg.threads)
    return cfg.device if "device" in given else args.device


def _print_ap(result: APResult, names: list[str], images: int) -> None:
    width = max([len(n) for n in names] + [5])
    print(f"{'class':<{width}}  {'truth':>6}  AP ({METRICS[result.metric]}, IoU > {result.iou:g})")
    for c, name in enumerate(names):
        ap = result.ap.get(c)
        print(f"{name:<{width}}  {result.n_truth.get(c, 0):>6}  " + ("-  (no truth: not in the mean)" if ap is None
                                                                    else f"{ap:.4f}"))
    shown = "-" if result.map is None else f"{result.map:.4f}"
    print(f"{result.label}: {shown}  ({images} images)")


def cmd_val(args: argparse.Namespace) -> int:
    """Per-class AP and mAP of a trained run on a split; also written to JSON."""
    from ganforge.detect.datasets import open_detection_data
    from ganforge.detect.evaluate import evaluate_model
    from ganforge.detect.use import val_json_path
    from ganforge.export import open_model

    out = val_json_path(args.run, args.split, args.metric, args.json, args.force, model=args.model)
    model = open_model("detect", args.run, args.model, args.checkpoint, _runtime(args))
    names = model.meta["class_names"]
    data = open_detection_data(args.data or model.config.data, args.split)
    if data.names != names:
        raise GanforgeError(f"{args.data or model.config.data} has classes {', '.join(data.names)}, the run was "
                            f"trained on {', '.join(names)}: evaluate it on data with the same class names")
    if len(data) == 0:
        raise GanforgeError(f"the {args.split} split of {args.data or model.config.data} has no images")
    result = evaluate_model(model.module, data, metric=args.metric, iou=args.iou,
                            channels_last=model.meta.get("channels_last", False))
    if data.issues:  # the loader's, and images that failed to decode while scoring
        print(f"warning: {data.issues.summary()}", file=sys.stderr)
    _print_ap(result, data.names, len(data))
    write_json(out, {**result.to_json(data.names), "split": args.split, "data": args.data or model.config.data,
                     "images": len(data), "checkpoint": model.meta["checkpoint"], "step": model.meta["step"],
                     "runtime": model.runtime})
    print(f"wrote {display_path(out)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Detect objects in image files; draw them and write YOLO txt and JSON per image."""
    from ganforge.data.decode import image_files
    from ganforge.detect.use import predict_files, predict_output
    from ganforge.export import open_model
    from ganforge.video import kind

    if kind(args.source) not in ("camera", "stream") and not os.path.lexists(args.source):
        raise GanforgeError(f"--source {display_path(args.source)} does not exist: give an image, a folder of "
                            "images, a video, a camera index or a stream URL")
    if args.as_video or kind(args.source) in ("video", "camera", "stream"):
        return _predict_video(args)
    files = image_files(args.source)
    out = predict_output(args.run, args.source, args.out, args.force, model=args.model)
    model = open_model("detect", args.run, args.model, args.checkpoint, _runtime(args))
    counts = predict_files(model, files, out.open(), conf=args.conf, iou=args.iou)
    out.remove()  # nothing was readable: leave no empty folder behind
    print(f"{counts['boxes']} boxes in {counts['images']} images (conf > {args.conf:g}, NMS IoU {args.iou:g}); "
          f"wrote <name>.png, .txt and .json per image to {display_path(args.out)}")
    return 2 if counts["images"] == 0 else 0


def _predict_video(args: argparse.Namespace) -> int:
    from ganforge.detect.use import predict_output
    from ganforge.detect.video import predict_video, speed_line
    from ganforge.export import open_model
    from ganforge.video import kind

    local = kind(args.source) not in ("camera", "stream")  # a file or folder: an input never written over
    out = predict_output(args.run, args.source if local else None, args.out, args.force, model=args.model)
    model = open_model("detect", args.run, args.model, args.checkpoint, _runtime(args))
    result = predict_video(model, args.source, out, conf=args.conf, iou=args.iou, stride=args.vid_stride,
                           max_frames=args.max_frames)
    print(f"{result['boxes']} boxes in {result['frames']} frames (conf > {args.conf:g}, NMS IoU {args.iou:g}); "
          f"wrote {display_path(result['video'])}, labels/ and a .jsonl of boxes per frame")
    print(speed_line(result, model.runtime))
    if result["stopped"] is not None:
        raise result["stopped"]
    if result["interrupted"] is not None:
        print(f"ganforge: stopped by {result['interrupted']} after {result['frames']} frames; they are in "
              f"{display_path(result['video'])} (playable), labels/ and the .jsonl", file=sys.stderr)
        return 143 if result["interrupted"] == "SIGTERM" else 130
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Each way of running the run's detector: file size, mAP@0.5 on a split, ms/image and FPS."""
    from ganforge.detect.benchmark import benchmark, table
    from ganforge.detect.datasets import open_detection_data
    from ganforge.detect.use import load_trained
    from ganforge.outputs import check_file, json_with, run_record

    if args.repeat < 1:
        raise GanforgeError("--repeat must be at least 1")
    own = f"benchmark-{args.split}.json"
    out = check_file(Path(args.json) if args.json else Path(args.run) / own, ours=json_with("rows", "map_floor"),
                     inputs=[p for p in run_record(args.run) if p.name != own], force=args.force, flag="--json")
    model = load_trained(args.run, args.checkpoint, args.device)
    data = open_detection_data(args.data or model.config.data, args.split)
    if len(data) == 0:
        raise GanforgeError(f"the {args.split} split of {args.data or model.config.data} has no images")
    result = benchmark(model, Path(args.run), data, repeat=args.repeat, log=lambda *a: None)
    result["split"] = args.split
    print(table(result))
    write_json(out, result)
    print(f"wrote {display_path(out)}")
    return 0 if all(r["ok"] for r in result["rows"]) else 1


def cmd_map(args: argparse.Namespace) -> int:
    """Score detection files against truth files and print per-class AP and the mAP."""
    from ganforge.detect.map_files import load_for_map

    scored = load_for_map(args.gt, args.pred, args.layout, args.format, args.images)
    for line in scored.warnings:
        print(f"warning: {line}", file=sys.stderr)
    # pixel files' corners are inclusive pixels (the devkit's and Object-Detection-Metrics'
    # convention): VOC metrics add the pixel, COCO's do not; YOLO and ganforge boxes are continuous
    result = evaluate(scored.preds, scored.truths, len(scored.names), metric=args.metric, iou=args.iou,
                      plus_one=scored.plus_one and not args.metric.startswith("coco"))
    if args.json:
        print(json.dumps(result.to_json(scored.names), sort_keys=True))
        return 0
    _print_ap(result, scored.names, len(scored.truths))
    return 0


def _fraction(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number between 0 and 1, got {text}") from None
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be between 0 and 1, got {text}")
        return value
    return parse


_iou = _fraction("--iou")


def add_detect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``detect`` and its subcommands to `subparsers`; returns the ``detect`` parser."""
    from ganforge.detect.infer import DRAW_CONF, NMS_IOU
    from ganforge.detect.map_files import LAYOUTS

    detect = subparsers.add_parser("detect", help="YOLO v1 detection: train, val, predict, recipes, map")
    sub = detect.add_subparsers(dest="detect_command", required=True)

    from ganforge.detect.task import TASK
    from ganforge.runs.command import add_train_parser

    add_train_parser(sub, TASK, help="train a detector recipe (or resume a run)",
                     data_help="digits-det, voc2007, voc2012, voc07+12, a data YAML, a COCO JSON or a folder")

    r = sub.add_parser("recipes", help="list the detector training presets")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_recipes)

    v = sub.add_parser("val", help="per-class AP and mAP of a trained run on a split")
    v.add_argument("run", metavar="RUN", nargs="?", help="a run folder that `ganforge detect train` wrote")
    v.add_argument("--model", metavar="FILE", help="an exported detector (.onnx, .pt) in place of RUN")
    v.add_argument("--data", help="another dataset with the same classes (default: the run's)")
    v.add_argument("--split", default="val", help="split to score: val (default) or test")
    v.add_argument("--metric", choices=list(METRICS), default="voc07",
                   help="voc07 11-point (default), voc12 all-point, coco50 101-point at IoU .5, coco AP@[.5:.95]")
    v.add_argument("--iou", type=_iou, default=0.5, help="IoU a match must exceed (default 0.5)")
    v.add_argument("--checkpoint", help="a name in RUN/checkpoints (e.g. best) or a checkpoint folder; "
                                        "default: the latest")
    v.add_argument("--json", metavar="FILE", help="write the result here (default RUN/val-SPLIT-METRIC.json)")
    v.add_argument("--force", action="store_true", help="replace a --json file that ganforge did not write")
    v.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    v.add_argument("overrides", nargs="*", metavar="key=value", help="run-time keys: device=, threads=")
    v.set_defaults(func=cmd_val, takes_overrides=True)

    p = sub.add_parser("predict", help="draw detected boxes on images; YOLO txt and JSON per image")
    p.add_argument("run", metavar="RUN", nargs="?", help="a run folder that `ganforge detect train` wrote")
    p.add_argument("--model", metavar="FILE", help="an exported detector (.onnx, .pt) in place of RUN")
    p.add_argument("--source", required=True, help="an image file or a folder of images; a video file (MP4, MKV, "
                                                   "AVI, ...), a camera index or a stream URL")
    p.add_argument("--as-video", action="store_true", help="a folder of frames: one annotated video, not images")
    p.add_argument("--vid-stride", type=int, default=1, metavar="K", help="video: every K-th frame (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="video: stop after N frames")
    p.add_argument("--out", required=True, help="a new folder for <name>.png, <name>.txt and <name>.json")
    p.add_argument("--force", action="store_true", help="replace an earlier `detect predict` --out folder")
    p.add_argument("--conf", type=_fraction("--conf"), default=DRAW_CONF,
                   help=f"score threshold (default {DRAW_CONF:g})")
    p.add_argument("--iou", type=_iou, default=NMS_IOU, help=f"per-class NMS IoU (default {NMS_IOU:g})")
    p.add_argument("--checkpoint", help="a name in RUN/checkpoints (e.g. best) or a checkpoint folder; "
                                        "default: the latest")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-time keys: device=, threads=")
    p.set_defaults(func=cmd_predict, takes_overrides=True)
    b = sub.add_parser("benchmark", help="eager, speed layer, ONNX Runtime, TorchScript: size, mAP@0.5, ms, FPS")
    b.add_argument("run", metavar="RUN", help="a run folder that `ganforge detect train` wrote")
    b.add_argument("--split", default="val", help="split whose mAP@0.5 each way must keep (default val)")
    b.add_argument("--data", help="another dataset with the same classes (default: the run's)")
    b.add_argument("--repeat", type=int, default=20, help="timed batch-1 forwards per way (median; default 20)")
    b.add_argument("--checkpoint", help="a name in RUN/checkpoints (e.g. best); default: the latest")
    b.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    b.add_argument("--json", metavar="FILE", help="write the rows here (default RUN/benchmark-SPLIT.json)")
    b.add_argument("--force", action="store_true", help="replace a --json file ganforge did not write")
    b.set_defaults(func=cmd_benchmark)

    c = sub.add_parser("config", help="every config key of a detector recipe: its value, type and meaning")
    c.add_argument("recipe", help="recipe name (see `ganforge detect recipes`)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_config)
    m = sub.add_parser(
        "map", help="mAP of per-image detection files against truth files",
        description="One file per image. Pixel files: truth 'class left top width height [difficult]', "
                    "detections 'class confidence left top width height'. YOLO txt: 'class xc yc w h' and "
                    "'class xc yc w h score', normalised (give --images for the sizes, unless --pred is a "
                    "`detect predict` folder). The layout of each side is detected where unambiguous.")
    m.add_argument("--gt", required=True, help="folder of truth .txt files")
    m.add_argument("--pred", required=True, help="folder of detection .txt files")
    m.add_argument("--iou", type=_iou, default=0.5, help="IoU a match must exceed (default 0.5)")
    m.add_argument("--metric", choices=list(METRICS), default="voc07",
                   help="voc07 11-point (default), voc12 all-point, coco50 101-point at IoU .5, coco AP@[.5:.95]")
    m.add_argument("--format", choices=BOX_FORMATS, default="xywh",
                   help="pixel files' last four numbers: left top width height (xywh, default) or corners (xyxy)")
    m.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="auto (default: per side, refused when ambiguous), pixels, yolo, or ganforge "
                        "(detect predict's JSON)")
    m.add_argument("--images", help="folder of the images (same stems), for the sizes YOLO txt is normalised by")
    m.add_argument("--json", action="store_true", help="print one JSON object (map, per-class ap)")
    m.set_defaults(func=cmd_map)
    return detect


def main(argv: list[str] | None = None) -> int:
    """Run ``detect`` alone (``python -m ganforge.detect.cli map ...``), with one-line errors."""
    parser = argparse.ArgumentParser(prog="ganforge")
    add_detect_parser(parser.add_subparsers(dest="command", required=True))
    args, extra = parser.parse_known_args(["detect", *(sys.argv[1:] if argv is None else argv)])
    args.argv = ["detect", *(sys.argv[1:] if argv is None else argv)]
    if extra:
        if not (getattr(args, "train_task", None) is not None or getattr(args, "takes_overrides", False)) or any(
                e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except GanforgeError as err:
        print(f"ganforge: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
