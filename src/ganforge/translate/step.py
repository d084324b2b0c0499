"""One training step of each objective, written as the papers state them.

pix2pix (Isola et al. 2017, eq. 4): G* = arg min_G max_D  L_cGAN(G, D) + lambda * L_L1(G), where D
judges the pair (x, y) against (x, G(x)). CycleGAN (Zhu et al. 2017, eq. 3): two generators
G_AB: A -> B and G_BA: B -> A, two discriminators (D_A judges A images, D_B judges B images), the
adversarial terms of both directions, the cycle terms |G_BA(G_AB(a)) - a| and |G_AB(G_BA(b)) - b|
weighted by lambda_cyc, and the identity terms |G_AB(b) - b|, |G_BA(a) - a| weighted by
lambda_idt * lambda_cyc (sec. 5.2). D's objective is halved in both, as in the authors' code, which
slows D relative to G; CycleGAN's D sees fakes drawn from its image pool.

The adversarial terms come from the GAN losses (`losses.py`): vanilla is its non-saturating
cross-entropy on logits, and the least-squares form CycleGAN uses is added here. A step whose loss
is not finite changes nothing (its optimizer step is skipped) and is reported as skipped.

Under DDP (several processes, translate/run.py) each phase runs the nets it updates through their
DDP wrappers and the other nets as plain modules (D in G's phase: its parameters take no gradient
there); the ranks agree on a loss's finiteness before its backward, so all take it or none does.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from ganforge import distributed as dist
from ganforge.losses import GANLoss, NonSaturating


class LeastSquares(GANLoss):
    """LSGAN (Mao et al. 2017): D: (D(y) - 1)^2 + D(G(x))^2; G: (D(G(x)) - 1)^2, means over the patches."""

    def d_real(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits - 1).pow(2).mean()

    def d_fake(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.pow(2).mean()

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return (fake_logits - 1).pow(2).mean()


def adversarial(name: str) -> GANLoss:
    return {"vanilla": NonSaturating, "lsgan": LeastSquares}[name]()


def requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Only the networks being updated need gradients."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """Backward and step, unless the loss is not finite (then nothing changes). Under DDP the ranks
    agree first: every rank takes the backward (its all-reduce needs them all) or none does."""
    optimizer.zero_grad(set_to_none=True)
    if not dist.all_true(bool(torch.isfinite(loss))):
        return False
    loss.backward()
    optimizer.step()
    return True


def pix2pix_step(cfg, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], loss: GANLoss,
                 x: torch.Tensor, y: torch.Tensor, ddp: dict[str, nn.Module] | None = None
                 ) -> tuple[dict[str, torch.Tensor], bool]:
    """x: B x Cx x H x W inputs, y: their targets; `ddp`: the nets' DDP wrappers (several processes).
    Returns the step's loss terms and whether it was taken."""
    G, D = (ddp or nets)["G"], (ddp or nets)["D"]
    fake = G(x)
    ok = True
    # (1) Update D: maximise log D(x, y) + log(1 - D(x, G(x)))
    zero = torch.zeros((), device=x.device)
    d_real = d_fake = zero
    if cfg.lambda_gan > 0:  # L1 alone trains no D
        requires_grad([D], True)
        d_real = loss.d_real(D(torch.cat([x, y], 1)))
        d_fake = loss.d_fake(D(torch.cat([x, fake.detach()], 1)))
        ok = _update(opts["D"], 0.5 * (d_real + d_fake))
    # (2) Update G: fool D on (x, G(x)), and stay within L1 of y. D's plain module: its parameters
    # take no gradient here, and a DDP wrapper would wait for them.
    requires_grad([D], False)
    g_gan = loss.g(nets["D"](torch.cat([x, fake], 1))) if cfg.lambda_gan > 0 else zero
    g_l1 = (fake - y).abs().mean()
    ok = _update(opts["G"], cfg.lambda_gan * g_gan + cfg.lambda_l1 * g_l1) and ok
    requires_grad([D], True)
    stats = {"d_real": d_real, "d_fake": d_fake, "g_gan": g_gan, "g_l1": g_l1}
    return {k: v.detach() for k, v in stats.items()}, ok


def cyclegan_step(cfg, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], loss: GANLoss,
                  a: torch.Tensor, b: torch.Tensor, pools: dict, generators: dict[str, torch.Generator],
                  ddp: dict[str, nn.Module] | None = None) -> tuple[dict[str, torch.Tensor], bool]:
    """a: B images of domain A, b: B (unrelated) images of domain B; `ddp` as for pix2pix_step."""
    fwd = ddp or nets
    G_AB, G_BA, D_A, D_B = fwd["G_AB"], fwd["G_BA"], fwd["D_A"], fwd["D_B"]
    zero = torch.zeros((), device=a.device)
    fake_b, fake_a = G_AB(a), G_BA(b)
    # (1) Update G_AB and G_BA: fool D_B and D_A, come back in a cycle, leave the target domain alone
    requires_grad([D_A, D_B], False)
    use_gan = cfg.lambda_gan > 0
    g_ab = loss.g(nets["D_B"](fake_b)) if use_gan else zero  # the plain Ds, as in pix2pix_step
    g_ba = loss.g(nets["D_A"](fake_a)) if use_gan else zero
    cyc_a = (G_BA(fake_b) - a).abs().mean() if cfg.lambda_cyc > 0 else zero
    cyc_b = (G_AB(fake_a) - b).abs().mean() if cfg.lambda_cyc > 0 and cfg.cycle == "both" else zero
    idt_weight = cfg.lambda_idt * cfg.lambda_cyc
    idt_a = (G_BA(a) - a).abs().mean() if idt_weight > 0 else zero
    idt_b = (G_AB(b) - b).abs().mean() if idt_weight > 0 else zero
    total = cfg.lambda_gan * (g_ab + g_ba) + cfg.lambda_cyc * (cyc_a + cyc_b) + idt_weight * (idt_a + idt_b)
    ok = _update(opts["G"], total)
    # (2) Update D_A and D_B: real images against fakes from the pools (past generators' too)
    requires_grad([D_A, D_B], True)
    d_a = d_b = zero
    if use_gan:
        # Each pool takes the global batch's fakes, as in one process; this rank's rows come back.
        pooled_b = dist.shard(pools["B"].query(dist.all_rows(fake_b.detach()), generators["B"]))
        pooled_a = dist.shard(pools["A"].query(dist.all_rows(fake_a.detach()), generators["A"]))
        d_b = 0.5 * (loss.d_real(D_B(b)) + loss.d_fake(D_B(pooled_b)))
        d_a = 0.5 * (loss.d_real(D_A(a)) + loss.d_fake(D_A(pooled_a)))
        ok = _update(opts["D"], d_a + d_b) and ok
    stats = {"g_ab": g_ab, "g_ba": g_ba, "cyc_a": cyc_a, "cyc_b": cyc_b, "idt_a": idt_a, "idt_b": idt_b,
             "d_a": d_a, "d_b": d_b}
    return {k: v.detach() for k, v in stats.items()}, ok


def train_step(run, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """One step of `run` (a TranslateRun) on `batch` (its `batch(step)`): the mode's objective, then
    the schedules. Returns the loss terms (detached, on the device) and whether the step was taken."""
    cfg = run.cfg
    for net in run.modules.values():
        net.train()
    a, b = batch
    if cfg.mode == "pix2pix":
        stats, ok = pix2pix_step(cfg, run.modules, run.optimizers, run.loss, a, b, run.ddp)
    else:
        stats, ok = cyclegan_step(cfg, run.modules, run.optimizers, run.loss, a, b, run.pools, run.pool_generators(),
                                  run.ddp)
    with warnings.catch_warnings():
        # L1 alone never steps D's optimizer; its schedule still follows the step count
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        for scheduler in run.schedulers.values():
            scheduler.step()  # the schedule is a function of the step, taken or skipped
    return stats, ok
