"""Write a run's `Trained` model to ONNX or TorchScript, with its meta inside the file.

ONNX: the meta is the JSON of the model's `metadata_props` key "ganforge". TorchScript: it is the
archive's extra file `ganforge.json`. Either way a file carries what is needed to use it (task,
inputs, pixel range, class names, latent layout, post-processing): docs/EXPORT.md.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ganforge.errors import ConfigError
from ganforge.io import display_path
from ganforge.outputs import check_file
from ganforge.trained import META_FORMAT, META_VERSION, Trained, load_run, tensor_spec

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
META_KEY = "ganforge"  # ONNX metadata_props key
EXTRA_FILE = "ganforge.json"  # TorchScript extra file
OPSET = 18


def _batched(example: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    return tuple(x.repeat(batch, *([1] * (x.dim() - 1))) for x in example)


def file_meta(model: Trained, fmt: str, batch: int | None) -> dict:
    """The model's meta plus what this file is: format, batch and its inputs' and output's specs."""
    names = model.meta["input_names"]
    inputs = [_free_sides(model, tensor_spec(n, x, batch)) for n, x in zip(names, model.example)]
    with torch.no_grad():
        out = model(*(x.to(model.device) for x in model.example))
    meta = {k: v for k, v in model.meta.items() if k != "channels_last"}
    return {"format": META_FORMAT, "version": META_VERSION, "runtime": fmt, **meta,
            "batch": "dynamic" if batch is None else batch, "inputs": inputs,
            "outputs": [_free_sides(model, tensor_spec(model.meta["output_name"], out, batch))]}


def _free_sides(model: Trained, spec: dict) -> dict:
    """A fully convolutional image model (its meta names the `multiple` its sides need, as a
    translator's does) takes any height and width: null in the spec's shape, like a dynamic batch."""
    if isinstance(model.meta.get("multiple"), int) and len(spec["shape"]) == 4:
        spec["shape"][2:] = [None, None]
    return spec


def _dynamic_shapes(model: Trained, example: tuple[torch.Tensor, ...], batch: int | None):
    """torch.export's dynamic dimensions: the batch when `batch` is None; the sides (as multiples
    of `multiple`, so every halving stays exact) for a fully convolutional image model."""
    multiple = model.meta.get("multiple")
    if batch is not None and not isinstance(multiple, int):
        return None
    dims = []
    for x in example:
        spec = {0: torch.export.Dim("batch")} if batch is None else {}
        if isinstance(multiple, int) and x.dim() == 4:
            spec[2] = multiple * torch.export.Dim("height")
            spec[3] = multiple * torch.export.Dim("width")
        dims.append(spec)
    dynamic = tuple(dims)
    takes = inspect.signature(model.module.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in takes):
        dynamic = (dynamic,)  # forward(*inputs): one tuple argument to torch.export
    return dynamic


def _onnx(model: Trained, path: Path, meta: dict, batch: int | None) -> None:
    # torch.export specialises a dimension of size 1, so a dynamic batch is traced at 2
    example = _batched(model.example, 2 if batch is None else batch)
    dynamic = _dynamic_shapes(model, example, batch)
    multiple = model.meta.get("multiple")
    if isinstance(multiple, int):  # torch.export specialises a size of 1 there too: trace at 2 x multiple or more
        example = tuple(x.repeat(1, 1, 2, 2) if x.dim() == 4 and min(x.shape[2:]) < 2 * multiple else x
                        for x in example)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.module.cpu(), example, input_names=meta["input_names"],
                                    output_names=[meta["output_name"]], dynamo=True, dynamic_shapes=dynamic,
                                    opset_version=OPSET, verbose=False)
    program.model.metadata_props[META_KEY] = json.dumps(meta, sort_keys=True)
    program.model.producer_name = "ganforge"
    program.save(str(path))


def _torchscript(model: Trained, path: Path, meta: dict, batch: int | None) -> None:
    example = _batched(model.example, batch or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        script = torch.jit.trace(model.module.cpu(), example, check_trace=False)
        torch.jit.save(script, str(path), _extra_files={EXTRA_FILE: json.dumps(meta, sort_keys=True)})


def check_output(out: Path, run_dir: Path, force: bool) -> None:
    """Never write into the run folder, over a folder, or over a file ganforge did not export; an
    earlier export is replaced only with `force`."""
    from ganforge.export.read import read_meta

    check_file(out, inputs=[run_dir], force=True)  # the run and folders: refused whatever --force says
    if out.exists() or out.is_symlink():
        if out.is_symlink() or read_meta(out, quiet=True) is None:
            raise ConfigError(f"{display_path(out)} is not a file ganforge exported: it is never overwritten, "
                              "choose another --out; nothing was written")
        if not force:
            raise ConfigError(f"{display_path(out)} exists: add --force to replace it, or choose another --out; "
                              "nothing was written")


def export_run(run_dir: str | Path, out: str | Path, *, fmt: str = "onnx", checkpoint: str | None = None,
               batch: int | None = 1, force: bool = False, direction: str | None = None) -> Path:
    """Export the trained model of `run_dir` to `out` (ONNX or TorchScript) at a fixed batch size,
    or a dynamic one (`batch=None`). A translation run's generator is the AtoB one unless
    `direction` says BtoA (a CycleGAN run's other generator). Returns the path written."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if batch is not None and batch < 1:
        raise ConfigError(f"bad batch {batch}: give a positive number or dynamic")
    out = Path(out)
    run_dir = Path(run_dir)
    options = {}
    if direction is not None:
        from ganforge.trained import run_task

        if run_task(run_dir) != "translate":
            raise ConfigError(f"--direction is for translation runs: {display_path(run_dir)} has one model; "
                              "drop --direction")
        options["direction"] = direction
    check_output(out, run_dir, force)
    return export_trained(load_run(run_dir, checkpoint, "cpu", **options), out, fmt=fmt, batch=batch)


def export_trained(model: Trained, out: Path, *, fmt: str = "onnx", batch: int | None = 1) -> Path:
    """Write `model` to `out` (whose checks the caller made)."""
    meta = file_meta(model, fmt, batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and renamed: a failed export leaves no half file behind
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=SUFFIX[fmt], dir=out.parent)
    os.close(fd)
    try:
        (_onnx if fmt == "onnx" else _torchscript)(model, Path(tmp), meta, batch)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
