"""Image decoding as a person meets it: every Pillow mode, wrong IDX shapes, broken symlinks and
names that are not UTF-8, through `python -m ganforge` on files the tests make."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_FOLDER_RUN, assert_ok, decode_cache, ganforge, one_error_line
from PIL import Image

from ganforge.data import load_dataset
from ganforge.data.decode import BACKGROUND, to_8bit

SIZE = 32
RAMP = np.linspace(0.0, 1.0, SIZE)[None, :].repeat(SIZE, 0)  # 0 on the left, 1 on the right
EXPECT = np.rint(RAMP * 255).astype(np.uint8)  # the 8-bit gradient every intensity mode must give


def _grey_palette() -> list[int]:
    return [v for i in range(256) for v in (i, i, i)]


def write_modes(folder: Path) -> dict[str, np.ndarray]:
    """One SIZE x SIZE file per Pillow mode, each holding a known picture; returns, per file name,
    the uint8 H x W x 3 pixels it must decode to (grey repeated to RGB; alpha onto white)."""
    folder.mkdir(parents=True, exist_ok=True)
    grey = np.dstack([EXPECT] * 3)
    expected: dict[str, np.ndarray] = {}

    def save(name: str, image: Image.Image, pixels: np.ndarray) -> None:
        image.save(folder / name)
        expected[name] = pixels

    save("i16.png", Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)), grey)  # I;16
    save("i16b.tif", Image.fromarray(np.rint(RAMP * 65535).astype(">u2")), grey)  # I;16B
    save("i16.pgm", Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)), grey)  # read as I
    save("i32.tif", Image.fromarray(np.rint(RAMP * 65535).astype(np.int32)), grey)  # I
    save("f01.tif", Image.fromarray(RAMP.astype(np.float32)), grey)  # F in [0, 1]
    save("f255.tif", Image.fromarray((RAMP * 255).astype(np.float32)), grey)  # F in [0, 255]
    save("l.png", Image.fromarray(EXPECT), grey)
    bilevel = np.dstack([(RAMP >= 0.5).astype(np.uint8) * 255] * 3)
    save("one.png", Image.fromarray(RAMP >= 0.5), bilevel)  # mode 1
    palette = Image.fromarray(EXPECT, "P")
    palette.putpalette(_grey_palette())
    save("p.png", palette, grey)
    colour = Image.fromarray(EXPECT, "P")
    colour.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    save("p_colour.png", colour, np.dstack([EXPECT, np.zeros_like(EXPECT), 255 - EXPECT]))
    keyed = grey.copy()
    keyed[:, 0] = BACKGROUND  # palette index 0 (the left column) is transparent
    for ext in ("png", "gif"):
        transparent = Image.fromarray(EXPECT, "P")
        transparent.putpalette(_grey_palette())
        transparent.info["transparency"] = 0
        save(f"p_transparent.{ext}", transparent, keyed)
    # Black ink whose opacity rises to the right: on white, it reads as a falling gradient.
    fading = np.dstack([255 - EXPECT] * 3)
    save("la.png", Image.fromarray(np.dstack([np.zeros_like(EXPECT), EXPECT]), "LA"), fading)
    pa = Image.new("PA", (SIZE, SIZE))  # palette index 0 (black) everywhere, alpha as above
    pa.putpalette(_grey_palette())
    pa.putalpha(Image.fromarray(EXPECT))
    save("pa.tif", pa, fading)
    red = np.dstack([np.full_like(EXPECT, 255), np.zeros_like(EXPECT), np.zeros_like(EXPECT), EXPECT])
    save("rgba.png", Image.fromarray(red, "RGBA"), np.dstack([np.full_like(EXPECT, 255), 255 - EXPECT,
                                                               255 - EXPECT]))
    cmyk = np.dstack([np.zeros_like(EXPECT)] * 3 + [255 - EXPECT])  # K only: RGB = 255 - K
    save("cmyk.tif", Image.fromarray(cmyk, "CMYK"), grey)
    save("rgb.png", Image.fromarray(np.dstack([EXPECT, 255 - EXPECT, np.zeros_like(EXPECT)])),
         np.dstack([EXPECT, 255 - EXPECT, np.zeros_like(EXPECT)]))
    return expected


def test_the_files_are_in_the_modes_they_claim(tmp_path):
    write_modes(tmp_path)
    modes = {}
    for p in sorted(tmp_path.iterdir()):
        with Image.open(p) as image:
            modes[p.name] = image.mode
    assert modes == {
        "cmyk.tif": "CMYK", "f01.tif": "F", "f255.tif": "F", "i16.pgm": "I", "i16.png": "I;16",
        "i16b.tif": "I;16B", "i32.tif": "I", "l.png": "L", "la.png": "LA", "one.png": "1",
        "p.png": "P", "p_colour.png": "P", "p_transparent.gif": "P", "p_transparent.png": "P",
        "pa.tif": "PA", "rgb.png": "RGB", "rgba.png": "RGBA",
    }


def _assert_pixels(images: torch.Tensor, expected: dict[str, np.ndarray]) -> None:
    for image, (name, want) in zip(images, sorted(expected.items()), strict=True):
        got = image.permute(1, 2, 0).numpy().astype(int)
        error = np.abs(got - want.astype(int)).max()
        assert error <= 1, f"{name}: off by up to {error}"


def test_every_mode_decodes_to_its_intensities_in_memory_and_streamed(tmp_path):
    expected = write_modes(tmp_path / "modes")
    memory = load_dataset(str(tmp_path / "modes"), quiet=True)
    assert memory.images.shape == (len(expected), 3, SIZE, SIZE)  # colour files present: RGB
    _assert_pixels(memory.images, expected)
    stream = load_dataset(str(tmp_path / "modes"), quiet=True, stream=True)
    assert torch.equal(stream.decode(list(range(len(stream)))), memory.images)


def test_grey_modes_and_grey_palettes_make_a_one_channel_folder(tmp_path):
    expected = write_modes(tmp_path / "all")
    grey = tmp_path / "grey"
    grey.mkdir()
    names = ["f01.tif", "i16.pgm", "i16.png", "i16b.tif", "i32.tif", "la.png", "one.png", "p.png",
             "p_transparent.png"]
    for name in names:
        (grey / name).write_bytes((tmp_path / "all" / name).read_bytes())
    ds = load_dataset(str(grey), quiet=True)
    assert ds.images.shape == (len(names), 1, SIZE, SIZE)
    _assert_pixels(ds.images.expand(-1, 3, -1, -1), {n: expected[n] for n in names})


def test_premultiplied_grey_alpha_is_composited_too():
    # "La" comes from no file format, but Pillow can hold it: half-covered black reads as mid-grey.
    la = Image.fromarray(np.dstack([np.zeros((2, 2), np.uint8), np.full((2, 2), 128, np.uint8)]), "LA")
    out = np.asarray(to_8bit(la.convert("La")))
    assert out.dtype == np.uint8 and out.shape == (2, 2) and np.all(np.abs(out.astype(int) - 127) <= 1)


def test_train_on_a_folder_of_every_mode_through_the_cli(tmp_path):
    expected = write_modes(tmp_path / "modes")
    proc = ganforge("train", "default", "--data", tmp_path / "modes", "--out", tmp_path / "run",
                    "image_size=32", "channels=3", *TINY_FOLDER_RUN)
    assert_ok(proc)
    # What training read is what the decode cache holds: check it, file by file.
    _assert_pixels(decode_cache(tmp_path / "cache")["images"], expected)


# --------------------------------------------------------------------------- IDX image shape


def test_idx_with_a_consistent_but_wrong_image_shape_is_refused(tmp_path):
    root = tmp_path / "data" / "mnist"  # $GANFORGE_DATA/mnist, where `--data mnist` looks
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train-images-idx3-ubyte", 6), ("t10k-images-idx3-ubyte", 3)):
        images = rng.integers(0, 256, (n, 14, 56), dtype=np.uint8)  # 784 bytes each, like 28 x 28
        header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
        (root / f"{stem}.gz").write_bytes(gzip.compress(header + images.tobytes()))
    for stem, n in (("train-labels-idx1-ubyte", 6), ("t10k-labels-idx1-ubyte", 3)):
        header = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
        (root / f"{stem}.gz").write_bytes(gzip.compress(header + bytes(n)))
    proc = ganforge("train", "seed004-mlp-mnist", "--data", "mnist", "--out", tmp_path / "run",
                    "--steps", "1", "--quiet")
    line = one_error_line(proc)
    assert "14x56" in line and "28x28" in line and "train-images-idx3-ubyte.gz" in line, line
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- symlinks


def _grey_images(folder: Path, count: int, names: str = "img_{:04d}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / names.format(i))


def test_dangling_symlink_and_symlink_loop_count_as_unreadable_files(tmp_path):
    photos = tmp_path / "photos"
    _grey_images(photos, 200)
    os.symlink(tmp_path / "gone.png", photos / "zz_dangling.png")
    os.symlink(photos / "zz_loop.png", photos / "zz_loop.png")  # a link to itself: ELOOP
    proc = ganforge("train", "seed004-mlp-mnist", "--data", photos, "--out", tmp_path / "run",
                    "--steps", "1", "batch_size=4", "--quiet", "--device", "cpu")
    err = assert_ok(proc)
    assert "skipped 2 of 202 files that are not readable images (first: zz_dangling.png)" in err
    streamed = load_dataset(str(photos), quiet=True, stream=True)
    assert len(streamed) == 200 and all(".png" in f.name and "zz_" not in f.name for f in streamed.files)


# --------------------------------------------------------------------------- names that are not UTF-8


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_folder_and_file_names_that_are_not_utf8(tmp_path):
    base = os.fsencode(tmp_path)
    photos = base + b"/ph\xffotos"
    os.mkdir(photos)
    _grey_images(Path(os.fsdecode(photos)), 120, names=os.fsdecode(b"im\xfe") + "{:03d}.png")
    with open(photos + b"/bad\xfd.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    run = os.fsdecode(base + b"/run")
    strict = {"PYTHONIOENCODING": "utf-8"}  # stdout refuses to print raw bytes, as on most desktops
    proc = ganforge("train", "seed004-mlp-mnist", "--data", photos, "--out", run, "--steps", "1",
                    "batch_size=4", "--quiet", "--device", "cpu", env=strict)
    err = assert_ok(proc)
    assert "skipped 1 of 121 files that are not readable images (first: bad\\xfd.png)" in err, err
    assert "\\udc" not in err  # shown as the bytes they are, not as Python's surrogates
    assert_ok(ganforge("train", "--resume", run, "--steps", "2", "--quiet", env=strict))
    # A refusal names the folder safely too.
    for i in range(3):
        with open(photos + b"/worse\xfc%d.png" % i, "wb") as f:
            f.write(b"not an image")
    line = one_error_line(ganforge("train", "seed004-mlp-mnist", "--data", photos, "--out", run + "2",
                                   "--quiet", env=strict))
    assert "4 of 124 files in " in line and "ph\\xffotos" in line and "\\udc" not in line, line


# --------------------------------------------------------------------------- one decoder for every task


def _detection_yaml(root: Path, images: Path) -> Path:
    (root / "data.yaml").write_text(f"path: {images}\ntrain: .\nval: .\nnames: [thing]\n")
    return root / "data.yaml"


def _tiny_detector():
    from ganforge.detect.config import DetectConfig
    from ganforge.detect.model import build_detector
    from ganforge.detect.use import from_net

    return from_net(build_detector("yolov1-s", 1, fc_width=8), DetectConfig(), ["thing"])


def _predict(files: list[Path], out: Path, **options) -> dict:
    from ganforge.detect.use import predict_files
    from ganforge.outputs import OutputFolder

    folder = OutputFolder(out, "detect predict", inputs=files).check().open()
    return predict_files(_tiny_detector(), files, folder, **options)


def test_the_detector_decodes_every_mode_as_the_gan_decoder_does(tmp_path):
    """Training and validation (a DetectionSet) and prediction (the drawn copy, with no box over
    the threshold) see the pixels the GAN loader sees: 16-bit scaled, float TIFFs, alpha on white."""
    from ganforge.data.decode import decode_file
    from ganforge.detect.yolo_txt import load_yolo
    from ganforge.outputs import distinct_stems

    expected = write_modes(tmp_path / "modes")
    data = load_yolo(_detection_yaml(tmp_path, tmp_path / "modes"), "train")
    assert not data.issues, data.issues.lines()
    files = sorted(expected)
    assert [r.image.name for r in data.records] == files
    gan = torch.stack([torch.from_numpy(decode_file(tmp_path / "modes" / n, 3, SIZE)).permute(2, 0, 1)
                       for n in files])
    for i, name in enumerate(files):
        assert torch.equal(data[i][0], gan[i]), name  # training reads items
        assert torch.equal(data.readable(i), gan[i]), name  # validation reads them this way
    _assert_pixels(gan, expected)
    predicted = tmp_path / "predicted"
    sources = [tmp_path / "modes" / n for n in files]
    counts = _predict(sources, predicted, conf=1.5, iou=0.5, log=lambda line: None)
    assert counts == {"images": len(files), "boxes": 0, "unreadable": []}
    for i, (name, out) in enumerate(zip(files, distinct_stems(sources))):
        drawn = np.asarray(Image.open(predicted / f"{out}.png"))  # with nothing drawn: the decoded image
        assert torch.equal(torch.from_numpy(drawn).permute(2, 0, 1), gan[i]), name


def test_a_tiny_png_that_claims_12000x12000_pixels_is_refused_by_every_task(tmp_path):
    from ganforge.detect.yolo_txt import load_yolo

    images = tmp_path / "images"
    images.mkdir()
    Image.new("1", (12000, 12000)).save(images / "bomb.png")  # 17 KB on disk, 144 Mpixels decoded
    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "fine.png")
    assert (images / "bomb.png").stat().st_size < 150_000
    # The GAN loader refuses the folder (1 of 2 files bad is more than it accepts).
    proc = ganforge("train", "seed004-mlp-mnist", "--data", images, "--out", tmp_path / "run",
                    "--steps", "1", "--quiet", "--device", "cpu")
    assert "1 of 2 files" in one_error_line(proc)
    # The detection loader counts it, says why, and goes on with the other image.
    data = load_yolo(_detection_yaml(tmp_path, images), "train")
    assert [r.image.name for r in data.records] == ["fine.png"]
    (where, reason), = data.issues.items
    assert where.endswith("bomb.png") and reason.startswith("image too large: Image size (144000000 pixels)")
    # predict skips it with one line and writes nothing for it.
    lines: list[str] = []
    counts = _predict([images / "bomb.png", images / "fine.png"], tmp_path / "out", conf=0.5, iou=0.5,
                      log=lines.append)
    assert counts["unreadable"] == ["bomb.png"] and counts["images"] == 1
    assert len(lines) == 1 and "bomb.png could not be read (image too large" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "fine.json", "fine.png", "fine.txt"]
