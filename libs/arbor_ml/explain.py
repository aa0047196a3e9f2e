"""Feature importance: SHAP values per row and a global mean-|SHAP| ranking.

Methods, tried in order, with the one that answered reported in
:attr:`Explanation.method`:

1. ``shap.TreeExplainer`` (the ``shap`` package, tree-path-dependent TreeSHAP, with its
   additivity check). It handles all three libraries here, native categoricals included
   (for CatBoost it is given a ``Pool``).
2. The library's own exact TreeSHAP when ``shap`` cannot handle a model or is missing:
   ``catboost.ShapValues`` (``get_feature_importance(type='ShapValues')``),
   ``xgboost.pred_contribs``, ``lightgbm.pred_contrib``. An ensemble
   (``arbor_ml.ensemble``) starts here: its members' values, weighted as the blend is.
3. The library's native importance (``native.<type>``: CatBoost PredictionValuesChange,
   XGBoost total gain, LightGBM gain): a global ranking only, no per-row values.

Contributions are in margin (raw score) space: for every row and output,
``contributions.sum(-1) + base_values`` equals the model's raw output. Their shape is
``(rows, outputs, features)``: one output for binary (the positive class's log-odds) and
regression, one per class for multiclass.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from arbor_ml.trainers.base import TrainedModel

logger = logging.getLogger("arbor_ml")

SHAP_METHOD = "shap.TreeExplainer"
#: An ensemble's method by design (shap.TreeExplainer reads one model): its members' own.
ENSEMBLE_SHAP_METHOD = "ensemble.weighted_native_shap"
NATIVE_SHAP_METHODS = {
    "catboost": "catboost.ShapValues",
    "xgboost": "xgboost.pred_contribs",
    "lightgbm": "lightgbm.pred_contrib",
    "arbor": ENSEMBLE_SHAP_METHOD,  # arbor_ml.ensemble: the members' values, weighted
}


@dataclass(frozen=True)
class Explanation:
    """What explained a model and how much each feature mattered.

    ``global_importance`` is sorted, most important first: mean |SHAP| over the rows
    (summed over outputs), or the native importance when no SHAP method ran.
    ``contributions``/``base_values`` are ``None`` without per-row values.
    """

    method: str
    feature_names: list[str]
    output_names: list[str]
    global_importance: list[tuple[str, float]]
    contributions: np.ndarray | None = None
    base_values: np.ndarray | None = None

    @property
    def is_shap(self) -> bool:
        return self.contributions is not None

    def to_dict(self, *, with_rows: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "output_names": self.output_names,
            "ranking": [{"feature": f, "importance": v} for f, v in self.global_importance],
        }
        if with_rows and self.contributions is not None and self.base_values is not None:
            out["contributions"] = self.contributions.tolist()
            out["base_values"] = self.base_values.tolist()
        return out


class Explainer:
    """Explains one trained model; keeps the ``shap`` explainer between calls."""

    def __init__(self, model: TrainedModel, output_names: list[str]) -> None:
        self.model = model
        self.output_names = output_names
        self._shap: Any = None
        self._shap_failed = False

    def explain(self, x: pl.DataFrame, *, method: str = "auto") -> Explanation:
        """Per-row contributions for a preprocessed frame, plus their global ranking.

        ``method``: ``auto`` (the order above), ``shap``, ``native_shap`` or ``native``.
        """
        if method not in ("auto", "shap", "native_shap", "native"):
            from arbor_core.errors import InvalidArgument

            raise InvalidArgument(
                "method must be auto, shap, native_shap or native", field="method"
            )
        # shap.TreeExplainer reads one library's model; a blend has several (see below).
        single = self.model.native is not None
        if method == "shap" and not single:
            from arbor_core.errors import InvalidArgument

            raise InvalidArgument(
                "shap.TreeExplainer cannot read an ensemble; use native_shap", field="method"
            )
        if method in ("auto", "shap") and x.height > 0 and single:
            try:
                values, base = self._shap_values(x)
                return self._from_values(SHAP_METHOD, values, base)
            except Exception as exc:
                if method == "shap":
                    raise
                logger.info(
                    "shap.TreeExplainer cannot explain this %s model (%s); using its own SHAP",
                    self.model.library,
                    exc,
                )
        if method in ("auto", "native_shap") and x.height > 0:
            try:
                values, base = self.model.native_contributions(x)
                return self._from_values(NATIVE_SHAP_METHODS[self.model.library], values, base)
            except Exception as exc:
                if method == "native_shap":
                    raise
                logger.warning(
                    "%s cannot compute SHAP values (%s); falling back to native importance",
                    self.model.library,
                    exc,
                )
        return self.native_importance()

    def native_importance(self) -> Explanation:
        kind, values = self.model.native_importance()
        return Explanation(
            method=f"native.{kind}",
            feature_names=self.model.feature_names,
            output_names=self.output_names,
            global_importance=_ranking(self.model.feature_names, values),
        )

    def _shap_values(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self._shap_failed:
            raise RuntimeError("shap.TreeExplainer failed on this model before")
        if self._shap is None:
            try:
                with warnings.catch_warnings():
                    # shap's plotting colours trip matplotlib deprecation warnings on import.
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import shap

                self._shap = shap.TreeExplainer(self.model.native)
            except Exception:
                self._shap_failed = True
                raise
        with warnings.catch_warnings():
            # shap warns that LightGBM binary output "has changed"; the shape is handled below.
            warnings.simplefilter("ignore", UserWarning)
            raw = self._shap.shap_values(self.model.shap_input(x))
        if isinstance(raw, list):  # older shap: one array per output
            values = np.stack([np.asarray(v) for v in raw], axis=1)
        else:
            values = np.asarray(raw, dtype=np.float64)
            values = values[:, None, :] if values.ndim == 2 else values.transpose(0, 2, 1)
        base = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64)).reshape(-1)
        n_out = self.model.n_outputs
        if values.shape[1] != n_out or base.shape[0] != n_out:
            raise ValueError(
                f"shap returned {values.shape[1]} outputs and {base.shape[0]} base values, "
                f"the model has {n_out}"
            )
        return values.astype(np.float64), base

    def _from_values(self, method: str, values: np.ndarray, base: np.ndarray) -> Explanation:
        importance = np.abs(values).mean(axis=0).sum(axis=0)
        return Explanation(
            method=method,
            feature_names=self.model.feature_names,
            output_names=self.output_names,
            global_importance=_ranking(self.model.feature_names, importance),
            contributions=values,
            base_values=base,
        )


def _ranking(names: list[str], values: np.ndarray) -> list[tuple[str, float]]:
    pairs = [(name, float(v)) for name, v in zip(names, np.asarray(values), strict=True)]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))
