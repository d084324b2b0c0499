"""Use a trained generator: load it from a run, generate images, write PNGs and a grid."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_checkpoint, load_latest
from .config import TrainConfig, from_dict
from .errors import CheckpointError, ConfigError
from .models import build_models
from .viz import save_grid, to_uint8


@torch.no_grad()
def generate(model: nn.Module, n: int, latent_dim: int, *, seed: int = 0, device="cpu",
             pixel_range: str = "pm1", batch_size: int = 500) -> torch.Tensor:
    """`n` images from `model` in eval mode as uint8 N x C x H x W (CPU). Uses its own RNG only."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=gen)
    was_training = model.training
    model.eval()
    try:
        chunks = [to_uint8(model(z[i:i + batch_size].to(device)), pixel_range)
                  for i in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def load_generator(run_dir: str | Path, checkpoint: str | Path | None = None, *, device="cpu",
                   use_ema: bool = True, log=print) -> tuple[nn.Module, TrainConfig, dict]:
    """The generator of a run (its EMA weights when the run kept them), its config and the
    checkpoint's meta. `checkpoint` may be a checkpoint folder or a name inside `checkpoints/`."""
    run_dir = Path(run_dir)
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
        _, tensors, meta = load_latest(run_dir / "checkpoints", log=log)
    cfg = from_dict(meta["config"])
    generator, _ = build_models(cfg)
    prefix = "EMA.module." if use_ema and any(k.startswith("EMA.module.") for k in tensors) else "G."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint does not match model {cfg.model!r}: {str(err).splitlines()[0]}") from None
    return generator.to(device).eval(), cfg, meta


def sample_to_dir(run_dir: str | Path, n: int, out: str | Path, *, seed: int = 0,
                  checkpoint: str | Path | None = None, device="cpu") -> Path:
    """Write `n` PNG images and `grid.png` to `out`."""
    if n <= 0:
        raise ConfigError(f"bad value --n {n}: must be greater than zero")
    generator, cfg, _ = load_generator(run_dir, checkpoint, device=device)
    images = generate(generator, n, cfg.latent_dim, seed=seed, device=device,
                      pixel_range=cfg.pixel_range)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    width = len(str(n - 1))
    for i, img in enumerate(images):
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(out / f"{i:0{width}d}.png")
    save_grid(images[:min(n, 64)], out / "grid.png", nrow=max(1, int(math.sqrt(min(n, 64)))))
    return out
