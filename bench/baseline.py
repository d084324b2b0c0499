"""The plain eager PyTorch GAN that `bench/speed.py` measures ganforge against.

Written the way a user writes it from pytorch/examples/dcgan: a torchvision-style dataset that
returns PIL images, `ToTensor` + `Normalize`, a shuffling `DataLoader`, `nn.BCEWithLogitsLoss`, and
the simple loop (`.to(device)`, `zero_grad`, `backward`, `step`). Same models (from ganforge.gan.models,
same init), same batch size, same update order as the recipe. Nothing here is tuned.

Two things the recipes do that this loop leaves out, on purpose, since a plain loop does not have
them: Keras' probability clip inside the loss (same cost), and the non-finite step guard (ganforge
pays for it, the baseline does not).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from ganforge.gan.models import build_models


class PILImages(Dataset):
    """Like torchvision's MNIST / CIFAR10: item i is (PIL image, label), transformed on access."""

    def __init__(self, images_uint8: torch.Tensor, transform) -> None:
        self.images = images_uint8.permute(0, 2, 3, 1).numpy()  # N x H x W x C, as torchvision keeps them
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        img = Image.fromarray(img[:, :, 0], mode="L") if img.shape[2] == 1 else Image.fromarray(np.ascontiguousarray(img))
        return self.transform(img), 0


def make_loader(images_uint8: torch.Tensor, cfg, workers: int) -> DataLoader:
    channels = images_uint8.shape[1]
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.5,) * channels, (0.5,) * channels),  # [0, 1] -> [-1, 1]
    ])
    dataset = PILImages(images_uint8, transform)
    if cfg.sampling == "replacement":  # the Keras tutorials' randint batches
        sampler = RandomSampler(dataset, replacement=True, num_samples=10**9)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=cfg.drop_last,
                      num_workers=workers)


def make_optimizer(name, params, lr, cfg):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.opt_eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.rho, eps=cfg.opt_eps)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


class PlainGAN:
    """One recipe's training step as plain eager PyTorch (non-saturating loss, as the recipes use)."""

    def __init__(self, cfg, images_uint8: torch.Tensor, device: torch.device, workers: int = 0) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.netG, self.netD = (m.to(device) for m in build_models(cfg))
        self.optimizerG = make_optimizer(cfg.g_optimizer, self.netG.parameters(), cfg.g_lr, cfg)
        self.optimizerD = make_optimizer(cfg.d_optimizer, self.netD.parameters(), cfg.d_lr, cfg)
        self.ema = (AveragedModel(self.netG, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
                    if cfg.ema > 0 else None)
        self.criterion = nn.BCEWithLogitsLoss()
        self.loader = make_loader(images_uint8, cfg, workers)
        self.batches = iter(self.loader)

    def next_batch(self) -> torch.Tensor:
        try:
            real, _ = next(self.batches)
        except StopIteration:  # a new epoch
            self.batches = iter(self.loader)
            real, _ = next(self.batches)
        return real.to(self.device)

    def noise(self) -> torch.Tensor:
        return torch.randn(self.cfg.batch_size, self.cfg.latent_dim, device=self.device)

    def step(self) -> int:
        """One training step; returns the number of real images it used."""
        if self.cfg.loop == "simultaneous":
            return self.tf_tutorial_step()
        return self.dcgan_step()

    def tf_tutorial_step(self) -> int:
        """The TensorFlow DCGAN tutorial's train_step: one forward pass, two gradient tapes."""
        netG, netD, criterion = self.netG, self.netD, self.criterion
        images = self.next_batch()
        generated = netG(self.noise())
        real_output, fake_output = netD(images), netD(generated)
        gen_loss = criterion(fake_output, torch.ones_like(fake_output))
        disc_loss = (criterion(real_output, torch.ones_like(real_output))
                     + criterion(fake_output, torch.zeros_like(fake_output)))
        gen_grads = torch.autograd.grad(gen_loss, list(netG.parameters()), retain_graph=True)
        disc_grads = torch.autograd.grad(disc_loss, list(netD.parameters()))
        for p, g in zip(list(netG.parameters()) + list(netD.parameters()), gen_grads + disc_grads):
            p.grad = g
        self.optimizerG.step()
        self.optimizerD.step()
        self.optimizerG.zero_grad()
        self.optimizerD.zero_grad()
        return images.shape[0]

    def dcgan_step(self) -> int:
        """pytorch/examples dcgan's loop body, with the recipe's choices of how D is updated."""
        cfg, netG, netD, criterion = self.cfg, self.netG, self.netD, self.criterion
        used = 0
        for _ in range(cfg.d_steps):
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            real = self.next_batch()
            used += real.shape[0]
            noise = self.noise()
            if cfg.g_reuse_fake:
                fake = netG(noise)
            else:
                if cfg.g_eval_for_d:
                    netG.eval()
                with torch.no_grad():
                    fake = netG(noise)
                netG.train()
            netD.zero_grad()
            if cfg.d_update == "concat":
                output = netD(torch.cat([fake.detach(), real]))
                labels = torch.cat([torch.zeros(fake.shape[0], device=self.device),
                                    torch.ones(real.shape[0], device=self.device)])
                errD = criterion(output, labels)
                errD.backward()
                self.optimizerD.step()
            elif cfg.d_update == "separate":
                output = netD(real)
                errD_real = criterion(output, torch.ones_like(output))
                errD_real.backward()
                self.optimizerD.step()
                netD.zero_grad()
                output = netD(fake.detach())
                errD_fake = criterion(output, torch.zeros_like(output))
                errD_fake.backward()
                self.optimizerD.step()
            else:  # accumulate, as pytorch/examples does
                output = netD(real)
                errD_real = criterion(output, torch.ones_like(output))
                errD_real.backward()
                output = netD(fake.detach())
                errD_fake = criterion(output, torch.zeros_like(output))
                errD_fake.backward()
                self.optimizerD.step()

        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        netD.requires_grad_(False)
        if cfg.frozen_d_bn == "eval":  # Keras runs a frozen model's BatchNorm (only) in inference mode
            for m in netD.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.eval()
        if not cfg.g_reuse_fake:
            fake = netG(noise if cfg.g_same_noise else self.noise())
        output = netD(fake)
        errG = criterion(output, torch.ones_like(output))
        errG.backward()
        self.optimizerG.step()
        netD.requires_grad_(True)
        netD.train()
        if self.ema is not None:
            self.ema.update_parameters(netG)
        return used
