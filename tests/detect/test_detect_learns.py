"""The model, targets, loss, step and schedule learn: the real trainer (the code of `ganforge detect
train`) overfits yolov1-s to a handful of digits-det canvases."""

from __future__ import annotations

import subprocess
import sys

import torch

from ganforge.config import apply_overrides
from ganforge.detect.digits import load_digits_det
from ganforge.detect.evaluate import evaluate_model
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.train import train
from ganforge.detect.write_dataset import write_dataset
from ganforge.io import read_metrics

# Adam 1e-3, 10 warm-up steps then a cosine decay, batch 8, no augmentation, the model's own head
# (FC 256, dropout .5): 300 steps on 8 canvases, which are both the train and the val split.
OVERFIT = ["model=yolov1-s", "fc_width=0", "dropout=0.5", "optimizer=adam", "lr=1e-3", "weight_decay=0",
           "schedule=cosine", "warmup=0.034", "batch_size=8", "augment=false", "pretrain_steps=0",
           "channels_last=on", "workers=0", "threads=1", "device=cpu", "log_every=100", "eval_every=300",
           "predict_every=300", "checkpoint_every=300", "predict_images=4"]


def test_yolov1_s_overfits_a_few_canvases_to_voc07_map_09(tmp_path):
    data = load_digits_det("val", count=9).subset(list(range(1, 9)))  # 8 canvases, 17 digits
    assert sum(len(r.labels) for r in data.records) >= 12
    root = write_dataset({"train": data, "val": data}, tmp_path / "data", "yolo")
    torch.manual_seed(0)
    before = evaluate_model(build_detector("yolov1-s", data.num_classes), data, channels_last=True)
    cfg = apply_overrides(get_recipe("adam"), [f"data={root}", *OVERFIT])
    assert cfg.warmup_steps(300) == 10
    run = train(cfg, tmp_path / "run", steps=300, quiet=True, log=lambda *a: None)
    rows = read_metrics(run / "metrics.jsonl")
    history = [r for r in rows if r["kind"] == "train"]
    after = [r for r in rows if r["kind"] == "eval"][-1]
    assert before.map < 0.1
    assert after["step"] == 300 and after["map"] >= 0.9, after["ap"]
    assert history[-1]["loss"] < history[0]["loss"] / 3
    assert set(history[-1]) >= {"loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls", "lr"}


def test_detect_imports_nothing_of_the_gan_trainer():
    code = ("import sys\n"
            "import ganforge.detect.cli, ganforge.detect.datasets, ganforge.detect.write_dataset, ganforge.detect.step\n"
            "import ganforge.detect.train, ganforge.detect.use, ganforge.detect.recipes\n"
            "bad = [m for m in sys.modules if m.startswith(('ganforge.gan', 'ganforge.metrics'))]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_trunk_pretraining_learns_to_classify_single_digits():
    import numpy as np

    from ganforge.detect.digits import classification_batch
    from ganforge.detect.pretrain import pretrain_trunk

    rng = np.random.RandomState(0)
    images, labels = classification_batch(rng, 8)
    assert images.shape == (8, 3, 56, 56) and images.dtype == torch.uint8 and labels.max() < 10
    torch.manual_seed(0)
    model = build_detector("yolov1-s", 10)
    head_before = [p.clone() for p in model.head.parameters()]
    accuracy = pretrain_trunk(model, lambda step: classification_batch(rng, 32), 10, steps=150,
                              channels_last=True, log_every=50)
    assert accuracy > 0.4  # chance is 0.1
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))  # trunk only
