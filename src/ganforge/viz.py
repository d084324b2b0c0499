"""What a person looks at, for any task: picture grids and the GIF of them over training."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from ganforge.io import atomic_write_bytes, atomic_writer


def grid_array(images_u8: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 N x C x H x W -> H x W (x 3) uint8 array of a grid with a 2-pixel border."""
    grid = make_grid(images_u8, nrow=nrow, padding=2, pad_value=0)  # C x H x W
    arr = grid.permute(1, 2, 0).numpy()
    return arr[..., 0] if images_u8.shape[1] == 1 else arr


def save_grid(images_u8: torch.Tensor, path: Path, nrow: int) -> Path:
    """Save a PNG grid atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grid_array(images_u8, nrow)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem))


def make_gif(frames_dir: Path, out: Path, fps: float = 5.0) -> Path | None:
    """Animate the grids in `frames_dir` (natural filename order) into a looping GIF."""
    import imageio.v3 as iio

    frames = sorted((p for p in frames_dir.glob("*.png") if not p.name.startswith(".")),
                    key=_natural_key)
    if not frames:
        return None
    images = [iio.imread(p) for p in frames]
    images += [images[-1]] * int(fps)  # hold the last frame for a second
    with atomic_writer(out, suffix=".gif") as tmp:
        iio.imwrite(tmp, np.stack(images), duration=1000.0 / fps, loop=0)
    return out
