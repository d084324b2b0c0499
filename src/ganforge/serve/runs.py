"""What the page is given for each run: its exported ONNX model, the layout the page needs to feed it
and read its output, what `eval` measured, and (a detector, a translator) a few example images.

A run is exported once per checkpoint into a cache folder of its own (ganforge's cache, never the
run folder), and the export is reused while the run's latest checkpoint stays the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ganforge.errors import ConfigError
from ganforge.io import display_path, first_line
from ganforge.serve.server import safe_file

EXAMPLES = 4  # example images offered for a detector or a translator, from its held-out split


@dataclass
class ServedRun:
    run_dir: Path
    task: str  # "gan", "detect" or "translate"
    model_bytes: bytes  # the exported ONNX file
    layout: dict  # what the page needs: see `page_layout`
    measured: dict = field(default_factory=dict)  # eval's findings the page shows beside its controls
    examples: list[tuple[str, bytes]] = field(default_factory=list)  # (name, PNG bytes)
    notes: list[str] = field(default_factory=list)  # one-line warnings printed when serving
    reverse: ServedRun | None = None  # a CycleGAN run's BtoA generator, its layout and its examples (side B)


def run_task(run_dir: Path) -> str:
    """A run folder's task, from its config.json (a detector's and a translator's record `task`; a
    GAN's does not)."""
    path = run_dir / "config.json"
    if not run_dir.is_dir() or not path.is_file():
        raise ConfigError(f"{display_path(run_dir)} is not a run folder (no config.json): give folders that "
                          "`ganforge train`, `ganforge detect train` or `ganforge translate train` wrote")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError) as err:
        raise ConfigError(f"{display_path(path)} cannot be read ({first_line(err)})") from None
    task = config.get("task", "gan") if isinstance(config, dict) else None
    if task not in ("gan", "detect", "translate"):
        raise ConfigError(f"{display_path(run_dir)} is a {task!r} run: the page serves GAN, detector and "
                          "translation runs")
    return task


def export_cached(run_dir: Path, checkpoint: str | None = None, direction: str | None = None) -> Path:
    """The run's ONNX export (batch 1) in the cache, made by `ganforge export` the first time and
    again whenever the run's latest checkpoint changes (`direction`: a translation run's generator,
    AtoB when None)."""
    from ganforge.checkpoint import list_checkpoints
    from ganforge.export import export_run, read_meta
    from ganforge.paths import cache_dir

    checkpoints = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    if not checkpoints and checkpoint is None:
        raise ConfigError(f"{display_path(run_dir)} has no checkpoint yet: train it first")
    chosen = Path(checkpoint) if checkpoint and Path(checkpoint).is_dir() else (
        run_dir / "checkpoints" / checkpoint if checkpoint else checkpoints[-1])
    stamp = hashlib.sha256()
    stamp.update(str(run_dir.resolve()).encode("utf-8", "surrogateescape"))
    for part in sorted(chosen.iterdir()) if chosen.is_dir() else []:
        if part.is_file() and not part.is_symlink():
            st = part.stat()
            stamp.update(f"{part.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
    if direction is not None:  # AtoB keeps the key it had before a direction could be chosen
        stamp.update(f"direction\0{direction}".encode())
    folder = cache_dir() / "serve" / stamp.hexdigest()[:20]
    out = folder / "model.onnx"
    if out.is_symlink() or (out.exists() and read_meta(out, quiet=True) is None):
        out.unlink()  # not an export that this version reads (an older format, a damaged file): made again
    if not out.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        export_run(run_dir, out, fmt="onnx", checkpoint=checkpoint, batch=1, force=False, direction=direction)
    return out


def page_layout(meta: dict) -> dict:
    """An exported file's metadata (docs/EXPORT.md) reduced to what the page's JavaScript reads: a
    GAN's input names, latent layout and pixel range, a detector's input, size, classes and
    post-processing defaults, or a translator's input, channels, side multiple and direction."""
    inputs = list(meta["input_names"])
    if meta["task"] == "translate":
        return {"input": inputs[0], "in_channels": int(meta["in_channels"]), "out_channels": int(meta["out_channels"]),
                "multiple": int(meta["multiple"]), "pixel_range": meta["pixel_range"], "mode": meta["mode"],
                "direction": meta["direction"], "image_size": int(meta["image_size"]),
                "data": str((meta.get("config") or {}).get("data", ""))}
    if meta["task"] == "detect":
        post = meta.get("postprocess", {})
        return {"input": inputs[0], "input_size": int(meta["image_size"]), "pixel_range": meta["pixel_range"],
                "names": list(meta["class_names"]), "grid": int(meta["grid"]), "boxes": int(meta["boxes"]),
                "conf": float(post["conf"]), "iou": float(post["iou"]), "max_det": int(post["max_det"])}
    latent = meta["latent"]
    return {"inputs": inputs, "latent_dim": int(latent["noise"]), "num_classes": int(latent["classes"]),
            "class_names": list(meta.get("class_names") or []), "categorical": int(latent["categorical"]),
            "continuous": int(latent["continuous"]), "pixel_range": meta["pixel_range"],
            "channels": int(meta["channels"]), "image_size": int(meta["image_size"])}


def _exported(run_dir: Path, task: str, checkpoint: str | None, direction: str | None = None) -> ServedRun:
    from ganforge.export import read_meta

    model_path = export_cached(run_dir, checkpoint, direction)
    meta = read_meta(model_path)
    model_bytes = safe_file(model_path.parent, model_path.name)  # the cache's own file, not a link
    return ServedRun(run_dir, task, model_bytes, page_layout(meta))


def load_served(run_dir: str | Path, checkpoint: str | None = None) -> ServedRun:
    """A run ready to serve; a CycleGAN run with its second generator (BtoA) in `reverse`."""
    run_dir = Path(run_dir)
    task = run_task(run_dir)
    served = _exported(run_dir, task, checkpoint)
    from ganforge.task import tasks

    record = tasks().get(task)
    served.measured = record.findings(run_dir)
    served.examples, served.notes = record.examples(run_dir, EXAMPLES)
    if served.layout.get("mode") == "cyclegan":  # a generator each way: the other one, with its own inputs
        served.reverse = _exported(run_dir, task, checkpoint, "BtoA")
        served.reverse.examples, notes = record.examples(run_dir, EXAMPLES, direction="BtoA")
        served.notes += [note for note in notes if note not in served.notes]
    return served
