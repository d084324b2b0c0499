"""The run report against the run folders it was built from: real short runs, plus small files
for the parts of a run folder that only later run kinds write (detection, explore, new events)."""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path

import pytest
from pagecheck import Html, payload

from ganforge.gan.recipes import get_recipe
from ganforge.errors import GanforgeError
from ganforge.io import MetricsLog, read_metrics
from ganforge.report import add_report_parser, write_report
from ganforge.report.collect import Frame, natural_key
from ganforge.report.media import EMBED_FRAMES, Media, frame_label


def _page(path: Path) -> tuple[str, Html, dict]:
    text = path.read_text(encoding="utf-8")
    return text, Html(text), payload(text)


def _chart(data: dict, chart_id: str) -> dict:
    found = [c for c in data["charts"] if c["id"] == chart_id]
    assert found, f"no chart {chart_id}; charts: {[c['id'] for c in data['charts']]}"
    return found[0]


def _grids(run: Path) -> list[Path]:
    return sorted((run / "samples").glob("*.png"), key=natural_key)


def test_single_run_page_shows_the_run_folder(gan_run):
    out = write_report([gan_run])
    assert out == gan_run / "report.html"
    text, html, data = _page(out)
    summary = json.loads((gan_run / "summary.json").read_text())

    # header
    assert '<span class="status status-finished">finished</span>' in text
    facts = re.sub(r"<[^>]+>", " ", text[: text.index('id="r0-samples-s"')])
    assert "60 of 60" in facts
    assert f"{summary['images_seen']:,}" in facts
    assert "digits" in facts and "default" in facts and "0.1.0" in facts
    rate = summary["images_per_second"]
    assert (f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}") in facts  # 3 significant digits below 100

    # samples: every grid, in training order, by relative path; the last one shown first
    grids = _grids(gan_run)
    assert [g.name for g in grids] == ["step_000001.png", "step_000020.png", "step_000040.png",
                                       "step_000060.png"]
    frames = data["sliders"]["r0-samples"]
    assert [f["images"][0]["src"] for f in frames] == [f"samples/{g.name}" for g in grids]
    assert [f["label"].split(" (")[0] for f in frames] == ["step 1", "step 20", "step 40", "step 60"]
    shown = html.find("img", cls="grid")[0]
    assert shown["src"] == "samples/step_000060.png" and "step 60" in shown["alt"]
    assert html.find("input", id="r0-samples-range")[0]["max"] == str(len(grids) - 1)
    assert html.find("img", src="progress.gif"), "the GIF is on the page"

    # curves carry the logged values
    train = read_metrics(gan_run / "metrics.jsonl", kind="train")
    evals = read_metrics(gan_run / "metrics.jsonl", kind="eval")
    losses = _chart(data, "r0-losses")
    assert losses["x"] == [r["step"] for r in train]
    by_label = {s["label"]: s["values"] for s in losses["series"]}
    assert by_label["D loss"] == [r["d_loss"] for r in train]
    assert by_label["G loss"] == [r["g_loss"] for r in train]
    disc = {s["label"]: s["values"] for s in _chart(data, "r0-discriminator")["series"]}
    assert disc["D(x)"] == [r["d_real"] for r in train] and disc["D accuracy"] == [r["d_acc"] for r in train]
    fid = _chart(data, "r0-fid")
    assert [r["step"] for r in evals] == [30, 60]
    assert fid["x"] == [30, 60] and fid["series"][0]["values"] == [r["fid"] for r in evals]

    # eval table and checkpoints
    eval_text = html.text("r0-eval")
    for r in evals:
        assert f"{r['fid']:.4g}" in eval_text and f"{r['precision']:.4g}" in eval_text
    ckpt_text = html.text("r0-ckpt")
    best = json.loads((gan_run / "checkpoints/best/meta.json").read_text())["meta"]["fid"]
    assert best == min(r["fid"] for r in evals)
    assert "best by FID" in ckpt_text and f"{best:.4g}" in ckpt_text
    for folder in (gan_run / "checkpoints").iterdir():
        assert folder.name in ckpt_text
    assert "step-000000060" in ckpt_text

    # config: exactly the fields that differ from the recipe are marked
    defaults = get_recipe("default").to_dict()
    config = json.loads((gan_run / "config.json").read_text())
    changed = {k for k, v in config.items() if defaults[k] != v}
    assert changed == {"data", "steps", "log_every", "sample_every", "eval_every", "eval_n", "checkpoint_every",
                       "base_filters", "batch_size"}
    marked = re.findall(r'<tr class="changed"><td><code>([a-z_]+)</code>', text)
    assert set(marked) == changed and len(marked) == 2 * len(changed)  # summary table + whole config

    # sections without data are left out; nothing points outside the run folder
    for absent in ("r0-ap", "r0-explore", "r0-pred-s", "r0-events"):
        assert f'id="{absent}"' not in text
    assert not re.search(r'(src|href)="(https?:|//)', text) and "@import" not in text
    hidden = [p.name for p in gan_run.iterdir() if p.name.startswith(".")]
    assert sorted(hidden) == [".ganforge-run", ".lock"], "no temporary file left"  # the run's marker and lock


def test_stopped_run_is_labelled_stopped(stopped_run):
    summary = json.loads((stopped_run / "summary.json").read_text())
    assert summary["steps"] < summary["total_steps"] == 100000
    text, html, data = _page(write_report([stopped_run]))
    assert '<span class="status status-stopped">stopped</span>' in text
    assert f"{summary['steps']:,} of 100,000" in text
    assert "r0-fid" not in [c["id"] for c in data["charts"]] and 'id="r0-eval"' not in text
    assert len(data["sliders"]["r0-samples"]) == len(_grids(stopped_run)) >= 2
    # stopped by its time budget, at a step that does not depend on the machine's speed
    assert summary["stop_reason"] == "max_seconds" and summary["steps"] == 13
    assert [g.name for g in _grids(stopped_run)] == [f"step_{s:06d}.png" for s in (1, 5, 10, 12, 13)]


def test_several_runs_are_compared_with_their_pictures_inside(gan_run, stopped_run, tmp_path):
    out = write_report([gan_run, stopped_run], tmp_path / "cmp.html")
    text, html, data = _page(out)
    srcs = [a["src"] for a in html.find("img")] + [
        im["src"] for frames in data["sliders"].values() for f in frames for im in f["images"]]
    assert srcs and all(s.startswith("data:image/") for s in srcs)

    # the final grids side by side are the runs' last grids, byte for byte
    finals = re.search(r'<div class="finals">(.*?)</div>', text, re.S).group(1)
    inside = [base64.b64decode(s) for s in re.findall(r'src="data:image/png;base64,([^"]+)"', finals)]
    assert inside == [_grids(gan_run)[-1].read_bytes(), _grids(stopped_run)[-1].read_bytes()]

    # curves overlaid: each run's series on one step axis
    losses = _chart(data, "cmp-losses")
    steps = sorted({r["step"] for run in (gan_run, stopped_run)
                    for r in read_metrics(run / "metrics.jsonl", kind="train")})
    assert losses["x"] == steps
    series = {s["label"]: s for s in losses["series"]}
    assert set(series) == {"gan · D loss", "gan · G loss", "stopped · D loss", "stopped · G loss"}
    stopped_steps = {r["step"]: r["g_loss"] for r in read_metrics(stopped_run / "metrics.jsonl", kind="train")}
    assert [v for v in series["stopped · G loss"]["values"] if v is not None] == list(stopped_steps.values())
    assert series["gan · D loss"]["color"] != series["stopped · D loss"]["color"]

    # the settings that differ, and one section per run
    diff = html.text("runs")
    for key in ("g_lr", "max_seconds", "eval_every", "steps"):
        assert key in diff
    assert "batch_size" not in diff
    assert html.find("section", id="run-0") and html.find("section", id="run-1")


def test_page_written_elsewhere_embeds_its_pictures(gan_run, tmp_path):
    _, html, data = _page(write_report([gan_run], tmp_path / "elsewhere" / "page.html"))
    frames = data["sliders"]["r0-samples"]
    assert len(frames) == len(_grids(gan_run))
    first = frames[0]["images"][0]["src"]
    assert base64.b64decode(first.split(",", 1)[1]) == _grids(gan_run)[0].read_bytes()
    assert all(a["src"].startswith("data:") for a in html.find("img"))


def _png(path: Path, colour: tuple[int, int, int], boxes: list | None = None) -> None:
    import torch
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    if boxes:
        img = draw_bounding_boxes(img, torch.tensor(boxes, dtype=torch.float), colors="yellow", width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)


def test_detection_run_gets_map_ap_and_predictions(gan_run):
    import imageio.v3 as iio

    # A detection run's folder, as the detector will write it: predictions instead of samples.
    for p in (gan_run / "samples").iterdir():
        p.unlink()
    (gan_run / "progress.gif").unlink()
    for i, step in enumerate((100, 200, 300)):
        _png(gan_run / "predictions" / f"step_{step:06d}.png", (20 * i, 40, 60), [[5, 5, 30 + 8 * i, 40]])
    frames = [iio.imread(p) for p in sorted((gan_run / "predictions").glob("*.png"))]
    iio.imwrite(gan_run / "predictions.gif", frames, duration=200, loop=0)
    summary = json.loads((gan_run / "summary.json").read_text())
    (gan_run / "summary.json").write_text(json.dumps({**summary, "task": "detect", "status": "finished"}))
    aps = [{"car": 0.1, "dog": 0.2}, {"car": 0.35, "dog": 0.5, "person": 0.05}]
    with MetricsLog(gan_run / "metrics.jsonl") as log:
        for step, ap in zip((150, 300), aps):
            log.eval(step, map=sum(ap.values()) / len(ap), ap=ap, metric="VOC07 mAP@0.5")

    text, html, data = _page(write_report([gan_run]))
    assert "DETECT run" in text
    assert 'id="r0-samples-s"' not in text
    pred = data["sliders"]["r0-pred"]
    assert [f["images"][0]["src"] for f in pred] == [f"predictions/step_{s:06d}.png" for s in (100, 200, 300)]
    assert html.find("img", src="predictions.gif")
    m = _chart(data, "r0-map")
    assert m["x"] == [150, 300] and m["series"][0]["values"] == [pytest.approx(0.15), pytest.approx(0.3)]
    ap_text = html.text("r0-ap")
    for name, value in aps[-1].items():
        assert name in ap_text and f"{value:.3g}" in ap_text
    widths = re.findall(r'class="bar" style="width:([\d.]+)%"', text)
    assert [float(w) for w in widths] == [35.0, 50.0, 5.0]
    assert "VOC07 mAP@0.5" in html.text("r0-eval")
    # the AP bars say which evaluation they are from; the drawings say what they leave out
    assert "last evaluation during training, step 300" in ap_text
    assert "Only boxes scoring over 0.2 are drawn" in html.text("r0-pred-s")


def test_conditional_run_gets_explore_pictures_and_class_fidelity(gan_run):
    _png(gan_run / "explore" / "classes.png", (200, 10, 10))
    _png(gan_run / "explore" / "interpolate-2.png", (10, 200, 10))
    _png(gan_run / "explore" / "interpolate-10.png", (10, 10, 200))
    (gan_run / "explore" / "traverse_c1.gif").write_bytes((gan_run / "progress.gif").read_bytes())
    fidelity = {"accuracy": 0.91, "per_class": {str(d): 0.8 + d / 100 for d in range(10)},
                "classifier": "digits classifier"}
    (gan_run / "eval.json").write_text(json.dumps({"fid": 12.5, "kid_mean": 0.01, "protocol": {
        "features": "classifier:digits", "n_fake": 1000}, "class_fidelity": fidelity}))

    text, html, _ = _page(write_report([gan_run]))
    pics = html.find("img", cls="explore")
    assert [p["src"] for p in pics] == ["explore/classes.png", "explore/interpolate-2.png",
                                        "explore/interpolate-10.png", "explore/traverse_c1.gif"]
    assert all(p["alt"].startswith("explore ") for p in pics)
    explore = html.text("r0-explore")
    assert "Class fidelity" in explore and "digits classifier" in explore and "0.91" in explore
    assert [float(w) for w in re.findall(r'class="bar" style="width:([\d.]+)%"', text)] == [
        pytest.approx(100 * (0.8 + d / 100), abs=0.05) for d in range(10)]
    evaluation = html.text("r0-eval")
    assert "eval.json" in evaluation and "12.5" in evaluation and "classifier:digits" in evaluation


def test_events_are_marked_on_every_curve_and_listed(gan_run):
    with MetricsLog(gan_run / "metrics.jsonl") as log:
        log.event(40, "resumed", from_step=40)
        log.event(70, "skipped_nonfinite_step", skipped_total=1)
        log.event(80, "rolled_back", to_step=60)
        log.warning(90, "the fixed-latent grid is 10% as diverse as real data at step 90: possible mode collapse")
        log.warning(95, "evaluation skipped: no reference")
    text, html, data = _page(write_report([gan_run]))
    expected = [(40, "resume"), (70, "skipped"), (80, "rollback"), (90, "collapse"), (95, "warning")]
    for chart in data["charts"]:
        assert [(m["step"], m["type"]) for m in chart["markers"]] == expected
    events = html.text("r0-events")
    assert "possible mode collapse" in events and "rolled back" in events and "evaluation skipped" in events
    key = re.search(r'<ul class="marker-key".*?</ul>', text, re.S).group(0)
    for name in ("resumed (1)", "skipped step (1)", "rolled back (1)", "collapse alarm (1)", "warning (1)"):
        assert name in key


def test_live_page_says_so_and_reloads(gan_run):
    text, _, data = _page(write_report([gan_run], live=True))
    assert data["live"] is True and data["refresh"] > 0
    assert "status-running" in text and "This run is training" in text
    text, _, data = _page(write_report([gan_run], live=False))
    assert data["live"] is False and "This run is training" not in text and "status-finished" in text


def test_status_follows_the_files(gan_run):
    # A resumed run training on: the summary is an earlier segment's.
    summary = json.loads((gan_run / "summary.json").read_text())
    (gan_run / "summary.json").write_text(json.dumps({**summary, "steps": 30}))
    assert "status-running" in write_report([gan_run]).read_text()
    # A run that ended on non-finite steps writes no summary.
    (gan_run / "summary.json").unlink()
    with MetricsLog(gan_run / "metrics.jsonl") as log:
        for step in (61, 62):
            log.event(step, "skipped_nonfinite_step")
    text = write_report([gan_run]).read_text()
    assert "status-diverged" in text and "62" in text
    # What a later summary says wins.
    (gan_run / "summary.json").write_text(json.dumps({**summary, "steps": 62, "status": "diverged"}))
    assert "status-diverged" in write_report([gan_run]).read_text()


def test_unknown_recipe_and_damaged_files_are_notes_not_failures(gan_run):
    config = json.loads((gan_run / "config.json").read_text())
    (gan_run / "config.json").write_text(json.dumps({**config, "recipe": "no-such-recipe"}))
    (gan_run / "eval.json").write_text("{not json")
    (gan_run / "checkpoints" / "best" / "MANIFEST.json").write_text("garbage")
    text, html, _ = _page(write_report([gan_run]))
    assert "not one this ganforge knows" in html.text("r0-config")
    assert "eval.json could not be read" in text
    assert "unreadable manifest" in html.text("r0-ckpt")


def test_links_to_files_outside_the_run_are_not_followed(gan_run, tmp_path):
    secret = tmp_path / "elsewhere.png"
    _png(secret, (1, 2, 3))
    (gan_run / "samples" / "step_000999.png").symlink_to(secret)
    (gan_run / "explore").mkdir()
    (gan_run / "explore" / "x.png").symlink_to(secret)
    text, _, data = _page(write_report([gan_run], tmp_path / "page.html"))
    assert base64.b64encode(secret.read_bytes()).decode() not in text
    assert len(data["sliders"]["r0-samples"]) == 4 and 'id="r0-explore"' not in text


def test_frame_labels_read_the_sample_name_template():
    assert frame_label(Frame("img-199", []), "img-{iteration}") == "step 200 (iteration 199)"
    assert frame_label(Frame("image_at_epoch_0003", []), "image_at_epoch_{epoch:04d}") == "epoch 3"
    assert frame_label(Frame("step_000101", []), "step_{step:06d}") == "step 101"
    assert frame_label(Frame("gan_mnist_0042", []), "other-{step}") == "gan mnist 42"


def test_embedded_sliders_keep_an_even_spread(tmp_path):
    frames = [Frame(f"f{i}", []) for i in range(100)]
    kept, total = Media(tmp_path, embed=True).frames(frames)
    assert total == 100 and len(kept) == EMBED_FRAMES
    assert kept[0] is frames[0] and kept[-1] is frames[-1]
    assert Media(tmp_path, embed=False).frames(frames) == (frames, 100)


@pytest.mark.parametrize("case", ["missing", "file", "no-config", "no-samples", "unwritable"])
def test_bad_input_is_one_line_and_writes_nothing(case, gan_run, tmp_path):
    out = None
    if case == "missing":
        run = tmp_path / "nope"
    elif case == "file":
        run = tmp_path / "a-file"
        run.write_text("x")
    elif case == "no-config":
        run = tmp_path / "empty"
        run.mkdir()
        (run / "samples").mkdir()
    elif case == "no-samples":
        run = tmp_path / "fresh"
        run.mkdir()
        (run / "config.json").write_bytes((gan_run / "config.json").read_bytes())
    else:
        run = gan_run
        (tmp_path / "blocker").write_text("a file where a folder should be")
        out = tmp_path / "blocker" / "report.html"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(GanforgeError) as err:
        write_report([run], out)
    message = str(err.value)
    assert "\n" not in message and ": " in message and err.value.exit_code == 2
    assert {"missing": "not a folder", "file": "not a folder", "no-config": "not a run folder",
            "no-samples": "no sample grids yet", "unwritable": "cannot write the report"}[case] in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_report_command(gan_run, stopped_run, tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser(prog="ganforge")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(gan_run)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {gan_run / 'report.html'}"
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(["report", str(gan_run), str(stopped_run)])
    assert args.func(args) == 0 and (tmp_path / "compare.html").is_file()
    args = parser.parse_args(["report", str(gan_run), "--out", str(tmp_path / "sub")])
    (tmp_path / "sub").mkdir()
    assert args.func(args) == 0 and (tmp_path / "sub" / "report.html").is_file()


@pytest.mark.parametrize("step, heading", [
    (30, "Evaluation at step 30 (eval.json): stale"),
    (60, "Evaluation of the finished run at step 60 (eval.json)"),
    (None, "Evaluation from eval.json (its step is not recorded)"),
])
def test_eval_json_says_its_step_and_whether_it_is_stale(gan_run, step, heading):
    protocol = {"features": "cnn-digits", "n_fake": 200, "metrics": {"fid": "Frechet distance " * 5}}
    if step is not None:
        protocol["checkpoint_step"] = step
    (gan_run / "eval.json").write_text(json.dumps({"fid": 12.5, "protocol": protocol}))
    _, html, _ = _page(write_report([gan_run]))
    evaluation = html.text("r0-eval")
    assert heading in evaluation
    assert ("the run has trained to step 60 since" in evaluation) == (step == 30)
    assert ("finished run" in evaluation) == (step == 60)


def test_explorations_show_their_step_and_a_stale_one_says_so(gan_run, tmp_path):
    from ganforge.cli import main

    # explore writes explore.json: the checkpoint step of every picture (here step 60, the last)
    assert main(["explore", str(gan_run), "--n", "2", "--frames", "2", "--dims", "0"]) == 0
    record = json.loads((gan_run / "explore" / "explore.json").read_text())
    assert {k: v["checkpoint_step"] for k, v in record["pictures"].items()} == {"interpolation": 60,
                                                                               "traversal": 60}
    _, html, _ = _page(write_report([gan_run]))
    assert html.text("r0-explore").count("step 60") == 4 and "stale" not in html.text("r0-explore")
    # an exploration of an older checkpoint, and a picture from before explore.json existed
    record["pictures"]["interpolation"]["checkpoint_step"] = 30
    (gan_run / "explore" / "explore.json").write_text(json.dumps(record))
    _png(gan_run / "explore" / "older.png", (10, 10, 10))
    _, html, _ = _page(write_report([gan_run]))
    explore = html.text("r0-explore")
    assert "interpolation.png, step 30; stale: the run has trained to step 60 since" in explore
    assert "traversal.png, step 60" in explore and "older.png, step not recorded" in explore
    # the traversal still says which block of rows is which dimension, and the values of its columns
    import numpy as np
    from PIL import Image

    still = np.asarray(Image.open(gan_run / "explore" / "traversal.png").convert("L"))
    plain = np.asarray(Image.open(gan_run / "explore" / "traversal" / "frame_0.png").convert("L"))
    side = 2 * (plain.shape[0] - 2) + 2  # 2 rows (n=2, one dimension) by 2 values, 2-pixel padding
    margin = still.shape[1] - side
    assert still.shape[0] == side + 16 and margin > 10
    assert (still[16:, :margin - 4] < 100).sum() > 10 and (still[:14] < 100).sum() > 10  # text in both
    # a file of that name that ganforge did not write is left alone
    (gan_run / "explore" / "explore.json").write_text("mine")
    assert main(["explore", str(gan_run), "--n", "2", "--frames", "2", "--dims", "0"]) == 0
    assert (gan_run / "explore" / "explore.json").read_text() == "mine"


def test_uniform_grey_first_grids_are_explained(gan_run):
    import torch

    from ganforge.viz import save_grid

    grids = sorted((gan_run / "samples").glob("*.png"))
    noise = torch.randint(1, 256, (16, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for grid in grids:
        save_grid(noise, grid, nrow=4)
    assert "uniform grey" not in write_report([gan_run]).read_text()
    grey = torch.full((16, 1, 8, 8), 128, dtype=torch.uint8)
    for step in (1, 20):
        save_grid(grey, gan_run / "samples" / f"step_{step:06d}.png", nrow=4)
    _, html, _ = _page(write_report([gan_run]))
    note = html.text("r0-samples-s")
    assert "The first 2 grids are uniform grey" in note and "BatchNorm" in note and "running statistics" in note
