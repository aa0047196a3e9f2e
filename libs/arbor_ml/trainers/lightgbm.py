"""LightGBM: native categoricals (``categorical_feature`` on integer codes), ``.txt`` files.

Defaults are LightGBM's; ``lambda_l1``/``lambda_l2`` default to 0 there, which a
log-uniform range cannot hold, so their default here is 1e-8. ``bagging_fraction`` below 1
turns bagging on (``bagging_freq=1``), as LightGBM needs. The saved model is cut at the
best iteration, so a loaded model predicts exactly what the trained one did.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import polars as pl

from arbor_ml import _convert
from arbor_ml.data import PreparedData
from arbor_ml.search_space import ParamSpec, float_param, int_param
from arbor_ml.trainers.base import (
    EvalMetric,
    FitSettings,
    OnIteration,
    TrainedModel,
    Trainer,
    custom_metric_value,
    nvidia_gpu_present,
)
from arbor_ml.types import Device, ModelType, TaskType

#: Characters LightGBM refuses in feature names (it writes them into JSON); it also turns
#: spaces into underscores, which is harmless since results are positional.
_FORBIDDEN = '"\\,:[]{}'

_OBJECTIVE = {
    TaskType.BINARY: "binary",
    TaskType.MULTICLASS: "multiclass",
    TaskType.REGRESSION: "regression",
}

#: Below this many rows a prediction runs on one thread: starting OpenMP threads costs
#: more than it saves.
_SMALL_BATCH = 512


class LightGBMModel(TrainedModel):
    model_type = ModelType.LIGHTGBM
    file_name = "model.txt"
    library = "lightgbm"

    def matrix(self, x: pl.DataFrame) -> np.ndarray:
        return _convert.to_numpy(x, "lightgbm", np.float64)

    def _predict(self, x: pl.DataFrame, **kwargs: Any) -> np.ndarray:
        if x.height < _SMALL_BATCH:
            kwargs["num_threads"] = 1
        return np.asarray(self.native.predict(self.matrix(x), **kwargs), dtype=np.float64)

    def predict_output(self, x: pl.DataFrame) -> np.ndarray:
        if self.compiled is not None:
            return self._compiled_output(self.compiled.predict(self.matrix(x)))
        out = self._predict(x)
        if self.task is TaskType.BINARY:
            return self._binary_stack(out)
        if self.task is TaskType.MULTICLASS:
            return out.reshape(x.height, -1)
        return out.reshape(-1)

    def predict_margin(self, x: pl.DataFrame) -> np.ndarray:
        if self.compiled is not None:
            out = self.compiled.predict(self.matrix(x), margin=True)
        else:
            out = self._predict(x, raw_score=True)
        return out.reshape(x.height, -1) if self.task is TaskType.MULTICLASS else out.reshape(-1)

    def native_contributions(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        values = self._predict(x, pred_contrib=True)
        width = len(self.feature_names) + 1
        values = values.reshape(x.height, -1, width)
        return values[:, :, :-1], values[0, :, -1]

    def shap_input(self, x: pl.DataFrame) -> Any:
        return self.matrix(x)

    def native_importance(self) -> tuple[str, np.ndarray]:
        return "gain", np.asarray(self.native.feature_importance("gain"), dtype=np.float64)

    def to_bytes(self) -> bytes:
        return self.native.model_to_string().encode("utf-8")

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> LightGBMModel:
        native = lgb.Booster(model_str=data.decode("utf-8"))
        return cls(
            native,
            task=task,
            feature_names=feature_names,
            categorical_features=categorical_features,
            n_classes=n_classes,
        )


class LightGBMTrainer(Trainer):
    model_type: ClassVar[ModelType] = ModelType.LIGHTGBM

    def base_space(self) -> dict[str, ParamSpec]:
        return {
            "learning_rate": float_param("learning_rate", 0.005, 0.3, 0.1, log=True),
            "num_leaves": int_param("num_leaves", 8, 256, 31, log=True),
            "min_child_samples": int_param("min_child_samples", 5, 100, 20, log=True),
            "feature_fraction": float_param("feature_fraction", 0.5, 1.0, 1.0),
            "bagging_fraction": float_param("bagging_fraction", 0.5, 1.0, 1.0),
            "lambda_l1": float_param("lambda_l1", 1e-8, 10.0, 1e-8, log=True),
            "lambda_l2": float_param("lambda_l2", 1e-8, 10.0, 1e-8, log=True),
        }

    def eval_metric(self) -> EvalMetric:
        match self.task, self.metric:
            case TaskType.BINARY, "roc_auc":
                # The log loss stops early where AUC would stop on noise (see catboost.py).
                return EvalMetric("binary_logloss", maximize=False, exact=False, negate=True)
            case TaskType.BINARY, "log_loss":
                return EvalMetric("binary_logloss", maximize=False)
            case TaskType.BINARY, "accuracy":
                return EvalMetric("binary_error", maximize=False, complement=True)
            case TaskType.MULTICLASS, "log_loss":
                return EvalMetric("multi_logloss", maximize=False)
            case TaskType.MULTICLASS, "accuracy":
                return EvalMetric("multi_error", maximize=False, complement=True)
            case TaskType.REGRESSION, "rmse":
                return EvalMetric("rmse", maximize=False)
            case TaskType.REGRESSION, "mae":
                return EvalMetric("l1", maximize=False)
        return EvalMetric(self.metric, maximize=self.direction == "maximize", custom=True)

    @classmethod
    def cuda_available(cls) -> bool:
        """Only a LightGBM built with CUDA can; the PyPI wheel is not, so probe it."""
        if not nvidia_gpu_present():
            return False
        x = np.arange(20, dtype=np.float64).reshape(10, 2)
        try:
            lgb.train(
                {"device_type": "cuda", "verbosity": -1, "objective": "regression"},
                lgb.Dataset(x, label=np.arange(10.0)),
                num_boost_round=1,
            )
        except lgb.basic.LightGBMError:
            return False
        return True

    def _fit(
        self,
        data: PreparedData,
        params: dict[str, Any],
        settings: FitSettings,
        device: Device,
        on_iteration: OnIteration | None,
    ) -> tuple[TrainedModel, dict[str, Any], int | None, int, bool]:
        pre = data.preprocessor
        n_classes = data.target.n_classes
        model = LightGBMModel(
            None,
            task=self.task,
            feature_names=pre.feature_names,
            categorical_features=pre.categorical_features,
            n_classes=n_classes,
        )
        metric = self.eval_metric()
        has_valid = data.x_valid is not None and data.x_valid.height > 0
        library: dict[str, Any] = {
            "objective": _OBJECTIVE[self.task],
            "seed": settings.seed,
            "deterministic": True,
            "force_row_wise": True,
            "feature_pre_filter": False,
            "verbosity": -1,
            "device_type": "cuda" if device is Device.CUDA else "cpu",
            "metric": "None" if metric.custom or not has_valid else metric.name,
        }
        if self.task is TaskType.MULTICLASS:
            library["num_class"] = n_classes
        if settings.threads:
            library["num_threads"] = settings.threads
        library.update(params)
        if float(library.get("bagging_fraction", 1.0)) < 1.0:
            library.setdefault("bagging_freq", 1)

        categorical = list(range(model.n_numeric, len(pre.feature_names)))
        names = model.library_feature_names(_FORBIDDEN)
        train = lgb.Dataset(
            model.matrix(data.x_train),
            label=data.y_train,
            weight=data.w_train,
            feature_name=names,
            categorical_feature=categorical,
            free_raw_data=True,
        )
        valid_sets: list[Any] = []
        callbacks: list[Any] = []
        feval = None
        reporter = None
        if has_valid:
            assert data.x_valid is not None and data.y_valid is not None
            valid_sets = [
                lgb.Dataset(
                    model.matrix(data.x_valid),
                    label=data.y_valid,
                    weight=data.w_valid,
                    reference=train,
                    feature_name=names,
                    categorical_feature=categorical,
                )
            ]
            if metric.custom:
                y_valid, w_valid, task, name = data.y_valid, data.w_valid, self.task, metric.name

                def feval(preds: np.ndarray, _: Any) -> tuple[str, float, bool]:
                    value = custom_metric_value(name, task, y_valid, preds, w_valid)
                    return name, value, metric.maximize

            if settings.early_stopping_rounds:
                callbacks.append(
                    lgb.early_stopping(
                        settings.early_stopping_rounds, first_metric_only=True, verbose=False
                    )
                )
            if on_iteration is not None:
                reporter = _Reporter(metric, on_iteration)
                callbacks.append(reporter)
        booster = lgb.train(
            library,
            train,
            num_boost_round=settings.iterations,
            valid_sets=valid_sets,
            valid_names=["valid"] if valid_sets else None,
            feval=feval,
            callbacks=callbacks,
            keep_training_booster=True,  # we cut at the best iteration ourselves, below
        )
        trained = booster.current_iteration()
        best: int | None = None
        if has_valid and (settings.early_stopping_rounds or (reporter and reporter.stopped)):
            kept = booster.best_iteration or trained
            best = kept - 1
            text = booster.model_to_string(num_iteration=kept)
        else:
            text = booster.model_to_string()
        # Reload from text: the saved model is then, bit for bit, the one predicting here.
        model.native = lgb.Booster(model_str=text)
        return model, library, best, trained, bool(reporter and reporter.stopped)


class _Reporter:
    """Reports each round's validation value; stops training when told to."""

    order = 20  # before early stopping (30), so the last round is reported too
    before_iteration = False

    def __init__(self, metric: EvalMetric, on_iteration: OnIteration) -> None:
        self.metric = metric
        self.on_iteration = on_iteration
        self.stopped = False

    def __call__(self, env: Any) -> None:
        for data_name, metric_name, value, *_ in env.evaluation_result_list or []:
            if data_name == "valid" and metric_name == self.metric.name:
                if self.on_iteration(env.iteration, self.metric.to_study(float(value))):
                    self.stopped = True
                    raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)
                return
