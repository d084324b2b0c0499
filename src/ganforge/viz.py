"""What a person looks at: sample grids, the training GIF and the loss curves."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from ganforge.io import atomic_write_bytes, atomic_writer, read_metrics




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


def save_labelled_grid(images_u8: torch.Tensor, path: Path, nrow: int, row_labels: list[str],
                       rows_per_label: int, column_labels: list[str]) -> Path:
    """A grid (as :func:`save_grid`) with a label to the left of each block of `rows_per_label`
    rows and one above each column, so a reader can tell which block and value is which."""
    from PIL import Image, ImageDraw, ImageFont

    grid = Image.fromarray(grid_array(images_u8, nrow)).convert("RGB")
    cell_h, cell_w = images_u8.shape[2] + 2, images_u8.shape[3] + 2  # make_grid's 2-pixel padding
    font = ImageFont.load_default(size=11)
    left = max(int(font.getlength(t)) for t in row_labels) + 10
    top = 16
    page = Image.new("RGB", (grid.width + left, grid.height + top), "white")
    page.paste(grid, (left, top))
    draw = ImageDraw.Draw(page)
    for i, text in enumerate(row_labels):  # centred on its block, a rule between blocks
        y0 = top + i * rows_per_label * cell_h
        draw.text((4, y0 + rows_per_label * cell_h / 2), text, fill="black", font=font, anchor="lm")
        if i:
            draw.line([(0, y0), (left - 3, y0)], fill="#888888")
    wide = max(font.getlength(t) for t in column_labels) + 4 <= cell_w
    for j, text in enumerate(column_labels):
        if not wide and j not in (0, len(column_labels) - 1):
            continue  # small cells: the two ends only, so the labels do not run into each other
        draw.text((left + j * cell_w + cell_w / 2, top / 2), text, fill="black", font=font, anchor="mm")
    buf = io.BytesIO()
    page.save(buf, format="PNG")
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


def plot_curves(metrics_path: Path, out: Path) -> Path | None:
    """losses.png: G and D loss, D(x) / D(G(z)) / D accuracy, and FID when evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path, kind="train") if "g_loss" in r]
    if not rows:
        return None
    evals = [r for r in read_metrics(metrics_path, kind="eval") if "fid" in r]
    steps = [r["step"] for r in rows]
    panels = 3 if evals else 2
    style = "o-" if len(rows) < 3 else "-"  # a line needs two points: mark a short run's few
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), dpi=100)
    axes[0].plot(steps, [r["d_loss"] for r in rows], style, label="D loss")
    axes[0].plot(steps, [r["g_loss"] for r in rows], style, label="G loss")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[0].set_title("losses")
    axes[1].plot(steps, [r["d_real"] for r in rows], style, label="D(x)")
    axes[1].plot(steps, [r["d_fake"] for r in rows], style, label="D(G(z))")
    axes[1].plot(steps, [r["d_acc"] for r in rows], style, label="D accuracy")
    axes[1].axhline(0.5, color="grey", lw=0.5, ls="--")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("discriminator")
    if evals:
        axes[2].plot([r["step"] for r in evals], [r["fid"] for r in evals], "o-", label="FID")
        axes[2].set_xlabel("step")
        axes[2].set_title("FID (lower is better)")
        axes[2].legend()
    fig.tight_layout()
    try:
        with atomic_writer(out, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out
