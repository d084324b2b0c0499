"""The `paper` recipe takes darknet's SGD step, -lr * (1/2 dL/dw + decay * w), through the real
training step; the `adam` recipe's step is unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ganforge.config import apply_overrides
from ganforge.detect.digits import load_digits_det
from ganforge.detect.loss import yolo_loss
from ganforge.detect.recipes import get_recipe
from ganforge.detect.run import DetectRun
from ganforge.detect.step import step_inputs, train_step
from ganforge.detect.write_dataset import write_dataset

SMALL = ["model=yolov1-s", "fc_width=32", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
         "device=cpu", "predict_images=1", "steps=10"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits-yolo")
    splits = {"train": load_digits_det("train", count=8), "val": load_digits_det("val", count=2)}
    return write_dataset(splits, root, "yolo")


def _one_step(recipe: str, data: Path, run_dir: Path, *extra: str):
    """(weights before, the gradient of equation 3 by hand, lr, the loss, the run after one real step,
    its stats)."""
    cfg = apply_overrides(get_recipe(recipe), [f"data={data}", *SMALL, *extra])
    run = DetectRun(cfg, run_dir, quiet=True)
    batch = run.batches[0]
    lr = run.optimizer.param_groups[0]["lr"]
    rng = torch.get_rng_state()  # dropout: the step by hand and the real one draw the same masks
    shadow = copy.deepcopy(run.net).train()
    x, grid = step_inputs(run, batch)
    loss = yolo_loss(shadow(x), grid, shadow.boxes, rescore=cfg.rescore).total
    grads = torch.autograd.grad(loss, list(shadow.parameters()))
    before = [p.detach().clone() for p in run.net.parameters()]
    torch.set_rng_state(rng)
    stats, ok = train_step(run, batch)
    assert ok
    return before, grads, lr, loss, run, stats


@pytest.mark.parametrize("decay", [None, 0.2])
def test_paper_recipe_steps_minus_lr_times_half_gradient_plus_decay(data, tmp_path, decay):
    """With the recipe's decay, and with a large one that makes the decay term stand well above
    float32 rounding (lr * 5e-4 * w is near the rounding of w)."""
    cfg = get_recipe("paper")
    assert (cfg.optimizer, cfg.loss_grad_scale, cfg.weight_decay) == ("sgd", 0.5, 5e-4)
    extra = [f"weight_decay={decay}"] if decay is not None else []
    before, grads, lr, loss, run, stats = _one_step("paper", data, tmp_path / "paper", *extra)
    assert lr == pytest.approx(1e-2)  # 10 steps: no warm-up step, the peak
    decay = run.cfg.weight_decay
    after = [p.detach() for p in run.net.parameters()]
    # darknet's update; momentum has no history yet, so the first step is the update itself
    darknet = [w0 - lr * (0.5 * g + decay * w0) for w0, g in zip(before, grads)]
    for w1, expected in zip(after, darknet):
        torch.testing.assert_close(w1, expected, rtol=1e-5, atol=1e-8)
    # The logged loss is equation 3 itself, not the scaled one.
    assert float(stats["loss"]) == pytest.approx(float(loss.detach()), rel=1e-6)

    def error(formula):
        return max(float((w1 - f).abs().max()) for w1, f in zip(after, formula))

    # Not the whole gradient (the step before this fix), nor lr halved (which halves the decay too).
    whole = [w0 - lr * (g + decay * w0) for w0, g in zip(before, grads)]
    halved = [w0 - lr / 2 * (g + decay * w0) for w0, g in zip(before, grads)]
    assert error(whole) > 100 * error(darknet)
    if decay > 0.1:
        assert error(halved) > 100 * error(darknet)


def test_adam_recipe_steps_on_the_whole_gradient(data, tmp_path):
    assert get_recipe("adam").loss_grad_scale == 1.0
    before, grads, lr, _, run, _ = _one_step("adam", data, tmp_path / "adam")
    state = run.optimizer.state
    for w0, g, w1 in zip(before, grads, run.net.parameters()):
        # Adam's first moment after one step is (1 - beta1) * the gradient it was given.
        torch.testing.assert_close(state[w1]["exp_avg"], (1 - run.cfg.beta1) * g, rtol=1e-5, atol=1e-10)
