"""Run an exported file as a `Trained`: an ONNX Runtime session or a TorchScript module behind the
same `forward(*inputs)` as the PyTorch network, wrapped by its task with the run's own pre- and
post-processing."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganforge.errors import ConfigError
from ganforge.io import display_path
from ganforge.trained import META_FORMAT, META_VERSION, Trained, load_run, task_use

ORT_MISSING = "ONNX Runtime is not installed: pip install onnxruntime (onnxruntime-gpu for CUDA)"


def _not_ours(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{display_path(path)} {why}: give a file that `ganforge export` wrote")


def read_meta(path: str | Path, quiet: bool = False) -> dict | None:
    """The ganforge meta of an exported file; a file that is not one is a one-line error (None
    when `quiet`)."""
    from ganforge.export.write import EXTRA_FILE, META_KEY

    path = Path(path)
    if not zipfile.is_zipfile(path):
        try:
            import onnx
        except ImportError:
            raise ConfigError("the onnx package is not installed: pip install 'ganforge[export]' "
                              "(onnx, onnxscript, onnxruntime)") from None
    try:
        if zipfile.is_zipfile(path):  # a TorchScript archive
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")), None)
                text = archive.read(name).decode() if name else None
        else:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props.get(META_KEY)
    except Exception:  # noqa: BLE001 - any parse failure means: not a model file we can read
        if quiet:
            return None
        raise _not_ours(path, "is neither an ONNX model nor a TorchScript archive") from None
    try:
        meta = json.loads(text) if text else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        if quiet:
            return None
        raise _not_ours(path, "is a model that ganforge did not export (it has no ganforge metadata)")
    if meta.get("version", 0) > META_VERSION:
        raise ConfigError(f"{display_path(path)} was exported by a newer ganforge (format "
                          f"{meta.get('version')}): upgrade ganforge")
    return meta


class Exported(nn.Module):
    """A foreign runtime as a module: CPU tensors in, CPU tensors out. A file exported at a fixed
    batch runs any batch in chunks of that size (the last one padded, its padding dropped)."""

    def __init__(self, run, batch: int | None) -> None:
        super().__init__()
        self.run, self.batch = run, batch

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n = inputs[0].shape[0]
        if self.batch is None or n == self.batch:
            return self.run(inputs)
        outs = []
        for start in range(0, n, self.batch):
            part = [x[start:start + self.batch] for x in inputs]
            short = self.batch - part[0].shape[0]
            if short:
                part = [torch.cat([x, x[-1:].expand(short, *x.shape[1:])]) for x in part]
            outs.append(self.run(part)[:self.batch - short])
        return torch.cat(outs)


def _onnx_runner(path: Path, meta: dict, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(ORT_MISSING) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), options, providers=providers)
    _check_inputs(path, meta, [(i.name, i.shape) for i in session.get_inputs()])
    names = [i.name for i in session.get_inputs()]

    def run(inputs):
        feed = {name: np.ascontiguousarray(x.detach().cpu().numpy()) for name, x in zip(names, inputs)}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def _script_runner(path: Path, meta: dict, device: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, on every load
        script = torch.jit.load(str(path), map_location=device).eval()
    dev = torch.device(device)

    @torch.no_grad()
    def run(inputs):
        return script(*(x.to(dev) for x in inputs))

    return run


def _check_inputs(path: Path, meta: dict, graph: list[tuple[str, list]]) -> None:
    """The graph's inputs must be the ones its meta describes (names, and every size but the batch)."""
    def sizes(shape) -> list:  # a dynamic size is a name in the graph and null in the meta
        return [d if isinstance(d, int) else None for d in list(shape)[1:]]

    described = [(spec["name"], sizes(spec["shape"])) for spec in meta.get("inputs", [])]
    found = [(name, sizes(shape)) for name, shape in graph]
    if described != found:
        raise ConfigError(f"{display_path(path)} has inputs {found} but its ganforge metadata describes {described}: "
                          "the file was changed after export; export the run again")


def load_exported(path: str | Path, device: str = "cpu") -> Trained:
    """An exported file as a `Trained` whose pre- and post-processing are its task's own."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--model {display_path(path)} is not a file: give a file that `ganforge export` wrote")
    meta = read_meta(path)
    batch = meta["batch"] if isinstance(meta.get("batch"), int) else None
    if zipfile.is_zipfile(path):
        runtime, runner = "torchscript", _script_runner(path, meta, device)
    else:
        runtime, runner = "onnxruntime", _onnx_runner(path, meta, device)
    return task_use(meta["task"]).wrap_exported(Exported(runner, batch).eval(), meta, runtime, path)


def open_model(task: str, run: str | None, model: str | None, checkpoint: str | None = None,
               device: str = "cpu") -> Trained:
    """What a command of `task` runs: the run folder's model, or an exported file (`--model`)."""
    if (run is None) == (model is None):
        raise ConfigError("give a run folder or --model FILE (an exported .onnx or .pt), not both" if run
                          else "give a run folder, or --model FILE (an exported .onnx or .pt)")
    if model is not None:
        if checkpoint:
            raise ConfigError("--checkpoint chooses within a run folder: drop it with --model")
        trained = load_exported(model, device)
    else:
        trained = load_run(run, checkpoint, device, default=task)
    if trained.task != task:
        use = {"gan": "`ganforge sample`, `eval` or `explore`",
               "detect": "`ganforge detect predict` or `ganforge detect val`"}.get(trained.task, "its own commands")
        raise ConfigError(f"{display_path(model or run)} holds a {trained.task} model, not a {task} one: "
                          f"use {use} with it")
    return trained
