"""One detector training step: the forward pass, equation 3, the backward pass, and the optimizer
step through the shared non-finite guard (`ganforge.speed.StepGuard`).

The batch arrives ready: uint8 images and their grid targets, encoded where the batches are made
(`detect.run.StepBatches`, in a worker process when `workers` > 0), so the step holds only the
network's work. `run` is a :class:`~ganforge.detect.run.DetectRun`.

Under DDP each rank computes equation 3 over its own rows of the global batch, divided by their
number, and DDP averages the gradients: the gradient of one process on the global batch (see
detect/run.py). Every rank takes the backward (DDP's all-reduce needs them all), and the guard's
flag is agreed over the ranks, so every rank takes or skips the optimizer step together.
"""

from __future__ import annotations

import torch

from ganforge.detect.boxes import GridTargets
from ganforge.detect.evaluate import to_input
from ganforge.detect.loss import yolo_loss
from ganforge.speed import autocast

Batch = tuple[torch.Tensor, GridTargets]


def step_inputs(run, batch: Batch) -> tuple[torch.Tensor, GridTargets]:
    """A batch's network input and grid targets on the run's device."""
    images, grid = batch[:2]
    return to_input(images.to(run.device), run.channels_last), grid.to(run.device)


def train_step(run, batch: Batch) -> tuple[dict[str, torch.Tensor], bool]:
    """Forward, equation 3, backward and the optimizer step (skipped when the loss or a gradient is
    not finite). Returns the loss parts (detached, on the device) and whether the step was taken."""
    net, optimizer = run.net, run.optimizer
    net.train()
    x, grid = step_inputs(run, batch)
    forward = run.ddp if run.ddp is not None else net
    with autocast(run.device, run.cfg.bf16):  # bf16=true: the convolutions and FCs in bf16
        out = forward(x)
    parts = yolo_loss(out.float(), grid, net.boxes, rescore=run.cfg.rescore)  # equation 3 in float32
    optimizer.zero_grad(set_to_none=True)
    # darknet's SGD steps on 1/2 dL/dw (the paper recipe's loss_grad_scale); at 1.0 the graph is
    # equation 3 itself. The logged loss is never scaled.
    scale = run.cfg.loss_grad_scale
    (parts.total * scale if scale != 1.0 else parts.total).backward()
    ok = bool(run.guard.step([optimizer], [parts.total], list(net.parameters())))
    optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()  # the schedule is a function of the step, taken or skipped
    stats = {"loss": parts.total, "loss_coord": parts.coord, "loss_obj": parts.obj,
             "loss_noobj": parts.noobj, "loss_cls": parts.cls}
    return {k: v.detach() for k, v in stats.items()}, ok
