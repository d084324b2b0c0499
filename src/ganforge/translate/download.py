"""The public pix2pix and CycleGAN datasets by name: download, check, extract safely.

`ganforge translate download NAME` fetches the authors' archive (pix2pix: NAME.tar.gz, CycleGAN:
NAME.zip) into DATA/translate/, checks its size and SHA-256, and extracts it member by member after
refusing any member that is absolute, climbs out with `..`, or is a link or a device. It is then a
folder `--data NAME` finds. The base URL may be replaced by $GANFORGE_MIRROR (with `{name}` =
pix2pix or cyclegan), as for the other datasets.

Checksums: the CycleGAN archives' SHA-256 and sizes are the ones TensorFlow Datasets records for
the same files (url_checksums/cycle_gan.txt). The pix2pix archives have no published checksum that
this project could check, so they are downloaded only with `--sha256 HEX` given; nothing is ever
extracted unchecked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import zipfile
from pathlib import Path, PurePosixPath

from ganforge import paths
from ganforge.data.cifar import safe_extract
from ganforge.data.download import MIRROR_ENV, _stream
from ganforge.errors import DataError
from ganforge.io import atomic_writer, display_path, first_line

BASES = {"pix2pix": "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/",
         "cyclegan": "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"}
# name -> (family, size in bytes or None, sha256 or None)
ARCHIVES: dict[str, tuple[str, int | None, str | None]] = {
    **{name: ("pix2pix", None, None) for name in ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags",
                                                    "night2day")},
    "apple2orange": ("cyclegan", 78456409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
    "horse2zebra": ("cyclegan", 116867962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
    "summer2winter_yosemite": ("cyclegan", 132640856,
                               "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9"),
    "monet2photo": ("cyclegan", 305231073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
    "cezanne2photo": ("cyclegan", 279885071, "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff"),
    "ukiyoe2photo": ("cyclegan", 292946532, "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08"),
    "vangogh2photo": ("cyclegan", 306590349, "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff"),
    "iphone2dslr_flower": ("cyclegan", 339964458, "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113"),
}


def archive_name(name: str) -> str:
    return f"{name}.tar.gz" if ARCHIVES[name][0] == "pix2pix" else f"{name}.zip"


def root() -> Path:
    return paths.data_dir() / "translate"


def dataset_folder(name: str) -> Path | None:
    """The extracted folder of a downloaded dataset, or None."""
    folder = root() / name
    return folder if folder.is_dir() else None


def _url(name: str) -> str:
    family = ARCHIVES[name][0]
    base = (os.environ.get(MIRROR_ENV) or BASES[family]).replace("{name}", family)
    return (base if base.endswith("/") else base + "/") + archive_name(name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
        raise DataError(f"{display_path(archive)} has a member outside its folder ({info.filename}): refusing to "
                        "extract it")
    if (info.external_attr >> 16) & 0o170000 not in (0, 0o100000, 0o040000):  # a symlink, device or fifo
        raise DataError(f"{display_path(archive)} has a member that is a link or device ({info.filename}): refusing "
                        "to extract it")


def _extract_zip(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # every check before the first write
                _check_zip_member(info, archive)
            for info in infos:
                target = into / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"cannot extract {display_path(archive)} ({first_line(err)}): delete it and download it "
                        "again") from None


def download(name: str, *, sha256: str | None = None, quiet: bool = False) -> Path:
    """Download, check and extract dataset `name`; returns its folder (DATA/translate/NAME)."""
    if name not in ARCHIVES:
        raise DataError(f"unknown translation dataset {name!r}; known: {', '.join(sorted(ARCHIVES))}")
    done = dataset_folder(name)
    if done is not None:
        return done
    family, size, known = ARCHIVES[name]
    expected = sha256 or known
    if expected is None:
        raise DataError(f"{name}: there is no published checksum of {archive_name(name)} to check it against: pass "
                        f"--sha256 HEX (of the file you trust), or download {_url(name)} yourself and unpack it into "
                        f"{display_path(root())}")
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    archive = base / archive_name(name)
    if not archive.is_file():
        with atomic_writer(archive) as part:  # becomes the archive only once it checks
            try:
                _stream(_url(name), part, label=archive.name, quiet=quiet)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or first_line(exc)
                raise DataError(f"{name}: cannot download {_url(name)} ({reason}); put {archive.name} in "
                                f"{display_path(base)} yourself, or use the offline built-ins (edges2mnist, "
                                "thin2thick, digits2mnist)") from None
            _verify(part, name, size if sha256 is None else None, expected, archive.name)
    else:
        _verify(archive, name, size if sha256 is None else None, expected, archive.name, delete=True)
    staging = base / f".{name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if family == "pix2pix":
            safe_extract(archive, staging)
        else:
            _extract_zip(archive, staging)
        inner = staging / name if (staging / name).is_dir() else staging  # the archives hold NAME/
        inner.rename(base / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return base / name


def _verify(path: Path, name: str, size: int | None, expected: str, shown: str, delete: bool = False) -> None:
    actual_size = path.stat().st_size
    problem = None
    if size is not None and actual_size != size:
        problem = f"has {actual_size} bytes, expected {size}"
    else:
        actual = sha256_of(path)
        if actual != expected.lower():
            problem = f"has SHA-256 {actual}, expected {expected}"
    if problem:
        if delete:
            path.unlink()
        raise DataError(f"{name}: {shown} {problem}; the file was deleted: retry, or check ${MIRROR_ENV}")
