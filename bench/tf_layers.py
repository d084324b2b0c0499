"""Where the tf-dcgan-mnist step's time goes, layer by layer: ganforge's layers (with the speed
features the run would use: per-layer channels_last, fast dropout) against the same Keras layers
under TensorFlow, at batch 256 and the same thread count.

    python bench/tf_layers.py --tf-python /path/to/tf-venv/bin/python --threads 1 [--repeat 7]

Each layer is timed alone: its forward pass, and its forward pass with the gradients the step
takes (the input's, except for G's first layer, and the layer's weights'). Medians of the CPU
time of each process (all its threads) in ms. The
TensorFlow side runs in the child process `bench/tf_seed.py --layers`; ganforge's here, after the
child has finished, so the two never share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ganforge  # noqa: F401  (before torch, as the CLI: its OpenMP setting)
import torch

from ganforge.config import apply_overrides
from ganforge.data import ImageDataset
from ganforge.gan.recipes import get_recipe
from ganforge.gan.run import GANRun

HERE = Path(__file__).resolve().parent


def median_ms(fn, repeat: int) -> float:
    """Median CPU time of this process per call, in ms: on a shared machine far steadier than the
    wall clock, and at one thread the same as it on an idle one."""
    fn(), fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return round(sorted(times)[len(times) // 2] * 1000, 2)


def torch_layers(threads: int, speed: str, repeat: int) -> list[dict]:
    cfg = apply_overrides(get_recipe("tf-dcgan-mnist"), ["device=cpu", f"threads={threads}", f"speed={speed}"])
    images = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        run = GANRun(cfg, Path(tmp), quiet=True, dataset=ImageDataset("random", images, None, None, "random"))
    torch.set_num_threads(run.threads)
    rows = []
    g = list(run.G.net)
    # Keras' last Conv2DTranspose applies its tanh itself: time torch's last two layers as one.
    nets = (("G", g[:-2] + [torch.nn.Sequential(*g[-2:])], torch.randn(256, cfg.latent_dim)),
            ("D", list(run.D.trunk) + list(run.D.head), run.real(torch.arange(256))[0]))
    for net, layers, x in nets:
        for i, layer in enumerate(layers):
            x = x.detach().requires_grad_(not (net == "G" and i == 0))
            with torch.no_grad():
                y = layer(x)
            gy = torch.randn_like(y)
            wrt = ([x] if x.requires_grad else []) + list(layer.parameters())

            def both(layer=layer, x=x, gy=gy, wrt=wrt):
                out = layer(x)
                return torch.autograd.grad(out, wrt, gy) if wrt else out

            def forward(layer=layer, x=x):
                with torch.no_grad():
                    return layer(x)

            rows.append({"net": net, "index": i, "layer": type(layer).__name__,
                         "forward_ms": median_ms(forward, repeat), "with_grads_ms": median_ms(both, repeat)})
            x = y
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--speed", default="auto")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    child = subprocess.run([args.tf_python, str(HERE / "tf_seed.py"), "--threads", str(args.threads),
                            "--layers", str(args.repeat)], capture_output=True, text=True, env=env)
    if child.returncode:
        sys.exit(child.stderr[-2000:])
    tf_rows = json.loads(child.stdout.splitlines()[-1])["layers"]
    ours = torch_layers(args.threads, args.speed, args.repeat)
    print(f"tf-dcgan-mnist layers at batch 256, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; "
          "CPU ms, median of each")
    print(f"{'':3s}{'TensorFlow layer':22s}{'ganforge layer':22s}{'fwd TF':>9s}{'fwd gf':>9s}"
          f"{'+grads TF':>11s}{'+grads gf':>11s}{'gf/TF':>7s}")
    totals = [0.0] * 4
    # Both sides list the same layers in the same order (checked by name as they are printed).
    for t, g in zip(tf_rows, ours):
        vals = (t["forward_ms"], g["forward_ms"], t["with_grads_ms"], g["with_grads_ms"])
        totals = [a + b for a, b in zip(totals, vals)]
        print(f"{t['net']:3s}{t['layer']:22s}{g['layer']:22s}{vals[0]:9.1f}{vals[1]:9.1f}{vals[2]:11.1f}"
              f"{vals[3]:11.1f}{vals[3] / max(vals[2], 1e-6):7.2f}")
    print(f"{'':3s}{'sum':44s}{totals[0]:9.1f}{totals[1]:9.1f}{totals[2]:11.1f}{totals[3]:11.1f}"
          f"{totals[3] / totals[2]:7.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": args.threads, "speed": args.speed, "tensorflow": tf_rows,
                                              "ganforge": ours}, indent=2) + "\n")


if __name__ == "__main__":
    main()
