"""Checkpoints that lie about themselves: a config that asks for absurd widths is refused before any
allocation, a shape mismatch names the tensor, a damaged checkpoint is called damaged, and a JSON
part nested too deep is one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import ganforge, one_error_line

from ganforge import checkpoint as ck
from ganforge.errors import CheckpointError
from ganforge.gan.sampling import load_generator

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-run"
MEMORY_CAP = ["prlimit", f"--as={6 << 30}"]  # far below what the edited configs ask for


def _edited_copy(tmp_path: Path, **config) -> Path:
    """The v1 fixture run with its checkpoint re-saved (checksums and all) with `config` changed."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    step = ck.list_checkpoints(run / "checkpoints")[-1]
    tensors, meta = ck.load_checkpoint(step)
    meta["config"].update(config)
    shutil.rmtree(step)
    ck.save_checkpoint(run / "checkpoints", step.name, tensors, meta)
    return run


@pytest.mark.skipif(not shutil.which("prlimit") or sys.platform != "linux", reason="needs prlimit")
def test_a_config_asking_for_an_absurd_width_is_refused_before_allocating(tmp_path):
    run = _edited_copy(tmp_path, g_hidden=100_000_000)  # a 40 GB first layer
    line = one_error_line(ganforge("sample", run, "--out", tmp_path / "out", prefix=MEMORY_CAP))
    assert "tensor net.0.weight is 16x100 in the checkpoint, 100000000x100 in the model" in line, line
    assert not (tmp_path / "out").exists()
    # eval and explore load the generator the same way.
    with pytest.raises(CheckpointError, match="tensor net.0.weight is 16x100 in the checkpoint"):
        load_generator(_edited_copy(tmp_path / "again", g_hidden=100_000_000))


def test_a_shape_mismatch_names_the_tensor():
    saved = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    tensors, meta = ck.pack_state({"G": saved}, {})
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match=r"tensor 2\.weight is 2x8 in the checkpoint, 3x8 in the model"):
        ck.unpack_state(tensors, meta, {"G": other}, {})
    with pytest.raises(CheckpointError, match=r"Missing key\(s\) in state_dict: \"2\.weight\""):
        ck.build_for_state(lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                                       torch.nn.Linear(8, 2)),
                           {k: v for k, v in saved.state_dict().items() if k != "2.weight"}, "x")
    # What fits is loaded as saved, and holds no meta tensor.
    built = ck.build_for_state(lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                                           torch.nn.Linear(8, 2)), saved.state_dict(), "x")
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), saved.state_dict().values()))
    assert not any(p.is_meta for p in built.parameters())


@pytest.mark.parametrize("damage", ["missing", "folder", "garbage", "deep"])
def test_a_damaged_manifest_says_damaged_not_wait(tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    manifest = ck.list_checkpoints(run / "checkpoints")[-1] / ck.MANIFEST_FILE
    manifest.unlink()
    if damage == "folder":
        manifest.mkdir()
    elif damage == "garbage":
        manifest.write_text("{\"format\": ")
    elif damage == "deep":
        manifest.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(CheckpointError) as err:
        ck.load_latest(run / "checkpoints", purpose="using", log=lambda line: None)
    assert "wait for its first checkpoint" not in str(err.value) and "damaged" in str(err.value), err.value
    if damage == "garbage":  # through the CLI too: one line
        line = one_error_line(ganforge("sample", run, "--out", tmp_path / "out"))
        assert "MANIFEST.json is not valid JSON" in line and "the checkpoint is damaged" in line, line


def test_meta_nested_too_deep_is_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    step = ck.list_checkpoints(run / "checkpoints")[-1]
    tensors, meta = ck.load_checkpoint(step)
    doc = json.dumps({"format": ck.FORMAT_NAME, "version": ck.FORMAT_VERSION, "meta": meta})
    deep = doc[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    (step / ck.META_FILE).write_text(deep)
    manifest = json.loads((step / ck.MANIFEST_FILE).read_text())
    manifest["files"][ck.META_FILE] = {"sha256": ck.sha256_hex(deep.encode()), "bytes": len(deep.encode())}
    (step / ck.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="meta.json nests deeper than 100 levels: the checkpoint is damaged"):
        ck.load_checkpoint(step)


def test_run_files_nested_past_the_recursion_limit_read_as_unreadable(tmp_path):
    from ganforge.io import read_metrics
    from ganforge.runs.folder import is_run_folder

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "config.json").write_text(deep)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n' + deep + "\n" + "9" * 5000 + "\n")
    assert not is_run_folder(tmp_path)
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1]


@pytest.mark.skipif(not shutil.which("prlimit") or sys.platform != "linux", reason="needs prlimit")
def test_a_gan_resume_asking_for_an_absurd_width_names_the_tensor(tmp_path):
    """Resume reads the config from the checkpoint: one edited to absurd widths is refused before the
    run is built, naming the tensor, and the run folder is left as it was."""
    run = _edited_copy(tmp_path, g_hidden=100_000_000)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    line = one_error_line(ganforge("train", "--resume", run, "--steps", "4", prefix=MEMORY_CAP))
    assert "tensor net.0.weight is 16x100 in the checkpoint, 100000000x100 in the model" in line, line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
