"""`ganforge detect benchmark RUN`: one row per way of running a trained detector (eager PyTorch
float32, the speed layer, ONNX Runtime, TorchScript) with its file size, its mAP@0.5 on a split and
its ms per image and FPS at batch 1. A row whose mAP falls more than `MAP_FLOOR` below eager's is
marked failing: a fast path that changes the answers is not a speed-up."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ganforge.detect.evaluate import evaluate_model
from ganforge.detect.speed import eager_forward, fast_forward
from ganforge.trained import Trained

MAP_FLOOR = 0.005
WAYS = ("eager", "speed", "onnxruntime", "torchscript")


class _Forward(nn.Module):
    """A forward function as a module that `evaluate_model` can run (it reads these attributes)."""

    def __init__(self, run, net: nn.Module) -> None:
        super().__init__()
        self.run, self.device = run, next(net.parameters()).device
        self.input_size, self.boxes, self.grid = net.input_size, net.boxes, net.grid
        self.register_buffer("_where", torch.empty(0, device=self.device))  # its device, for evaluate_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def _time(forward, example: torch.Tensor, repeat: int) -> float:
    """Median ms of one batch-1 forward, after warm-up."""
    times = []
    for i in range(repeat + 3):
        if example.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        forward(example)
        if example.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def _row(way: str, module: nn.Module, forward, example: torch.Tensor, data, size: int, repeat: int) -> dict:
    result = evaluate_model(module, data, metric="voc07", iou=0.5)
    ms = _time(forward, example, repeat)
    return {"way": way, "file_mb": round(size / 1e6, 2), "map50": result.map, "ms": round(ms, 3),
            "fps": round(1000 / ms, 1)}


def benchmark(model: Trained, run_dir: Path, data, *, repeat: int = 20, ways=WAYS, log=print) -> dict:
    """The rows for `model` (a run's PyTorch `Trained`) on `data` (a DetectionSet)."""
    from ganforge.export import load_exported
    from ganforge.export.write import export_trained

    net = model.module
    device = model.device
    example = torch.rand(1, 3, net.input_size, net.input_size, device=device)
    # eager and the speed layer run the float32 weights themselves: their size, not the checkpoint's
    # (which also holds the optimizer state)
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for way in ways:
            log(f"benchmark: {way} ...")
            net.to(memory_format=torch.contiguous_format)
            if way == "eager":
                forward = eager_forward(net)
                rows.append(_row(way, net, forward, example, data, weights, repeat))
            elif way == "speed":
                for_map = fast_forward(net, example, cuda_graph=False)  # any batch size
                timed = fast_forward(net, example)  # on CUDA: one captured graph at batch 1
                rows.append(_row(way, _Forward(for_map, net), timed, example, data, weights, repeat))
                net.to(memory_format=torch.contiguous_format)
            else:
                fmt = "onnx" if way == "onnxruntime" else "torchscript"
                path = export_trained(model, Path(tmp) / f"model.{fmt}", fmt=fmt, batch=None)
                net.to(device)
                exported = load_exported(path, str(device))
                rows.append(_row(way, exported.module, lambda x, m=exported.module: m(x), example.cpu()
                                 if way == "onnxruntime" else example, data, path.stat().st_size, repeat))
    eager = next((r["map50"] for r in rows if r["way"] == "eager"), None)
    for row in rows:
        row["ok"] = eager is None or row["map50"] is None or row["map50"] >= eager - MAP_FLOOR
    return {"model": model.meta["model"], "step": model.meta["step"], "checkpoint": model.meta["checkpoint"],
            "images": len(data), "device": _device_name(device), "threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 2), "batch": 1, "metric": "VOC07 11-point mAP@0.5",
            "map_floor": MAP_FLOOR, "rows": rows}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def table(result: dict) -> str:
    """The rows as the text table `detect benchmark` prints."""
    lines = [f"{result['model']} (step {result['step']}) on {result['images']} images, batch 1, {result['device']}, "
             f"{result['threads']} threads, load {result['load_1min']}",
             f"{'way':<13}{'file MB':>9}{'mAP@0.5':>9}{'ms/img':>9}{'FPS':>8}  check"]
    for r in result["rows"]:
        shown = "-" if r["map50"] is None else f"{r['map50']:.4f}"
        lines.append(f"{r['way']:<13}{r['file_mb']:>9.1f}{shown:>9}{r['ms']:>9.2f}{r['fps']:>8.1f}  "
                     f"{'ok' if r['ok'] else f'FAIL (mAP > {MAP_FLOOR} below eager)'}")
    return "\n".join(lines)
