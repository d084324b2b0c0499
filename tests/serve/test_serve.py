"""`ganforge serve` without a browser: what the server answers, and everything it refuses."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ganforge.errors import DataError
from ganforge.serve import host_warning
from ganforge.serve.latents import normals, page_inputs, slerp, uniforms
from ganforge.serve.server import Server, safe_file

TRAVERSAL = ["/../config.json", "/run/0/../../config.json", "/%2e%2e%2fconfig.json", "/%2E%2E/%2E%2E/etc/passwd",
             "/run/0/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/run/0/%2e%2e%2f%2e%2e%2fconfig.json", "//etc/passwd",
             "/etc/passwd", "/%2fetc%2fpasswd", "/run/0/..%5c..%5cconfig.json", "/run/0/model.onnx%00.png",
             "/assets/../serve/__init__.py", "/assets/%2e%2e/serve/__init__.py", "/run/0/config.json",
             "/run/0/metrics.jsonl", "/run/0/checkpoints/", "/run/0/eval.json", "/run/0/report.html",
             "/run/0/samples/step_000060.png", "/run/0/", "/run/", "/assets/", "/assets", "/run/1/model.onnx",
             "/%ff%fe", "/run/0/model.onnx/", "/RUN/0/MODEL.ONNX"]


def _request(server: Server, method: str, path: str, body: bytes | None = None,
             host_header: str | None = None) -> tuple[int, bytes, dict]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        # the path goes out as written
        conn.putrequest(method, path, skip_host=host_header is not None, skip_accept_encoding=True)
        if host_header is not None:
            conn.putheader("Host", host_header)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_python_and_page_latents_are_one_documented_generator():
    # mulberry32's first outputs for seed 0 (fixed: the page's latents.js must give the same)
    assert uniforms(0, 3) == [0.26642920868471265, 0.0003297457005828619, 0.2232720274478197]
    z = normals(123, 100_000)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02  # standard normal
    a, b = normals(1, 64), normals(2, 64)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-12)
    feeds = page_inputs({"latent_dim": 8, "num_classes": 3, "categorical": 4, "continuous": 2}, 5, 6, 0.5,
                        label=2, category=1, continuous=[0.5, -1])
    assert feeds["z"].shape == (1, 8) and feeds["z"].dtype == np.float32
    assert feeds["labels"].tolist() == [2] and feeds["codes"].tolist() == [[0, 1, 0, 0, 0.5, -1]]


def test_only_the_table_is_served_and_nothing_can_be_written(serve_runs, serving):
    gan = serve_runs["gan"]
    before = _snapshot(gan)
    with serving(gan) as server:
        for path in ("/", "/assets/page.js", "/assets/ort-wasm-simd-threaded.wasm", "/runs.json", "/run/0/model.onnx"):
            status, body, headers = _request(server, "GET", path)
            assert status == 200 and body, path
            assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert _request(server, "GET", "/assets/ort-wasm-simd-threaded.wasm")[2]["Content-Type"] == "application/wasm"
        status, body, headers = _request(server, "HEAD", "/runs.json")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        runs = json.loads(_request(server, "GET", "/runs.json")[1])["runs"]
        assert [r["task"] for r in runs] == ["gan"] and runs[0]["model"] == "/run/0/model.onnx"
        for path in TRAVERSAL:
            status, body, _ = _request(server, "GET", path)
            assert status == 404, (path, status)
            assert b"passwd" not in body and b'"task"' not in body
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/", "/run/0/model.onnx", "/run/0/config.json", "/upload"):
                status, _, headers = _request(server, method, path, body=b"x" * 10)
                assert status == 405 and headers["Allow"] == "GET, HEAD", (method, path)
        assert _request(server, "GET", "/run/0/model.onnx")[0] == 200  # still served after all that
        port = server.server_address[1]
        assert _request(server, "GET", "/runs.json", host_header=f"localhost:{port}")[0] == 200
        for other in (f"attacker.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", ""):
            assert _request(server, "GET", "/runs.json", host_header=other)[0] == 403, other  # DNS rebinding
    assert _snapshot(gan) == before  # the run folder is exactly as it was


def test_links_and_paths_outside_are_never_read(tmp_path):
    inside = tmp_path / "run"
    (inside / "sub").mkdir(parents=True)
    (inside / "sub" / "ok.png").write_bytes(b"png")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, inside / "link.png")
    os.symlink(tmp_path, inside / "up")
    assert safe_file(inside, "sub/ok.png") == b"png"
    for rel in ("link.png", "up/secret.txt", "../secret.txt", str(secret), "sub", "missing.png", ""):
        with pytest.raises(DataError):
            safe_file(inside, rel)


def test_eval_json_that_is_a_link_is_ignored(serve_runs, tmp_path):
    from ganforge.gan.evaluate import findings

    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "eval.json"
    outside.write_text(json.dumps({"infogan": {"categorical": {"agreement": 0.5}}}))
    os.symlink(outside, run / "eval.json")
    assert findings(run) == {}


def test_cli_prints_its_address_links_the_report_and_warns_off_loopback(serve_runs, tmp_path):
    import shutil

    run = Path(shutil.copytree(serve_runs["gan"], tmp_path / "gan"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for host, warned in (("127.0.0.1", False),):  # tests listen on loopback only (the warning: below)
        proc = subprocess.Popen([sys.executable, "-m", "ganforge", "serve", str(run), "--port", "0",
                                 "--host", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("serving 1 run at http://"), line
            url = line.split(" at ")[1].split()[0]
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/runs.json")
            assert conn.getresponse().status == 200
            conn.close()
            # while it serves, the run's report links to the page
            assert f'<a href="{url}#run=0">' in (run / "report.html").read_text()
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=60)
        assert ("no authentication" in err) == warned, err
        assert proc.returncode == 0 and "stopped" in out, (proc.returncode, out, err)
        report = (run / "report.html").read_text()
        assert "served-note" not in report and "samples/step_000060.png" in report  # the link is gone
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert "no authentication" in host_warning(host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert host_warning(host) is None
    bad = subprocess.run([sys.executable, "-m", "ganforge", "serve", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("ganforge: error: ") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_translation_run_is_served_with_held_out_examples(serve_runs, serving):
    from PIL import Image

    run = serve_runs["p2p"]
    before = _snapshot(run)
    with serving(run) as server:
        (entry,) = json.loads(_request(server, "GET", "/runs.json")[1])["runs"]
        assert entry["task"] == "translate"
        assert entry["layout"] | {"input": "images", "in_channels": 1, "out_channels": 3, "multiple": 32,
                                  "pixel_range": "pm1", "mode": "pix2pix", "direction": "AtoB"} == entry["layout"]
        assert entry["examples"] == [f"/run/0/example/{i}.png" for i in range(4)]
        for url in entry["examples"]:
            status, body, headers = _request(server, "GET", url)
            assert status == 200 and headers["Content-Type"] == "image/png"
            with Image.open(io.BytesIO(body)) as img:  # the generator's input side, at the run's load size
                assert (img.mode, img.size) == ("L", (36, 36))
        assert _request(server, "GET", "/run/0/config.json")[0] == 404
    assert _snapshot(run) == before


def test_a_cyclegan_run_serves_both_generators_and_nothing_else_new(serve_runs, serving):
    """Beside the AtoB model and examples a pix2pix run has, a CycleGAN run adds exactly its BtoA
    generator and that generator's inputs (side B of the held-out split); the refusals still hold."""
    from PIL import Image

    from ganforge.serve import build_table
    from ganforge.serve.runs import load_served

    run = serve_runs["cyc"]
    before = _snapshot(run)
    urls = set(build_table([load_served(run)]).entries)
    plain = set(build_table([load_served(serve_runs["p2p"])]).entries)
    assert urls - plain == {"/run/0/BtoA/model.onnx", *(f"/run/0/BtoA/example/{i}.png" for i in range(4))}
    assert plain - urls == set()
    with serving(run) as server:
        (entry,) = json.loads(_request(server, "GET", "/runs.json")[1])["runs"]
        ab, ba = entry["directions"]
        assert (ab["direction"], ba["direction"]) == ("AtoB", "BtoA")
        assert (ab["model"], ab["layout"], ab["examples"]) == (entry["model"], entry["layout"], entry["examples"])
        assert (ab["layout"]["in_channels"], ab["layout"]["out_channels"]) == (1, 3)
        assert (ba["layout"]["in_channels"], ba["layout"]["out_channels"], ba["layout"]["direction"]) == (3, 1, "BtoA")
        assert ba["model"] == "/run/0/BtoA/model.onnx"
        assert ba["examples"] == [f"/run/0/BtoA/example/{i}.png" for i in range(4)]
        models = {_request(server, "GET", url)[1] for url in (ab["model"], ba["model"])}
        assert len(models) == 2  # two different generators
        for url in ba["examples"]:
            status, body, headers = _request(server, "GET", url)
            assert status == 200 and headers["Content-Type"] == "image/png"
            with Image.open(io.BytesIO(body)) as img:  # side B, colour, at the run's load size
                assert (img.mode, img.size) == ("RGB", (36, 36))
        for path in TRAVERSAL + ["/run/0/BtoA/", "/run/0/BtoA", "/run/0/BtoA/../model.onnx", "/run/0/btoa/model.onnx",
                                 "/run/0/BtoA/%2e%2e/%2e%2e/config.json", "/run/0/BtoA/config.json",
                                 "/run/0/BtoA/example/", "/run/0/BtoA/example/4.png", "/run/0/AtoB/model.onnx"]:
            status, body, _ = _request(server, "GET", path)
            assert status == 404, (path, status)
        for method in ("POST", "PUT", "DELETE"):
            assert _request(server, method, "/run/0/BtoA/model.onnx", body=b"x")[0] == 405
    assert _snapshot(run) == before
