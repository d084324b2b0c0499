"""The detector's named training presets: each is DetectConfig's defaults plus what it changes.

`paper` is the training of Redmon et al. 2016 (sec. 2.2); `adam` is this project's setup for small
data on the CPU. Its values are the best measured so far on `digits-det`, which is not yet the
learning target (docs/DETECTION.md, bench/detect_learn.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ganforge.detect.config import DetectConfig
from ganforge.registry import Registry


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # the paper or measurement it reproduces
    about: str  # what it is, in a few words
    config: DetectConfig


RECIPES: Registry[Recipe] = Registry("detection recipe")


def recipe(name: str, source: str, about: str, **changes) -> Recipe:
    """Register a recipe: DetectConfig's defaults with `changes`."""
    return RECIPES.register(name, Recipe(name, source, about, replace(DetectConfig(), recipe=name, **changes)))


recipe("paper", "Redmon et al. 2016, You Only Look Once, sec. 2.2 (training)",
       "yolov1 at 448, darknet's SGD step (momentum .9, weight decay 5e-4, 1/2 of the loss gradient), "
       "batch 64, warm-up 1e-3 -> 1e-2, then 1e-2 / 1e-3 / 1e-4 over 75 / 30 / 30 epochs (scaled to the "
       "budget), dropout .5",
       model="yolov1", optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4, loss_grad_scale=0.5,
       batch_size=64, schedule="paper", warmup=0.02, dropout=0.5, epochs=135, data="voc07+12", eval_every=2000,
       predict_every=1000, checkpoint_every=1000)

recipe("adam", "this project's setup for small data on two CPU cores (measured in docs/DETECTION.md)",
       "yolov1-s on digits-det: trunk pretrained on single digits, FC 1024 without dropout, Adam 3e-4 "
       "with a cosine decay",
       model="yolov1-s", optimizer="adam", lr=3e-4, weight_decay=0.0, batch_size=32, schedule="cosine",
       warmup=0.04, fc_width=1024, dropout=0.0, pretrain_steps=600, epochs=96, data="digits-det",
       color="jitter", eval_every=250, predict_every=125, checkpoint_every=250)


def get_recipe(name: str) -> DetectConfig:
    """A fresh copy of the named recipe's config."""
    return replace(RECIPES.get(name).config)
