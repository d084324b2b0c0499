"""The GAN task: config and recipes, the step (Algorithm 1), the run and its loop, losses, latents,
EMA, sampling and evaluation. Import the submodules you need; this package imports nothing."""
