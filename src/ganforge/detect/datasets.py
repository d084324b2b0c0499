"""Named detection datasets and what ``--data`` may be.

``--data`` is a registered name (`DETECTION_DATASETS`: digits-det, voc2007, voc2012, voc07+12), a
data YAML (the Ultralytics layout), a COCO instances JSON (its other splits are the files beside it
with ``train`` in the name replaced, e.g. ``instances_val2017.json`` for ``instances_train2017.json``;
without one the file serves every split, and training warns that val is not held out), or a folder:
a VOC folder (Annotations/, ImageSets/Main/, JPEGImages/), a folder holding ``data.yaml``, or a folder with
``annotations/instances_<split>.json`` and its images in ``images/<split>/`` (or ``<split>/``).

VOC 2007 and 2012 are downloaded once, with checksums, into ``<data dir>/voc`` (``$GANFORGE_MIRROR``
replaces the official server, as for the GAN datasets) and extracted member by member after every
member is checked. ``voc07+12`` is the paper's training set: VOC 2007 trainval + VOC 2012 trainval,
evaluated on VOC 2007 test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ganforge import paths
from ganforge.data import download
from ganforge.data.cifar import safe_extract
from ganforge.detect.coco import load_coco
from ganforge.detect.data import DetectionSet, LabelIssues
from ganforge.detect.digits import load_digits_det
from ganforge.detect.voc import is_voc_folder, load_voc
from ganforge.detect.yolo_txt import load_yolo
from ganforge.errors import ConfigError, DataError
from ganforge.registry import Registry

OFFLINE = "digits-det"

# year -> split -> the official archive that holds it
VOC_ARCHIVES = {
    "2007": {"trainval": "VOCtrainval_06-Nov-2007.tar", "train": "VOCtrainval_06-Nov-2007.tar",
             "val": "VOCtrainval_06-Nov-2007.tar", "test": "VOCtest_06-Nov-2007.tar"},
    "2012": {"trainval": "VOCtrainval_11-May-2012.tar", "train": "VOCtrainval_11-May-2012.tar",
             "val": "VOCtrainval_11-May-2012.tar"},
}


def voc_root(root: Path | None = None) -> Path:
    return Path(root) if root is not None else paths.data_dir() / "voc"


def voc_year(year: str, split: str, *, root: Path | None = None, download_missing: bool = True,
             quiet: bool = False) -> DetectionSet:
    """A split of VOC `year`, downloaded and extracted first when it is not there yet."""
    archives = VOC_ARCHIVES[year]
    if split not in archives:
        raise ConfigError(f"voc{year} has no split {split!r}; valid: {', '.join(archives)}")
    base = voc_root(root)
    folder = base / "VOCdevkit" / f"VOC{year}"
    if not (folder / "ImageSets" / "Main" / f"{split}.txt").is_file():
        archive = base / archives[split]
        if not archive.is_file():
            if not download_missing:
                raise DataError(f"voc{year}: {folder} has no {split} split and {archive} is missing: "
                                f"put {archive.name} in {base}, or use the offline dataset {OFFLINE}")
            download.fetch(f"voc{year}", archive.name, base, quiet=quiet, offline=OFFLINE)
        safe_extract(archive, base)
        if not is_voc_folder(folder):
            raise DataError(f"{archive} does not hold VOCdevkit/VOC{year}: delete it and download it again")
    return load_voc(folder, split)


def merge(name: str, parts: list[DetectionSet]) -> DetectionSet:
    """One set of several with the same class names (records in order, issues together)."""
    issues = LabelIssues()
    for part in parts:
        if part.names != parts[0].names:
            raise DataError(f"{name}: {part.source} has other class names than {parts[0].source}")
        issues.extend(part.issues)
    return DetectionSet(name, list(parts[0].names), [r for p in parts for r in p.records], issues,
                        flip=all(p.flip for p in parts), source=" + ".join(p.source for p in parts))


def voc0712(split: str, **kwargs) -> DetectionSet:
    """The paper's VOC07+12: train = 2007 trainval + 2012 trainval; val and test = 2007 test."""
    if split == "train":
        parts = [voc_year(year, "trainval", **kwargs) for year in ("2007", "2012")]
        return merge("voc07+12", parts)
    if split in ("val", "test"):
        return voc_year("2007", "test", **kwargs)
    raise ConfigError(f"voc07+12 has no split {split!r}; valid: train, val, test")


@dataclass(frozen=True)
class NamedDataset:
    """A registered detection dataset: how to load a split, and which splits it has."""

    load: Callable[..., DetectionSet]  # (split, **options) -> DetectionSet
    splits: tuple[str, ...]
    description: str
    offline: bool = False


DETECTION_DATASETS: Registry[NamedDataset] = Registry("detection dataset")
DETECTION_DATASETS.register("digits-det", NamedDataset(
    lambda split, **_: load_digits_det(split), ("train", "val", "test"),
    "0-4 MNIST digits per 128x128 canvas, generated offline (4,000 / 500 / 500)", offline=True))
DETECTION_DATASETS.register("voc2007", NamedDataset(
    lambda split, **kw: voc_year("2007", split, **kw), ("trainval", "train", "val", "test"),
    "PASCAL VOC 2007 (downloaded with checksums)"))
DETECTION_DATASETS.register("voc2012", NamedDataset(
    lambda split, **kw: voc_year("2012", split, **kw), ("trainval", "train", "val"),
    "PASCAL VOC 2012 (downloaded with checksums)"))
DETECTION_DATASETS.register("voc07+12", NamedDataset(
    voc0712, ("train", "val", "test"), "the paper's set: VOC 2007 + 2012 trainval; 2007 test"))


def _coco_in_folder(folder: Path, split: str) -> DetectionSet | None:
    json_path = folder / "annotations" / f"instances_{split}.json"
    if not json_path.is_file():
        return None
    images = next((d for d in (folder / "images" / split, folder / split) if d.is_dir()), folder)
    return load_coco(json_path, images)


def coco_split_file(path: Path, split: str) -> Path:
    """The COCO JSON of `split` for a given file: the file beside it with ``train`` in its name
    replaced by the split (instances_train2017.json -> instances_val2017.json), else `path`."""
    if split != "train" and "train" in path.name:
        sibling = path.with_name(path.name.replace("train", split, 1))
        if sibling.is_file():
            return sibling
    return path


def shared_images(train: DetectionSet, val: DetectionSet) -> int:
    """How many of `val`'s image files are also in `train` (0 for in-memory sets)."""
    files = {r.image for r in train.records if isinstance(r.image, Path)}
    return sum(1 for r in val.records if isinstance(r.image, Path) and r.image in files)


def open_detection_data(spec: str, split: str, **options) -> DetectionSet:
    """The `split` of whatever `spec` names (see the module docstring)."""
    if spec in DETECTION_DATASETS:
        return DETECTION_DATASETS.get(spec).load(split, **options)
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"{path} does not exist: check the path of the data YAML")
        return load_yolo(path, split)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise DataError(f"{path} does not exist: check the path of the COCO JSON")
        return load_coco(coco_split_file(path, split))
    if path.is_dir():
        if is_voc_folder(path):
            return load_voc(path, split)
        for name in ("data.yaml", "data.yml"):
            if (path / name).is_file():
                return load_yolo(path / name, split)
        coco = _coco_in_folder(path, split)
        if coco is not None:
            return coco
        raise DataError(f"{path} is not a detection dataset: give a data YAML, a COCO JSON, or a VOC "
                        "folder (Annotations/, ImageSets/Main/, JPEGImages/)")
    raise DataError(f"unknown detection data {spec!r}: use one of {', '.join(DETECTION_DATASETS)}, "
                    "a data YAML, a COCO JSON or a dataset folder")
