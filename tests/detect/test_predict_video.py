"""`detect predict` on videos: the boxes of every frame equal `detect predict` on the same decoded
frames, and a stream URL (served on 127.0.0.1) gives the boxes of the file; broken, empty and missing
sources are one line and keep what was written."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import _QuietHandler, assert_ok, ganforge, one_error_line
from ganforge.detect.digits import load_digits_det
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.use import from_net
from ganforge.export.write import export_trained
from ganforge.video import VideoWriter, frames

FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    """A lossless FFV1 clip of digits-det canvases, an MP4 of the same, and an exported yolov1-s."""
    root = tmp_path_factory.mktemp("video")
    data = load_digits_det("val", count=FRAMES)
    paths = {"mkv": root / "clip.mkv", "mp4": root / "clip.mp4"}
    for path in paths.values():
        with VideoWriter(path, fps=5) as writer:
            for i in range(FRAMES):
                writer.write(data.image(i)[:, :120, :])  # not square: boxes go back to 128 x 120
    torch.manual_seed(0)
    names = [str(d) for d in range(10)]
    net = build_detector("yolov1-s", 10, fc_width=32)
    paths["model"] = export_trained(from_net(net, replace(get_recipe("adam"), fc_width=32), names),
                                    root / "det.onnx", batch=None)
    return paths


def test_video_boxes_equal_predict_on_the_decoded_frames(clip, tmp_path):
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    originals = load_digits_det("val", count=FRAMES)
    for index, image in frames(clip["mkv"]):
        assert torch.equal(image, originals.image(index)[:, :120, :])  # FFV1 is lossless
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(decoded / f"clip_{index:06d}.png")
    out = tmp_path / "video"
    proc = ganforge("detect", "predict", "--model", clip["model"], "--source", clip["mkv"], "--out", out,
                    "--conf", "0.01")
    assert_ok(proc)
    text = proc.stdout.decode()
    assert "in 8 frames" in text and "ms decode" in text and "ms inference" in text and "FPS" in text
    assert_ok(ganforge("detect", "predict", "--model", clip["model"], "--source", decoded, "--out",
                       tmp_path / "images", "--conf", "0.01"))
    rows = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(FRAMES)) and rows[0]["width"] == 128
    total = 0
    for index in range(FRAMES):
        ours = (out / "labels" / f"clip_{index:06d}.txt").read_text()
        assert ours == (tmp_path / "images" / f"clip_{index:06d}.txt").read_text()
        total += len(ours.splitlines())
    assert total > 0
    assert [f[0] for f in frames(out / "clip.mp4")] == list(range(FRAMES))  # the annotated video


def test_stride_max_frames_and_an_existing_output(clip, tmp_path):
    out = tmp_path / "o"
    assert_ok(ganforge("detect", "predict", "--model", clip["model"], "--source", clip["mp4"], "--out", out,
                       "--vid-stride", "3", "--max-frames", "2"))
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["clip_000000.txt", "clip_000003.txt"]
    before = (out / "clip.jsonl").read_bytes()
    assert "earlier results" in one_error_line(ganforge("detect", "predict", "--model", clip["model"], "--source",
                                                        clip["mp4"], "--out", out))
    assert (out / "clip.jsonl").read_bytes() == before
    assert "own input" in one_error_line(ganforge("detect", "predict", "--model", clip["model"], "--source",
                                                  clip["mp4"], "--out", clip["mp4"]))  # never the source


def test_cut_short_empty_and_absent_sources_are_one_line(clip, tmp_path):
    data = clip["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "cut"
    proc = ganforge("detect", "predict", "--model", clip["model"], "--source", cut, "--out", out)
    line = one_error_line(proc)
    assert "ended at frame" in line and "cut short" in line
    kept = len(list((out / "labels").iterdir()))
    assert 0 < kept < FRAMES and len((out / "cut.jsonl").read_text().splitlines()) == kept
    assert [f[0] for f in frames(out / "cut.mp4")] == list(range(kept))  # the frames so far, playable
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    for source, words in ((tmp_path / "junk.mp4", "cannot be opened as a video"), ("7", "camera 7 is not there"),
                          (tmp_path / "missing.mkv", "does not exist")):
        assert words in one_error_line(ganforge("detect", "predict", "--model", clip["model"], "--source", source,
                                                "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    (tmp_path / "empty").mkdir()
    assert "no frames" in one_error_line(ganforge("detect", "predict", "--model", clip["model"], "--source",
                                                  tmp_path / "empty", "--as-video", "--out", tmp_path / "x"))


@contextlib.contextmanager
def served_on_loopback(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1 (an ephemeral port); yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_stream_url_gives_the_boxes_of_the_file(clip, tmp_path):
    # FFmpeg reads the clip over HTTP as it would a network camera; the server answers only loopback
    with served_on_loopback(clip["mkv"].parent) as url:
        out = tmp_path / "stream"
        proc = ganforge("detect", "predict", "--model", clip["model"], "--source", f"{url}/{clip['mkv'].name}",
                        "--out", out, "--conf", "0.01")
        assert_ok(proc)
    assert "in 8 frames" in proc.stdout.decode()
    assert_ok(ganforge("detect", "predict", "--model", clip["model"], "--source", clip["mkv"], "--out",
                       tmp_path / "file", "--conf", "0.01"))
    streamed = [json.loads(line) for line in (out / "stream.jsonl").read_text().splitlines()]
    from_file = [json.loads(line) for line in (tmp_path / "file" / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in streamed] == list(range(FRAMES)) and streamed == from_file
    assert sum(len(r["detections"]) for r in streamed) > 0
    for index in range(FRAMES):
        assert ((out / "labels" / f"stream_{index:06d}.txt").read_text()
                == (tmp_path / "file" / "labels" / f"clip_{index:06d}.txt").read_text())
    assert [f[0] for f in frames(out / "stream.mp4")] == list(range(FRAMES))
