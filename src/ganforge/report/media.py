"""Pictures on the page: where each one's `src` points, and what a grid's file name says.

A page inside its run folder points at the run's files by relative path, so it stays small and the
trainer can rewrite it at every snapshot cheaply. A page anywhere else (or one that compares runs)
carries its pictures inside as data URIs, so it can be moved, mailed or archived on its own.
"""

from __future__ import annotations

import base64
import re
import string
from pathlib import Path
from urllib.parse import quote

from .collect import Frame

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".webp": "image/webp"}
# An embedded slider keeps at most this many grids (first and last always), and an embedded GIF
# at most this many bytes, so that a page comparing long runs stays a few megabytes.
EMBED_FRAMES = 40
EMBED_GIF_BYTES = 4 << 20


class Media:
    """Turns a run's files into `src` values: relative to `base`, or data URIs when `embed`."""

    def __init__(self, base: Path, embed: bool) -> None:
        self.base = base
        self.embed = embed

    def src(self, path: Path) -> str:
        if self.embed:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"
        return quote(path.relative_to(self.base).as_posix())

    def fits(self, path: Path) -> bool:
        """Whether a GIF can be shown: always beside the page, up to a size when embedded."""
        return not self.embed or path.stat().st_size <= EMBED_GIF_BYTES

    def frames(self, frames: list[Frame]) -> tuple[list[Frame], int]:
        """The frames a slider shows (all, or an even spread when embedding) and how many exist."""
        if not self.embed or len(frames) <= EMBED_FRAMES:
            return frames, len(frames)
        last = len(frames) - 1
        keep = sorted({round(i * last / (EMBED_FRAMES - 1)) for i in range(EMBED_FRAMES)})
        return [frames[i] for i in keep], len(frames)


def image_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the file's header (None when unreadable), to reserve the space."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:  # a grid being written or a damaged file still gets its <img>
        return None


def _template_regex(template: str) -> re.Pattern | None:
    parts = []
    try:
        for literal, name, _spec, _conv in string.Formatter().parse(template):
            parts.append(re.escape(literal))
            if name is not None:
                parts.append(f"(?P<{name}>\\d+)" if name.isidentifier() else r"\d+")
    except ValueError:
        return None
    try:
        return re.compile("".join(parts) + r"$")
    except re.error:
        return None


def frame_label(frame: Frame, template: str = "") -> str:
    """What a grid's file name says in words: `step 200`, `epoch 3`; read through the run's
    `sample_name` template when it matches (`img-{iteration}` counts from 0), else the name."""
    pattern = _template_regex(template) if template else None
    match = pattern.match(frame.label) if pattern else None
    if match:
        found = {k: int(v) for k, v in match.groupdict().items()}
        if "step" in found:
            return f"step {found['step']}"
        if "epoch" in found:
            return f"epoch {found['epoch']}"
        if "iteration" in found:
            return f"step {found['iteration'] + 1} (iteration {found['iteration']})"
    words = re.sub(r"[_\-]+", " ", frame.label).strip()
    return re.sub(r"\b0+(\d)", r"\1", words)


def uniform_grey(path: Path, spread: float = 6.0) -> bool:
    """Whether a sample grid is (nearly) one flat grey: the pixels other than the black padding
    between cells vary by less than `spread` levels (of 255)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float32)
    except (OSError, ValueError):
        return False
    inside = pixels[pixels > 0]
    return inside.size > 0 and float(inside.std()) < spread and 20 < float(inside.mean()) < 235
