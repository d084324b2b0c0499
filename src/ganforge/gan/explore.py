"""`ganforge explore RUN`: walk a trained generator's latent space and write what it shows.

Each exploration is a folder of PNG frames, the same frames as a GIF, and one still that lays the
frames side by side (one row per sample, one column per frame):

- `interpolation`: from one random latent to another, spherically (slerp, the path a Gaussian z
  keeps its norm along) or linearly (`--lerp`); classes and categories stay fixed along a path;
- `traversal`: chosen z dimensions (`--dims`) set to each value of `--range` in turn, the rest fixed
  (the first four dimensions unless `--dims` or `--codes` say otherwise);
- `classes` (a conditional run): one class per frame over the same noise: content against style;
- `code-cat`, `code-c1`, ... (an InfoGAN run): each code traversed with the others held fixed: the
  categorical code over its values, a continuous code over `--range` (or `--codes` picks some).

Everything is drawn from a generator seeded by `--seed` alone, and the run's EMA weights are used
when it kept them.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ganforge.device import resolve_device
from ganforge.errors import ConfigError
from ganforge.gan.latents import Latent, LatentSpec
from ganforge.gan.sampling import generate_latent, load_generator
from ganforge.io import atomic_write_bytes, write_json
from ganforge.outputs import OutputFolder, is_ours, json_with, run_record
from ganforge.video import frames_to_video
from ganforge.viz import grid_array, make_gif, save_grid

DEFAULT_DIMS = 4
EXPLORE = "explore"  # the run's own folder of explorations
_NAMES = ("interpolation", "traversal", "classes")  # with code-*: what explore writes
RECORD = "explore.json"  # the checkpoint step of each picture


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of `a` and `b` (linear where they are parallel)."""
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.arccos((na * nb).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so
    return torch.where(so.abs() < 1e-6, (1 - t) * a + t * b, out)


def parse_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"bad value --range {text!r}: write two numbers, e.g. -2,2") from None
    return low, high


def parse_dims(text: str | None, latent_dim: int) -> list[int]:
    if text is None:
        return []
    try:
        dims = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"bad value --dims {text!r}: write z dimensions separated by commas, e.g. 0,5") from None
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise ConfigError(f"--dims {bad[0]} is beyond the latent size: this run's z has {latent_dim} "
                          f"dimensions, 0 to {latent_dim - 1}")
    return dims


def code_names(spec: LatentSpec) -> list[str]:
    """InfoGAN codes by name: `cat` (the categorical code), then `c1`, `c2`, ..."""
    return (["cat"] if spec.categorical else []) + [f"c{j + 1}" for j in range(spec.continuous)]


def parse_codes(text: str | None, spec: LatentSpec) -> list[str]:
    names = code_names(spec)
    if text is None:
        return names
    if not names:
        raise ConfigError("--codes is for InfoGAN runs; this run has no codes: use --dims")
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    bad = [w for w in wanted if w not in names]
    if bad:
        raise ConfigError(f"unknown code {bad[0]!r}: this run's codes are {', '.join(names)}")
    return wanted


class Explorer:
    """One run's generator, its latent spec, and a seeded random source for the base latents."""

    def __init__(self, generator, spec: LatentSpec, pixel_range: str, seed: int, n: int, frames: int,
                 device: str = "cpu") -> None:
        self.generator, self.spec, self.pixel_range, self.device = generator, spec, pixel_range, device
        self.rng = torch.Generator().manual_seed(seed)
        self.n, self.frames = n, frames
        self.mp4 = False  # also write each exploration as an MP4

    def base(self) -> Latent:
        """n random latents (classes and categories random; continuous codes drawn from U(-1, 1))."""
        return self.spec.sample(self.n, self.rng, "cpu")

    def images(self, latent: Latent) -> torch.Tensor:
        return generate_latent(self.generator, latent, device=self.device, pixel_range=self.pixel_range)

    def write(self, out: OutputFolder, name: str, frames: list[Latent],
              labels: tuple[list[str], list[str]] | None = None) -> list[Path]:
        """Frames as PNGs in out/name/, the GIF out/name.gif, and the still out/name.png (with
        `labels`: (one per block of n rows, one per column) written beside the still's cells)."""
        shots = [self.images(f) for f in frames]
        width = len(str(len(shots) - 1))
        for i, shot in enumerate(shots):
            save_grid(shot, out.target(f"{name}/frame_{i:0{width}d}.png"), nrow=self.n)
        still = torch.stack(shots, 1).flatten(0, 1)  # sample-major: one row per sample
        if labels:
            save_labelled_grid(still, out.target(f"{name}.png"), len(shots), labels[0], self.n, labels[1])
        else:
            save_grid(still, out.target(f"{name}.png"), nrow=len(shots))
        make_gif(out.path / name, out.target(f"{name}.gif"))
        if self.mp4:
            frames_to_video(out.path / name, out.target(f"{name}.mp4"))
        return [out.path / name, out.path / f"{name}.gif", out.path / f"{name}.png"]

    def values(self, low: float, high: float) -> list[float]:
        return torch.linspace(low, high, self.frames).tolist()

    def interpolation(self, spherical: bool) -> list[Latent]:
        a, b = self.base(), self.base()
        out = []
        for t in torch.linspace(0, 1, self.frames).tolist():
            f = dict(a)
            f["z"] = slerp(a["z"], b["z"], t) if spherical else (1 - t) * a["z"] + t * b["z"]
            if "codes" in a:  # the category stays; the continuous codes move in a straight line
                k = self.spec.categorical
                f["codes"] = torch.cat([a["codes"][:, :k], (1 - t) * a["codes"][:, k:] + t * b["codes"][:, k:]], 1)
            out.append(f)
        return out

    def traversal(self, dims: list[int], low: float, high: float) -> list[Latent]:
        """One frame per value; each frame holds every chosen dimension's row of n samples."""
        base = self.base()
        out = []
        for v in self.values(low, high):
            rows = []
            for d in dims:
                f = {k: t.clone() for k, t in base.items()}
                f["z"][:, d] = v
                rows.append(f)
            out.append({k: torch.cat([r[k] for r in rows]) for k in base})
        return out

    def classes(self) -> list[Latent]:
        base = self.base()
        return [{**base, "labels": torch.full((self.n,), k)} for k in range(self.spec.num_classes)]

    def code(self, name: str, low: float, high: float) -> list[Latent]:
        base, k = self.base(), self.spec.categorical
        if k:  # the other codes held fixed: continuous ones at 0 while one moves
            base["codes"][:, k:] = 0
        out = []
        if name == "cat":
            for c in range(k):
                f = dict(base)
                f["codes"] = torch.cat([torch.nn.functional.one_hot(torch.full((self.n,), c), k).float(),
                                        base["codes"][:, k:]], 1)
                out.append(f)
            return out
        j = k + int(name[1:]) - 1
        for v in self.values(low, high):
            f = dict(base)
            f["codes"] = base["codes"].clone()
            f["codes"][:, j] = v
            out.append(f)
        return out


def explore_run(run_dir: str | Path, out: str | Path | None = None, *, seed: int = 0, n: int = 8,
                frames: int = 16, lerp: bool = False, dims: str | None = None, codes: str | None = None,
                value_range: str = "-2,2", checkpoint: str | None = None, device: str = "cpu",
                force: bool = False, mp4: bool = False) -> list[Path]:
    """Write every exploration this run supports into `out` (default RUN/explore, which each
    exploration of the run replaces); the paths written. Another `out` is a new folder, or with
    `force` an earlier `explore` folder (see ganforge.outputs)."""
    if n <= 0 or frames < 2:
        raise ConfigError(f"bad value --n {n} / --frames {frames}: need at least 1 sample and 2 frames")
    inputs = [*run_record(run_dir, own=(EXPLORE,)), *([Path(checkpoint)] if checkpoint is not None else [])]
    if out is None:  # the run's own explore/, replaced by each exploration (one from before markers adopted)
        folder = OutputFolder(Path(run_dir) / EXPLORE, "explore", inputs=inputs, force=True)
        folder.adopt(lambda name: name == RECORD or name.split("/")[0].split(".")[0] in _NAMES
                     or name.startswith("code-"))
    else:
        folder = OutputFolder(out, "explore", inputs=inputs, force=force)
    folder.check()
    low, high = parse_range(value_range)
    generator, cfg, meta = load_generator(run_dir, checkpoint, device=device)
    spec = LatentSpec.from_config(cfg)
    chosen_dims = parse_dims(dims, spec.latent_dim)
    chosen_codes = parse_codes(codes, spec)
    if not chosen_dims and codes is None:
        chosen_dims = list(range(min(DEFAULT_DIMS, spec.latent_dim)))
    out = folder.open()
    ex = Explorer(generator, spec, cfg.pixel_range, seed, n, frames, resolve_device(device))
    ex.mp4 = mp4
    if mp4 and (Path(run_dir) / "samples").is_dir():  # the run's progress grids, as progress.gif has them
        frames_to_video(Path(run_dir) / "samples", out.target("progress.mp4"))
    written = ex.write(out, "interpolation", ex.interpolation(spherical=not lerp))
    if chosen_dims:
        # A block of n rows per dimension, a column per value: say which is which on the still.
        labels = ([f"z[{d}]" for d in chosen_dims], [f"{v:+.1f}" for v in ex.values(low, high)])
        written += ex.write(out, "traversal", ex.traversal(chosen_dims, low, high), labels)
    if spec.conditional:
        written += ex.write(out, "classes", ex.classes())
    for name in chosen_codes:
        written += ex.write(out, f"code-{name}", ex.code(name, low, high))
    _record(out, written, {"checkpoint_step": meta.get("step"), "checkpoint": checkpoint or "latest",
                           "seed": seed, "range": [low, high], "dims": chosen_dims})
    return written


def _record(out: OutputFolder, written: list[Path], entry: dict) -> None:
    """explore.json: which checkpoint step each picture shows, so the report can say it (and say
    when the run has trained past it). Recognised by its content rather than listed in the folder's
    marker, so an explore.json that a person wrote over is left as it is."""
    path = out.path / RECORD
    if path.exists() and not is_ours(path, json_with("pictures")):
        return
    pictures = {p.stem: entry for p in written if p.suffix == ".png"}
    write_json(path, {"pictures": dict(sorted(pictures.items()))})


def add_explore_parser(sub) -> None:
    x = sub.add_parser("explore", help="interpolate, traverse latent dimensions and codes, show classes")
    x.add_argument("run_dir")
    x.add_argument("--out", help="a new output folder (default RUN/explore, replaced each time)")
    x.add_argument("--force", action="store_true", help="replace an earlier `explore` --out folder")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--n", type=int, default=8, help="samples per frame")
    x.add_argument("--frames", type=int, default=16, help="frames per interpolation or traversal")
    x.add_argument("--lerp", action="store_true", help="interpolate linearly (default: spherical, slerp)")
    x.add_argument("--dims", help="z dimensions to traverse, e.g. 0,5,7")
    x.add_argument("--codes", help="InfoGAN codes to traverse, e.g. c1,c2,cat (default: all)")
    x.add_argument("--range", default="-2,2", help="values a traversal sweeps (default -2,2)")
    x.add_argument("--checkpoint", help="checkpoint folder (default: the latest)")
    x.add_argument("--device", default="cpu")
    x.add_argument("--mp4", action="store_true", help="also write each exploration, and the run's progress "
                                                      "grids (progress.mp4), as MP4 video")
    x.set_defaults(func=explore_command)


def explore_command(args) -> int:
    written = explore_run(args.run_dir, args.out, seed=args.seed, n=args.n, frames=args.frames, lerp=args.lerp,
                          dims=args.dims, codes=args.codes, value_range=args.range, checkpoint=args.checkpoint,
                          device=args.device, force=args.force, mp4=args.mp4)
    gifs = [p for p in written if p.suffix == ".gif"]
    print(f"wrote {len(gifs)} explorations to {gifs[0].parent}: " + ", ".join(p.stem for p in gifs))
    return 0


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
