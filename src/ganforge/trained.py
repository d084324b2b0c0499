"""A trained model ready to use, whatever the task and however it runs.

`Trained` is what a task's loader returns for a run folder, and what `export.load_exported` returns
for an exported file: the module (a PyTorch network, an ONNX Runtime session or a TorchScript
module behind the same `forward(*inputs)`), and the task's own pre- and post-processing. Because
both paths share `preprocess` and `postprocess`, an exported model can differ from its run only in
the graph, which is what the parity tests measure.

This room knows no task: a task's loader is found through the task registry (`Task.loader`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.errors import ConfigError, GanforgeError
from ganforge.io import display_path

META_FORMAT = "ganforge-model"  # meta["format"]: marks a file that ganforge exported
META_VERSION = 1


@dataclass
class Trained:
    task: str
    module: nn.Module  # eval mode; forward(*inputs) -> the raw output tensor(s)
    config: Any  # the run's typed config
    example: tuple[torch.Tensor, ...]  # one input of each kind, batch 1
    preprocess: Callable  # task-specific: user input -> tuple of input tensors
    postprocess: Callable  # task-specific: raw output -> what the user sees
    meta: dict = field(default_factory=dict)  # JSON-able: see docs/EXPORT.md
    source: Path | None = None  # the checkpoint folder or the exported file
    runtime: str = "pytorch"  # pytorch, onnxruntime or torchscript

    @property
    def device(self) -> torch.device:
        param = next(self.module.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor):
        """The module's raw output for already preprocessed inputs."""
        return self.module(*inputs)


def run_task(run_dir: str | Path, default: str | None = None) -> str:
    """The task of a run folder, from its config.json (GAN runs predate the `task` key). Without
    one, `default` (whose loader then says what is wrong with the folder)."""
    run = Path(run_dir)
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        if default:
            return default
        raise ConfigError(f"{display_path(run)} has no readable config.json: give a run folder that "
                          "ganforge trained") from None
    task = config.get("task", "gan") if isinstance(config, dict) else None
    from ganforge.task import tasks

    if task not in tasks():
        raise ConfigError(f"{display_path(run)} is a run of an unknown task {task!r}")
    return task


def task_use(task: str):
    """The task's `use` module: the module of its registered loader, which also offers
    `wrap_exported(module, meta, runtime, source)`."""
    from ganforge.task import tasks

    try:
        return importlib.import_module(tasks().get(task).loader.partition(":")[0])
    except (GanforgeError, ModuleNotFoundError):
        raise ConfigError(f"this ganforge cannot use models of task {task!r}: upgrade ganforge") from None


def load_run(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu",
             default: str | None = None, **options) -> Trained:
    """The trained model of any run folder, through its task's loader (`options`: what that loader
    takes besides, such as a translation run's `direction`)."""
    return task_use(run_task(run_dir, default)).load_trained(run_dir, checkpoint, device, **options)


def tensor_spec(name: str, tensor: torch.Tensor, batch: int | None) -> dict:
    """An input or output as the meta records it: name, shape (batch first; None when dynamic), dtype."""
    return {"name": name, "shape": [batch, *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch.")}
