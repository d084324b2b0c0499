"""One GAN training step, as Algorithm 1 of Goodfellow et al. (2014) reads:

  (1) Update D, k times: maximise log D(x) + log(1 - D(G(z)))     one of D_UPDATES
  (2) Update G through a frozen D: minimise the loss's G term       (ns: -log D(G(z)))
  (3) InfoGAN: update Q (and D's shared trunk): minimise lambda * L_I on G's fakes
  (4) Update G_ema

or, for the TensorFlow tutorial (`loop=simultaneous`), one forward pass whose two losses update
both networks at once (two gradient tapes). Every D call goes through :func:`d_logits`, so what
acts on all of them (labels, augmentation, DDP's gradient sync) changes in one place. Extra terms
of either objective (R1, WGAN-GP, AC-GAN, InfoGAN's G side) come from `run.terms` (gan/terms.py)
and are added to the loss's own before the one backward pass.

The step runs on device tensors only (batch indices and latents), which is what compiling and
capturing it need; `run` (gan/run.py) holds the networks, optimizers, loss and guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from ganforge import distributed as dist
from ganforge.gan.augment import diff_augment
from ganforge.gan.ema import update_ema
from ganforge.gan.invariance import invariance_loss
from ganforge.gan.latents import Latent, apply_generator
from ganforge.gan.terms import Losses, merge, total
from ganforge.gan.models.conditioning import info_loss
from ganforge.registry import Registry

Stats = dict[str, torch.Tensor]  # a step's losses and D statistics, on the device
Flag = bool | torch.Tensor  # a step's "was taken" flag: host bool, or device bool when sync-free
LOOPS = ("alternating", "simultaneous")


class DResult(NamedTuple):
    loss: torch.Tensor  # D's loss as the source reports it
    real_logits: torch.Tensor
    fake_logits: torch.Tensor
    ok: Flag
    extras: Losses = {}  # the extra terms' shares (detached), by name


@contextmanager
def frozen(module: nn.Module | None, bn_eval: bool) -> Iterator[None]:
    """Freeze a network (None: nothing) for the other's phase. Keras runs a frozen model's
    BatchNorm in inference mode; `bn_eval` reproduces that."""
    if module is None:
        yield
        return
    module.requires_grad_(False)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_eval:
        for m in norms:
            m.eval()
    try:
        yield
    finally:
        module.requires_grad_(True)
        for m in norms:
            m.train()


@contextmanager
def inference(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Run `module` in eval mode (Keras `predict`) when enabled."""
    if enabled:
        module.eval()
    try:
        yield
    finally:
        module.train()


def d_outputs(run, images: torch.Tensor, labels: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits and flattened features for `images` (with their labels, for a conditional D),
    seen through DiffAugment when it is on: the one place every D call goes through."""
    return run.net("D")(diff_augment(images, run.augment), labels, with_features=True)


def d_logits(run, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """D's logits for `images`."""
    return d_outputs(run, images, labels)[0]


def generate(run, latent: Latent) -> torch.Tensor:
    return apply_generator(run.net("G"), latent)


# ---- (1) the D updates --------------------------------------------------------------------------------

D_UPDATES: Registry = Registry("d_update", "D updates")


def _real_input(run, real: torch.Tensor) -> torch.Tensor:
    """The real batch, as a leaf that records its gradient when a term needs d D(x) / d x (R1)."""
    return real.detach().requires_grad_(True) if run.terms.grad_real else real


def _d_term(run, images: torch.Tensor, labels, term, side: str, pair=None, sync: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Losses]:
    """D's logits for `images`, the loss `term` of them, the objective with the extra terms of that
    `side` (and of the `pair`), and those terms; the objective's gradients accumulated into D
    (under DDP, averaged over the ranks unless `sync` is off: a later backward does it)."""
    with run.no_sync("D", not sync):
        with run.amp():
            logits, feats = d_outputs(run, images, labels)
            loss = term(logits)
            extras = run.terms.d(side, run, images, labels, logits, feats, pair)
            objective = total(loss, extras)
        objective.backward()
    return logits, loss, objective, extras


@D_UPDATES.register("separate")
def separate(run, real: torch.Tensor, fake: torch.Tensor, labels, fake_labels) -> DResult:
    """Two Keras `train_on_batch` calls: D on reals (label 1), then D on fakes (label 0). Pair
    terms (WGAN-GP) join the first."""
    real = _real_input(run, real)
    real_logits, loss_real, obj_real, ex_real = _d_term(run, real, labels, run.loss.d_real, "real",
                                                        (real, fake, labels))
    ok = run.apply([run.opt_d], [obj_real], run.D.parameters())
    run.opt_d.zero_grad(set_to_none=True)
    fake_logits, loss_fake, obj_fake, ex_fake = _d_term(run, fake, fake_labels, run.loss.d_fake, "fake")
    ok &= run.apply([run.opt_d], [obj_fake], run.D.parameters())
    return DResult(0.5 * (loss_real + loss_fake), real_logits, fake_logits, ok, merge(ex_real, ex_fake))


@D_UPDATES.register("accumulate")
def accumulate(run, real: torch.Tensor, fake: torch.Tensor, labels, fake_labels) -> DResult:
    """Both terms' gradients, then one D step (pytorch/examples dcgan)."""
    real = _real_input(run, real)
    real_logits, loss_real, obj_real, ex_real = _d_term(run, real, labels, run.loss.d_real, "real",
                                                        (real, fake, labels), sync=False)
    fake_logits, loss_fake, obj_fake, ex_fake = _d_term(run, fake, fake_labels, run.loss.d_fake, "fake")
    d_loss = loss_real + loss_fake
    ok = run.apply([run.opt_d], [obj_real + obj_fake], run.D.parameters())
    return DResult(d_loss, real_logits, fake_logits, ok, merge(ex_real, ex_fake))


@D_UPDATES.register("concat")
def concat(run, real: torch.Tensor, fake: torch.Tensor, labels, fake_labels) -> DResult:
    """One D update on [fakes; reals] with labels 0/1 (Hands-On ML style)."""
    real = _real_input(run, real)
    both = None if labels is None else torch.cat([fake_labels, labels])
    with run.amp():
        logits, feats = d_outputs(run, torch.cat([fake, real]), both)
        n_r, n_f = real.shape[0], fake.shape[0]
        fake_logits, real_logits = logits[:n_f], logits[n_f:]
        loss_real, loss_fake = run.loss.d_real(real_logits), run.loss.d_fake(fake_logits)
        d_loss = (loss_real * n_r + loss_fake * n_f) / (n_r + n_f)  # the mean over the joint batch
        extras = merge(ex_real := run.terms.d("real", run, real, labels, real_logits, feats[n_f:],
                                              (real, fake, labels)),
                       ex_fake := run.terms.d("fake", run, fake, fake_labels, fake_logits, feats[:n_f]))
        objective = d_loss + sum(ex_real.values()) + sum(ex_fake.values())
    objective.backward()
    return DResult(d_loss, real_logits, fake_logits, run.apply([run.opt_d], [objective], run.D.parameters()),
                   extras)


# ---- the whole step ------------------------------------------------------------------------------------

def alternating_step(run, idx: list[torch.Tensor], latents: list[Latent]) -> tuple[Stats, Flag]:
    """k D updates on real batches `idx[k]` and fakes of `latents[k]`, then one G update (on the
    last latents when G reuses them, else on its own `latents[-1]`)."""
    cfg, G, D = run.cfg, run.G, run.D
    ok: Flag = True
    for k in range(cfg.d_steps):
        # (1) Update D: maximise log D(x) + log(1 - D(G(z)))
        real, labels = run.real(idx[k])
        with run.amp():
            if cfg.g_reuse_fake:
                fake = generate(run, latents[k])  # kept with its graph: the G step reuses this forward
            else:
                with torch.no_grad(), inference(G, cfg.g_eval_for_d):
                    fake = generate(run, latents[k])
        run.opt_d.zero_grad(set_to_none=True)
        d = run.d_update(run, real, fake.detach(), labels, latents[k].get("labels"))
        ok &= d.ok

    # (2) Update G through a frozen D (and Q): minimise the loss's G term (ns: -log D(G(z))) + extras
    run.opt_g.zero_grad(set_to_none=True)
    bn_eval = cfg.frozen_d_bn == "eval"
    with frozen(D, bn_eval), frozen(run.Q, bn_eval):
        with run.amp():
            if not cfg.g_reuse_fake:
                fake = generate(run, latents[-1])  # the last D step's latents when g_same_noise, else its own
            fake_logits, feats = d_outputs(run, fake, latents[-1].get("labels"))
            g_loss = run.loss.g(fake_logits)
            g_extras = run.terms.g(run, fake, latents[-1], fake_logits, feats)
            g_objective = total(g_loss, g_extras)
        g_objective.backward()
    ok &= run.apply([run.opt_g], [g_objective], G.parameters())
    # (3) InfoGAN: update Q and D's shared trunk on the information bound of G's fakes
    q_stats, q_ok = q_update(run, fake.detach(), latents[-1])
    ok &= q_ok
    # (4) Update G_ema
    update_ema(run.ema, G, ok)
    logged = stats(d.loss, g_loss, d.real_logits, d.fake_logits, fake_logits)
    return {**logged, **d.extras, **merge(g_extras), **q_stats}, ok


def q_update(run, fake: torch.Tensor, latent: Latent) -> tuple[Stats, Flag]:
    """InfoGAN's step (3): Q reads the codes back from D's features of `fake` (detached: G learned
    from the bound in step 2). The Q optimizer steps Q's head; D's optimizer steps the trunk they
    share, whose gradient here is the bound's alone (D's head gets none). No-op without Q."""
    if run.Q is None:
        return {}, True
    run.opt_q.zero_grad(set_to_none=True)
    run.opt_d.zero_grad(set_to_none=True)
    # D's head takes no part, which DDP's wrapper cannot tell from a lost gradient: this phase
    # runs the plain modules and averages its gradients over the ranks itself.
    params = list(run.Q.parameters()) + list(run.D.parameters())
    with run.plain():
        with run.amp():
            _, feats = d_outputs(run, fake, latent.get("labels"))
            cat, cont = info_loss(run.Q(feats), latent["codes"], run.latents.categorical)
            inv = invariance_loss(run, fake, latent, run.latents.categorical) if run.invariance else None
            objective = run.cfg.info_lambda * (cat + cont + (0 if inv is None else inv))
        objective.backward()
    dist.average_grads(params)
    ok = run.apply([run.opt_q, run.opt_d], [objective], params)
    return {"q_info_cat": cat.detach(), "q_info_cont": cont.detach(),
            **({} if inv is None else {"q_info_inv": inv.detach()})}, ok


def simultaneous_step(run, idx: torch.Tensor, latent: Latent) -> tuple[Stats, Flag]:
    """TF tutorial: one forward pass; G and D gradients from their own losses (two tapes)."""
    G, D = run.G, run.D
    real, labels = run.real(idx)
    real = _real_input(run, real)
    fake_labels = latent.get("labels")
    with run.amp():
        fake = generate(run, latent)  # the tutorial's noise batch is always BATCH_SIZE
        real_logits, real_feats = d_outputs(run, real, labels)
        fake_logits, fake_feats = d_outputs(run, fake, fake_labels)
        g_loss = run.loss.g(fake_logits)
        d_loss = run.loss.d_real(real_logits) + run.loss.d_fake(fake_logits)
        d_extras = {**run.terms.d("real", run, real, labels, real_logits, real_feats, (real, fake, labels)),
                    **{k + "_fake": v for k, v in
                       run.terms.d("fake", run, fake, fake_labels, fake_logits, fake_feats).items()}}
        g_extras = run.terms.g(run, fake, latent, fake_logits, fake_feats)
    g_params, d_params = list(G.parameters()), list(D.parameters())
    g_objective, d_objective = total(g_loss, g_extras), total(d_loss, d_extras)
    if run.ddp:
        # DDP averages gradients as they accumulate into .grad, which autograd.grad skips. The
        # same two tapes as backward passes restricted to each net's parameters: G's loss fills
        # only G's gradients (averaged by G's wrapper), D's loss only D's (by D's wrapper).
        run.opt_g.zero_grad(set_to_none=True)
        run.opt_d.zero_grad(set_to_none=True)
        torch.autograd.backward(g_objective, inputs=g_params, retain_graph=True)
        torch.autograd.backward(d_objective, inputs=d_params)
    else:
        g_grads = torch.autograd.grad(g_objective, g_params, retain_graph=True)
        d_grads = torch.autograd.grad(d_objective, d_params, allow_unused=True)
        for p, g in zip(g_params + d_params, g_grads + d_grads):
            p.grad = g
    ok = run.apply([run.opt_g, run.opt_d], [g_objective, d_objective], g_params + d_params)
    run.opt_g.zero_grad(set_to_none=True)
    run.opt_d.zero_grad(set_to_none=True)
    q_stats, q_ok = q_update(run, fake.detach(), latent)
    ok &= q_ok
    update_ema(run.ema, G, ok)
    d_log = merge({k.removesuffix("_fake"): v for k, v in d_extras.items() if k.endswith("_fake")},
                  {k: v for k, v in d_extras.items() if not k.endswith("_fake")})
    return {**stats(d_loss, g_loss, real_logits, fake_logits, fake_logits), **d_log, **merge(g_extras), **q_stats}, ok


def gan_step(run, idx: list[torch.Tensor], latents: list[Latent]) -> tuple[Stats, Flag]:
    """The whole D+G step on device inputs: batch indices, and the latents in the order they are used."""
    if run.cfg.loop == "simultaneous":
        return simultaneous_step(run, idx[0], latents[0])
    return alternating_step(run, idx, latents)


@torch.no_grad()
def stats(d_loss, g_loss, real_logits, fake_logits, g_logits) -> Stats:
    """What a learner watches: both losses, D(x), D(G(z)) and D's accuracy (-> 0.5 at equilibrium).
    `d_fake` is D(G(z)) in D's own update; `d_fake_g` is D(G(z)) as G's update saw it. They differ
    where the source runs a frozen D's BatchNorm in inference mode for G's update (seed 001, seed 000,
    as Keras does): D's update then normalises a batch of fakes by its own statistics, G's by the
    running ones, so D(G(z)) can be near 0 in the first and near 0.5 in the second."""
    correct = (real_logits > 0).float().sum() + (fake_logits < 0).float().sum()
    return {
        "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
        "d_real": torch.sigmoid(real_logits.float()).mean(),
        "d_fake": torch.sigmoid(fake_logits.float()).mean(),
        "d_fake_g": torch.sigmoid(g_logits.detach().float()).mean(),
        "d_acc": correct / (real_logits.numel() + fake_logits.numel()),
    }
