"""Offline quality metrics: FID, KID, precision/recall and Inception Score in a stated feature space.

- :mod:`~ganforge.metrics.feature_nets`: per-dataset classifier CNNs, trained on first use and cached.
- :mod:`~ganforge.metrics.inception`: the standard FID Inception-v3, from a local weights file only.
- :mod:`~ganforge.metrics.scores`: the distances, on float64 features (torch-fidelity's maths).
- :mod:`~ganforge.metrics.evaluate`: `evaluate_images` (scores + protocol) and `format_table`.
"""

from ganforge.metrics.evaluate import FEATURE_CHOICES, evaluate_images, format_table
from ganforge.metrics.feature_nets import DEFAULT_RECIPE, FeatureNet, FeatureNetRecipe, get_feature_net
from ganforge.metrics.inception import InceptionFeatures, find_inception_weights

__all__ = [
    "DEFAULT_RECIPE",
    "FEATURE_CHOICES",
    "FeatureNet",
    "FeatureNetRecipe",
    "InceptionFeatures",
    "evaluate_images",
    "find_inception_weights",
    "format_table",
    "get_feature_net",
]
