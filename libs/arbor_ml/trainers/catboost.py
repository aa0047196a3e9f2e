"""CatBoost: native ``cat_features`` on string categories, ``.cbm`` files.

Data reaches CatBoost as ``FeaturesData`` (float32 numbers + an object array of
strings), which needs no pandas and keeps 1-row predictions cheap. The numbers are
column-major: CatBoost stores features by column, and builds a ``Pool`` from a column-major
float32 matrix without copying it (10,000 x 30: 0.03 ms, against 1 to 2 ms row-major).

Defaults follow CatBoost's: MVS bootstrap with ``subsample=0.8`` for binary/regression,
Bayesian bootstrap with ``bagging_temperature=1`` for multiclass (Bernoulli replaces MVS on
a GPU).
``learning_rate`` defaults to 0.03, CatBoost's documented value whenever regularisation
parameters are set explicitly (its automatic rate only applies when none is).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import polars as pl

from arbor_ml import _convert
from arbor_ml.data import PreparedData
from arbor_ml.search_space import ParamSpec, float_param, int_param
from arbor_ml.trainers.base import (
    EvalMetric,
    FitResult,
    FitSettings,
    OnIteration,
    TrainedModel,
    Trainer,
    evaluate_model,
    nvidia_gpu_present,
)
from arbor_ml.types import Device, ModelType, TaskType

#: CatBoost's default number of boosting rounds.
DEFAULT_ROUNDS = 1000

_LOSS = {
    TaskType.BINARY: "Logloss",
    TaskType.MULTICLASS: "MultiClass",
    TaskType.REGRESSION: "RMSE",
}


@functools.lru_cache(maxsize=64)
def auto_learning_rate(loss: str, train_rows: int, iterations: int) -> float:
    """The learning rate CatBoost chooses itself for ``train_rows`` rows, ``iterations`` rounds
    and an eval set (use_best_model), read from CatBoost rather than copied from its source:
    one round on a one-column frame of that size, stopped at once."""
    from catboost import CatBoost, Pool

    rows = max(int(train_rows), 2)
    feature = np.arange(rows, dtype=np.float32).reshape(-1, 1)
    if loss == "RMSE":
        label: np.ndarray = np.arange(rows, dtype=np.float64)
    else:
        label = np.arange(rows) % (3 if loss == "MultiClass" else 2)
    eval_rows = slice(0, min(rows, 64))
    model = CatBoost(
        {
            "loss_function": loss,
            "iterations": max(int(iterations), 1),
            "verbose": False,
            "allow_writing_files": False,
            "thread_count": 1,
        }
    )
    model.fit(
        Pool(feature, label),
        eval_set=Pool(feature[eval_rows], label[eval_rows]),
        callbacks=[_StopAtOnce()],
    )
    return float(round(model.learning_rate_, 6))


class _StopAtOnce:
    def after_iteration(self, info: Any) -> bool:
        return False


class CatBoostModel(TrainedModel):
    model_type = ModelType.CATBOOST
    file_name = "model.cbm"
    library = "catboost"

    def pool(
        self, x: pl.DataFrame, label: np.ndarray | None = None, weight: np.ndarray | None = None
    ) -> Any:
        from catboost import FeaturesData, Pool

        numeric = _convert.to_numpy(x[:, : self.n_numeric], "catboost", np.float32, order="F")
        if not self.categorical_features:
            return Pool(numeric, label=label, weight=weight, feature_names=self.feature_names)
        categorical = _convert.to_object_array(x[:, self.n_numeric :], "catboost")
        features = FeaturesData(
            num_feature_data=numeric,
            cat_feature_data=categorical,
            num_feature_names=self.feature_names[: self.n_numeric],
            cat_feature_names=self.categorical_features,
        )
        return Pool(features, label=label, weight=weight)

    @property
    def output_prediction_type(self) -> str:
        """CatBoost's ``prediction_type`` for :meth:`predict_output`'s numbers."""
        return "RawFormulaVal" if self.task is TaskType.REGRESSION else "Probability"

    def predict_output(self, x: pl.DataFrame) -> np.ndarray:
        out = np.asarray(
            self.native.predict(self.pool(x), prediction_type=self.output_prediction_type),
            dtype=np.float64,
        )
        return out if self.task is TaskType.REGRESSION else out.reshape(x.height, -1)

    def predict_margin(self, x: pl.DataFrame) -> np.ndarray:
        return np.asarray(
            self.native.predict(self.pool(x), prediction_type="RawFormulaVal"), dtype=np.float64
        )

    def native_contributions(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(
            self.native.get_feature_importance(data=self.pool(x), type="ShapValues"),
            dtype=np.float64,
        )
        if values.ndim == 2:  # (n, F + 1): one output
            values = values[:, None, :]
        return values[:, :, :-1], values[0, :, -1]

    def shap_input(self, x: pl.DataFrame) -> Any:
        return self.pool(x)

    def native_importance(self) -> tuple[str, np.ndarray]:
        values = self.native.get_feature_importance(type="PredictionValuesChange")
        return "PredictionValuesChange", np.asarray(values, dtype=np.float64)

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, self.file_name)
            self.native.save_model(path, format="cbm")
            with open(path, "rb") as handle:
                return handle.read()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> CatBoostModel:
        from catboost import CatBoost

        native = CatBoost()
        native.load_model(blob=data)
        return cls(
            native,
            task=task,
            feature_names=feature_names,
            categorical_features=categorical_features,
            n_classes=n_classes,
        )


class _IterationCallback:
    """CatBoost's ``after_iteration`` hook: report the validation value, maybe stop."""

    def __init__(self, metric: EvalMetric, on_iteration: OnIteration) -> None:
        self.metric = metric
        self.on_iteration = on_iteration
        self.stopped = False

    def after_iteration(self, info: Any) -> bool:
        history = info.metrics.get("validation", {}).get(self.metric.name)
        if not history:
            return True
        # CatBoost counts rounds from 1; the other libraries (and Optuna steps) from 0.
        step = int(info.iteration) - 1
        if self.on_iteration(step, self.metric.to_study(float(history[-1]))):
            self.stopped = True
            return False
        return True


class CatBoostTrainer(Trainer):
    model_type: ClassVar[ModelType] = ModelType.CATBOOST
    openmp: ClassVar[bool] = False

    def base_space(self) -> dict[str, ParamSpec]:
        space = {
            "learning_rate": float_param("learning_rate", 0.005, 0.3, 0.03, log=True),
            # Up to 8: each level doubles an oblivious tree's cost (and its SHAP's), and depth
            # 9-10 rarely pays for itself within a study's budget; override to go deeper.
            "depth": int_param("depth", 4, 8, 6),
            "l2_leaf_reg": float_param("l2_leaf_reg", 0.1, 30.0, 3.0, log=True),
            "random_strength": float_param("random_strength", 1e-3, 10.0, 1.0, log=True),
            # How categorical columns are encoded, which decides CatBoost's speed on data with
            # many of them: one-hot up to this many values (CatBoost's CPU default: 2), target
            # statistics (CTRs) above, over combinations of up to max_ctr_complexity columns
            # (default 4). One-hot and single-column CTRs are several times faster.
            "one_hot_max_size": ParamSpec(
                "one_hot_max_size", "categorical", 2, choices=(2, 16, 64)
            ),
            "max_ctr_complexity": ParamSpec(
                "max_ctr_complexity", "categorical", 4, choices=(1, 2, 4)
            ),
        }
        if self.task is TaskType.MULTICLASS:
            space["bagging_temperature"] = float_param("bagging_temperature", 0.0, 10.0, 1.0)
        else:
            space["subsample"] = float_param("subsample", 0.5, 1.0, 0.8)
        return space

    def default_params_for(self, train_rows: int, settings: FitSettings | None = None) -> dict:
        """CatBoost's defaults, with the learning rate it picks by itself for this many rows
        and rounds with an eval set (its automatic rate, which it only uses when no
        regularisation parameter is set explicitly, as a study's trial always does)."""
        params = self.default_params()
        spec = self.search_space.get("learning_rate")
        if spec is not None and spec.choices is None:
            # CatBoost's rate for its own default of 1000 rounds: a study's larger round limit
            # is a ceiling for early stopping, not a reason to learn more slowly.
            rounds = min((settings or FitSettings()).iterations, DEFAULT_ROUNDS)
            params["learning_rate"] = spec.clamp(
                auto_learning_rate(_LOSS[self.task], train_rows, rounds)
            )
        return params

    def planned_rounds(self, settings: FitSettings) -> int | None:
        return min(settings.iterations, DEFAULT_ROUNDS)

    def params_for_rounds(
        self, params: Mapping[str, Any], train_rows: int, planned: int, rounds: int
    ) -> dict[str, Any]:
        """The learning rate scaled by CatBoost's own rule for fewer rounds: its automatic
        rate for ``rounds`` over its rate for ``planned`` (so the defaults trial gets exactly
        the rate CatBoost would pick for that many rounds)."""
        out = dict(params)
        rate = out.get("learning_rate")
        spec = self.search_space.get("learning_rate")
        if rate is None or rounds >= planned:
            return out
        loss = _LOSS[self.task]
        factor = auto_learning_rate(loss, train_rows, rounds) / auto_learning_rate(
            loss, train_rows, planned
        )
        scaled = float(rate) * factor
        out["learning_rate"] = spec.clamp(scaled) if spec is not None else scaled
        return out

    def eval_metric(self) -> EvalMetric:
        match self.task, self.metric:
            case TaskType.BINARY, "roc_auc":
                # Early stopping on the log loss, not on AUC: AUC on a small validation part
                # is flat and noisy (it peaks within a few rounds), the loss is smooth.
                return EvalMetric("Logloss", maximize=False, exact=False, negate=True)
            case TaskType.BINARY, "log_loss":
                return EvalMetric("Logloss", maximize=False)
            case _, "accuracy":
                return EvalMetric("Accuracy", maximize=True)
            case TaskType.BINARY, "f1":
                return EvalMetric("F1", maximize=True)
            case TaskType.MULTICLASS, "f1":
                return EvalMetric("TotalF1:average=Macro", maximize=True)
            case TaskType.MULTICLASS, "log_loss":
                return EvalMetric("MultiClass", maximize=False)
            case TaskType.MULTICLASS, _:
                return EvalMetric("MultiClass", maximize=False, exact=False, negate=True)
            case TaskType.REGRESSION, "mae":
                return EvalMetric("MAE", maximize=False)
            case TaskType.REGRESSION, "r2":
                return EvalMetric("R2", maximize=True)
        return EvalMetric("RMSE", maximize=False)

    can_average: ClassVar[bool] = True

    def fit_ensemble(
        self,
        data: PreparedData,
        members: Sequence[tuple[Mapping[str, Any] | None, FitSettings]],
    ) -> FitResult:
        """Each member fitted, then merged with ``catboost.sum_models`` (weights 1/n): one
        ``.cbm`` whose raw output is the members' mean. Oblivious trees of any depth merge,
        so members may differ in every parameter, not only the seed."""
        if len(members) <= 1:
            return super().fit_ensemble(data, members)
        from catboost import sum_models

        results = [self.fit(data, params, settings) for params, settings in members]
        models = len(results)
        first = results[0]
        merged = sum_models([r.model.native for r in results], weights=[1.0 / models] * models)
        model = CatBoostModel(
            merged,
            task=self.task,
            feature_names=first.model.feature_names,
            categorical_features=first.model.categorical_features,
            n_classes=first.model.n_classes,
        )
        scores: dict[str, float] = {}
        if data.x_valid is not None and data.y_valid is not None:
            scores = evaluate_model(model, data)
        return replace(
            first,
            model=model,
            score=scores.get(self.metric),
            metrics=scores,
            duration_s=sum(r.duration_s for r in results),
            extra={**first.extra, "averaged_models": models},
        )

    @classmethod
    def cuda_available(cls) -> bool:
        if not nvidia_gpu_present():
            return False
        from catboost.utils import get_gpu_device_count

        return int(get_gpu_device_count()) > 0

    def _fit(
        self,
        data: PreparedData,
        params: dict[str, Any],
        settings: FitSettings,
        device: Device,
        on_iteration: OnIteration | None,
    ) -> tuple[TrainedModel, dict[str, Any], int | None, int, bool]:
        from catboost import CatBoost

        pre = data.preprocessor
        n_classes = data.target.n_classes
        template = CatBoostModel(
            None,
            task=self.task,
            feature_names=pre.feature_names,
            categorical_features=pre.categorical_features,
            n_classes=n_classes,
        )
        metric = self.eval_metric()
        has_valid = data.x_valid is not None and data.x_valid.height > 0
        library: dict[str, Any] = {
            "loss_function": _LOSS[self.task],
            "iterations": settings.iterations,
            "random_seed": settings.seed,
            "allow_writing_files": False,
            "verbose": False,
            "task_type": "GPU" if device is Device.CUDA else "CPU",
        }
        if self.task is TaskType.MULTICLASS:
            library["bootstrap_type"] = "Bayesian"
        elif "subsample" in params:
            library["bootstrap_type"] = "Bernoulli" if device is Device.CUDA else "MVS"
        if self.task.is_classification:
            library["class_names"] = list(range(n_classes))
        if settings.threads:
            library["thread_count"] = settings.threads
        if has_valid:
            library["eval_metric"] = metric.name
            if settings.early_stopping_rounds:
                library["early_stopping_rounds"] = settings.early_stopping_rounds
                library["use_best_model"] = True
        library.update(params)

        train_pool = template.pool(data.x_train, data.y_train, data.w_train)
        eval_pool = None
        if has_valid:
            assert data.x_valid is not None
            eval_pool = template.pool(data.x_valid, data.y_valid, data.w_valid)
        callback = _IterationCallback(metric, on_iteration) if on_iteration and has_valid else None
        # CatBoost refuses Python callbacks on a GPU: there, the rounds are replayed to the
        # callback after training (its decision still stands; only the time is not saved).
        live = callback if device is Device.CPU else None
        native = CatBoost(library)
        native.fit(train_pool, eval_set=eval_pool, callbacks=[live] if live else None)
        if callback is not None and live is None:
            history = native.get_evals_result().get("validation", {}).get(metric.name, [])
            for step, value in enumerate(history):
                if callback.on_iteration(step, metric.to_study(float(value))):
                    callback.stopped = True
                    break
        best = native.get_best_iteration() if has_valid else None
        rounds = int(native.tree_count_)
        if has_valid:
            history = native.get_evals_result().get("validation", {})
            rounds = max((len(v) for v in history.values()), default=rounds)
        model = CatBoostModel(
            native,
            task=self.task,
            feature_names=pre.feature_names,
            categorical_features=pre.categorical_features,
            n_classes=n_classes,
        )
        return model, library, best, rounds, bool(callback and callback.stopped)
