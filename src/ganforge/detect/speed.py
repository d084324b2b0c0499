"""Inference forward with the speed layer: channels_last, bf16 autocast, and on CUDA the whole
forward captured once as a CUDA graph and replayed (static input and output buffers)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def eager_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain PyTorch forward (float32, contiguous, no grad) that figures are compared with."""
    model.eval()

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    return run


def fast_forward(model: nn.Module, example: torch.Tensor, *, bf16: bool = True,
                 channels_last: bool = True, cuda_graph: bool = True,
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for inputs shaped like `example`; the output is float32 N x S x S x (5B+C).

    On CUDA (and `cuda_graph`) the forward is warmed up on a side stream, captured, and each call
    copies its input into the graph's buffer and replays it: one launch per batch."""
    model.eval()
    device = example.device
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if bf16 else torch.float32

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=bf16):
            return model(x).float()

    if device.type != "cuda" or not cuda_graph:
        return run
    static_in = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up: cuDNN picks its algorithms before capture
            run(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(static_in)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out

    return replay
