"""Using a trained translation run: load one generator from its run folder and translate images of
any size, aspect ratio and channel count (`ganforge translate apply`).

A generator needs sides that are multiples of its downsampling (2^unet_downs for a U-Net, 4 for a
ResNet): an image is padded by replicating its edges up to the next multiple, translated, and
cropped back to its own size, so nothing is stretched. Its channels are converted to the
generator's input (luminance, or grey repeated), and the output has the generator's output
channels. The run's `test_mode` decides BatchNorm and dropout: eval (running statistics, no
dropout) or paper (pix2pix sec. 3.3: the image's own statistics, dropout on).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ganforge.data.decode import image_files
from ganforge.checkpoint import load_named, module_state
from ganforge.data.pixels import normalize, to_uint8
from ganforge.device import resolve_device
from ganforge.errors import CheckpointError, ConfigError
from ganforge.io import atomic_write_bytes, display_path
from ganforge.outputs import OutputFolder, distinct_stems, run_record
from ganforge.translate.config import TranslateConfig
from ganforge.translate.data import BAD_IMAGE_ERRORS, read_image, to_tensor
from ganforge.translate.models import build_generator
from ganforge.trained import Trained



def translator_meta(cfg: TranslateConfig, direction: str, step: int) -> dict:
    """What a file needs to be used without the run folder: channels, the side multiple, pixels."""
    c_in, c_out = cfg.source_channels(), cfg.target_channels()
    if direction == "BtoA":
        c_in, c_out = c_out, c_in
    return {"task": "translate", "model": cfg.model, "config": cfg.to_dict(), "step": step, "mode": cfg.mode,
            "direction": direction, "in_channels": c_in, "out_channels": c_out,
            "multiple": 2 ** cfg.unet_downs if cfg.model == "unet" else 4, "image_size": cfg.image_size,
            "pixel_range": "pm1", "normalization": "input = pixels / 127.5 - 1; images = (output + 1) * 127.5",
            "test_mode": cfg.test_mode, "input_names": ["images"], "output_name": "translated",
            "postprocess": {"round": True, "clip": [0, 255], "crop": "to the input's own size"}}


def _trained(module: torch.nn.Module, cfg: TranslateConfig, meta: dict, source: Path | None, runtime: str) -> Trained:
    multiple = int(meta["multiple"])

    def pre(image: torch.Tensor) -> tuple[torch.Tensor]:
        """uint8 C x H x W (C = in_channels) -> (padded float 1 x C x H' x W' in [-1, 1],): edges
        replicated up to the next multiple of the generator's downsampling."""
        height, width = image.shape[-2:]
        x = normalize(image.unsqueeze(0))
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return (x,)

    def post(raw: torch.Tensor) -> torch.Tensor:
        return to_uint8(raw)  # N x C x H' x W'; translate_image crops it back

    example = pre(torch.zeros(int(meta["in_channels"]), cfg.image_size, cfg.image_size, dtype=torch.uint8))
    return Trained("translate", module, cfg, example, pre, post, meta, source, runtime)


def translate_image(model: Trained, image: torch.Tensor) -> torch.Tensor:
    """uint8 C x H x W -> the translated uint8 C' x H x W, any size and aspect ratio."""
    height, width = image.shape[-2:]
    (x,) = model.preprocess(image)
    return model.postprocess(model(x.to(model.device)))[0, :, :height, :width]


def wrap_exported(module, meta: dict, runtime: str, source: Path) -> Trained:
    """An exported generator with the same padding and pixel conversion as its run."""
    return _trained(module, TranslateConfig.from_dict(meta["config"]), meta, source, runtime)


def load_trained(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu", *,
                 direction: str = "AtoB") -> Trained:
    """The generator of `direction` of a translation run, at its latest checkpoint or `checkpoint`.
    Refuses other runs (a GAN's, a detector's) and BtoA of a pix2pix run, in one line."""
    run = Path(run_dir)
    if not (run / "config.json").is_file() and not (run / "checkpoints").is_dir():
        raise ConfigError(f"{display_path(run)} is not a run folder: give a folder that `ganforge translate train` "
                          "wrote")
    path, tensors, meta = load_named(run / "checkpoints", checkpoint)
    config = meta.get("config", {})
    task = config.get("task", "gan") if isinstance(config, dict) else "unknown"
    if task != "translate":
        what = {"detect": "a detector", "gan": "a GAN"}.get(task, f"a {task}")
        raise ConfigError(f"{display_path(run)} is {what} run, not a translation run: give a folder that "
                          "`ganforge translate train` wrote")
    cfg = TranslateConfig.from_dict(config)
    if direction not in ("AtoB", "BtoA"):
        raise ConfigError(f"bad direction {direction!r}: use AtoB or BtoA")
    if cfg.mode == "pix2pix" and direction == "BtoA":
        raise ConfigError(f"{display_path(run)} is a pix2pix run: its one generator translates {cfg.direction[:1]} "
                          f"to {cfg.direction[-1]} (use --direction AtoB); BtoA needs a CycleGAN run")
    name = "G" if cfg.mode == "pix2pix" else ("G_AB" if direction == "AtoB" else "G_BA")
    try:
        return trained_from_state(cfg, direction, int(meta.get("step", 0)), module_state(tensors, name),
                                  resolve_device(device), path)
    except RuntimeError as err:
        raise CheckpointError(f"{display_path(path)} does not fit its config ({str(err).splitlines()[0]})") from None


def trained_from_state(cfg: TranslateConfig, direction: str, step: int, state: dict[str, torch.Tensor],
                       device: torch.device, source: Path | None = None) -> Trained:
    """The generator of `direction` built anew (this generator only, plain BatchNorm) holding
    `state`, on `device`, in the run's `test_mode`."""
    meta_out = translator_meta(cfg, direction, step)
    net = build_generator(cfg, meta_out["in_channels"], meta_out["out_channels"])
    net.load_state_dict(state)
    net.to(device)
    net.train(cfg.test_mode == "paper")  # paper: the image's own BatchNorm statistics, dropout on
    return _trained(net, cfg, meta_out, source, "pytorch")


OLD_MARKER = ".ganforge-translate"  # what apply's folders carried before the shared output marker


def apply_output(source: str | Path, out: str | Path, *, run_dir: str | Path | None = None,
                 model: str | Path | None = None, force: bool = False) -> OutputFolder:
    """`translate apply`'s --out, checked before the generator loads (the shared rules of
    ganforge.outputs): never the source folder or anything in it, never an entry of the run
    folder or the exported file, never a folder of files ganforge did not write; an earlier
    apply's folder is replaced only with --force."""
    source, out = Path(source), Path(out)
    folder = source if source.is_dir() else source.parent
    if out.is_dir() and os.path.samefile(out, folder):
        raise ConfigError(f"--out {display_path(out)} holds the input images: the outputs take their names and "
                          "would replace them; choose another folder; nothing was written")
    inputs = [source, *(run_record(run_dir) if run_dir else []), *([Path(model)] if model else [])]
    result = OutputFolder(out, "translate apply", inputs=inputs, force=force)
    if (out / OLD_MARKER).is_file():  # a folder from before the shared marker: every file in it is apply's
        result.adopt(lambda name: "/" not in name)
    return result.check()


def output_names(files: list[Path]) -> list[str]:
    """Each output under its input's own name; where two inputs clash (``a.png``, ``A.png`` on a
    case-insensitive disk) the later one gets a ``-2`` before its suffix, never an overwrite."""
    names = []
    for path, name in zip(files, distinct_stems(files)):
        if name == path.stem:
            names.append(path.name)
        elif name == path.name:
            names.append(name)
        else:  # "a.png-2" from distinct_stems: keep the suffix last so the format stays readable
            names.append(path.stem + name[len(path.name):] + path.suffix)
    return names


@torch.no_grad()
def apply_video(model: Trained, source: Path, out: OutputFolder) -> dict:
    """Translate a video frame by frame into OUT/<its name> (same frame count and rate). Returns the
    frame count and the flicker figure: the mean change between consecutive output frames over
    the mean change between consecutive input frames (1: the output flickers as much as the input).
    A video that breaks half-way keeps the frames written and says where it stopped."""
    from ganforge.video import VideoStopped, VideoWriter, fps_of, frames

    target = out.target(source.stem + (source.suffix if source.suffix.lower() in (".mp4", ".mkv", ".avi", ".mov") else ".mp4"))
    change_in = change_out = 0.0
    previous = None
    count = 0
    with VideoWriter(target, fps_of(source)) as writer:
        try:
            for _, frame in frames(source):
                image = frame if model.meta["in_channels"] == 3 else frame.float().mul(
                    torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True).round().byte()
                translated = translate_image(model, image)
                if previous is not None:
                    change_in += float((image.float() - previous[0].float()).abs().mean())
                    change_out += float((translated.float() - previous[1].float()).abs().mean())
                previous = (image, translated)
                writer.write(translated)
                count += 1
        except VideoStopped as err:
            raise VideoStopped(f"{err}; the {count} frames before it are in {display_path(target)}", err.frame) from None
    flicker = change_out / change_in if change_in > 0 else None
    return {"images": count, "video": target, "flicker": flicker}


@torch.no_grad()
def apply_files(model: Trained, source: str | Path, out: OutputFolder, log=print) -> dict:
    """Translate each image file of `source` (or a video) into `out`, checked and opened by the
    caller, each output under its input's name. Returns counts."""
    from ganforge.video import VIDEO_SUFFIXES

    if Path(source).is_file() and Path(source).suffix.lower() in VIDEO_SUFFIXES:
        return apply_video(model, Path(source), out)
    files = image_files(source)
    written, unreadable = 0, []
    for path, name in zip(files, output_names(files)):
        try:
            image = to_tensor(read_image(path, model.meta["in_channels"]))
        except BAD_IMAGE_ERRORS as err:
            unreadable.append(path.name)
            log(f"warning: {display_path(path)} could not be read ({type(err).__name__}): skipped")
            continue
        array = translate_image(model, image).permute(1, 2, 0).numpy()
        grey = model.meta["out_channels"] == 1
        picture = Image.fromarray(array[..., 0] if grey else array, "L" if grey else "RGB")
        encoded = io.BytesIO()
        picture.save(encoded, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        atomic_write_bytes(out.target(name), encoded.getvalue())
        written += 1
    return {"images": written, "unreadable": unreadable}


def examples(run_dir: Path, n: int = 4, direction: str = "AtoB") -> tuple[list[tuple[str, bytes]], list[str]]:
    """Up to `n` inputs of the run's held-out split (the side that the generator of `direction`
    reads: a CycleGAN run's B for BtoA) as PNG bytes, at the run's load size, made in memory and
    never written; none, with a note, when the split cannot be read."""
    import json

    from ganforge.io import first_line
    from ganforge.translate.run import open_split

    try:
        cfg = TranslateConfig.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        data = open_split(cfg, "test")
    except Exception as err:  # noqa: BLE001 - no examples is a note, not a failure: the page takes any image
        return [], [f"note: no example images for {display_path(run_dir)}: its held-out split cannot be read "
                    f"({first_line(err)})"]
    reads_b = cfg.direction == "BtoA" if cfg.mode == "pix2pix" else direction == "BtoA"
    side = data.b if reads_b else data.a
    out = []
    count = min(n, len(side))
    for i in range(count):  # spread over the split (the built-in sets run in class order: not four 0s)
        array = side[i * len(side) // count].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB").save(
            buf, format="PNG")
        out.append((f"{i}.png", buf.getvalue()))
    return out, []
