"""BatchNorm over the global batch, and DDP's buffer option that goes with it.

torch's SyncBatchNorm needs a GPU; on the CPU :class:`GlobalBatchNorm` all-reduces the statistics
over gloo. :func:`convert_sync_batchnorm` picks one by device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ganforge.distributed.group import _collective, active


def no_buffer_sync() -> dict[str, bool]:
    """DDP's option for not copying rank 0's buffers into the others at every forward (BatchNorm
    statistics are global already with SyncBatchNorm, and per rank by choice without), under the
    name this torch version gives it."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, differentiable: the gradient of each rank's input is
    the sum over the ranks of the gradients that reach the result."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        _collective(dist.all_reduce, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        _collective(dist.all_reduce, grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over every rank (gloo on
    the CPU, where torch.nn.SyncBatchNorm needs a GPU). The mean and the (biased) variance are
    all-reduced in two passes, as a single process computes them over the whole batch; the
    all-reduce is differentiable, so each rank's gradient includes what its inputs did to the
    other ranks' normalisation. One process, eval mode or frozen statistics: plain BatchNorm.
    Parameters and buffers are BatchNorm's, so checkpoints do not tell the two apart."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        all_reduce = _SumOverRanks.apply
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64, device=input.device)
        _collective(dist.all_reduce, count)
        n = float(count.item())
        x = input.float()
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm computing its statistics over the global batch: torch's
    SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere. Weights, buffers and settings carry over."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.to(next(iter(module.state_dict().values())).device)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        converted = _convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
