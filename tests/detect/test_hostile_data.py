"""Hostile data files: YAML and JSON that would exhaust the machine, and COCO entries and class
names that would crash a load or silently put boxes on the wrong image or class. Each is one line or
one counted issue saying where it is."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from PIL import Image

from ganforge.detect.coco import load_coco
from ganforge.detect.yolo_txt import load_yolo
from ganforge.documents import MAX_DEPTH, load_json, load_yaml
from ganforge.errors import DataError

LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
                 for p, c in zip(["", *"abcdefgh"], "abcdefghi"))


def _image(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 20, 20)).save(path)
    return path


def _data_yaml(root: Path, body: str) -> Path:
    _image(root / "images" / "a.png")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\n" + body)
    return root / "data.yaml"


def test_billion_laughs_is_refused_before_it_expands(tmp_path):
    body = LAUGHS.replace("i: &i", "names: &i")
    path = _data_yaml(tmp_path, body)
    assert path.stat().st_size < 500  # 9^9 = 387 million strings once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match=r"expands to more than 1,000,000 values once its aliases"):
        load_yolo(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing expanded
    # The same nesting kept under the limit loads, aliases and all.
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nval: images\n"
                                        "a: &a [x, y]\nb: &b [*a, *a]\nnames: {0: cat, 1: dog}\nextra: [*b, *b]\n")
    assert load_yolo(tmp_path / "data.yaml").names == ["cat", "dog"]


@pytest.mark.parametrize("text, message", [
    ("names: " + "[" * 5000 + "]" * 5000, f"nests deeper than {MAX_DEPTH} levels"),
    ("names: " + "{a: " * 3000 + "b" + "}" * 3000, f"nests deeper than {MAX_DEPTH} levels"),
    ("names:\n" + "- " * 3000 + "x", f"nests deeper than {MAX_DEPTH} levels"),
    ("a: &a " + "[" * 60 + "]" * 60 + "\nnames: " + "[" * 60 + "*a" + "]" * 60, "once its aliases"),
    ("names: &a [cat, *a]", "alias that refers to itself"),
    ("names: !!python/object/apply:os.system ['echo owned']", r"uses the tag !!python/object/apply:os.system"),
    ("names: [!!python/name:os.system x]", r"tag !!python/name:os.system .*plain data"),
    ("names: !!binary aGk=\nx: !custom 3", "uses the tag !custom"),
    ("names: [a, b]\nbig: " + "9" * 5000, "holds a value that cannot be read"),
    ("names: [a\n", r"is not valid YAML at line 5"),
    ("? [a, b]\n: 1\nnames: [a]", r"not valid YAML at line 4 \(found unhashable key\)"),
])
def test_hostile_yaml_is_one_line_that_says_what_it_is(tmp_path, text, message):
    path = _data_yaml(tmp_path, text)
    with pytest.raises(DataError, match=message) as err:
        load_yolo(path)
    assert "\n" not in str(err.value) and "syntax" not in str(err.value)


def test_merge_keys_and_plain_tags_still_load(tmp_path):
    path = _data_yaml(tmp_path, "base: &base {nc: 2}\nmore: {<<: *base, extra: !!str 3}\nnames: [!!str 1, b]\n")
    assert load_yaml(path)["more"] == {"nc": 2, "extra": "3"}
    assert load_yolo(path).names == ["1", "b"]


def test_hostile_json_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match=f"deep.json nests deeper than {MAX_DEPTH} levels"):
        load_coco(deep)
    shallow_but_deep = tmp_path / "d2.json"  # deep enough for json, too deep for what walks it
    shallow_but_deep.write_text('{"images": [' + '{"a": ' * 400 + "1" + "}" * 400 + "]}")
    with pytest.raises(DataError, match="nests deeper than"):
        load_coco(shallow_but_deep)
    (tmp_path / "n.json").write_text('{"images": [], "x": ' + "7" * 5000 + "}")
    with pytest.raises(DataError, match="holds a value that cannot be read"):
        load_coco(tmp_path / "n.json")
    (tmp_path / "bin.json").write_bytes(b'{"images": ["\xff"]}')
    with pytest.raises(DataError, match="not UTF-8|not valid JSON"):
        load_json(tmp_path / "bin.json")
    with pytest.raises(DataError, match="is a folder, not a COCO JSON"):
        load_json(tmp_path, "COCO JSON")


def _coco(tmp_path: Path, images, annotations, categories=None) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    doc = {"images": images, "annotations": annotations,
           "categories": categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    return tmp_path / "ann.json"


def _ann(ident, image_id, category_id=1, **extra):
    return {"id": ident, "image_id": image_id, "category_id": category_id, "bbox": [1, 2, 10, 20], **extra}


def test_coco_ids_that_are_lists_or_dicts_are_counted_not_a_crash(tmp_path):
    path = _coco(tmp_path, [{"id": [1], "file_name": "a.png"}, {"id": {"x": 1}, "file_name": "b.png"},
                            {"id": 3, "file_name": "c.png"}],
                 [_ann(1, [1]), _ann(2, {"x": 1}), _ann([5], 3), _ann(4, 3, category_id=[1]),
                  _ann(5, 3, category_id={"a": 1}), _ann(6, 3)])
    data = load_coco(path)
    assert [r.image.name for r in data.records] == ["c.png"]
    assert data.records[0].labels.tolist() == [0, 0]  # annotation [5] and 6: the id of an annotation is only a name
    assert data.issues.counts() == {"malformed image entry": 2, "malformed annotation": 2, "class id out of range": 2}
    lines = data.issues.lines()
    assert any("ann.json:images[0]: malformed image entry: id [1] is not an id" in line for line in lines)
    assert any("ann.json:annotation 2: malformed annotation: image_id {'x': 1}" in line for line in lines)


def test_duplicate_image_ids_never_move_boxes_to_another_image(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"},
                            {"id": 2, "file_name": "c.png"}, {"id": 3, "file_name": "c.png"}],
                 [_ann(1, 1), _ann(2, 2, category_id=2), _ann(3, 3), _ann(4, 99)])
    data = load_coco(path)
    assert [(r.image.name, r.labels.tolist()) for r in data.records] == [("c.png", [1])]
    assert data.issues.counts() == {"duplicate image id": 1, "duplicate image entry": 1,
                                    "annotation of no image": 3}
    assert any(":image 1: duplicate image id" in line for line in data.issues.lines())


def test_duplicate_category_ids_bool_ids_and_string_crowds(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 2, "name": "fox"},
            {"id": True, "name": "bool"}, {"id": 3, "name": None}, {"id": 4, "name": "cat"}]
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png"}],
                 [_ann(1, 1), _ann(2, 1, category_id=2), _ann(3, 1, category_id=True),
                  _ann(4, 1, iscrowd="no"), _ann(5, 1, iscrowd=1), _ann(6, 1, iscrowd=0, category_id=4),
                  _ann(7, 1, iscrowd=2)], cats)
    data = load_coco(path)
    assert data.names == ["cat", "dog", "cat"]  # no class that no box can have; 'fox' is refused
    record, = data.records
    assert record.labels.tolist() == [0, 0, 2] and record.difficult.tolist() == [False, True, False]
    assert data.issues.counts() == {"duplicate category id": 1, "malformed category": 2,
                                    "duplicate category name": 1, "ambiguous class": 1,
                                    "class id out of range": 1, "malformed annotation": 2}
    lines = "\n".join(data.issues.lines())
    assert "annotation 3: class id out of range: category True" in lines
    assert "annotation 4: malformed annotation: iscrowd 'no' is not 0 or 1" in lines
    assert "category 2: duplicate category id: 2 is both 'dog' and 'fox'" in lines


@pytest.mark.parametrize("names, message", [
    ("[cat, [a, b]]", "class name 1 is list, not a name"),
    ("[cat, null]", "class name 1 is null"),
    ("{0: cat, 1: {a: 1}}", "class name 1 is dict"),
    ("[cat, true]", "class name 1 is True"),
    ("[cat, '  ']", "class name 1 is '  '"),
    ("[cat, dog, cat]", "classes 0 and 2 are both named 'cat'"),
    ("{0: a, 1: '0', 2: 0}", "classes 1 and 2 are both named '0'"),
])
def test_yaml_class_names_that_are_not_names_are_refused(tmp_path, names, message):
    with pytest.raises(DataError, match=message):
        load_yolo(_data_yaml(tmp_path, f"names: {names}\n"))


def test_label_files_without_an_image_are_counted(tmp_path):
    path = _data_yaml(tmp_path, "names: [a, b]\n")  # images/a.png
    labels = tmp_path / "labels"
    (labels / "sub").mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "gone.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # its image was deleted
    (labels / "sub" / "b.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (labels / "classes.txt").write_text("a\nb\n")  # LabelImg's list of names, not a label file
    data = load_yolo(path)
    assert [r.labels.tolist() for r in data.records] == [[0]]
    assert data.issues.counts() == {"label file without an image": 2}
    assert sorted(Path(where).name for where, _ in data.issues.items) == ["b.txt", "gone.txt"]
