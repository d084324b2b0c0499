"""The named recipes: each reproduces one source, declared as what it changes from GANConfig's
defaults (a plain alternating GAN). SEED-RECIPES.md holds the specifications; docs/RECIPES.md the
decisions where a source is silent.
"""

from __future__ import annotations

from ganforge.gan.config import GANConfig
from ganforge.runs.recipes import RecipeBook

RECIPES = RecipeBook("recipe", GANConfig)

# Keras defaults shared by the Keras-sourced recipes (SEED-RECIPES.md, "Keras -> PyTorch facts").
KERAS = dict(init="keras", bn_momentum=0.01, bn_eps=1e-3, opt_eps=1e-7, logit_clip=True)
# The pytorch/examples DCGAN loop and init: N(0, 0.02), torch BatchNorm, one D step on both terms,
# G trained on the D step's own forward pass.
PYTORCH_DCGAN = dict(init="dcgan", bn_momentum=0.1, bn_eps=1e-5, d_update="accumulate", g_reuse_fake=True)


recipe = RECIPES.add  # a recipe: GANConfig's defaults with what it changes


recipe("default", "this project's recommended setup for 28x28 / 32x32 data",
       "DCGAN-style G and D, non-saturating loss, Adam(2e-4, 0.5), EMA of G",
       model="default", **PYTORCH_DCGAN, base_filters=16, ema=0.999, steps=2000, sample_every=100, grid_rows=8)

recipe("seed004-mlp-mnist", 'the "DNN-GAN" class note (TensorFlow, train_on_batch)',
       "fully connected G 100-128-784 and D 784-128-1 (layers a documented project choice)",
       model="mlp", data="mnist", **KERAS, batch_size=300, steps=5000, sampling="replacement",
       sample_every=50, sample_name="img-{iteration}")

recipe("seed001-dcgan-mnist", "Taeho Jo's Keras textbook chapter (UpSampling + Conv generator)",
       "Keras DCGAN: G trained on the same z as the fakes, through a frozen D in inference mode",
       model="upconv", data="mnist", **KERAS, g_same_noise=True, g_eval_for_d=True, frozen_d_bn="eval",
       batch_size=32, g_lr=1e-3, d_lr=1e-3, beta1=0.9, steps=4001, sampling="replacement", log_every=1,
       sample_name="gan_mnist_{iteration}", grid_rows=5)

recipe("tf-dcgan-mnist", "the tensorflow.org DCGAN tutorial",
       "logits and one forward pass that updates both nets (two gradient tapes)",
       model="tf-dcgan", data="mnist", **{**KERAS, "logit_clip": False}, loop="simultaneous", batch_size=256,
       g_lr=1e-4, d_lr=1e-4, beta1=0.9, unit="epoch", epochs=50, sample_every=1,
       sample_name="image_at_epoch_{epoch:04d}", checkpoint_every=1, milestone_every=15, gif_name="dcgan.gif")

recipe("seed000-dcgan-cifar100", "a Korean blog post's adaptation of Hands-On Machine Learning, 2nd ed.",
       "colour DCGAN on CIFAR-100 train+test, ELU output, D on concat(fake, real), RMSprop",
       model="cifar-dcgan", data="cifar100", merge_test=True, image_size=32, channels=3, **KERAS,
       d_update="concat", g_eval_for_d=True, frozen_d_bn="eval", batch_size=30, g_optimizer="rmsprop",
       d_optimizer="rmsprop", g_lr=1e-3, d_lr=1e-3, unit="epoch", epochs=10, drop_last=True, log_every=100,
       sample_every=1, sample_name="epoch_{epoch:04d}", checkpoint_every=1)

recipe("dcgan", "Radford, Metz and Chintala 2015 (the canonical DCGAN)",
       "ConvT G and strided-conv D with BN, 64x64 (image_size=32 for one block fewer)",
       model="dcgan", data="cifar10", image_size=64, channels=3, **PYTORCH_DCGAN, batch_size=128, unit="epoch",
       epochs=25, sample_every=1, sample_name="epoch_{epoch:04d}", grid_rows=8, checkpoint_every=1)

# ---- the latent space: conditional models and InfoGAN (docs/LATENT.md) ----------------------------------

recipe("cgan-mnist", "this project's `default`, class-conditional (Mirza & Osindero 2014; projection D, "
       "Miyato & Koyama 2018)",
       "`default` with G joining a class embedding to z and a projection D; one class per grid column",
       model="default", **PYTORCH_DCGAN, base_filters=16, ema=0.999, steps=2000, sample_every=100, grid_rows=10,
       conditional="projection", num_classes=10)

recipe("cdcgan", "Radford et al. 2015's DCGAN, class-conditional (projection D)",
       "32x32 DCGAN with a class embedding joined to z and a projection D, for CIFAR-10 or a class folder",
       model="dcgan", data="cifar10", image_size=32, channels=3, **PYTORCH_DCGAN, batch_size=128, unit="epoch",
       epochs=25, sample_every=1, sample_name="epoch_{epoch:04d}", grid_rows=10, checkpoint_every=1,
       conditional="projection", num_classes=10)

recipe("infogan-mnist", "Chen et al. 2016, InfoGAN (MNIST setup of the appendix)",
       "62 noise dims, a 10-way categorical and two U(-1, 1) codes; Q shares D's trunk; lambda = 1",
       model="infogan", data="mnist", **{**PYTORCH_DCGAN, "g_reuse_fake": False}, latent_dim=62,
       info_categorical=10, info_continuous=2, info_lambda=1.0, g_lr=1e-3, d_lr=2e-4, q_lr=1e-3,
       steps=5000, sample_every=250, grid_rows=10)


get_recipe = RECIPES.config  # a fresh copy of the named recipe's config


def recipe_names() -> list[str]:
    return list(RECIPES.names())
