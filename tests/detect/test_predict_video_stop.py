"""`detect predict` on a live stream stops cleanly on Ctrl-C and SIGTERM: every frame it got to is
in a playable video, its label file and its JSON line, and it says so in one line (exit 130/143).

The stream is a clip served on 127.0.0.1 that sends part of its bytes and then holds the
connection, as a camera that went quiet would: the command cannot end by itself before the signal,
so the test needs no timing."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from ganforge.detect.digits import load_digits_det
from ganforge.detect.model import build_detector
from ganforge.detect.recipes import get_recipe
from ganforge.detect.use import from_net
from ganforge.export.write import export_trained
from ganforge.video import VideoWriter, frames


@pytest.fixture(scope="module")
def held_stream(tmp_path_factory):
    """(URL of a clip whose first 60 % arrive and the rest never does, an exported yolov1-s)."""
    root = tmp_path_factory.mktemp("held")
    data = load_digits_det("val", count=8)
    clip = root / "clip.mkv"
    # 12 s at 10 fps: the part sent holds more than the 5 s FFmpeg reads to probe a stream
    with VideoWriter(clip, fps=10) as writer:
        for i in range(120):
            writer.write(data.image(i % 8)[:, :64, :64])
    blob = clip.read_bytes()
    release = threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/x-matroska")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob[: len(blob) * 6 // 10])
            self.wfile.flush()
            release.wait()

        def log_message(self, format, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    torch.manual_seed(0)
    names = [str(d) for d in range(10)]
    model = export_trained(from_net(build_detector("yolov1-s", 10, fc_width=32),
                                    replace(get_recipe("adam"), fc_width=32), names), root / "det.onnx", batch=None)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.mkv", model
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_every_frame_done_in_a_playable_video(held_stream, tmp_path, sig, code):
    url, model = held_stream
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ganforge", "detect", "predict", "--model", str(model), "--source", url,
            "--out", str(out), "--conf", "0.01"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        while not (out / "labels").is_dir() or not any((out / "labels").iterdir()):
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        child.send_signal(sig)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    err = stderr.decode().strip().splitlines()
    assert child.returncode == code, err
    assert len(err) == 1 and err[0].startswith(f"ganforge: stopped by {sig.name} after "), err
    done = int(err[0].split(" after ")[1].split()[0])
    assert done >= 1 and "Traceback" not in stderr.decode()
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"stream_{i:06d}.txt" for i in range(done)]
    assert len((out / "stream.jsonl").read_text().splitlines()) == done
    assert [i for i, _ in frames(out / "stream.mp4")] == list(range(done))  # closed properly: playable
    assert f"in {done} frames" in stdout.decode() and "FPS" in stdout.decode()


def test_the_stall_timeout_is_read_from_the_environment(monkeypatch):
    from ganforge.errors import ConfigError
    from ganforge.video import STREAM_TIMEOUT, stream_timeout

    monkeypatch.delenv("GANFORGE_STREAM_TIMEOUT", raising=False)
    assert stream_timeout() == STREAM_TIMEOUT == 10.0
    monkeypatch.setenv("GANFORGE_STREAM_TIMEOUT", "2.5")
    assert stream_timeout() == 2.5
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv("GANFORGE_STREAM_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="is not a positive number of seconds"):
            stream_timeout()
