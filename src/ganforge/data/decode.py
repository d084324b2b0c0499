"""One image file to uint8 pixels at the intensities it means, whatever mode Pillow reads it in.

:func:`decode_file` serves the in-memory and the streamed folder paths alike, so both see the same
pixels. The rules, by Pillow mode:
- ``L`` and ``RGB`` (8 bits) are taken as they are; ``1`` (bilevel) reads as 0 or 255; a palette
  (``P``) reads through its palette.
- 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit integer ``I`` (how Pillow
  holds 16-bit PGM and many 16-bit TIFF files) are scaled from 0..65535 to 0..255, not clipped:
  a 0..65535 gradient reads as a 0..255 gradient. Values outside 0..65535 are clipped.
- Float ``F``: values in [0, 1] are scaled to 0..255; an image with any value above 1 is taken to
  be on the 0..255 scale already (the one Pillow's own conversions use). NaN reads as 0.
- Alpha (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, or a palette or colour key with transparency)
  is composited onto a **white** background (:data:`BACKGROUND`): a fully transparent pixel reads
  as white, a half-transparent black one as mid-grey.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and ``RGBX`` are converted to RGB by Pillow.
Greyscale modes, and palettes whose colours are all grey, count as greyscale when a folder's
channel count is chosen.

Every task decodes through this module, with one size limit: a file whose header claims more pixels
than Pillow's ``Image.MAX_IMAGE_PIXELS`` is refused before any pixel is decoded (Pillow itself only
warns up to twice that), so a 140 KB PNG that says 12000 x 12000 never reaches memory.
:func:`decode_file` serves the GAN (square, resized); :func:`decode_native` serves the detector (its
own size and orientation: boxes are given in the file's stored pixel grid, the one its header
describes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ganforge.errors import DataError
from ganforge.io import display_path

# The files every task reads as images (a folder's other files are not images)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")
BACKGROUND = 255  # what transparent pixels are composited onto: white, in every channel
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
GRAY_MODES = frozenset({"1", "L", "LA", "La", "F"}) | SIXTEEN_BIT_MODES
SIXTEEN_BIT_MAX = 65535


def image_problem(exc: BaseException) -> str:
    """The issue a failed decode is counted as: 'image too large: ...' for a file past the size
    limit, else 'corrupt image: <exception type>'."""
    if isinstance(exc, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
        return f"image too large: {str(exc).split(', could be')[0]}; ganforge refuses it"
    return f"corrupt image: {type(exc).__name__}"


def open_image(path: Path) -> Image.Image:
    """Open lazily; PIL only warns between MAX_IMAGE_PIXELS and twice that, we refuse."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def is_gray(image: Image.Image) -> bool:
    """Whether an opened image is greyscale, from its mode (and palette), without decoding pixels."""
    if image.mode in GRAY_MODES:
        return True
    palette = getattr(image, "palette", None)
    if image.mode in ("P", "PA") and palette is not None and palette.mode in ("RGB", "RGBA"):
        raw = np.frombuffer(bytes(palette.palette), dtype=np.uint8)
        step = len(palette.mode)
        colours = raw[: raw.size // step * step].reshape(-1, step)[:, :3]
        return colours.size > 0 and bool((colours == colours[:, :1]).all())
    return False


def probe(path: Path) -> tuple[bool, int]:
    """(is greyscale, shorter side) from the file's header, without decoding pixels."""
    with open_image(path) as image:
        return is_gray(image), min(image.size)


def _quantize(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def to_8bit(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> an 8-bit "L" or "RGB" image, by the rules in the module docstring."""
    mode = image.mode
    if mode in ("L", "RGB") and not _has_alpha(image):
        return image  # the common case, untouched
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_quantize(values * (255.0 / SIXTEEN_BIT_MAX)), "L")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(_quantize(values * scale), "L")
    if mode == "La":  # premultiplied grey + alpha, which Pillow cannot convert
        pixels = np.asarray(image, dtype=np.float64)
        alpha = pixels[..., 1] / 255.0
        return Image.fromarray(_quantize(pixels[..., 0] + BACKGROUND * (1.0 - alpha)), "L")
    if _has_alpha(image):
        gray = is_gray(image)
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)  # un-premultiplies RGBa
        alpha = rgba[..., 3:] / 255.0
        rgb = _quantize(rgba[..., :3] * alpha + BACKGROUND * (1.0 - alpha))
        return Image.fromarray(rgb[..., 0], "L") if gray else Image.fromarray(rgb, "RGB")
    if mode == "1" or is_gray(image):
        return image.convert("L")
    return image.convert("RGB")


def decode_file(path: Path, channels: int, image_size: int) -> np.ndarray:
    """Decode one file to uint8 H x W x C: EXIF-upright, intensities as above, converted to
    `channels` (luminance or grey repeated), shorter side resized to `image_size`, centre-cropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.draft(None, (image_size, image_size))  # JPEG: decode at a reduced scale, much faster
            image = ImageOps.exif_transpose(image)
            image = to_8bit(image).convert("L" if channels == 1 else "RGB")
            image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
    return array.reshape(image_size, image_size, channels)


def decode_native(path: Path) -> np.ndarray:
    """Decode one file to uint8 H x W x 3 RGB at its stored size and orientation (no EXIF turn: a
    detector's boxes are in the grid the header gives), intensities by the rules above."""
    with open_image(path) as image:
        return np.array(to_8bit(image).convert("RGB"), dtype=np.uint8)


def image_files(source: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (sorted; not recursive)."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{display_path(path)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    raise DataError(f"--source {display_path(path)} does not exist: give an image file or a folder of images")
