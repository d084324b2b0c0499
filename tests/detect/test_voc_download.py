"""VOC downloads with checksums, against a server on 127.0.0.1 serving a tiny tar in the official
layout (VOCdevkit/VOC2007/...), and the paper's VOC07+12 merge."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from ganforge.data import download
from ganforge.detect.datasets import DETECTION_DATASETS, open_detection_data
from ganforge.errors import DataError
from conftest import served_mirror

XML = ("<annotation><filename>{stem}.jpg</filename><object><name>{name}</name><difficult>{d}</difficult>"
       "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object></annotation>")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    with served_mirror(tmp_path / "served", monkeypatch, "{name}/") as served:
        yield served


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _voc_tar(path: Path, year: str, split: str, items: list[tuple[str, str, int]]) -> str:
    """A tar of VOCdevkit/VOC<year> with `items` (id, class, difficult); returns its MD5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = f"VOCdevkit/VOC{year}"
    with tarfile.open(path, "w") as tar:
        for stem, name, difficult in items:
            jpg = io.BytesIO()
            Image.new("RGB", (40, 30), (10, 200, 10)).save(jpg, format="JPEG")
            _add(tar, f"{base}/JPEGImages/{stem}.jpg", jpg.getvalue())
            _add(tar, f"{base}/Annotations/{stem}.xml", XML.format(stem=stem, name=name, d=difficult).encode())
        _add(tar, f"{base}/ImageSets/Main/{split}.txt", "".join(f"{s}\n" for s, _, _ in items).encode())
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_voc2007_downloads_checks_extracts_and_loads(mirror, monkeypatch, tmp_path):
    md5 = _voc_tar(mirror / "voc2007" / "VOCtrainval_06-Nov-2007.tar", "2007", "trainval",
                   [("000005", "chair", 0), ("000007", "car", 1)])
    monkeypatch.setitem(download.CHECKSUMS, ("voc2007", "VOCtrainval_06-Nov-2007.tar"), md5)
    data = open_detection_data("voc2007", "trainval", quiet=True)
    assert len(data) == 2 and data.names[8] == "chair"
    assert data.records[0].boxes.tolist() == [[2, 3, 30, 20]] and data.records[0].labels.tolist() == [8]
    assert data.records[1].difficult.tolist() == [True]
    assert (tmp_path / "data" / "voc" / "VOCtrainval_06-Nov-2007.tar").is_file()
    # a second load reads the extracted folder: nothing is fetched again
    (mirror / "voc2007" / "VOCtrainval_06-Nov-2007.tar").unlink()
    assert len(open_detection_data("voc2007", "trainval", quiet=True)) == 2


def test_a_wrong_checksum_deletes_the_download_and_says_so(mirror, tmp_path):
    _voc_tar(mirror / "voc2012" / "VOCtrainval_11-May-2012.tar", "2012", "trainval", [("a", "cat", 0)])
    with pytest.raises(DataError, match=r"VOCtrainval_11-May-2012.tar .* has MD5 \w+, expected "
                                        r"6cd6e144f989b92b3379bac3b3de84fd; the file was deleted"):
        open_detection_data("voc2012", "trainval", quiet=True)
    assert not list((tmp_path / "data" / "voc").glob("*.tar*"))


def test_offline_voc_names_the_file_and_the_offline_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_MIRROR", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(DataError, match=r"voc2007: cannot download .*VOCtest_06-Nov-2007.tar.*offline datasets digits-det"):
        open_detection_data("voc2007", "test", quiet=True)


def test_voc0712_is_both_trainvals_for_training_and_2007_test(mirror, monkeypatch):
    for year, name, split, items in (("2007", "VOCtrainval_06-Nov-2007.tar", "trainval", [("a", "dog", 0)]),
                                     ("2007", "VOCtest_06-Nov-2007.tar", "test", [("t", "cat", 0)]),
                                     ("2012", "VOCtrainval_11-May-2012.tar", "trainval", [("b", "cow", 0), ("c", "bus", 0)])):
        md5 = _voc_tar(mirror / f"voc{year}" / name, year, split, items)
        monkeypatch.setitem(download.CHECKSUMS, (f"voc{year}", name), md5)
    train = open_detection_data("voc07+12", "train", quiet=True)
    assert [r.image.stem for r in train.records] == ["a", "b", "c"]
    test = open_detection_data("voc07+12", "test", quiet=True)
    assert [r.image.stem for r in test.records] == ["t"]
    assert "voc07+12" in DETECTION_DATASETS and DETECTION_DATASETS.get("digits-det").offline


def test_an_archive_escaping_its_folder_is_refused(mirror, monkeypatch):
    path = mirror / "voc2007" / "VOCtrainval_06-Nov-2007.tar"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w") as tar:
        _add(tar, "../../evil.txt", b"x")
    monkeypatch.setitem(download.CHECKSUMS, ("voc2007", path.name), hashlib.md5(path.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="escapes its folder"):
        open_detection_data("voc2007", "trainval", quiet=True)
