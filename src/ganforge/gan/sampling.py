"""Use a trained generator: load it from a run, generate images, write PNGs and a grid."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import torch
from torch import nn

from ganforge.checkpoint import build_for_state, check_state_meta, load_checkpoint, load_latest, module_state, upgrade_state
from ganforge.data.pixels import to_uint8
from ganforge.device import resolve_device
from ganforge.errors import CheckpointError, ConfigError
from ganforge.gan.config import GANConfig
from ganforge.gan.labels import parse_labels
from ganforge.gan.latents import LatentSpec, apply_generator
from ganforge.io import atomic_write_bytes
from ganforge.gan.models import build_models
from ganforge.outputs import OutputFolder, run_record
from ganforge.viz import save_grid


@torch.no_grad()
def generate(model: nn.Module, n: int, latents: LatentSpec, *, seed: int = 0, device="cpu",
             pixel_range: str = "pm1", batch_size: int = 500, labels: list[int] | None = None,
             progress: bool = False) -> torch.Tensor:
    """`n` images from `model` in eval mode as uint8 N x C x H x W (CPU). Uses its own RNG only:
    the latents depend on `seed` alone. A conditional model draws classes 0, 1, 2, ... in turn, or
    cycles through `labels`. `progress` shows a bar on a terminal."""
    latent = latents.fixed(n, seed)
    if labels is not None:
        latent["labels"] = torch.tensor(labels)[torch.arange(n) % len(labels)]
    return generate_latent(model, latent, device=device, pixel_range=pixel_range, batch_size=batch_size,
                           progress=progress)


@torch.no_grad()
def generate_latent(model: nn.Module, latent: dict[str, torch.Tensor], *, device="cpu", pixel_range: str = "pm1",
                    batch_size: int = 500, progress: bool = False) -> torch.Tensor:
    """`model`'s images (eval mode) for a latent batch, as uint8 N x C x H x W on the CPU."""
    from tqdm import tqdm

    n = latent["z"].shape[0]
    was_training = model.training
    model.eval()
    starts = tqdm(range(0, n, batch_size), desc="generating", unit="batch", leave=False,
                  disable=not (progress and sys.stderr.isatty()))
    try:
        chunks = [to_uint8(apply_generator(model, LatentSpec.chunk(latent, i, i + batch_size, device)), pixel_range)
                  for i in starts]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def load_generator(run_dir: str | Path, checkpoint: str | Path | None = None, *, device="cpu",
                   use_ema: bool = True, log=print) -> tuple[nn.Module, GANConfig, dict]:
    """The generator of a run (its EMA weights when the run kept them), its config and the
    checkpoint's meta. `checkpoint` may be a checkpoint folder or a name inside `checkpoints/`."""
    run_dir = Path(run_dir)
    device = resolve_device(str(device))
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists() and (run_dir / "checkpoints" / str(checkpoint)).exists():
            path = run_dir / "checkpoints" / str(checkpoint)
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {checkpoint}: list {run_dir / 'checkpoints'} for valid ones")
        tensors, meta = load_checkpoint(path)
    else:
        if not (run_dir / "checkpoints").is_dir():
            raise CheckpointError(f"{run_dir} has no checkpoints/ folder: is it a ganforge run folder?")
        _, tensors, meta = load_latest(run_dir / "checkpoints", log=log, check=check_state_meta, purpose="using")
    tensors, meta = upgrade_state(tensors, meta)
    task = meta["config"].get("task") if isinstance(meta.get("config"), dict) else None
    if task not in (None, "gan"):  # another task's run: say so, not "unknown keys"
        use = (f"`ganforge detect predict {run_dir} --source IMAGES` or `ganforge detect val {run_dir}`"
               if task == "detect" else f"the `ganforge {task}` commands")
        raise ConfigError(f"{run_dir} is a {'detector' if task == 'detect' else task} run, not a GAN run: "
                          f"sample, eval and explore use a generator; use {use}")
    cfg = GANConfig.from_dict(meta["config"])
    name = "G_ema" if use_ema and "G_ema" in meta.get("modules", []) else "G"
    state = module_state(tensors, name)
    if name == "G_ema":  # an AveragedModel: the generator's own weights sit under `module.`
        state = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    generator = build_for_state(lambda: build_models(cfg)[0], state, f"the {cfg.model!r} checkpoint of {run_dir}")
    return generator.to(device).eval(), cfg, meta


def sample_output(run_dir: str | Path | None, model_file: str | Path | None, checkpoint: str | Path | None,
                  out: str | Path, force: bool = False) -> OutputFolder:
    """`sample`'s --out, checked before the model loads: a new folder (or, with `force`, an earlier
    `sample` folder), never the run folder, anything in it, or the exported model."""
    inputs = [*(run_record(run_dir) if run_dir else []), *([Path(checkpoint)] if checkpoint is not None else []),
              *([Path(model_file)] if model_file else [])]
    return OutputFolder(out, "sample", inputs=inputs, force=force).check()


def sample_to_dir(model, n: int, folder: OutputFolder, *, seed: int = 0, label: int | None = None,
                  labels: str | None = None) -> Path:
    """Write `n` PNG images and `grid.png` into `folder` (checked by `sample_output`) from `model` (a
    `Trained` generator: a run's, or an exported file's); a conditional model's of class `label`, or
    cycling through the comma-separated `labels`."""
    from ganforge.gan.use import images

    if n <= 0:
        raise ConfigError(f"bad value --n {n}: must be greater than zero")
    spec = LatentSpec.from_config(model.config)
    wanted = parse_labels(labels, label, spec.num_classes, model.source)
    latent = spec.fixed(n, seed)
    if wanted is not None:
        latent["labels"] = torch.tensor(wanted)[torch.arange(n) % len(wanted)]
    pictures = images(model, latent, progress=True)
    folder.open()
    from PIL import Image

    width = len(str(n - 1))
    for i, img in enumerate(pictures):
        arr = img.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
        atomic_write_bytes(folder.target(f"{i:0{width}d}.png"), buf.getvalue())
    save_grid(pictures[:min(n, 64)], folder.target("grid.png"), nrow=max(1, int(math.sqrt(min(n, 64)))))
    return folder.path
