"""Feature networks on real data (accuracy floors, caching, determinism) and the offline Inception path."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from unittest import mock

import pytest
import torch

from ganforge.errors import DataError, GanforgeError
from ganforge.metrics import evaluate_images, feature_nets, get_feature_net, inception
from ganforge.metrics.feature_nets import FeatureNetRecipe, content_hash, train_classifier
from ganforge.metrics.inception import (
    WEIGHTS_ENV,
    WEIGHTS_FILENAMES,
    InceptionFeatures,
    find_inception_weights,
)

TINY = FeatureNetRecipe(
    widths=(4, 8, 8), feature_dim=16, epochs=1, min_train_images=512
)  # seconds, not minutes

# --------------------------------------------------------------------------- fixtures (as in test_metrics)


pytestmark = pytest.mark.usefixtures("shared_metrics_cache", "no_network")


@pytest.fixture(scope="module")
def digits(ganforge_cache):
    from ganforge.data import load_dataset

    return load_dataset("digits", split="train", quiet=True), load_dataset("digits", split="test", quiet=True)


# --------------------------------------------------------------------------- accuracy floors on real data


@pytest.mark.parametrize("name,floor", [("digits", 0.95), ("mnist5k", 0.97)])
def test_feature_net_meets_its_accuracy_floor_and_is_cached(name, floor, ganforge_cache):
    net = get_feature_net(name, quiet=True)
    record = net.record
    assert record["test_accuracy"] >= floor, record
    assert record["id"] == f"cnn-{name}" and len(record["hash"]) == 64
    assert record["n_train"] > record["n_test"] > 0 and record["seconds"] > 0
    folder = ganforge_cache / "feature_nets" / f"{name}-{record['hash'][:16]}"
    assert json.loads((folder / "record.json").read_text()) == record
    assert (folder / "model.safetensors").is_file()


@pytest.mark.slow
def test_fashion_mnist_feature_net_meets_90_percent(ganforge_cache):
    from ganforge.data.idx import SYSTEM_DIRS

    if not any((d / "t10k-labels-idx1-ubyte.gz").exists() for d in SYSTEM_DIRS.get("fashion-mnist", ())):
        pytest.skip("Fashion-MNIST files are not on this machine")
    assert get_feature_net("fashion-mnist", quiet=True).test_accuracy >= 0.90


def test_cached_net_is_loaded_not_retrained(monkeypatch, digits):
    first = get_feature_net("digits", quiet=True)
    monkeypatch.setattr(feature_nets, "train_classifier", mock.Mock(side_effect=AssertionError("retrained")))
    second = get_feature_net("digits", quiet=True)
    assert second.record == first.record
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    assert torch.equal(first.features(x), second.features(x))


# --------------------------------------------------------------------------- recipe, hash, determinism


def test_training_is_deterministic(digits):
    train, test = digits
    a, acc_a, _ = train_classifier(train, test, TINY, quiet=True)
    b, acc_b, _ = train_classifier(train, test, TINY, quiet=True)
    assert acc_a == acc_b
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


def test_hash_covers_dataset_content_and_recipe(digits):
    train, test = digits
    base = content_hash("digits", train, test, TINY)
    assert content_hash("digits", train, test, FeatureNetRecipe(**{**TINY.to_dict(), "seed": 1})) != base
    changed = type(train)(train.name, train.images.clone(), train.labels, train.num_classes, train.source)
    changed.images[0, 0, 0, 0] ^= 1
    assert content_hash("digits", changed, test, TINY) != base


def test_features_are_float64_penultimate_and_inputs_are_resized():
    net = get_feature_net("digits", quiet=True)
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    feats, logits = net.features_and_logits(x)
    assert feats.dtype == torch.float64 and feats.shape == (10, 128) and logits.shape == (10, 10)
    assert torch.allclose(logits, net.module.head(feats.float()).double(), atol=1e-5)
    assert net.features(torch.rand(3, 1, 32, 32)).shape == (3, 128)  # resized to 8x8
    gray_rgb = (torch.rand(4, 1, 16, 16) * 255).to(torch.uint8).expand(-1, 3, -1, -1)
    assert net.extract(gray_rgb)[0].shape == (4, 128)  # uint8, RGB -> gray, resized
    with pytest.raises(DataError, match="1 x H x W"):
        net.features(torch.rand(2, 3, 8, 8))


def test_damaged_cache_entry_is_retrained(monkeypatch, digits):
    net = get_feature_net("digits", quiet=True, recipe=TINY)
    folder = Path(os.environ["GANFORGE_CACHE"]) / "feature_nets" / f"digits-{net.hash[:16]}"
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    calls = []
    real_train = feature_nets.train_classifier
    monkeypatch.setattr(
        feature_nets, "train_classifier", lambda *a, **k: calls.append(1) or real_train(*a, **k)
    )
    again = get_feature_net("digits", quiet=True, recipe=TINY)
    assert calls == [1] and again.hash == net.hash and again.test_accuracy == net.test_accuracy


def test_unlabelled_folder_has_no_feature_net(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / f"{i}.png")
    with pytest.raises(GanforgeError, match="--features inception"):
        get_feature_net(str(tmp_path), quiet=True)


# --------------------------------------------------------------------------- Inception, offline only


def test_absent_inception_weights_is_one_clear_line():
    assert find_inception_weights() is None
    with pytest.raises(GanforgeError) as info:
        InceptionFeatures()
    message = str(info.value)
    assert "\n" not in message
    assert WEIGHTS_FILENAMES[0] in message and WEIGHTS_ENV in message and "never downloads" in message


def test_explicit_missing_weights_path_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(GanforgeError, match="is not a file"):
        find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "also-nope.pth"))
    with pytest.raises(GanforgeError, match=WEIGHTS_ENV):
        find_inception_weights()


def test_weights_are_found_in_env_then_torch_hub_cache(tmp_path, monkeypatch):
    hub = inception.hub_checkpoint_dir()
    hub.mkdir(parents=True, exist_ok=True)
    cached = hub / WEIGHTS_FILENAMES[1]
    cached.write_bytes(b"x")
    try:
        assert find_inception_weights() == cached
        own = tmp_path / "mine.pth"
        own.write_bytes(b"x")
        monkeypatch.setenv(WEIGHTS_ENV, str(own))
        assert find_inception_weights() == own
    finally:
        cached.unlink()


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", ["wrong-tensors", "pickled-code"])
def test_a_file_that_is_not_the_weights_is_refused(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "wrong-tensors":
        torch.save({"conv.weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps({"fc.weight": _Payload()}))
    with pytest.raises(GanforgeError, match="is not the Inception-v3 FID weights") as info:
        InceptionFeatures(path)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory) -> Path:
    """A file shaped like the FID weights but randomly initialised: exercises the real code path."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILENAMES[0]
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
    ):
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), path)
    return path


def test_inception_features_from_a_local_file_score_a_folder(tmp_path, random_inception_weights, monkeypatch):
    from PIL import Image

    # Four images, the fewest precision/recall (k=3) accepts: each Inception forward costs ~6 GFLOP.
    images = torch.randint(
        0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    for i in range(len(images)):
        Image.fromarray(images[i, 0].numpy()).save(tmp_path / f"{i}.png")
    monkeypatch.setenv(WEIGHTS_ENV, str(random_inception_weights))
    result = evaluate_images(images, str(tmp_path), kid_subset_size=4, quiet=True)  # auto -> Inception
    protocol = result["protocol"]
    assert protocol["features"] == "inception-v3-fid" and protocol["feature_test_accuracy"] is None
    assert protocol["feature_dim"] == 2048 and len(protocol["feature_hash"]) == 64
    assert protocol["reference"].endswith(":all") and protocol["n_real"] == 4
    assert (result["precision"], result["recall"]) == (1.0, 1.0)  # the folder holds exactly the fakes
