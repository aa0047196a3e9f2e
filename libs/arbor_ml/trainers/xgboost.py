"""XGBoost: ``hist`` trees, native categoricals (``enable_categorical`` with integer codes
declared as ``c`` features), ``.ubj`` files.

Predictions use ``inplace_predict`` on a float32 numpy array, the fastest path XGBoost
has. Defaults are XGBoost's; ``reg_alpha`` and ``gamma`` default to 0 there, which a
log-uniform range cannot hold, so their default here is 1e-8 (the same model in practice).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl
import xgboost as xgb

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

#: Characters XGBoost refuses in feature names.
_FORBIDDEN = "[]<"

_OBJECTIVE = {
    TaskType.BINARY: "binary:logistic",
    TaskType.MULTICLASS: "multi:softprob",
    TaskType.REGRESSION: "reg:squarederror",
}


class XGBoostModel(TrainedModel):
    model_type = ModelType.XGBOOST
    file_name = "model.ubj"
    library = "xgboost"

    @property
    def feature_types(self) -> list[str]:
        return ["q"] * self.n_numeric + ["c"] * len(self.categorical_features)

    def matrix(self, x: pl.DataFrame) -> np.ndarray:
        return _convert.to_numpy(x, "xgboost", np.float32)

    def dmatrix(
        self, x: pl.DataFrame, label: np.ndarray | None = None, weight: np.ndarray | None = None
    ) -> Any:
        return xgb.DMatrix(
            self.matrix(x),
            label=label,
            weight=weight,
            feature_names=self.library_feature_names(_FORBIDDEN),
            feature_types=self.feature_types,
            enable_categorical=bool(self.categorical_features),
            missing=np.nan,
        )

    def predict_output(self, x: pl.DataFrame) -> np.ndarray:
        if self.compiled is not None:
            return self._compiled_output(self.compiled.predict(self.matrix(x)))
        out = np.asarray(self.native.inplace_predict(self.matrix(x)), dtype=np.float64)
        if self.task is TaskType.BINARY:
            return self._binary_stack(out)
        if self.task is TaskType.MULTICLASS:
            return out.reshape(x.height, -1)
        return out.reshape(-1)

    def predict_margin(self, x: pl.DataFrame) -> np.ndarray:
        if self.compiled is not None:
            out = self.compiled.predict(self.matrix(x), margin=True)
        else:
            out = self.native.inplace_predict(self.matrix(x), predict_type="margin")
            out = np.asarray(out, dtype=np.float64)
        return out.reshape(x.height, -1) if self.task is TaskType.MULTICLASS else out.reshape(-1)

    def native_contributions(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(
            self.native.predict(self.dmatrix(x), pred_contribs=True), dtype=np.float64
        )
        if values.ndim == 2:
            values = values[:, None, :]
        return values[:, :, :-1], values[0, :, -1]

    def shap_input(self, x: pl.DataFrame) -> Any:
        return self.matrix(x)

    def native_importance(self) -> tuple[str, np.ndarray]:
        scores = self.native.get_score(importance_type="total_gain")
        names = self.library_feature_names(_FORBIDDEN)
        return "total_gain", np.array([float(scores.get(f, 0.0)) for f in names])

    def to_bytes(self) -> bytes:
        return bytes(self.native.save_raw(raw_format="ubj"))

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> XGBoostModel:
        native = xgb.Booster()
        native.load_model(bytearray(data))
        return cls(
            native,
            task=task,
            feature_names=feature_names,
            categorical_features=categorical_features,
            n_classes=n_classes,
        )


class XGBoostTrainer(Trainer):
    model_type: ClassVar[ModelType] = ModelType.XGBOOST

    def base_space(self) -> dict[str, ParamSpec]:
        return {
            "learning_rate": float_param("learning_rate", 0.005, 0.3, 0.3, log=True),
            "max_depth": int_param("max_depth", 3, 10, 6),
            "min_child_weight": float_param("min_child_weight", 0.01, 20.0, 1.0, log=True),
            "subsample": float_param("subsample", 0.5, 1.0, 1.0),
            "colsample_bytree": float_param("colsample_bytree", 0.5, 1.0, 1.0),
            "reg_lambda": float_param("reg_lambda", 1e-3, 10.0, 1.0, log=True),
            "reg_alpha": float_param("reg_alpha", 1e-8, 10.0, 1e-8, log=True),
            "gamma": float_param("gamma", 1e-8, 5.0, 1e-8, log=True),
        }

    def eval_metric(self) -> EvalMetric:
        match self.task, self.metric:
            case TaskType.BINARY, "roc_auc":
                # The log loss stops early where AUC would stop on noise (see catboost.py).
                return EvalMetric("logloss", maximize=False, exact=False, negate=True)
            case TaskType.BINARY, "log_loss":
                return EvalMetric("logloss", maximize=False)
            case TaskType.BINARY, "accuracy":
                return EvalMetric("error", maximize=False, complement=True)
            case TaskType.MULTICLASS, "log_loss":
                return EvalMetric("mlogloss", maximize=False)
            case TaskType.MULTICLASS, "accuracy":
                return EvalMetric("merror", maximize=False, complement=True)
            case TaskType.REGRESSION, "rmse":
                return EvalMetric("rmse", maximize=False)
            case TaskType.REGRESSION, "mae":
                return EvalMetric("mae", maximize=False)
        # f1, multiclass roc_auc, r2: computed by us each round.
        return EvalMetric(self.metric, maximize=self.direction == "maximize", custom=True)

    @classmethod
    def cuda_available(cls) -> bool:
        if not nvidia_gpu_present():
            return False
        return bool(xgb.build_info().get("USE_CUDA"))

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
        model = XGBoostModel(
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
            "tree_method": "hist",
            "device": "cuda" if device is Device.CUDA else "cpu",
            "seed": settings.seed,
            "verbosity": 0,
        }
        if self.task is TaskType.MULTICLASS:
            library["num_class"] = n_classes
        if settings.threads:
            library["nthread"] = settings.threads
        if has_valid:
            if metric.custom:
                library["disable_default_eval_metric"] = 1
            else:
                library["eval_metric"] = metric.name
        library.update(params)

        train = model.dmatrix(data.x_train, data.y_train, data.w_train)
        evals = []
        callbacks: list[Any] = []
        custom = None
        reporter = None
        if has_valid:
            assert data.x_valid is not None and data.y_valid is not None
            valid = model.dmatrix(data.x_valid, data.y_valid, data.w_valid)
            evals = [(valid, "valid")]
            if metric.custom:
                y_valid, w_valid, task, name = data.y_valid, data.w_valid, self.task, metric.name

                def custom(predt: np.ndarray, _: Any) -> tuple[str, float]:
                    return name, custom_metric_value(name, task, y_valid, predt, w_valid)

            # The reporter first: XGBoost stops asking callbacks once one says stop.
            if on_iteration is not None:
                reporter = _Reporter(metric, on_iteration)
                callbacks.append(reporter)
            if settings.early_stopping_rounds:
                callbacks.append(
                    xgb.callback.EarlyStopping(
                        rounds=settings.early_stopping_rounds,
                        metric_name=metric.name,
                        data_name="valid",
                        maximize=metric.maximize,
                        save_best=False,
                    )
                )
        booster = xgb.train(
            library,
            train,
            num_boost_round=settings.iterations,
            evals=evals,
            custom_metric=custom,
            callbacks=callbacks,
            verbose_eval=False,
        )
        trained = booster.num_boosted_rounds()
        best: int | None = None
        if has_valid and settings.early_stopping_rounds:
            # Unset when the reporter stopped the fit before early stopping saw a round (the
            # time budget or the pruner at round one): the rounds trained are all there is.
            recorded = booster.attr("best_iteration")
            best = int(recorded) if recorded is not None else max(trained - 1, 0)
            if best + 1 < trained:
                booster = booster[: best + 1]
        if device is Device.CUDA:
            # Serve on CPUs: a model that still says cuda warns and copies data per call.
            booster.set_param({"device": "cpu"})
        model.native = booster
        return model, library, best, trained, bool(reporter and reporter.stopped)


class _Reporter(xgb.callback.TrainingCallback):
    """Reports each round's validation value; stops training when told to."""

    def __init__(self, metric: EvalMetric, on_iteration: OnIteration) -> None:
        super().__init__()
        self.metric = metric
        self.on_iteration = on_iteration
        self.stopped = False

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        history = evals_log.get("valid", {}).get(self.metric.name)
        if not history:
            return False
        value = history[-1]
        value = float(value[0] if isinstance(value, tuple) else value)
        if self.on_iteration(epoch, self.metric.to_study(value)):
            self.stopped = True
            return True
        return False
