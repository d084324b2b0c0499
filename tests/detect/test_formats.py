"""YOLO txt, VOC XML and COCO JSON: the same scenes load to the same targets; untrusted files are
counted and reported, and loading goes on; unusable datasets are one line saying what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganforge.detect.coco import load_coco
from ganforge.detect.datasets import open_detection_data
from ganforge.detect.digits import load_digits_det
from ganforge.detect.write_dataset import write_dataset
from ganforge.detect.voc import load_voc
from ganforge.detect.yolo_txt import load_yolo
from ganforge.errors import DataError


@pytest.fixture(scope="module")
def scenes():
    """20 digits-det canvases (some empty, some with four digits) as train and 8 as val."""
    return {"train": load_digits_det("val", count=20), "val": load_digits_det("test", count=8)}


def _same(a, b):
    assert len(a) == len(b) and a.names == b.names
    for ra, rb in zip(a.records, b.records):
        assert ra.size == rb.size
        assert torch.equal(ra.boxes, rb.boxes) and torch.equal(ra.labels, rb.labels)
        assert torch.equal(ra.difficult, rb.difficult)


def test_same_scenes_in_three_formats_load_to_identical_targets(scenes, tmp_path):
    write_dataset(scenes, tmp_path / "yolo", "yolo")
    write_dataset(scenes, tmp_path / "voc", "voc")
    write_dataset(scenes, tmp_path / "coco", "coco")
    for split, original in scenes.items():
        yolo = open_detection_data(str(tmp_path / "yolo" / "data.yaml"), split)
        voc = open_detection_data(str(tmp_path / "voc"), split)
        coco = open_detection_data(str(tmp_path / "coco"), split)
        for loaded in (yolo, voc, coco):
            assert not loaded.issues, loaded.issues.lines()
            _same(original, loaded)
        assert sum(len(r.labels) for r in yolo.records) > len(yolo) // 2  # real boxes, not empties
        assert torch.equal(yolo[3][0], original[3][0])  # the pixels too (PNG is lossless)
    assert not (tmp_path / "yolo/labels/train/train_000000.txt").exists() or len(scenes["train"].records[0].labels)


def _image(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 20, 20)).save(path)
    return path


def _yolo_tree(root: Path, labels: dict[str, str], names="[a, b, c]") -> Path:
    for stem, text in labels.items():
        _image(root / "images" / "train" / f"{stem}.png")
        if text is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/train\nnames: {names}\n")
    return root / "data.yaml"


def test_bad_yolo_labels_are_counted_named_and_skipped(tmp_path):
    yaml_path = _yolo_tree(tmp_path, {
        "good": "0 0.5 0.5 0.25 0.5\n\n2 0.25 0.25 0.1 0.1\n",
        "badclass": "7 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        "outside": "0 0.9 0.5 0.5 0.2\n",
        "zero": "1 0.5 0.5 0 0.2\n1 0.5 0.5 0.2 -0.1\n",
        "malformed": "1 0.5 0.5\nx 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2 0.1 0.3\n",
        "background": None,
    })
    (tmp_path / "images" / "train" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = load_yolo(yaml_path, "train")
    by_name = {r.image.stem: r for r in data.records}
    assert set(by_name) == {"good", "badclass", "outside", "zero", "malformed", "background"}
    assert torch.allclose(by_name["good"].boxes, torch.tensor([[24.0, 12.0, 40.0, 36.0], [12.8, 9.6, 19.2, 14.4]]))
    assert by_name["badclass"].labels.tolist() == [1] and len(by_name["background"].boxes) == 0
    counts = data.issues.counts()
    assert counts == {"class id out of range": 1, "coordinates outside the image": 1,
                      "zero or negative size": 2, "malformed line": 4, "corrupt image": 1}
    lines = data.issues.lines()
    assert any("badclass.txt:1: class id out of range: 7 not in 0..2" in line for line in lines)
    assert any(line.startswith(str(tmp_path / "images/train/corrupt.png")) for line in lines)
    summary = data.issues.summary()
    assert summary.startswith("9 annotation problems in 5 files") and "\n" not in summary


def test_yaml_without_names_or_with_missing_paths_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n")
    with pytest.raises(DataError, match=r"has no 'names': add a list of class names"):
        load_yolo(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("path: nowhere\ntrain: images/train\nval: x\nnames: [a]\n")
    with pytest.raises(DataError, match=r"'path' .*nowhere is not a folder: fix 'path'"):
        load_yolo(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("path: .\ntrain: images/missing\nval: x\nnames: {0: a, 1: b}\n")
    with pytest.raises(DataError, match=r"images/missing does not exist: fix the split's path"):
        load_yolo(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("names: [a\n")
    with pytest.raises(DataError, match=r"is not valid YAML at line"):
        load_yolo(tmp_path / "d.yaml")
    for err in (DataError,):
        with pytest.raises(err, match="unknown detection data 'nope'"):
            open_detection_data("nope", "train")


VOC_XML = """<annotation><filename>{stem}.png</filename><size><width>64</width><height>48</height></size>
{objects}</annotation>"""
OBJ = "<object><name>{name}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>" \
      "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def _voc_tree(root: Path, files: dict[str, str]) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, xml in files.items():
        _image(root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{s}\n" for s in files))
    (root / "names.txt").write_text("cat\ndog\n")
    return root


def test_voc_xml_difficult_conventions_and_hostile_files(tmp_path):
    objs = lambda *o: "".join(OBJ.format(name=n, d=d, b=b) for n, d, b in o)  # noqa: E731
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            '<annotation><filename>bomb.png</filename>&lol2;</annotation>')
    external = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                '<annotation>&x;</annotation>')
    root = _voc_tree(tmp_path / "VOC", {
        "good": VOC_XML.format(stem="good", objects=objs(("cat", 0, (1, 1, 64, 48)), ("dog", 1, (10, 5, 20, 25)))),
        "bad": VOC_XML.format(stem="bad", objects=objs(("horse", 0, (1, 1, 5, 5)), ("cat", 0, (30, 5, 20, 25)),
                                                       ("dog", 0, (10, 5, 90, 25)), ("cat", 0, ("a", 1, 2, 3)),
                                                       ("cat", 0, (2, 2, 9, 9)))),
        "bomb": bomb, "external": external, "broken": "<annotation><object>",
    })
    data = load_voc(root, "trainval")
    assert data.names == ["cat", "dog"]
    good, bad = data.records
    assert good.boxes.tolist() == [[0, 0, 64, 48], [9, 4, 20, 25]]  # 1-based inclusive -> 0-based continuous
    assert good.difficult.tolist() == [False, True] and good.labels.tolist() == [0, 1]
    assert bad.boxes.tolist() == [[1, 1, 9, 9]]
    counts = data.issues.counts()
    assert counts == {"unknown class": 1, "zero or negative size": 1, "coordinates outside the image": 1,
                      "malformed object": 1, "refused XML": 2, "malformed XML": 1}
    assert any("bomb.xml: refused XML: EntitiesForbidden" in line for line in data.issues.lines())


def test_coco_json_crowds_and_bad_entries(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    _image(tmp_path / "imgs" / "b.png")
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"},
                      {"id": 3, "file_name": "../escape.png"}, {"id": 4}],
           "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20]},
               {"id": 2, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 10], "iscrowd": 1},
               {"id": 3, "image_id": 2, "category_id": 9, "bbox": [1, 2, 10, 20]},
               {"id": 4, "image_id": 2, "category_id": 3, "bbox": [1, 2, "x", 20]},
               {"id": 5, "image_id": 2, "category_id": 3, "bbox": [60, 2, 30, 20]},
               {"id": 6, "image_id": 2, "category_id": 3, "bbox": [6, 2, 0, 20]}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    data = load_coco(tmp_path / "ann.json", tmp_path / "imgs")
    assert data.names == ["cat", "dog"]  # ascending category id
    a, b = data.records
    assert a.boxes.tolist() == [[1, 2, 11, 22], [5, 5, 15, 15]] and a.labels.tolist() == [0, 1]
    assert a.difficult.tolist() == [False, True] and len(b.boxes) == 0
    assert data.issues.counts() == {"class id out of range": 1, "malformed annotation": 1,
                                    "coordinates outside the image": 1, "zero or negative size": 1,
                                    "malformed image entry": 2}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_coco(tmp_path / "bad.json")


def test_a_corrupt_image_found_while_training_is_skipped_and_reported(tmp_path):
    yaml_path = _yolo_tree(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    data = load_yolo(yaml_path, "train")
    data.records[0].image.write_bytes(data.records[0].image.read_bytes()[:40])  # truncated after the header check
    image, target = data[0]
    assert target["labels"].tolist() == [1] and image.shape == (3, 48, 64)
    assert data.issues.counts() == {"corrupt image": 1}
