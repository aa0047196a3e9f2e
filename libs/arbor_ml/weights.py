"""Class weights for imbalanced classification, as one tunable parameter of every library.

Each classification search space has a categorical ``class_weight`` parameter (except when
the study optimises the log loss, which scores the probabilities that reweighting skews):

* ``none`` — every row weighs 1 (the libraries' default, and the default trial's choice);
* ``balanced`` — a row of class c weighs ``n / (K * n_c)``, so each class carries the same
  total weight (scikit-learn's ``class_weight="balanced"``);
* ``sqrt_balanced`` — the square root of that, a milder correction.

The weights multiply the sample weights of the train part only: validation metrics (and so
the study's objective) stay measured on the data as it is. Applying them in the shared
``Trainer.fit`` rather than through each library's own option (CatBoost's
``auto_class_weights``, LightGBM's ``is_unbalance``, XGBoost's ``scale_pos_weight``) gives
the three libraries the same meaning for the same value, which an AUTO study compares.
"""

from __future__ import annotations

import numpy as np

from arbor_core.errors import InvalidArgument
from arbor_ml.search_space import ParamSpec

CLASS_WEIGHT_PARAM = "class_weight"
CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt_balanced")


def class_weight_spec() -> ParamSpec:
    """The ``class_weight`` parameter added to every classification search space."""
    return ParamSpec(CLASS_WEIGHT_PARAM, "categorical", "none", choices=CLASS_WEIGHT_MODES)


def class_weights(y: np.ndarray, mode: str, n_classes: int | None = None) -> np.ndarray | None:
    """Per-row weights for class indices ``y`` (None for ``none``), mean 1 over the rows."""
    if mode == "none":
        return None
    if mode not in CLASS_WEIGHT_MODES:
        raise InvalidArgument(
            f"class_weight must be one of {', '.join(CLASS_WEIGHT_MODES)}, got {mode!r}",
            field=f"search_space.{CLASS_WEIGHT_PARAM}",
        )
    labels = np.asarray(y).astype(np.int64)
    k = max(int(labels.max(initial=0)) + 1, n_classes or 0)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(k)
    per_class[present] = labels.size / (present.sum() * counts[present])
    if mode == "sqrt_balanced":
        per_class = np.sqrt(per_class)
    weights = per_class[labels]
    return weights / weights.mean()


def apply_class_weight(
    y: np.ndarray, sample_weights: np.ndarray | None, mode: str, n_classes: int | None = None
) -> np.ndarray | None:
    """Sample weights times the class weights of ``mode`` (unchanged for ``none``)."""
    extra = class_weights(y, mode, n_classes)
    if extra is None:
        return sample_weights
    if sample_weights is None:
        return extra
    return np.asarray(sample_weights, dtype=np.float64) * extra
