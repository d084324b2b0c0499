"""The caches are optional: a full or read-only cache folder warns once and the work goes on; an
empty HOME does not put the cache at /.cache. Through the CLI where a person would meet it."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_ok, ganforge, leftovers
from PIL import Image

from ganforge import paths
from ganforge.data import load_dataset

WARNING = "warning: cannot write the cache in "
# Mount a small tmpfs over $CACHE in a private mount namespace (gone when the command ends), make it
# full or read-only, run the command, and list what the cache holds afterwards into $LISTING.
_MOUNT = 'mount -t tmpfs -o size=64k ganforge-test "$CACHE" || exit 97; '
_SCRIPTS = {
    "full": _MOUNT + '(dd if=/dev/zero of="$CACHE/filler" bs=1k 2>/dev/null; true); ',
    "read-only": _MOUNT + 'mount -o remount,ro "$CACHE" || exit 97; ',
}
_RUN = '"$@"; rc=$?; (cd "$CACHE" && find . | sort) > "$LISTING"; exit $rc'


@functools.lru_cache(maxsize=1)
def _can_mount() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


def _guarded(kind: str, cache: Path, listing: Path) -> tuple[list[str] | None, dict]:
    """(prefix, env) that run a command against a `kind` cache, or skip where this machine cannot."""
    cache.mkdir(parents=True, exist_ok=True)
    env = {"GANFORGE_CACHE": str(cache), "CACHE": str(cache), "LISTING": str(listing)}
    if _can_mount():
        return ["unshare", "-m", "sh", "-c", _SCRIPTS[kind] + _RUN, "sh"], env
    if kind == "read-only" and hasattr(os, "geteuid") and os.geteuid() != 0:
        cache.chmod(0o555)  # without root, permissions make a folder read-only
        return None, env
    pytest.skip(f"a {kind} cache needs a private tmpfs mount (root and unshare) on this machine")


def _one_warning(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("warning: cannot write the cache")]
    assert len(lines) == 1, err  # once per process, however many writes failed
    return lines[0]


def _photos(folder: Path, count: int = 100) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_full_cache_disk_warns_once_and_training_goes_on(tmp_path):
    photos = _photos(tmp_path / "photos")  # 78 KB decoded: more than the whole cache disk
    prefix, env = _guarded("full", tmp_path / "cache-disk", tmp_path / "listing")
    proc = ganforge("train", "seed004-mlp-mnist", "--data", photos, "--out", tmp_path / "run",
                    "--steps", "2", "batch_size=4", "--quiet", "--device", "cpu", env=env, prefix=prefix)
    line = _one_warning(assert_ok(proc))
    assert "No space left on device" in line and "GANFORGE_CACHE" in line, line
    assert (tmp_path / "run" / "summary.json").is_file()
    # The failed write left nothing behind: the cache holds the filler and empty folders only.
    listed = (tmp_path / "listing").read_text().split()
    assert [p for p in listed if p not in (".", "./filler", "./folders")] == [], listed


def test_read_only_cache_warns_once_and_eval_goes_on(tmp_path):
    from ganforge.config import apply_overrides
    from ganforge.gan.recipes import get_recipe
    from ganforge.gan.train import train

    run = train(apply_overrides(get_recipe("seed004-mlp-mnist"), ["data=digits", "batch_size=8"]),
                tmp_path / "run", steps=1, quiet=True)
    prefix, env = _guarded("read-only", tmp_path / "cache-ro", tmp_path / "listing")
    try:
        # Neither the feature network it trains nor the reference statistics can be kept.
        proc = ganforge("eval", run, "--n", "60", env=env, prefix=prefix)
    finally:
        (tmp_path / "cache-ro").chmod(0o755)
    err = assert_ok(proc)
    _one_warning(err)
    assert "FID" in proc.stdout.decode() and (run / "eval.json").is_file()
    if prefix:
        assert (tmp_path / "listing").read_text().split() == ["."]


def test_unwritable_cache_in_process_warns_once_for_all_three_caches(tmp_path, monkeypatch, capsys):
    from ganforge.metrics import feature_nets
    from ganforge.metrics.evaluate import real_features
    from ganforge.metrics.feature_nets import FeatureNetRecipe, get_feature_net

    monkeypatch.setattr(paths, "_said", set())
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file")
    monkeypatch.setenv("GANFORGE_CACHE", str(blocker / "cache"))
    photos = _photos(tmp_path / "photos", 6)
    first = load_dataset(str(photos), quiet=True)
    assert torch.equal(load_dataset(str(photos), quiet=True).images, first.images)  # decoded again
    trained = []
    real_train = feature_nets.train_classifier
    monkeypatch.setattr(feature_nets, "train_classifier",
                        lambda *a, **k: trained.append(1) or real_train(*a, **k))
    tiny = FeatureNetRecipe(widths=(4, 8, 8), feature_dim=16, epochs=1, min_train_images=256)
    net = get_feature_net("digits", quiet=True, recipe=tiny)
    again = get_feature_net("digits", quiet=True, recipe=tiny)
    assert trained == [1, 1]  # not kept, so trained again: deterministically, to the same net
    assert again.hash == net.hash and again.test_accuracy == net.test_accuracy
    digits = load_dataset("digits", split="test", quiet=True)
    feats = real_features(net, digits.images, "digits", "test", None)
    assert feats.shape == (len(digits), 16) and feats.dtype == torch.float64
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1 and "Not a directory" in err, err


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    monkeypatch.setattr(paths, "_said", set())

    def half_then_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    photos = _photos(tmp_path / "photos", 4)
    assert len(load_dataset(str(photos), quiet=True)) == 4
    assert WARNING in capsys.readouterr().err
    cache = tmp_path / "cache"
    assert leftovers(cache) == [] and list((cache / "folders").iterdir()) == []


# --------------------------------------------------------------------------- where the cache is


@pytest.fixture
def no_cache_env(monkeypatch):
    monkeypatch.setattr(paths, "_said", set())
    for var in ("GANFORGE_CACHE", "GANFORGE_DATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


class _Account:
    def __init__(self, home: str) -> None:
        self.pw_dir = home


@pytest.mark.parametrize("home", ["", None, "/"])
def test_empty_home_falls_back_to_the_account_home_and_says_so(home, tmp_path, monkeypatch, capsys,
                                                               no_cache_env):
    import pwd

    if home is None:
        monkeypatch.delenv("HOME", raising=False)
    else:
        monkeypatch.setenv("HOME", home)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _Account(str(tmp_path)))
    assert paths.cache_dir() == tmp_path / ".cache" / "ganforge"
    assert paths.data_dir() == tmp_path / ".cache" / "ganforge" / "data"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "GANFORGE_CACHE" in err[0], err  # said once


def test_no_usable_home_at_all_uses_a_private_temporary_folder(tmp_path, monkeypatch, capsys,
                                                               no_cache_env):
    import pwd
    import tempfile

    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _Account("/"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cache = paths.cache_dir()
    assert cache == tmp_path / f"ganforge-cache-{os.getuid()}" and cache.is_dir()
    assert cache.stat().st_mode & 0o777 == 0o700
    assert str(cache) in capsys.readouterr().err


def test_cli_with_an_empty_home_says_where_the_cache_is(tmp_path):
    env = {"HOME": "", "GANFORGE_CACHE": None, "GANFORGE_DATA": None, "XDG_CACHE_HOME": None,
           "MPLCONFIGDIR": str(tmp_path / "mpl")}  # matplotlib, too, would look under HOME
    proc = ganforge("train", "seed004-mlp-mnist", "data=digits", "batch_size=8", "--steps", "1",
                    "--out", tmp_path / "run", "--quiet", "--device", "cpu", env=env)
    notes = [line for line in assert_ok(proc).splitlines() if line.startswith("note: HOME is empty")]
    assert len(notes) == 1, proc.stderr
    where = notes[0].split("keeps its cache in ")[1].split(";")[0]
    assert os.path.isabs(where) and not where.startswith("/.cache"), notes[0]
