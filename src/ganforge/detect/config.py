"""`DetectConfig`: everything that defines a detector training run, one field per line with its help.

It is the generic config machine of `ganforge.config` (key=value overrides, validation, JSON,
versions) with the detector's fields. Choices come from the registries that own the names: models
from `DETECTORS`, optimizers from `ganforge.optim.OPTIMIZERS`, schedules from `SCHEDULES` below and
metrics from `voc_eval.METRICS`. `resume=True` marks what a resumed run may change. Saved as
`config.json` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ganforge.config import option
from ganforge.detect.augment import COLORS
from ganforge.detect.model import DETECTORS
from ganforge.detect.voc_eval import METRICS
from ganforge.optim import OPTIMIZERS
from ganforge.registry import Registry
from ganforge.runs.config import RunConfig

# ---- learning-rate schedules: step -> factor of `lr` ---------------------------------------------------

SCHEDULES: Registry = Registry("schedule")

# The paper (sec. 2.2): "For the first epochs we slowly raise the learning rate from 1e-3 to 1e-2 ...
# We continue training with 1e-2 for 75 epochs, then 1e-3 for 30 epochs, and finally 1e-4 for 30
# epochs." The three plateaus keep their 75 : 30 : 30 shares of whatever budget the run has.
PAPER_PLATEAUS = ((75, 1.0), (30, 0.1), (30, 0.01))
PAPER_WARMUP_START = 0.1  # 1e-3 of the 1e-2 peak


@SCHEDULES.register("paper")
def paper_schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from lr/10 to lr over `warmup` steps, then lr, lr/10, lr/100 over 75/30/30
    shares of the remaining steps."""
    if step < warmup:
        return PAPER_WARMUP_START + (1 - PAPER_WARMUP_START) * step / warmup
    rest = max(1, total - warmup)
    done = (step - warmup) / rest
    whole = sum(n for n, _ in PAPER_PLATEAUS)
    edge = 0.0
    for epochs, factor in PAPER_PLATEAUS:
        edge += epochs / whole
        if done < edge:
            return factor
    return PAPER_PLATEAUS[-1][1]


@SCHEDULES.register("cosine")
def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0 to lr over `warmup` steps, then a cosine decay to 0 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@SCHEDULES.register("constant")
def constant_schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then `lr` throughout."""
    return (step + 1) / warmup if step < warmup else 1.0


@dataclass
class DetectConfig(RunConfig):
    """A detector run. Recipes (detect/recipes.py) say what each preset changes."""

    VERSION = 1

    recipe: str = option("adam", "the preset this config started from")
    task: str = option("detect", "what this run trains (always detect)", choices=("detect",))
    # -- data --
    data: str = option("digits-det", "a dataset name (digits-det, voc2007, voc2012, voc07+12), a data YAML, "
                       "a COCO JSON or a dataset folder")
    augment: bool = option(True, "the paper's augmentation: scale/translate 20%, exposure and saturation x1.5")
    color: str = option("hsv", "colour augmentation: hsv (the paper's: S and V scaled in HSV, darknet's "
                        "factors) or jitter (torchvision's ColorJitter, what the adam recipe measured)",
                        choices=COLORS)
    flip: str = option("auto", "horizontal flip: auto (the dataset's choice; digits never), on, off",
                       choices=("auto", "on", "off"))
    workers: int = option(1, "augmentation worker processes (0 = in the training process)", ge=0, resume=True)
    # -- model --
    model: str = option("yolov1-s", "detector architecture", choices=DETECTORS)
    batchnorm: str = option("auto", "BatchNorm after every conv: auto (the model's default), on, off",
                            choices=("auto", "on", "off"))
    fc_width: int = option(0, "units of the FC followed by dropout (0 = the model's: 4096 for yolov1)", ge=0)
    dropout: float = option(0.5, "dropout after that FC (the paper's 0.5)", ge=0, lt=1)
    rescore: bool = option(True, "confidence target is the IoU of the responsible box (darknet); false: 1")
    # -- optimisation --
    optimizer: str = option("sgd", "the optimizer", choices=OPTIMIZERS)
    lr: float = option(1e-2, "peak learning rate (the schedule scales it)", gt=0, resume=True)
    weight_decay: float = option(5e-4, "L2 weight decay (the paper's 5e-4)", ge=0)
    loss_grad_scale: float = option(1.0, "factor on equation 3's gradient, the backward pass only (the logged "
                                    "loss is unscaled); darknet steps on 1/2 dL/dw, so the paper recipe "
                                    "sets 0.5 (docs/DETECTION.md)", gt=0)
    schedule: str = option("paper", "lr schedule: paper (warm-up 1e-3 -> 1e-2, then 1e-2/1e-3/1e-4 over "
                           "75/30/30 shares of the budget), cosine, constant", choices=SCHEDULES)
    warmup: float = option(0.02, "warm-up length as a fraction of the run's steps", ge=0, lt=1)
    pretrain_steps: int = option(0, "first train the trunk to classify single objects (the paper's "
                                 "ImageNet stage) for this many steps of 64 (0 = off)", ge=0)
    pretrain_lr: float = option(1e-3, "Adam learning rate of the trunk pretraining", gt=0)
    # -- budget --
    max_seconds: float = option(0.0, "stop this invocation (checkpointed, resumable) after this much "
                                "training time, the pretraining stage included; 0 = no limit", ge=0, resume=True)
    # -- outputs --
    eval_every: int = option(500, "steps between mAPs on the val split (0 = only at the end)", ge=0,
                             resume=True)
    metric: str = option("voc07", "the mAP in eval rows and for the best checkpoint: voc07 11-point, "
                         "voc12 all-point, coco50 101-point at IoU .5, coco AP@[.5:.95]", choices=tuple(METRICS))
    predict_every: int = option(250, "steps between drawings of the fixed val images' predictions", gt=0,
                                resume=True)
    predict_images: int = option(16, "val images drawn in predictions/ (a square grid)", gt=0)
    # -- execution --
    channels_last: str = option("auto", "NHWC memory format: auto (the model's measured best), on, off",
                                choices=("auto", "on", "off"), resume=True)
    fused: bool = option(True, "fused optimizer kernels (Adam, SGD; foreach for RMSprop): the same update "
                         "in one pass over the weights, equal to the loop's within float rounding; yolov1-s's "
                         "Adam step 54 -> 6 ms on 2 cores. Runs saved before this option resume with false",
                         resume=True)
    bf16: bool = option(False, "bf16 autocast for the training forward passes (the loss, the gradients' "
                        "accumulation and the optimizer stay float32; evaluation stays float32). 1.7x the "
                        "step rate measured on a CPU with native bf16 (AVX512-BF16); a CPU without it "
                        "emulates bf16 and gains little or loses (docs/DETECTION.md)", resume=True)
    version: int = option(VERSION, "config format version")

    @classmethod
    def from_dict(cls, data: dict) -> "DetectConfig":
        """As Config.from_dict; a config saved before `color` existed trained with ColorJitter, and one
        saved before `fused` with the optimizers' loop implementation."""
        if isinstance(data, dict) and "color" not in data:
            data = {**data, "color": "jitter"}
        if isinstance(data, dict) and "fused" not in data:  # saved before fused kernels were the default
            data = {**data, "fused": False}
        return super().from_dict(data)

    def warmup_steps(self, total: int) -> int:
        return round(self.warmup * total)
