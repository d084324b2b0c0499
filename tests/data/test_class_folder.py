"""A folder with one subfolder per class is a labelled dataset: in memory, streamed, cached, through
the CLI, and with its own classifier feature network for the metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_ok, decode_cache, ganforge, real_digit_classes
from PIL import Image

from ganforge.data import BatchSampler, FolderStream, folder, holdout_split, load_dataset
from ganforge.data.stream import StreamBatches


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _shaded(root: Path, layout: dict[str, int], size: int = 8) -> None:
    """`layout` maps a relative file path to the grey level the whole image has."""
    for rel, level in layout.items():
        _write(root / rel, np.full((size, size), level, np.uint8))


def test_class_folder_is_labelled_in_memory_streamed_and_cached(tmp_path, monkeypatch):
    root = tmp_path / "pets"
    _shaded(root, {"dog/a.png": 200, "cat/b.png": 10, "cat/a.png": 20, "dog/old/c.png": 210,
                   "cat/.hidden.png": 99})
    (root / "dog" / "notes.txt").write_text("inside a class folder, ignored")
    calls = []
    original = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: calls.append(a) or original(*a))
    ds = load_dataset(str(root), quiet=True)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2  # sorted, as ImageFolder does
    # Files in sorted path order: cat/a, cat/b, dog/a, dog/old/c (nested files join their class).
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.images[:, 0, 0, 0].tolist() == [20, 10, 200, 210]
    assert ds[2][1] == 1
    again = load_dataset(str(root), quiet=True)
    assert len(calls) == 4 and torch.equal(again.labels, ds.labels)  # from the cache, labels too
    assert again.class_names == ds.class_names
    stream = load_dataset(str(root), quiet=True, stream=True)
    assert isinstance(stream, FolderStream) and stream.class_names == ["cat", "dog"]
    assert torch.equal(stream.labels, ds.labels) and stream.num_classes == 2


def test_labels_follow_the_images_past_unreadable_files(tmp_path):
    root = (tmp_path / "shades").resolve()
    layout = {f"dark/{i:03d}.png": 30 for i in range(150)} | {f"light/{i:03d}.png": 220 for i in range(150)}
    _shaded(root, layout)
    (root / "dark" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # skipped at the scan
    memory = load_dataset(str(root), quiet=True)
    assert len(memory) == 299 and memory.labels.bincount().tolist() == [149, 150]
    assert torch.all((memory.images[:, 0, 0, 0] > 128) == memory.labels.bool())  # light is class 1
    stream = load_dataset(str(root), quiet=True, stream=True)
    last_dark = stream.files.index(root / "dark" / "149.png")
    stream.files[last_dark].write_bytes(b"gone")  # breaks mid-run: a light image stands in for it
    sampler = BatchSampler(len(stream), 16, seed=1)
    batches = StreamBatches(stream, sampler, workers=0, pin_memory=False)
    try:
        seen_substitute = False
        for draw in range(sampler.steps_per_epoch):
            images, labels, unreadable = batches.get(draw, with_labels=True)
            assert torch.equal(labels.bool(), images[:, 0, 0, 0] > 128), draw  # each label its image's
            seen_substitute |= unreadable == {last_dark}
        assert seen_substitute
        assert len(batches.get(0)) == 2  # without labels: (images, unreadable), as before
    finally:
        batches.close()


@pytest.mark.parametrize(
    "layout",
    [
        {"top.png": 1, "a/x.png": 2, "b/y.png": 3},  # an image at the top level
        {"only/x.png": 1, "only/y.png": 2},  # one subfolder is not a choice between classes
        {"a/x.png": 1, "b/y.png": 2, "README.txt": None},  # something else beside the classes
    ],
    ids=["image-at-top", "one-subfolder", "stray-file"],
)
def test_other_layouts_stay_unlabelled(layout, tmp_path, capsys):
    root = tmp_path / "f"
    _shaded(root, {k: v for k, v in layout.items() if v is not None})
    for name in (k for k, v in layout.items() if v is None):
        (root / name).write_text("about this data")
    ds = load_dataset(str(root))
    assert ds.labels is None and ds.num_classes is None and ds.class_names is None
    err = capsys.readouterr().err
    assert ("note: " in err and "README.txt sits beside its 2 subfolders" in err) == ("README.txt" in layout)


def test_holdout_split_is_fixed_and_disjoint(tmp_path):
    ds = load_dataset(str(real_digit_classes(tmp_path / "d", per_class=20)), quiet=True)
    train, test = holdout_split(ds)
    again_train, again_test = holdout_split(ds)
    assert (len(train), len(test)) == (48, 12) and torch.equal(train.images, again_train.images)
    assert train.class_names == ds.class_names and test.num_classes == 3
    both = torch.cat([train.images, test.images]).flatten(1).numpy()
    # Every image in exactly one part: the two parts together are the folder, as a multiset.
    assert sorted(map(bytes, both)) == sorted(map(bytes, ds.images.flatten(1).numpy()))
    streamed = load_dataset(str(tmp_path / "d"), quiet=True, stream=True)
    s_train, s_test = holdout_split(streamed)
    assert torch.equal(s_train.images, train.images) and torch.equal(s_test.labels, test.labels)


def test_a_class_folder_trains_through_the_cli_with_its_labels(tmp_path):
    digits = real_digit_classes(tmp_path / "digits")
    assert_ok(ganforge("train", "seed004-mlp-mnist", "--data", digits, "--out", tmp_path / "run",
                       "--steps", "2", "batch_size=8", "--quiet", "--device", "cpu"))
    cached = decode_cache(Path(os.environ["GANFORGE_CACHE"]))
    assert cached["images"].shape == (180, 1, 28, 28)
    # one, seven, zero: labels by sorted name, in sorted file order.
    assert cached["labels"].tolist() == [0] * 60 + [1] * 60 + [2] * 60


def test_metrics_on_a_class_folder_use_its_own_classifier(tmp_path, monkeypatch):
    from ganforge.metrics import evaluate_images, feature_nets
    from ganforge.metrics.feature_nets import FeatureNetRecipe

    tiny = FeatureNetRecipe(widths=(4, 8, 8), feature_dim=16, epochs=1, min_train_images=512)
    built = []
    real_get = feature_nets.get_feature_net

    def small(name, **kwargs):  # the real function, with a recipe that trains in a second
        built.append(real_get(name, **{**kwargs, "recipe": tiny}))
        return built[-1]

    monkeypatch.setattr(feature_nets, "get_feature_net", small)
    digits = real_digit_classes(tmp_path / "digits")
    fake = load_dataset(str(digits), image_size=28, channels=1, quiet=True).images[::3]
    result = evaluate_images(fake, str(digits), folder_shape=(1, 28), kid_subset_size=20, quiet=True)
    protocol, record = result["protocol"], built[0].record
    assert protocol["features"] == "cnn-digits" and protocol["feature_dim"] == 16
    assert protocol["reference"] == f"folder:{digits.resolve()}:all" and protocol["n_real"] == 180
    assert (record["n_train"], record["n_test"], record["num_classes"]) == (144, 36, 3)  # 80 / 20
    assert (record["image_size"], record["channels"]) == (28, 1)  # the shape the run trained at
    assert result["precision"] > 0.5 and result["fid"] >= 0


@pytest.mark.slow
def test_a_class_folder_run_is_scored_by_ganforge_eval(tmp_path):
    digits = real_digit_classes(tmp_path / "digits")
    run = tmp_path / "run"
    assert_ok(ganforge("train", "seed004-mlp-mnist", "--data", digits, "--out", run, "--steps", "2",
                       "batch_size=8", "--quiet", "--device", "cpu"))
    assert_ok(ganforge("eval", run, "--n", "60"))
    protocol = json.loads((run / "eval.json").read_text())["protocol"]
    # The folder's own classifier, trained on 80 % of it and tested on the other 20 %.
    assert protocol["features"] == "cnn-digits" and protocol["feature_test_accuracy"] >= 0.9, protocol
    assert protocol["reference"] == f"folder:{digits.resolve()}:all" and protocol["n_real"] == 180
