"""The model, targets and loss learn: yolov1-s overfits a handful of digits-det canvases."""

from __future__ import annotations

import subprocess
import sys

import torch

from ganforge.detect.digits import load_digits_det
from ganforge.detect.evaluate import evaluate_model
from ganforge.detect.fit import fit
from ganforge.detect.model import build_detector


def test_yolov1_s_overfits_a_few_canvases_to_voc07_map_09():
    data = load_digits_det("val", count=9).subset(list(range(1, 9)))  # 8 canvases, 17 digits
    assert sum(len(r.labels) for r in data.records) >= 12
    torch.manual_seed(0)
    model = build_detector("yolov1-s", data.num_classes)
    before = evaluate_model(model, data, channels_last=True)
    history = fit(model, data, steps=300, batch_size=8, lr=1e-3, warmup=10, augment=False, seed=0,
                  channels_last=True, log_every=100)
    after = evaluate_model(model, data, channels_last=True)
    assert before.map < 0.1
    assert after.map >= 0.9, after.ap
    assert history[-1]["loss"] < history[0]["loss"] / 3
    assert set(history[-1]) >= {"loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls", "lr"}


def test_detect_imports_nothing_of_the_gan_trainer():
    code = ("import sys\n"
            "import ganforge.detect.cli, ganforge.detect.datasets, ganforge.detect.write_dataset, ganforge.detect.fit\n"
            "import ganforge.detect.train, ganforge.detect.use, ganforge.detect.recipes\n"
            "bad = [m for m in sys.modules if m.startswith(('ganforge.gan', 'ganforge.models', 'ganforge.metrics'))]\n"
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
