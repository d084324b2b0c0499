"""Export: every registered model family at toy size, through ONNX Runtime and TorchScript, gives
the PyTorch outputs (max abs difference <= 1e-4 at batch 1 and 2); the CLI exports real runs, and
`sample`, `detect predict` and `detect val` take the file in place of the run with the same
results; foreign or altered files are refused in one line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch

from conftest import assert_ok, ganforge, one_error_line
from ganforge.detect.layers import POOL
from ganforge.detect.model import DETECTORS, YoloV1
from ganforge.detect.recipes import get_recipe as detect_recipe
from ganforge.detect.use import from_net
from ganforge.export.read import load_exported
from ganforge.export.write import export_trained
from ganforge.gan.recipes import RECIPES, get_recipe
from ganforge.gan.use import from_generator
from ganforge.gan.models import MODELS, build_models

TOLERANCE = 1e-4
# One recipe per GAN family, plus the conditional and InfoGAN ones: the registry at toy widths.
GAN_CASES = sorted({next(n for n, r in RECIPES.items() if r.config.model == m) for m in MODELS
                    if any(r.config.model == m for r in RECIPES.values())} | {"cgan-mnist", "cdcgan", "infogan-mnist"})


def _toy_gan(recipe: str):
    cfg = replace(get_recipe(recipe), base_filters=4, g_hidden=16, class_embed=4)
    torch.manual_seed(0)
    generator, _ = build_models(cfg)
    return from_generator(generator, cfg)


def _narrow(name: str, factor: int = 16) -> YoloV1:
    """The registered detector's layer pattern (kernels, strides, pools, 1x1 reductions) at 1/factor width."""
    info = DETECTORS.get(name)
    convs = tuple(c if c == POOL else replace(c, out=max(4, c.out // factor)) for c in info.convs)
    head = tuple(replace(fc, width=max(8, fc.width // factor)) if fc.width else fc for fc in info.head)
    torch.manual_seed(0)
    return YoloV1(convs, head, info.input_size, 3, batchnorm=info.batchnorm)


def _toy_detector(name: str):
    net = _narrow(name)
    for m in net.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return from_net(net, replace(detect_recipe("adam"), model=name), ["a", "b", "c"])


def _inputs(model, batch: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(batch)
    out = []
    for x in model.example:
        x = x.repeat(batch, *[1] * (x.dim() - 1))
        if x.is_floating_point():
            x = torch.rand(x.shape, generator=gen) if model.task == "detect" else torch.randn(x.shape, generator=gen)
        elif batch > 1:
            x = x.clone()
            x[1:] = (x[0] + 1) % max(2, len(model.meta["class_names"]))
        out.append(x)
    return tuple(out)


def _parity(model, path: Path) -> list[float]:
    exported = load_exported(path)
    assert exported.task == model.task and exported.meta["input_names"] == model.meta["input_names"]
    diffs = []
    for batch in (1, 2):
        inputs = _inputs(model, batch)
        ours, theirs = model(*inputs), exported(*inputs)
        assert theirs.shape == ours.shape
        diffs.append((ours - theirs).abs().max().item())
    return diffs


@pytest.mark.parametrize("recipe", GAN_CASES)
def test_every_gan_family_exports_to_onnx_and_torchscript_with_parity(recipe, tmp_path):
    model = _toy_gan(recipe)
    for fmt, batch in (("onnx", None), ("torchscript", 1)):  # fixed batch 1 runs batch 2 in chunks
        path = export_trained(model, tmp_path / f"g-{batch}.{fmt}", fmt=fmt, batch=batch)
        assert max(_parity(model, path)) <= TOLERANCE, (fmt, batch)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_exports_with_parity_and_the_same_detections(name, tmp_path):
    model = _toy_detector(name)
    path = export_trained(model, tmp_path / "d.onnx", fmt="onnx", batch=None)
    assert max(_parity(model, path)) <= TOLERANCE
    script = export_trained(model, tmp_path / "d.pt", fmt="torchscript", batch=1)
    assert max(_parity(model, script)) <= TOLERANCE
    # the exported file's own pre- and post-processing give the PyTorch detections
    from ganforge.detect.use import detect_images

    images = [torch.randint(0, 256, (3, 90, 130), dtype=torch.uint8), torch.randint(0, 256, (3, 60, 60),
                                                                                    dtype=torch.uint8)]
    ours = detect_images(model, images, conf=0.0001, iou=0.5)
    theirs = detect_images(load_exported(path), images, conf=0.0001, iou=0.5)
    for a, b in zip(ours, theirs):
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3) and torch.allclose(a["scores"], b["scores"], atol=1e-5)


def test_the_file_carries_its_meta(tmp_path):
    model = _toy_gan("infogan-mnist")
    path = export_trained(model, tmp_path / "g.onnx", batch=1)
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["ganforge"])
    assert meta["format"] == "ganforge-model" and meta["task"] == "gan" and meta["batch"] == 1
    assert meta["latent"]["inputs"] == ["z", "codes"] and meta["latent"]["categorical"] == 10
    assert [c["name"] for c in meta["latent"]["codes"]][:1] == ["category"]
    assert meta["inputs"][0] == {"name": "z", "shape": [1, model.config.latent_dim], "dtype": "float32"}
    assert meta["pixel_range"] == model.config.pixel_range and meta["channels"] == 1


def test_foreign_and_altered_files_are_refused_in_one_line(tmp_path, capsys):
    from ganforge.cli import main

    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign), dynamo=True)
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    model = _toy_gan("default")
    altered = export_trained(model, tmp_path / "g.onnx", batch=1)
    proto = onnx.load(str(altered))
    proto.graph.input[0].name = "noise"  # inputs no longer what its metadata says
    proto.graph.node[0].input[0] = "noise" if proto.graph.node[0].input[0] == "z" else proto.graph.node[0].input[0]
    onnx.save(proto, str(altered))
    for path, words in ((foreign, "ganforge did not export"), (tmp_path / "junk.onnx", "neither an ONNX"),
                        (altered, "has inputs"), (tmp_path / "missing.onnx", "is not a file")):
        code = main(["sample", "--model", str(path), "--out", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_export_cli_on_a_gan_run_and_sample_from_the_file(gan_run, tmp_path):
    out = tmp_path / "g.onnx"
    proc = ganforge("export", gan_run, "--out", out, "--batch", "dynamic")
    assert_ok(proc)
    assert "wrote" in proc.stdout.decode() and out.is_file()
    assert_ok(ganforge("sample", gan_run, "--n", "10", "--out", tmp_path / "torch"))
    assert_ok(ganforge("sample", "--model", out, "--n", "10", "--out", tmp_path / "ort"))
    from PIL import Image
    import numpy as np

    for name in ("0.png", "9.png", "grid.png"):
        a = np.asarray(Image.open(tmp_path / "torch" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "ort" / name), dtype=int)
        assert np.abs(a - b).max() <= 1  # uint8 rounding of outputs equal to 1e-4
    # existing output: refused without --force; never a file ganforge did not export, nor the run
    assert "exists" in one_error_line(ganforge("export", gan_run, "--out", out))
    assert_ok(ganforge("export", gan_run, "--out", out, "--force"))
    (tmp_path / "mine.onnx").write_text("precious")
    assert "not a file ganforge exported" in one_error_line(ganforge("export", gan_run, "--out",
                                                                     tmp_path / "mine.onnx", "--force"))
    assert (tmp_path / "mine.onnx").read_text() == "precious"
    assert "own input" in one_error_line(ganforge("export", gan_run, "--out", gan_run / "g.onnx"))
    assert "holds a gan model" in one_error_line(ganforge("detect", "predict", "--model", out, "--source",
                                                          tmp_path / "torch", "--out", tmp_path / "p"))
