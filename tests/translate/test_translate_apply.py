"""`ganforge translate apply`: one generator, any size and channel count, refusals in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.translate.recipes import get_recipe
from ganforge.translate.train import train
from ganforge.translate.use import load_trained

TOY = {"ngf": 4, "ndf": 4, "threads": 1, "batch_size": 2, "sample_images": 2, "log_every": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    p2p = train(apply_overrides(get_recipe("pix2pix-small"), {**TOY, "channels_b": 3}), root / "p2p", steps=2,
                log=lambda *_: None)
    cyc = train(apply_overrides(get_recipe("cyclegan-small"), {**TOY, "data": "digits2mnist", "channels_b": 3,
                                                               "lambda_idt": 0.0}), root / "cyc", steps=2,
                log=lambda *_: None)
    return p2p, cyc


def _images(folder):
    folder.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (37, 53), dtype=np.uint8), "L").save(folder / "odd_grey.png")
    Image.fromarray(rng.randint(0, 255, (5, 70, 3), dtype=np.uint8), "RGB").save(folder / "thin_rgb.png")
    Image.fromarray(rng.randint(0, 255, (64, 33, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    return {"odd_grey.png": (53, 37), "thin_rgb.png": (70, 5), "alpha.png": (33, 64)}


@pytest.mark.parametrize("direction,channels", [("AtoB", 3), ("BtoA", 1)])
def test_cyclegan_apply_at_odd_sizes_and_channels(runs, tmp_path, capsys, direction, channels):
    sizes = _images(tmp_path / "in")
    code = main(["translate", "apply", str(runs[1]), "--source", str(tmp_path / "in"), "--out",
                 str(tmp_path / "out"), "--direction", direction])
    assert code == 0, capsys.readouterr().err
    for name, size in sizes.items():
        with Image.open(tmp_path / "out" / name) as out:
            assert out.size == size  # cropped back to the input's own size
            assert out.mode == ("RGB" if channels == 3 else "L")


def test_pix2pix_apply_one_file_grey_to_colour(runs, tmp_path):
    _images(tmp_path / "in")
    assert main(["translate", "apply", str(runs[0]), "--source", str(tmp_path / "in" / "thin_rgb.png"),
                 "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "thin_rgb.png") as out:
        assert out.size == (70, 5) and out.mode == "RGB"
    model = load_trained(runs[0])
    assert model.task == "translate" and model.meta["in_channels"] == 1 and model.meta["out_channels"] == 3
    assert model.meta["multiple"] == 32 and not model.module.training  # eval: BatchNorm's running statistics
    assert model.postprocess(model(*model.example)).shape == (1, 3, 32, 32)


def test_apply_refusals_are_one_line(runs, tmp_path, capsys):
    _images(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    cases = [
        (["translate", "apply", str(runs[0]), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "o1"),
          "--direction", "BtoA"], "pix2pix run"),
        (["translate", "apply", str(runs[1]), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "in")],
         "would replace them"),
        (["translate", "apply", str(runs[1]), "--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")],
         "does not exist"),
        (["translate", "apply", str(tmp_path / "in"), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "o3")],
         "not a run folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("ganforge: error: ") and message in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before  # inputs untouched


def test_apply_refuses_a_gan_run(tmp_path, capsys):
    from pathlib import Path

    gan_run = Path(__file__).parents[1] / "fixtures" / "v1-run"  # a GAN run folder (format 1)
    _images(tmp_path / "in")
    code = main(["translate", "apply", str(gan_run), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ganforge: error: ") and "a GAN run, not a translation run" in err, err
    assert not (tmp_path / "o").exists()


def test_onnx_export_of_the_generator_gives_the_same_images(runs, tmp_path):
    import torch

    from ganforge.export.read import load_exported
    from ganforge.export.write import export_run
    from ganforge.translate.use import translate_image

    path = export_run(runs[0], tmp_path / "g.onnx")
    exported, trained = load_exported(path), load_trained(runs[0])
    assert exported.runtime == "onnxruntime" and exported.meta["direction"] == "AtoB"
    x = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    diff = (translate_image(exported, x).int() - translate_image(trained, x).int()).abs()
    assert int(diff.max()) <= 1  # the same pre- and post-processing; float rounding at most


def test_apply_translates_a_video_frame_by_frame(runs, tmp_path, capsys):
    import torch

    from ganforge.video import frames, write_video

    clip = tmp_path / "clip.mp4"
    base = torch.zeros(3, 30, 46, dtype=torch.uint8)
    moving = []
    for t in range(6):
        frame = base.clone()
        frame[:, 8:20, 4 + 4 * t:14 + 4 * t] = 255  # a square moving right
        moving.append(frame)
    write_video(moving, clip, fps=5)
    assert main(["translate", "apply", str(runs[1]), "--source", str(clip), "--out", str(tmp_path / "out")]) == 0
    assert "flicker" in capsys.readouterr().out
    out = list(frames(tmp_path / "out" / "clip.mp4"))
    assert len(out) == 6 and out[0][1].shape == (3, 30, 46)  # the same frame count and size


def test_apply_with_an_exported_model_writes_the_same_images(runs, tmp_path, capsys):
    from ganforge.export.write import export_run

    _images(tmp_path / "in")
    for i, run in enumerate(runs):
        model = export_run(run, tmp_path / f"g{i}.onnx")
        assert main(["translate", "apply", str(run), "--source", str(tmp_path / "in"), "--out",
                     str(tmp_path / f"torch{i}")]) == 0
        assert main(["translate", "apply", "--model", str(model), "--source", str(tmp_path / "in"), "--out",
                     str(tmp_path / f"ort{i}")]) == 0
        assert "(onnxruntime)" in capsys.readouterr().out
        for name in ("odd_grey.png", "thin_rgb.png", "alpha.png"):
            a = np.asarray(Image.open(tmp_path / f"torch{i}" / name), dtype=np.int16)
            b = np.asarray(Image.open(tmp_path / f"ort{i}" / name), dtype=np.int16)
            assert a.shape == b.shape and int(np.abs(a - b).max()) <= 1  # within 1/255
    cases = [(["--model", str(tmp_path / "g1.onnx"), "--direction", "BtoA"], "translates AtoB"),
             ([str(runs[0]), "--model", str(tmp_path / "g0.onnx")], "not both"),
             (["--model", str(tmp_path / "in" / "alpha.png")], "ganforge export")]
    for extra, message in cases:
        assert main(["translate", "apply", *extra, "--source", str(tmp_path / "in"), "--out",
                     str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ganforge: error: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()


def test_apply_output_follows_the_shared_rules(runs, tmp_path, capsys):
    _images(tmp_path / "in")
    argv = ["translate", "apply", str(runs[1]), "--source", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    listed = (tmp_path / "out" / ".ganforge-output").read_text().splitlines()
    assert json.loads(listed[0])["command"] == "translate apply"
    assert sorted(listed[1:]) == ["alpha.png", "odd_grey.png", "thin_rgb.png"]
    assert main(argv) == 2 and "--force" in capsys.readouterr().err  # earlier results kept without --force
    (tmp_path / "out" / "odd_grey.png").unlink()
    assert main([*argv, "--force"]) == 0 and (tmp_path / "out" / "odd_grey.png").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for out in (tmp_path / "mine", runs[1] / "samples"):  # not ganforge's; inside the run
        assert main([*argv[:-1], str(out), "--force"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    old = tmp_path / "old"  # a folder from before the shared marker is adopted as apply's
    old.mkdir()
    (old / ".ganforge-translate").write_text('{"format": "ganforge-translate-apply"}')
    (old / "alpha.png").write_bytes(b"earlier")
    assert main([*argv[:-1], str(old), "--force"]) == 0
    assert not (old / ".ganforge-translate").exists() and (old / "alpha.png").read_bytes() != b"earlier"


def test_clashing_names_get_distinct_outputs():
    from pathlib import Path

    from ganforge.translate.use import output_names

    assert output_names([Path("a.png"), Path("b.jpg")]) == ["a.png", "b.jpg"]
    assert output_names([Path("a.png"), Path("a.jpg")]) == ["a.png", "a.jpg"]
    assert output_names([Path("A.png"), Path("a.png")]) == ["A.png", "a-2.png"]
