"""The speed path (issue 4): fast and eager agree, failed compiles and captures fall back to eager,
the sync-free guard skips exactly like the host one, and device sampling covers the dataset.

Everything runs on the CPU at toy size. CUDA graphs are exercised through a CPU stand-in for
torch.cuda's graph API (capture rewinds what it ran, replay reruns the step on the captured
buffers), which checks GraphedStep's plumbing; real capture needs a GPU (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree

from ganforge import speed as accel
from ganforge import losses
from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.config import apply_overrides
from ganforge.gan.recipes import get_recipe
from ganforge.errors import ConfigError
from ganforge.gan.run import GANRun as Run
from ganforge.gan.train import train
from ganforge.runs import TrainingDiverged
from ganforge.speed import Faults

TOY = {  # small batches of offline data; every recipe keeps its loop
    "default": ["data=digits", "base_filters=8", "batch_size=16"],
    "dcgan": ["data=digits", "image_size=32", "base_filters=8", "batch_size=8", "channels=1"],
    "seed001-dcgan-mnist": ["data=digits", "batch_size=8"],
    "tf-dcgan-mnist": ["data=digits", "batch_size=16"],
    "seed004-mlp-mnist": ["data=digits", "batch_size=16"],
    "seed000-dcgan-cifar100": ["data=digits", "batch_size=6", "channels=3", "image_size=32", "merge_test=false"],
}
DROPOUT = {"seed001-dcgan-mnist", "tf-dcgan-mnist", "seed000-dcgan-cifar100"}


def _cfg(name: str, speed: str, *extra: str):
    return apply_overrides(get_recipe(name), TOY[name] + ["device=cpu", f"speed={speed}", "threads=1", *extra])


def _run(name: str, speed: str, tmp_path: Path, *extra: str) -> Run:
    return Run(_cfg(name, speed, *extra), tmp_path / speed, quiet=True)


def _steps(run: Run, n: int) -> list[dict[str, float]]:
    out = []
    for _ in range(n):
        stats, ok, _ = run.train_step()
        run.step += 1
        out.append({k: float(v) for k, v in stats.items()} | {"ok": bool(ok)})
    return out


def _weights(run: Run) -> dict[str, torch.Tensor]:
    tensors = {f"G.{k}": v for k, v in run.G.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in run.D.state_dict().items()})
    if run.ema is not None:
        tensors.update({f"EMA.{k}": v for k, v in run.ema.state_dict().items()})
    return {k: v.float() for k, v in tensors.items() if v.is_floating_point()}


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


# ---- the setting ------------------------------------------------------------------------------

def test_speed_presets_and_switches():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert accel.resolve_speed("eager", cuda).name == "eager"
    fast_cuda = accel.resolve_speed("fast", cuda)
    assert fast_cuda.compile and fast_cuda.cudagraphs and fast_cuda.bf16 and fast_cuda.async_guard
    assert accel.resolve_speed("auto", cuda) == fast_cuda
    # On the CPU fast keeps only what measured faster there (docs/BENCHMARKS.md), per model.
    assert accel.resolve_speed("auto", cpu, "default") == accel.resolve_speed("fast", cpu, "default")
    cpu_fast = "fast_dropout+dft_conv+upsample_conv+thin_conv"
    assert accel.resolve_speed("fast", cpu, "default").name == "fused+channels_last+" + cpu_fast
    assert accel.resolve_speed("fast", cpu, "tf-dcgan").name == "fused+channels_last+" + cpu_fast
    assert accel.resolve_speed("fast", cpu, "cifar-dcgan").name == "fused+" + cpu_fast
    assert not (fast_cuda.fast_dropout or fast_cuda.dft_conv or fast_cuda.upsample_conv or fast_cuda.thin_conv)
    assert accel.resolve_speed("fast+channels_last", cpu, "cifar-dcgan").channels_last
    assert accel.resolve_speed("fast", cuda, "tf-dcgan").channels_last
    assert accel.resolve_speed("fast+no_compile+no_bf16", cuda).name == (
        "fused+channels_last+autotune+async_guard+cudagraphs")
    assert accel.resolve_speed("eager+fused", cpu).name == "fused"
    assert accel.resolve_speed("compile", cpu).name == "compile"
    with pytest.raises(ConfigError, match="cudagraphs"):
        apply_overrides(get_recipe("default"), ["speed=fast+warp"])


def test_summary_names_only_features_that_act(tmp_path):
    # No dropout and no CUDA; D's first convolution reads the one grey channel.
    assert _run("default", "auto+autotune", tmp_path).speed == "fused+channels_last+thin_conv"
    assert _run("seed000-dcgan-cifar100", "auto", tmp_path).speed == "fused+fast_dropout"  # 3 colour channels
    tf = _run("tf-dcgan-mnist", "auto", tmp_path)
    assert tf.speed == "fused+channels_last+fast_dropout+thin_conv"  # dft_conv counts once a layer has taken it
    _steps(tf, 1)
    assert tf.speed == "fused+channels_last+fast_dropout+dft_conv+thin_conv"  # G's 256->128 5x5 at 7x7


def test_optimizer_implementation_follows_the_features():
    fast = accel.resolve_speed("fast", torch.device("cuda"))
    assert accel.optimizer_options("adam", fast, torch.device("cuda")) == {"fused": True, "capturable": True}
    assert accel.optimizer_options("rmsprop", fast, torch.device("cuda")) == {"foreach": True, "capturable": True}
    assert accel.optimizer_options("sgd", fast, torch.device("cuda")) == {"fused": True}
    assert accel.optimizer_options("adam", accel.Speed(), torch.device("cpu")) == {}


# ---- fast and eager agree ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TOY))
def test_fast_path_matches_eager(name, tmp_path):
    """Same seeds: losses and weights agree (fp32 on the CPU, far inside bf16's 2^-8).

    With dropout, channels_last and fast_dropout draw the masks in another order or from another
    stream (same distribution), so those recipes compare the fast path without them. seed001 is compared after one step: its
    conv biases sit before BatchNorm, so their true gradient is 0 and Adam (Keras lr 1e-3,
    eps 1e-7) turns rounding noise into +-lr steps; the frozen D's BN in eval mode then lets
    those biases move G's loss, and the two paths part after the first step."""
    steps = 1 if name == "seed001-dcgan-mnist" else 3
    speed = "fast+async_guard" + ("+no_channels_last+no_fast_dropout" if name in DROPOUT else "")
    eager = _run(name, "eager", tmp_path)
    a = _steps(eager, steps)
    fast = _run(name, speed, tmp_path)  # reseeds the global RNG (dropout) as a new run does
    b = _steps(fast, steps)
    assert fast.features.fused and fast.features.async_guard
    for x, y in zip(a, b):
        assert x["ok"] and y["ok"]
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-4), key
    wa, wb = _weights(eager), _weights(fast)
    lr = max(eager.cfg.g_lr, eager.cfg.d_lr)
    for key in wa:  # Adam moves a weight by about lr per step: a sign flip on noise is 2 lr
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-3, atol=2.5 * lr, msg=key)


def test_fast_dropout_keeps_dropout_semantics():
    torch.manual_seed(0)
    layer = accel.FastDropout(0.3)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.002  # 1e6 draws: 0.7 +- 5 sigma
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask, same scale
    assert torch.equal(layer.eval()(x), x)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(0.25)))
    accel.fast_dropout(model, enabled=True)
    assert type(model[1][0]) is accel.FastDropout and model[1][0].p == 0.25
    assert not model.state_dict().keys() - {"0.weight", "0.bias"}


@pytest.mark.parametrize("name,dft", [("tf-dcgan-mnist", False), ("tf-dcgan-mnist", True), ("default", False),
                                      ("seed000-dcgan-cifar100", False)])
def test_cpu_channels_last_layout_gives_the_same_numbers(name, dft, tmp_path):
    """Per-layer NHWC on the CPU: stride-1 transposed convs stay NCHW, every boundary converts the
    activation and its gradient; forward and gradients equal the NCHW model's (fp32 rounding).
    With dft_conv the DFT layer writes its output in NHWC for the layers after it."""
    from ganforge.gan.models import build_models

    cfg = _cfg(name, "eager")
    torch.manual_seed(0)
    G, D = build_models(cfg)
    torch.manual_seed(0)
    G2, D2 = build_models(cfg)
    accel.dft_conv(G2, D2, enabled=dft)
    accel.channels_last(G2, D2, enabled=True, device=torch.device("cpu"))
    for module in G2.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            nhwc = module.weight.is_contiguous(memory_format=torch.channels_last) and module.weight.stride(1) == 1
            assert nhwc == (module.stride != (1, 1)), module
    G.eval(), D.eval(), G2.eval(), D2.eval()  # no dropout masks: same numbers expected
    z = torch.randn(4, cfg.latent_dim)
    for (g, d) in ((G, D), (G2, D2)):
        out = d(g(z)).sum()
        out.backward()
    torch.testing.assert_close(D2(G2(z)), D(G(z)), rtol=1e-4, atol=1e-5)
    for (k, p), p2 in zip(G.named_parameters(), G2.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-3, atol=1e-5, msg=k)
    assert accel.dft_used(G2) == dft
    if dft:  # the DFT layer hands NHWC on
        layer = next(m for m in G2.modules() if isinstance(m, accel.dftconv.DFTConvTranspose2d))
        y = layer(torch.randn(2, 256, 7, 7))
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


def test_cpu_keeps_freed_memory_on_glibc():
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert accel.keep_freed_memory()


def test_bf16_autocast_stays_within_bf16_tolerance(tmp_path):
    eager = _run("default", "eager", tmp_path)
    a = _steps(eager, 2)
    amp = _run("default", "fused+bf16", tmp_path)
    b = _steps(amp, 2)
    for x, y in zip(a, b):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert y[key] == pytest.approx(x[key], rel=3e-2, abs=3e-2), key
    for key, value in _weights(eager).items():
        torch.testing.assert_close(_weights(amp)[key], value, rtol=2e-2, atol=4e-3, msg=key)


def test_short_last_batch_runs_the_eager_body(tmp_path, monkeypatch):
    # digits has 1,438 training images: batch 512 leaves a last batch of 414.
    run = _run("tf-dcgan-mnist", "eager+compile", tmp_path, "batch_size=512")
    calls = []
    monkeypatch.setattr(run, "graphed", lambda idx, z: calls.append(len(idx[0])) or run.step_body(idx, z))
    run.step = 2
    _, ok, images = run.train_step()
    assert images == 414 and calls == [] and ok


# ---- fallbacks ----------------------------------------------------------------------------------

def _failing_compile(fn, **_):
    """A compiler that runs part of the step (BN statistics move, RNG advances) and then fails."""
    def compiled(*args):
        run = fn.__self__
        run.G(torch.randn(4, run.cfg.latent_dim))
        torch.rand(3)
        raise RuntimeError("InductorError: C++ compiler not found\nlong traceback text")
    return compiled


def test_failed_compile_prints_one_line_and_trains_eagerly(tmp_path, monkeypatch, capsys):
    cfg = _cfg("default", "eager", "log_every=1")
    ref = train(cfg, tmp_path / "eager", steps=3, quiet=True)
    monkeypatch.setattr(torch, "compile", _failing_compile)
    run = train(_cfg("default", "eager+compile", "log_every=1"), tmp_path / "compile", steps=3, quiet=True)
    err = [line for line in capsys.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(err) == 1 and "C++ compiler not found" in err[0] and "eager" in err[0]
    assert json.loads((run / "summary.json").read_text())["speed"] == "eager"
    a, b = _final(ref), _final(run)
    for key in a:  # the half-run step was undone: the run is the eager run, bit for bit
        assert torch.equal(a[key], b[key]), key


def test_cudagraphs_without_cuda_fall_back_with_one_line(tmp_path, capsys):
    ref = _run("default", "eager+async_guard", tmp_path)
    _steps(ref, 2)
    run = _run("default", "eager+cudagraphs+async_guard", tmp_path)
    _steps(run, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ganforge: CUDA graphs need a CUDA device; the step runs uncaptured"]
    assert run.speed == "async_guard"
    for key, value in _weights(ref).items():
        assert torch.equal(_weights(run)[key], value), key


class CpuGraphs:
    """torch.cuda's graph API imitated on the CPU: a capture runs the step and rewinds all it
    changed (a real capture runs nothing); a replay reruns the step on the captured input buffers
    and writes into the captured outputs, which is what a CUDA graph replay does."""

    def __init__(self, run: Run, fail_capture: bool = False) -> None:
        self.run, self.fail_capture, self.replays = run, fail_capture, 0

    def is_available(self) -> bool:
        return True

    def Stream(self):  # noqa: N802 - torch's name
        return types.SimpleNamespace(wait_stream=lambda other: None)

    current_stream = Stream

    def stream(self, s):
        return contextlib.nullcontext()

    def CUDAGraph(self):  # noqa: N802
        return types.SimpleNamespace(replay=self._replay)

    def _live(self) -> list[torch.Tensor]:
        run = self.run
        mods = [run.G, run.D] + ([run.ema] if run.ema is not None else [])
        live = [t for m in mods for t in list(m.parameters()) + list(m.buffers())]
        for opt in (run.opt_g, run.opt_d):
            live += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
        return live

    @contextlib.contextmanager
    def graph(self, graph):
        saved = [t.detach().clone() for t in self._live()]
        rng = torch.get_rng_state()
        yield
        if self.fail_capture:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        with torch.no_grad():
            for t, s in zip(self._live(), saved):
                t.copy_(s)
        torch.set_rng_state(rng)

    def _replay(self) -> None:
        step = self.run.graphed
        out = step.fn(*pytree.tree_unflatten(step.static_in, step.spec))
        for static, new in zip(pytree.tree_leaves(step.static_out), pytree.tree_leaves(out)):
            if isinstance(static, torch.Tensor):
                static.copy_(new)
        self.replays += 1


@pytest.mark.parametrize("name", ["default", "tf-dcgan-mnist"])
def test_graphed_step_replays_like_the_eager_step(name, tmp_path, monkeypatch):
    """3 warm-up steps, a capture, then replays fed through the static buffers: bit-identical
    to calling the step (same CPU kernels), outputs cloned so later replays do not change them."""
    ref = _run(name, "eager+async_guard", tmp_path / "ref")
    want = _steps(ref, 7)
    run = _run(name, "eager+cudagraphs+async_guard", tmp_path)
    api = CpuGraphs(run)
    monkeypatch.setattr(run.graphed, "graph_api", api)
    got = _steps(run, 7)
    assert api.replays == 4 and run.graphed.capture_seconds is not None and run.speed == "async_guard+cudagraphs"
    assert got == want
    for key, value in _weights(ref).items():
        assert torch.equal(_weights(run)[key], value), key


def test_failed_capture_restores_and_runs_uncaptured(tmp_path, monkeypatch, capsys):
    ref = _run("default", "eager+async_guard", tmp_path / "ref")
    want = _steps(ref, 6)
    run = _run("default", "eager+cudagraphs+async_guard", tmp_path)
    monkeypatch.setattr(run.graphed, "graph_api", CpuGraphs(run, fail_capture=True))
    assert _steps(run, 6) == want
    err = [line for line in capsys.readouterr().err.splitlines() if "capture failed" in line]
    assert len(err) == 1 and "not permitted" in err[0]
    assert run.speed == "async_guard"
    for key, value in _weights(ref).items():
        assert torch.equal(_weights(run)[key], value), key


# ---- the sync-free guard ------------------------------------------------------------------------

def _nan_g_loss_from(monkeypatch, first_call: int) -> None:
    real, calls = losses.NonSaturating.g, [0]

    def g_loss(self, *args, **kwargs):
        calls[0] += 1
        out = real(self, *args, **kwargs)
        return out * float("nan") if calls[0] >= first_call else out

    monkeypatch.setattr(losses.NonSaturating, "g", g_loss)


def test_sync_free_skip_changes_nothing_and_matches_the_host_guard(tmp_path, monkeypatch):
    host = _run("seed004-mlp-mnist", "eager", tmp_path)  # no dropout: the global RNG is not used
    dev = _run("seed004-mlp-mnist", "eager+async_guard", tmp_path)
    _steps(host, 2), _steps(dev, 2)
    before = {k: v.clone() for k, v in dev.opt_g.state_dict()["state"][0].items()}
    g_before = [p.detach().clone() for p in dev.G.parameters()]
    _nan_g_loss_from(monkeypatch, 1)
    _, ok, _ = dev.train_step()
    assert isinstance(ok, torch.Tensor) and not bool(ok)
    for p, q in zip(dev.G.parameters(), g_before):
        assert torch.equal(p, q)
    for key, value in dev.opt_g.state_dict()["state"][0].items():
        assert torch.equal(value, before[key]), key
    _, ok_host, _ = host.train_step()
    assert ok_host is False
    for key, value in _weights(host).items():  # D's finite steps were taken by both
        assert torch.equal(_weights(dev)[key], value), key


def test_sync_free_skips_are_counted_and_stop_like_the_host_guard(tmp_path, monkeypatch):
    events = {}
    for speed in ("eager", "eager+async_guard"):
        monkeypatch.undo()
        _nan_g_loss_from(monkeypatch, 3)
        cfg = _cfg("seed004-mlp-mnist", speed, "max_skips=3", "log_every=50", "sample_every=1000")
        with pytest.raises(TrainingDiverged, match="non-finite"):
            train(cfg, tmp_path / speed, steps=10, quiet=True)
        rows = [json.loads(line) for line in (tmp_path / speed / "metrics.jsonl").read_text().splitlines()]
        events[speed] = [(r["step"], r["skipped_total"]) for r in rows if r.get("event") == "skipped_nonfinite_step"]
    assert events["eager"] == events["eager+async_guard"] == [(3, 1), (4, 2), (5, 3)]


def test_faults_are_read_when_asked_in_step_order():
    faults = Faults()
    assert faults.settle(1, True, now=False) == [(1, True)]  # host flags are known at once
    assert faults.settle(2, torch.tensor(True), now=False) == []
    assert faults.settle(3, torch.tensor(False), now=False) == []
    assert faults.settle(4, torch.tensor(True), now=True) == [(2, True), (3, False), (4, True)]
    assert faults.settle(5, torch.tensor(False), now=False) == []
    assert faults.settle(6, False, now=False) == [(5, False), (6, False)]


# ---- data on the device, resume ------------------------------------------------------------------

def test_device_sampling_covers_the_dataset(tmp_path):
    run = _run("default", "fast", tmp_path, "batch_size=100", "sampling=epoch")
    n, spe = run.images.shape[0], run.steps_per_epoch
    seen = torch.cat([run.batch_indices(k) for k in range(spe)])
    assert torch.equal(seen.sort().values, torch.arange(n))  # each image exactly once per epoch
    batch = run.real_batch(0)
    assert batch.shape == (100, 1, 28, 28) and batch.min() >= -1 and batch.max() <= 1
    assert batch.is_contiguous(memory_format=torch.channels_last)
    run = _run("seed004-mlp-mnist", "fast", tmp_path, "batch_size=100", "sampling=replacement")
    counts = torch.bincount(torch.cat([run.batch_indices(k) for k in range(400)]), minlength=n).float()
    expected = 400 * 100 / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert abs(chi2 - (n - 1)) < 6 * (2 * (n - 1)) ** 0.5  # uniform: chi^2 ~ its mean, n - 1


def test_fast_run_resumes_an_eager_checkpoint(tmp_path):
    eager = _run("default", "eager", tmp_path)
    _steps(eager, 2)
    tensors, meta = eager.state()
    fast = _run("default", "fast+async_guard", tmp_path)
    fast.load_state(tensors, meta)
    for opt in (fast.opt_g, fast.opt_d):
        assert opt.param_groups[0]["fused"] is True
        for p, state in opt.state.items():
            assert state["exp_avg"].stride() == p.stride()  # channels_last like its parameter
    assert all(r["ok"] for r in _steps(fast, 2))


@pytest.mark.slow
def test_real_torch_compile_matches_eager(tmp_path, monkeypatch):
    """Inductor on the CPU (minutes on 2 cores): the compiled whole step agrees with eager."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "fallback_random", True)  # dropout masks from the eager RNG
    eager = _run("default", "eager", tmp_path)
    a = _steps(eager, 3)
    comp = _run("default", "eager+compile", tmp_path)
    b = _steps(comp, 3)
    assert comp.compiled.compile_seconds is not None and comp.speed == "compile"
    for x, y in zip(a, b):
        for key in ("d_loss", "g_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-4)


# ---- on a CUDA GPU (skipped elsewhere; see docs/BENCHMARKS.md for the commands) ----------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cuda_run(name: str, speed: str, tmp_path: Path, batch: int) -> Run:
    cfg = apply_overrides(get_recipe(name), TOY[name] + ["device=cuda", f"speed={speed}", f"batch_size={batch}"])
    return Run(cfg, tmp_path / speed, quiet=True)


@cuda
@pytest.mark.parametrize("name", ["tf-dcgan-mnist", "seed001-dcgan-mnist", "default", "dcgan"])
def test_cuda_fast_step_is_captured_and_never_waits_for_the_gpu(name, tmp_path):
    run = _cuda_run(name, "fast", tmp_path, 32)
    _steps(run, accel.GraphedStep.warmup + 2)  # warm-up (compiles), capture, replay
    assert run.speed == run.features.name, run.speed  # nothing fell back
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation now raises
    try:
        for _ in range(10):
            run.train_step()
            run.step += 1
    finally:
        torch.cuda.set_sync_debug_mode(0)


@cuda
@pytest.mark.parametrize("name", ["default", "dcgan"])
def test_cuda_fast_matches_eager_within_bf16(name, tmp_path):
    eager = _cuda_run(name, "eager", tmp_path, 32)
    a = _steps(eager, 5)
    fast = _cuda_run(name, "fast", tmp_path, 32)
    b = _steps(fast, 5)
    for x, y in zip(a, b):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert y[key] == pytest.approx(x[key], rel=5e-2, abs=5e-2), key
