"""Video in and out over PyAV (its wheels ship FFmpeg; no system FFmpeg is needed).

`frames(source)` yields uint8 3 x H x W frames one at a time from a video file (any container and
codec FFmpeg reads), a folder of images, a camera index or a stream URL, so a video is never held
in memory. `VideoWriter` encodes frames as they come: H.264 in MP4, FFV1 (lossless) in MKV, MJPEG
in AVI. Bad input is one `DataError` line; a video that breaks half-way raises `VideoStopped` after
the frames before the break were yielded, naming the frame where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import torch

from ganforge.errors import ConfigError, DataError
from ganforge.io import display_path

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # a folder's frames
CODECS = {".mp4": ("libx264", "yuv420p"), ".mkv": ("ffv1", "bgr0"), ".avi": ("mjpeg", "yuvj420p"),
          ".mov": ("libx264", "yuv420p")}
# x264's default preset ("medium") cost ~67 ms a 640x480 frame on two busy cores, more than decoding
# and a small detector together; "ultrafast" ~8 ms, the file ~20 % larger
X264 = {"crf": "18", "preset": "ultrafast"}
DECODE_THREADS = {"thread_type": "AUTO"}  # FFmpeg decodes the next frames in its threads while this one is used


class VideoStopped(DataError):
    """The video broke after some frames: those were used, the rest could not be decoded."""

    def __init__(self, message: str, frame: int) -> None:
        super().__init__(message)
        self.frame = frame


def _av():
    try:
        import av
    except ImportError:
        raise ConfigError("PyAV is not installed: pip install av") from None
    return av


def kind(source: str | os.PathLike) -> str:
    """camera (a number), stream (a URL), frames (a folder), video or image (a file)."""
    text = str(source)
    if text.isdigit():
        return "camera"
    if "://" in text:
        return "stream"
    path = Path(text)
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def _open(source: str):
    """An input container of a video file, camera or URL; one line for what cannot be opened."""
    av = _av()
    what = kind(source)
    try:
        if what == "camera":
            device = f"/dev/video{source}"
            if not os.path.exists(device):
                raise DataError(f"camera {source} is not there ({device} does not exist): connect one, or give a "
                                "video file, a folder of frames or a stream URL")
            return av.open(device, format="v4l2")
        if what == "video" and not Path(source).is_file():
            raise DataError(f"--source {display_path(source)} does not exist: give a video file, a folder of frames, "
                            "a camera index or a stream URL")
        return av.open(source, timeout=stream_timeout()) if what == "stream" else av.open(source)
    except av.error.FFmpegError as err:
        raise DataError(f"{display_path(source)} cannot be opened as a video ({err.strerror or err}): give a file "
                        "that FFmpeg reads (MP4, MKV, AVI, ...)") from None


def fps_of(source: str | os.PathLike, default: float = 25.0) -> float:
    """The source's frame rate (a folder of frames and unknown rates: `default`)."""
    if kind(source) in ("frames", "image"):
        return default
    container = _open(str(source))
    try:
        rate = container.streams.video[0].average_rate if container.streams.video else None
        return float(rate) if rate else default
    finally:
        container.close()


def frames(source: str | os.PathLike, *, stride: int = 1, max_frames: int | None = None,
           clock: dict | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(frame number, uint8 3 x H x W) for every `stride`-th frame, at most `max_frames` of them.
    `clock["decode"]` accumulates the seconds spent decoding."""
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise ConfigError("--vid-stride and --max-frames must be positive")
    clock = clock if clock is not None else {}
    clock.setdefault("decode", 0.0)
    source = str(source)
    if kind(source) == "frames":
        yield from _folder(Path(source), stride, max_frames, clock)
        return
    av = _av()
    container = _open(source)
    try:
        if not container.streams.video:
            raise DataError(f"{display_path(source)} holds no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise DataError(f"{display_path(source)} is in a codec this FFmpeg cannot decode: convert it "
                            "(e.g. to H.264 or FFV1)")
        for name, value in DECODE_THREADS.items():
            setattr(stream.codec_context, name, value)
        decoded = container.decode(stream)
        index = yielded = 0
        ended = False
        while max_frames is None or yielded < max_frames:
            start = time.perf_counter()
            try:
                frame = next(decoded)
            except StopIteration:
                ended = True
                break
            except (av.error.FFmpegError, ValueError) as err:
                if index == 0:
                    raise DataError(f"{display_path(source)} could not be decoded ({err}): give a video file "
                                    "that FFmpeg reads") from None
                raise VideoStopped(f"{display_path(source)} stopped decoding at frame {index} ({err}); the "
                                   f"{yielded} frames before it were used", index) from None
            if index % stride == 0:
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                clock["decode"] += time.perf_counter() - start
                yield index, image
                yielded += 1
            index += 1
        if index == 0:
            raise DataError(f"{display_path(source)} has no frames")
        expected = _expected_frames(container, stream)
        if ended and expected and index < expected - 1:  # FFmpeg ends a cut-short file quietly
            raise VideoStopped(f"{display_path(source)} ended at frame {index} of the {expected} its header "
                               f"announces (the file is cut short); the {yielded} frames before it were used", index)
    finally:
        container.close()


STREAM_TIMEOUT = 10.0  # seconds a live stream may send nothing before it counts as stopped


def stream_timeout() -> float:
    """How long a stalled stream is waited for: $GANFORGE_STREAM_TIMEOUT seconds, else STREAM_TIMEOUT."""
    value = os.environ.get("GANFORGE_STREAM_TIMEOUT", "").strip()
    try:
        seconds = float(value) if value else STREAM_TIMEOUT
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ConfigError(f"GANFORGE_STREAM_TIMEOUT={value!r} is not a positive number of seconds: set it to how "
                          f"long a stalled stream is waited for, or unset it ({STREAM_TIMEOUT:g} s)")
    return seconds


def _expected_frames(container, stream) -> int | None:
    """The frame count a file's header announces (None for a live source or an unknown count)."""
    if stream.frames:
        return int(stream.frames)
    if container.duration and stream.average_rate:
        return round(container.duration / 1_000_000 * float(stream.average_rate))
    return None


def _folder(folder: Path, stride: int, max_frames: int | None, clock: dict) -> Iterator[tuple[int, torch.Tensor]]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{display_path(folder)} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
    for number, path in enumerate(files[::stride][:max_frames]):
        start = time.perf_counter()
        try:
            with Image.open(path) as img:
                image = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise VideoStopped(f"frame {display_path(path)} could not be read ({type(exc).__name__}); the "
                               f"{number} frames before it were used", number * stride) from None
        clock["decode"] += time.perf_counter() - start
        yield number * stride, image


class VideoWriter:
    """Frames in, a video file out, encoded as they come (its size is the first frame's)."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CODECS:
            raise ConfigError(f"cannot write video {display_path(self.path)}: use .mp4, .mkv, .avi or .mov")
        self.codec, self.pix_fmt = CODECS[suffix]
        self.fps = Fraction(fps).limit_denominator(1001)
        self.container = self.stream = None
        self.frames = 0

    def write(self, image: torch.Tensor) -> None:
        """Append a uint8 C x H x W frame (1 or 3 channels)."""
        av = _av()
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        if self.pix_fmt.endswith("420p"):  # 4:2:0 chroma needs even sides: repeat the last row/column
            pad_h, pad_w = image.shape[1] % 2, image.shape[2] % 2
            if pad_h or pad_w:
                image = torch.nn.functional.pad(image[None].float(), (0, pad_w, 0, pad_h), mode="replicate")[0].byte()
        if self.container is None:
            self.container = av.open(str(self.path), mode="w")
            self.stream = self.container.add_stream(self.codec, rate=self.fps)
            self.stream.width, self.stream.height = image.shape[2], image.shape[1]
            self.stream.pix_fmt = self.pix_fmt
            if self.codec == "libx264":
                self.stream.options = dict(X264)
        frame = av.VideoFrame.from_ndarray(image.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
        for packet in self.stream.encode(frame.reformat(format=self.pix_fmt)):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(images, path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write an iterable of uint8 C x H x W frames (e.g. a GAN's progress grids) as a video."""
    with VideoWriter(path, fps) as writer:
        for image in images:
            writer.write(image)
    return Path(path)


def frames_to_video(frames_dir: str | os.PathLike, out: str | os.PathLike, fps: float = 5.0) -> Path | None:
    """The PNG frames of a folder (natural name order, as `viz.make_gif`) as a video; None if it
    has none. The last frame is held for a second, as in the GIF."""
    import numpy as np
    from PIL import Image

    from ganforge.viz import _natural_key

    files = sorted((p for p in Path(frames_dir).glob("*.png") if not p.name.startswith(".")), key=_natural_key)
    if not files:
        return None

    def images():
        for path in files + [files[-1]] * int(fps):
            with Image.open(path) as img:
                yield torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)

    return write_video(images(), out, fps)
