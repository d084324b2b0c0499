"""Translation dataset downloads: checksums, safe extraction, served from 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import served_mirror
from ganforge.cli import main
from ganforge.errors import DataError
from ganforge.translate import download as dl
from ganforge.translate.data import open_translation_data


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    with served_mirror(tmp_path / "served", monkeypatch, "{name}/") as served:
        yield served


def _png(value: int, size=(8, 6)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _zip(path, members: dict[str, bytes]) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def test_cyclegan_zip_downloads_checks_extracts_and_trains_data(mirror, monkeypatch, tmp_path):
    members = {f"horse2zebra/{side}/{i}.png": _png(40 * i) for side in ("trainA", "trainB", "testA", "testB")
               for i in range(2)}
    size, sha = _zip(mirror / "cyclegan" / "horse2zebra.zip", members)
    monkeypatch.setitem(dl.ARCHIVES, "horse2zebra", ("cyclegan", size, sha))
    assert main(["translate", "download", "horse2zebra", "--quiet"]) == 0
    folder = tmp_path / "data" / "translate" / "horse2zebra"
    assert sorted(p.name for p in folder.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    data = open_translation_data("horse2zebra", "train", load_size=16, channels_a=3, channels_b=3)
    assert not data.paired and len(data.a) == 2
    (mirror / "cyclegan" / "horse2zebra.zip").unlink()  # a second call finds the folder
    assert dl.download("horse2zebra", quiet=True) == folder


def test_a_wrong_checksum_deletes_the_download(mirror, monkeypatch, tmp_path, capsys):
    size, _ = _zip(mirror / "cyclegan" / "apple2orange.zip", {"apple2orange/trainA/a.png": _png(1)})
    monkeypatch.setitem(dl.ARCHIVES, "apple2orange", ("cyclegan", size, "0" * 64))
    assert main(["translate", "download", "apple2orange", "--quiet"]) == 2
    assert "has SHA-256" in capsys.readouterr().err
    assert not list((tmp_path / "data" / "translate").glob("apple2orange*"))


def test_pix2pix_needs_a_checksum_and_extracts_a_tar(mirror, tmp_path):
    with pytest.raises(DataError, match="no published checksum .* --sha256"):
        dl.download("facades", quiet=True)
    archive = mirror / "pix2pix" / "facades.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "val"):
            data = _png(90, size=(16, 8))  # side by side A | B
            info = tarfile.TarInfo(f"facades/{split}/1.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    folder = dl.download("facades", sha256=sha, quiet=True)
    assert (folder / "train" / "1.png").is_file()
    assert len(open_translation_data("facades", "test", load_size=8, channels_a=3, channels_b=3).a) == 1


@pytest.mark.parametrize("member", ["../evil.png", "/abs/evil.png"])
def test_unsafe_zip_members_are_refused_before_anything_is_written(mirror, monkeypatch, tmp_path, member):
    size, sha = _zip(mirror / "cyclegan" / "horse2zebra.zip", {"horse2zebra/trainA/ok.png": _png(1), member: b"x"})
    monkeypatch.setitem(dl.ARCHIVES, "horse2zebra", ("cyclegan", size, sha))
    with pytest.raises(DataError, match="outside its folder"):
        dl.download("horse2zebra", quiet=True)
    assert not (tmp_path / "data" / "translate" / "horse2zebra").exists()
    assert not (tmp_path / "data" / "evil.png").exists()


def test_offline_download_is_one_line(monkeypatch):
    monkeypatch.setenv("GANFORGE_MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(DataError, match=r"cannot download .*horse2zebra.zip.*offline built-ins"):
        dl.download("horse2zebra", quiet=True)
    with pytest.raises(DataError, match="not downloaded yet"):
        open_translation_data("monet2photo", "train", load_size=8, channels_a=3, channels_b=3)
