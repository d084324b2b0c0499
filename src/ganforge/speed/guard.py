"""The non-finite guard: optimizer steps are taken only when losses and gradients are finite, and
the loop learns which steps were skipped without waiting for the GPU."""

from __future__ import annotations

import torch


def all_finite(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """0-dim bool on the device: every loss and every gradient is finite."""
    flag = torch.stack([torch.isfinite(loss.detach()).all() for loss in losses]).all()
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flag = flag & torch.isfinite(torch.nn.utils.get_total_norm(grads))
    return flag


def _live_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Everything `opt.step()` may write: the parameters and every tensor of their state."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state = [v for p in params for v in opt.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
    return [p.detach() for p in params] + state


class StepGuard:
    """Takes optimizer steps only when their losses and gradients are finite; skips are counted by
    the loop.

    Host mode reads the flag and does not take a bad step (free on the CPU). Sync-free mode keeps the
    flag on the device: the step always runs, then every parameter and state tensor selects its
    pre-step copy where the flag is false, so a skipped step changes nothing and the host never
    waits. An optimizer's very first step (its state does not exist yet) is always host-checked.
    """

    def __init__(self, sync_free: bool, agree=None) -> None:
        self.sync_free = sync_free
        self.agree = agree  # several processes: a step is taken only when it is finite on all
        self._copies: dict[int, list[torch.Tensor]] = {}  # per optimizer, reused every step

    def step(self, optimizers: list[torch.optim.Optimizer], losses: list[torch.Tensor],
             params: list[torch.Tensor]) -> bool | torch.Tensor:
        finite = all_finite(losses, params)
        if self.agree is not None:
            finite = self.agree(finite)
        first = any(not opt.state for opt in optimizers)
        if not self.sync_free or first:
            ok = bool(finite)
            for opt in optimizers:
                if ok:
                    opt.step()
                else:
                    opt.zero_grad(set_to_none=True)
            return ok
        with torch.no_grad():
            lives = [_live_tensors(opt) for opt in optimizers]
            for opt, live in zip(optimizers, lives):
                copies = self._copies.get(id(opt))
                if copies is None or [c.shape for c in copies] != [t.shape for t in live]:
                    self._copies[id(opt)] = [t.clone() for t in live]
                else:
                    torch._foreach_copy_(copies, live)
            for opt in optimizers:
                opt.step()
            for opt, live in zip(optimizers, lives):
                for t, old in zip(live, self._copies[id(opt)]):
                    t.copy_(torch.where(finite, t, old))
        return finite


class Faults:
    """Which steps were skipped as non-finite. A host-checked step's flag is known at once; a
    sync-free step's is a device tensor, kept pending until the loop asks (one read for all), so
    the hot loop never waits for the GPU."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, bool | torch.Tensor]] = []

    def settle(self, step: int, ok: bool | torch.Tensor, now: bool) -> list[tuple[int, bool]]:
        """Record step `step`'s flag; return (step, ok) for every flag read now, in step order."""
        self.pending.append((step, ok))
        if isinstance(ok, torch.Tensor) and not now:
            return []
        flags = [f for _, f in self.pending if isinstance(f, torch.Tensor)]
        read = iter(torch.stack(flags).tolist() if flags else [])  # the one host sync
        out = [(s, bool(next(read)) if isinstance(f, torch.Tensor) else f) for s, f in self.pending]
        self.pending = []
        return out


def buffers_finite(*modules: torch.nn.Module) -> bool:
    """Whether every floating buffer (BatchNorm statistics) is finite: a skipped step cannot undo
    a poisoned running mean."""
    return all(bool(torch.isfinite(b).all()) for m in modules for b in m.buffers() if b.is_floating_point())
