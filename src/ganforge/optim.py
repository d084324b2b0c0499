"""Optimizers by name (`g_optimizer=`, `d_optimizer=`, a detector's `optimizer=`).

A builder takes the parameters, the learning rate, the config (for its hyper-parameters) and
`impl`, keyword arguments that pick the implementation (fused, foreach, capturable), never the maths.
"""

from __future__ import annotations

import torch

from ganforge.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("adam")
def adam(params, lr: float, cfg, **impl) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.opt_eps,
                            weight_decay=getattr(cfg, "weight_decay", 0.0), **impl)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params, lr: float, cfg, **impl) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, alpha=cfg.rho, eps=cfg.opt_eps,
                               weight_decay=getattr(cfg, "weight_decay", 0.0), **impl)


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, cfg, **impl) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                           weight_decay=getattr(cfg, "weight_decay", 0.0), **impl)


def build_optimizer(name: str, params, lr: float, cfg, **impl) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(name)(list(params), lr, cfg, **impl)
