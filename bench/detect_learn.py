"""Does `yolov1-s` learn `digits-det` on the CPU? The learning target: VOC07 mAP@0.5 >= 0.9 on the
held-out test split.

Trains with the real trainer, as a person would (`ganforge detect train adam --data digits-det ...`,
with any key=value overrides given here), then scores the run's last checkpoint on the test split
with `ganforge detect val` under the three metrics, and draws its predictions on the first 16 test
canvases. Writes OUT/result.json (command, wall time, figures, the val curve) and
OUT/test-predictions.png.

    nice python bench/detect_learn.py --out runs/detect-learn threads=1 workers=1
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from torchvision.io import write_png
from torchvision.utils import make_grid

METRICS = ("voc07", "voc12", "coco50")


def ganforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganforge", *args], check=True, text=True,
                          stdout=subprocess.PIPE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the adam recipe")
    p.add_argument("--out", type=Path, default=Path("runs/detect-learn"))
    p.add_argument("--epochs", type=float, help="the budget (default: the recipe's)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to score (default: the last; or best)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / "run"

    command = ["detect", "train", "adam", "--data", "digits-det", "--out", str(run), "--force", "--quiet",
               *(["--epochs", f"{args.epochs:g}"] if args.epochs else []), *args.overrides]
    print("ganforge " + shlex.join(command), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ganforge", *command], check=True)
    wall = time.perf_counter() - start

    test = {}
    for metric in METRICS:
        out = args.out / f"test-{metric}.json"
        ganforge("detect", "val", str(run), "--split", "test", "--metric", metric, "--json", str(out),
                 *(["--checkpoint", args.checkpoint] if args.checkpoint else []))
        test[metric] = json.loads(out.read_text())
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result = {
        "command": "ganforge " + shlex.join(command),
        "wall_seconds": round(wall, 1),
        "train_seconds": summary["seconds"],
        "steps": summary["steps"],
        "epochs": summary["epochs"],
        "pretrain_accuracy": summary.get("pretrain_accuracy"),
        "config": json.loads((run / "config.json").read_text()),
        "test": {t["label"]: round(t["map"], 4) for t in test.values()},
        "test_ap_voc07": {k: round(v, 4) for k, v in test["voc07"]["ap"].items() if v is not None},
        "val_curve": [{"step": r["step"], "map": r["map"]} for r in rows if r.get("kind") == "eval"],
        "train_curve": [{k: r[k] for k in ("step", "loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls",
                                           "lr", "seconds")} for r in rows if r.get("kind") == "train"],
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    from ganforge.detect.digits import load_digits_det
    from ganforge.detect.draw import draw_detections
    from ganforge.detect.evaluate import predict_dataset
    from ganforge.detect.infer import DRAW_CONF
    from ganforge.detect.use import load_detector

    model = load_detector(run, args.checkpoint)
    shown = load_digits_det("test").subset(list(range(16)))
    preds = predict_dataset(model.net, shown, conf=DRAW_CONF, channels_last=model.channels_last)
    drawn = [draw_detections(shown.image(i), preds[i], shown.names) for i in range(len(shown))]
    write_png(make_grid(torch.stack(drawn), nrow=4, padding=2), str(args.out / "test-predictions.png"))
    print(json.dumps({k: result[k] for k in ("wall_seconds", "steps", "test")}, indent=2))


if __name__ == "__main__":
    main()
