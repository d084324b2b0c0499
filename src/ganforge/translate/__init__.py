"""Image-to-image translation: pix2pix (paired data) and CycleGAN (unpaired data), the third task.

models.py holds the networks, config.py and recipes.py the runs' settings, data.py the paired and
unpaired data, step.py the two objectives, run.py / train.py the loop, use.py the trained
generator, cli.py the `ganforge translate` commands. Nothing here imports the detector."""
