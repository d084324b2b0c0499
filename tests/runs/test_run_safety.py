"""Never destroy a person's files, one writer per run folder, and messages that say what works.

Each test hits the problem the way a person would: the `ganforge` command in a subprocess on real
files (or `cli.main` in this process where no second process is involved).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_ok, ganforge, leftovers, one_error_line
from ganforge import checkpoint as ck
from ganforge.cli import main
from ganforge.io import read_metrics

TINY = ["seed004-mlp-mnist", "data=digits", "image_size=8", "latent_dim=8", "g_hidden=16", "d_hidden=16",
        "batch_size=8", "device=cpu", "threads=1", "--quiet"]


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _personal_files(folder: Path) -> dict[str, str]:
    (folder / "thesis").mkdir(parents=True)
    (folder / "notes.txt").write_text("do not lose me\n")
    (folder / "thesis" / "draft.tex").write_bytes(os.urandom(2000))
    return _tree(folder)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganforge: error: "), err
    return err[0]


# ---- --force deletes only what ganforge made --------------------------------------------------------

def test_force_on_a_folder_of_someone_elses_files_touches_nothing(tmp_path):
    mine = tmp_path / "mine"
    before = _personal_files(mine)
    line = one_error_line(ganforge("train", *TINY, "--steps", "2", "--out", mine, "--force"))
    assert "holds files that ganforge did not write" in line and "Nothing was deleted" in line
    assert _tree(mine) == before


def test_force_never_removes_the_data_the_current_folder_or_home(tmp_path):
    from PIL import Image

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(data / f"{i}.png")
    before = _tree(tmp_path)
    folder_run = ["train", "default", "base_filters=4", "batch_size=4", "--steps", "1", "--quiet"]
    # The training data as --out, and a folder that contains the data.
    line = one_error_line(ganforge(*folder_run, "--data", data, "--out", data, "--force"))
    assert "the data being trained on" in line
    line = one_error_line(ganforge(*folder_run, "--data", data, "--out", tmp_path, "--force"))
    assert "would delete" in line
    # The current folder and its parent, from inside a folder of the person's work.
    work = tmp_path / "work"
    _personal_files(work)
    before = _tree(tmp_path)
    for out in (".", ".."):
        proc = subprocess.run([sys.executable, "-m", "ganforge", "train", *TINY, "--steps", "1", "--out", out,
                               "--force"], cwd=work, capture_output=True, timeout=300)
        assert "--force would delete the current folder" in one_error_line(proc)
    # A home folder (HOME points at a folder of this test's).
    home = tmp_path / "home"
    _personal_files(home)
    before = _tree(tmp_path)
    line = one_error_line(ganforge("train", *TINY, "--steps", "1", "--out", home, "--force", env={"HOME": str(home)}))
    assert "your home folder" in line
    assert _tree(tmp_path) == before


def test_a_new_run_folder_inside_the_image_folder_it_trains_on_is_refused(tmp_path):
    """Its grids and checkpoints would land among the training images (and be read by the next run)."""
    from PIL import Image

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(data / f"{i}.png")
    before = _tree(tmp_path)
    for out in (data / "run", data / "deeper" / "run"):
        line = one_error_line(ganforge("train", "default", "base_filters=4", "batch_size=4", "--steps", "1",
                                       "--quiet", "--data", data, "--out", out))
        assert "lies inside the data being trained on" in line and "nothing was written" in line
    assert _tree(tmp_path) == before and not (data / "run").exists()


def test_force_replaces_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "2", "--out", str(run)]) == 0
    (run / "samples" / "extra.png").write_bytes(b"x")
    assert main(["train", *TINY, "--steps", "3", "--out", str(run), "--force"]) == 0
    assert not (run / "samples" / "extra.png").exists()
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


# ---- one writer per run folder -------------------------------------------------------------------------

def _slow_run(run: Path, steps: int = 40) -> subprocess.Popen:
    """A training run that takes a while: every checkpoint save sleeps (the test hook)."""
    env = {**os.environ, "GANFORGE_TEST_SLOW_SAVE": "0.05"}
    return subprocess.Popen([sys.executable, "-m", "ganforge", "train", *TINY, "--steps", str(steps), "--out",
                             str(run), "checkpoint_every=1", "log_every=1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_second_writer_is_refused_with_the_pid_and_the_first_run_is_unharmed(tmp_path):
    run = tmp_path / "run"
    first = _slow_run(run, steps=100_000)
    _wait_for(lambda: ck.list_checkpoints(run / "checkpoints"), first)
    for argv in (["train", "--resume", run, "--steps", "200000", "--quiet"],
                 ["train", *TINY, "--steps", "5", "--out", run, "--force"]):
        line = one_error_line(ganforge(*argv))
        assert f"is in use by process {first.pid}" in line, line
    assert first.poll() is None  # still training, undisturbed
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 143, err.decode()  # a clean stop: no false disk error
    stopped = json.loads((run / "summary.json").read_text())["steps"]
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert steps == list(range(1, stopped + 1))  # no lost log lines
    assert not (run / ".lock").read_text().strip()  # released: the PID is gone
    assert_ok(ganforge("train", "--resume", run, "--steps", str(stopped + 2), "--quiet"))


def test_two_runs_started_together_on_one_folder(tmp_path):
    """The second starts while the first is setting up or training: one refusal, one complete run."""
    for force in ([], ["--force"]):
        run = tmp_path / ("forced" if force else "run")
        if force:  # two --force runs at once over an existing run
            assert_ok(ganforge("train", *TINY, "--steps", "2", "--out", run))
        env = {**os.environ, "GANFORGE_TEST_SLOW_SAVE": "0.05"}
        argv = lambda s: [sys.executable, "-m", "ganforge", "train", *TINY, "--steps", str(s), "--out", str(run),
                          "checkpoint_every=1", f"seed={s}", *force]
        first = subprocess.Popen(argv(30), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: (run / ".lock").is_file() and (run / ".lock").read_text().strip() == str(first.pid), first)
        # Hold the first where it is (lock taken, somewhere in setup or training) until the second
        # has answered: on a busy machine the second's start-up could otherwise outlast the first.
        first.send_signal(signal.SIGSTOP)
        try:
            second = subprocess.Popen(argv(31), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            second.wait(timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in (first, second)]
        assert [code for code, _ in results] == [0, 2], results
        loser = results[1][1].strip()
        refusals = (f"in use by process {first.pid}",) + (() if force else ("already exists",))
        assert loser.count("\n") == 0 and any(r in loser for r in refusals), loser
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 30
        assert json.loads((run / "config.json").read_text())["seed"] == 30
        assert ck.list_checkpoints(run / "checkpoints")[-1].name == f"step-{30:09d}"


def test_readers_never_call_a_healthy_checkpoint_corrupt_during_training(tmp_path):
    from ganforge.checkpoint import check_state_meta, load_latest

    run = tmp_path / "run"
    writer = _slow_run(run, steps=60)  # a save and a prune at every step
    _wait_for(lambda: ck.list_checkpoints(run / "checkpoints"), writer)
    messages: list[str] = []
    loads = 0
    while writer.poll() is None:
        load_latest(run / "checkpoints", log=messages.append, check=check_state_meta, purpose="using")
        loads += 1
    assert writer.returncode == 0 and loads >= 20
    assert messages == [], messages


# ---- bad sizes, devices, names ----------------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["batch_size=100000000", "latent_dim=1e9", "image_size=4096"])
def test_absurd_sizes_are_refused_before_anything_is_made(tmp_path, capsys, setting):
    extra = ["sampling=replacement"] if setting.startswith("batch") else []
    assert main(["train", *TINY, setting, *extra, "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    line = _err(capsys)
    assert "of memory but cpu has" in line and "GiB free" in line
    assert not (tmp_path / "run").exists()


def test_every_command_checks_the_device_one_way(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    for device, needle in (("cdua", "bad device 'cdua'"), ("mps", "device 'mps' is not supported"),
                           ("meta", "device 'meta' is not supported"), ("cuda", "no CUDA GPU")):
        for argv in (["sample", str(run), "--n", "4", "--out", str(tmp_path / "s")],
                     ["eval", str(run), "--n", "20"], ["train", "--resume", str(run), "--steps", "2"]):
            assert main([*argv, "--device", device]) == 2, (argv, device)
            assert needle in _err(capsys), (argv, device)
    assert not (tmp_path / "s").exists()


def test_output_names_must_stay_in_the_run_folder(tmp_path, capsys):
    for setting in ("sample_name=../../x_{step}", "gif_name=../evil.gif", "sample_name=.hidden"):
        assert main(["train", *TINY, setting, "--steps", "1", "--out", str(tmp_path / "run")]) == 2
        assert "must be a plain file name" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def _reseal(path: Path, doc: dict) -> None:
    data = json.dumps(doc).encode()
    (path / ck.META_FILE).write_bytes(data)
    manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
    manifest["files"][ck.META_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / ck.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_checkpoint_with_verified_but_malformed_meta_falls_back(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "4", "checkpoint_every=2", "--out", str(run)]) == 0
    newest = run / "checkpoints" / "step-000000004"
    doc = json.loads((newest / ck.META_FILE).read_text())
    del doc["meta"]["step"]
    doc["meta"]["rng"] = "scrambled"
    _reseal(newest, doc)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipping corrupt checkpoint step-000000004" in out and "meta.json is malformed (step, rng)" in out
    assert "resuming from step-000000002" in out
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s")]) == 0


# ---- advice that works ------------------------------------------------------------------------------------

def test_divergence_before_any_checkpoint_does_not_advise_resuming(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", *TINY, "g_lr=1e38", "d_lr=1e38", "max_skips=2", "--steps", "50", "--out", str(run)])
    assert code == 3
    line = _err(capsys)
    assert "nothing to resume" in line and "--force" in line and "--resume" not in line
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_disk_full_at_the_first_save_advises_starting_again(tmp_path):
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs root and mount namespaces for a private tmpfs")
    # The run folder lies on a tmpfs too small for even one checkpoint (in a private mount namespace).
    script = (f'mount -t tmpfs -o size=64k t "{tmp_path}/disk" && exec "{sys.executable}" -m ganforge train '
              + " ".join(shlex.quote(a) for a in TINY) + f' --steps 3 --out "{tmp_path}/disk/run"')
    (tmp_path / "disk").mkdir()
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=300)
    line = one_error_line(proc)
    assert ("disk full" in line or "No space left" in line) and "--force" in line and "--resume" not in line, line


def test_every_write_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """Whichever write meets the full disk first (a grid, the log, a checkpoint, the GIF or the
    curves at the end), the message names the file and no temporary file is left."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs root and mount namespaces for a private tmpfs")
    seen = set()
    for size in ("120k", "200k", "320k", "480k"):
        disk = tmp_path / size
        disk.mkdir()
        script = (f'mount -t tmpfs -o size={size} t "{disk}" && "{sys.executable}" -m ganforge train '
                  + " ".join(shlex.quote(a) for a in TINY) + f' --steps 30 sample_every=2 grid_rows=12 --out '
                  f'"{disk}/run"; code=$?; find "{disk}" -name ".*tmp*" > "{tmp_path}/{size}.left"; exit $code')
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=300)
        if proc.returncode == 0:
            continue
        line = one_error_line(proc)
        assert "()" not in line and ("No space left" in line or "disk full" in line), line
        assert (tmp_path / f"{size}.left").read_text() == "", size
        seen.add(line.split(":")[2] if "(" not in line else line.split("(", 1)[1].split(")")[0])
    assert seen, "no size was small enough to fill"


def test_resume_below_or_at_the_current_step(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "4", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "2", "--quiet"]) == 2
    assert "can only be extended (--steps above 4)" in _err(capsys)
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert "already at step 4 of 4: nothing to train" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == rows
    assert main(["train", "--resume", str(run / "config.json")]) == 2
    assert "is a file, not a run folder" in _err(capsys)


def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resume(tmp_path, capsys):
    # A kill between the final checkpoint and the summary leaves a complete state but no summary,
    # GIF or report: --resume writes them instead of saying there is nothing to do.
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "4", "--out", str(run)]) == 0
    expected = json.loads((run / "summary.json").read_text())
    for name in ("summary.json", "progress.gif", "report.html"):
        (run / name).unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert "at step 4 of 4: training was complete; writing the summary" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["final"] == expected["final"] and summary["images_seen"] == expected["images_seen"]
    assert (run / "progress.gif").is_file() and (run / "report.html").is_file()
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert "already at step 4 of 4: nothing to train" in capsys.readouterr().out


def test_max_seconds_bounds_one_invocation_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "max_seconds=1.5", "--steps", "1000000", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_reason"] == "max_seconds" and not summary["finished"]
    first = summary["steps"]
    assert f"stopped after max_seconds=1.5 at step {first} of 1000000" in out
    assert f"`ganforge train --resume {run}`" in out
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] > first + 1  # a full second budget


def test_the_resume_hint_after_ctrl_c_works_as_printed(tmp_path):
    run = tmp_path / "my run"  # a space: the hint must quote it
    proc = _slow_run(run, steps=400)
    _wait_for(lambda: ck.list_checkpoints(run / "checkpoints"), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    hint = err.decode().strip().splitlines()[-1].split("continue with `", 1)[1].rstrip("`")
    argv = shlex.split(hint)
    assert argv[:3] == ["ganforge", "train", "--resume"]
    assert_ok(ganforge(*argv[1:], "--steps", "403", "--quiet"))
    assert json.loads((run / "summary.json").read_text())["steps"] == 403


# ---- the log, the grids and the output folders across a resume --------------------------------------------

def test_metrics_log_is_identical_after_a_resume_between_log_steps(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *TINY, "log_every=10", "--steps", "40", "--out", str(full)]) == 0
    assert main(["train", *TINY, "log_every=10", "--steps", "23", "--out", str(cut)]) == 0
    assert main(["train", "--resume", str(cut), "--steps", "40", "--quiet"]) == 0
    keys = ("step", "epoch", "images_seen", "d_loss", "g_loss", "d_real", "d_fake", "d_fake_g", "d_acc")
    rows = {run: [{k: r[k] for k in keys} for r in read_metrics(run / "metrics.jsonl", "train")] for run in (full, cut)}
    assert [r["step"] for r in rows[full]] == [10, 20, 30, 40]
    assert rows[cut] == rows[full]
    assert [r["event"] for r in read_metrics(cut / "metrics.jsonl", "event")] == ["resumed"]


def test_grids_are_named_by_their_step_and_a_resume_repeats_none(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "default", "data=digits", "image_size=28", "base_filters=4", "batch_size=8", "device=cpu",
            "sample_every=5", "--quiet"]
    assert main([*argv, "--steps", "10", "--out", str(run)]) == 0
    shutil_rmtree(run / "samples")  # deleted by the person: the resumed run makes it again
    assert main(["train", "--resume", str(run), "--steps", "20", "--quiet"]) == 0
    names = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert names == ["step_000015.png", "step_000020.png"]  # no step_000011 right after step_000010


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_recipes_and_config_say_what_things_are(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "tf-dcgan-mnist: logits and one forward pass" in out and "Source: the tensorflow.org DCGAN tutorial" in out
    assert main(["config", "tf-dcgan-mnist"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "256" in lines["batch_size"] and "the global batch" in lines["batch_size"]
    assert '"simultaneous"' in lines["loop"] and "[alternating, simultaneous]" in lines["loop"]
    assert "(may change on --resume)" in lines["g_lr"] and "(may change" not in lines["batch_size"]
    assert main(["config", "nope"]) == 2
    assert "valid recipes: default" in _err(capsys)


def test_sample_and_eval_bound_n_and_do_not_talk_about_resuming(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "4", "checkpoint_every=2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "1000000", "--out", str(tmp_path / "s")]) == 2
    assert "--n 1000000: must be between 1 and 100,000" in _err(capsys)
    assert main(["eval", str(run), "--n", "0"]) == 2
    assert "between 4 and 200,000" in _err(capsys)
    data = bytearray((run / "checkpoints" / "step-000000004" / ck.TENSORS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (run / "checkpoints" / "step-000000004" / ck.TENSORS_FILE).write_bytes(bytes(data))
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "; using step-000000002" in out and "resum" not in out
    assert leftovers(tmp_path) == []
