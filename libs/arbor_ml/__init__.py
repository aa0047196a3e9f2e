"""Arbor's ML core: preprocessing, trainers, metrics, postprocessing, bundles, SHAP.

No gRPC and no database here; the training and inference services import this package.
Importing it loads none of CatBoost, XGBoost, LightGBM or shap: each is imported when a
trainer or model of that library is first used. Bad input raises
``arbor_core.errors.InvalidArgument`` naming the field (a column, ``model_type``,
``task``, ``metric``, ``search_space.<param>``...).

Enums (plain strings; the services map their protobuf enums onto them)::

    ModelType: catboost (default) | xgboost | lightgbm
    TaskType:  binary | multiclass | regression
    Device:    cpu | cuda          Direction: maximize | minimize
    parse_model_type(v) / parse_task_type(v) / parse_device(v)   # -> enum or InvalidArgument

Task and metrics::

    infer_task(target: pl.Series) -> TaskType
    default_metric(task) -> str             # binary roc_auc, multiclass log_loss, regression rmse
    metric_direction(metric) -> Direction
    validate_metric(metric | None, task) -> str   # InvalidArgument(field="metric") if unfit
    metrics_for_task(task) -> list[str]     # roc_auc log_loss accuracy f1 | rmse mae r2
    compute_metric(metric, y_true, output, *, weights=None, threshold=0.5) -> float
    evaluate(task, y_true, output, *, weights=None, threshold=0.5, metrics=None) -> dict

Training, the way a study uses it::

    data = prepare_data(train_df, valid_df, target="y", task=None, model_type="catboost",
                        weight_column=None, preprocessing=PreprocessingOptions(...),
                        positive_class=None, target_transform="none")     # -> PreparedData
    trainer = get_trainer(model_type, data.task, metric=None,
                          search_space={"learning_rate": {"low": 0.01, "high": 0.3, "log": True}})
    trainer.direction                        # study direction for trainer.metric
    study.enqueue_trial(trainer.default_params())
    params = trainer.suggest_params(trial)   # inside the objective
    result = trainer.fit(data, params, FitSettings(iterations=1000, early_stopping_rounds=50,
                         seed=0, threads=0, device="cpu"),
                         on_iteration=lambda step, value: should_stop)     # -> FitResult
    result.score, result.metrics, result.best_iteration, result.stopped_by_callback
    bundle = build_bundle(data, result, postprocessing=PostprocessingOptions(threshold=0.5),
                          extra_metadata={"experiment_id": ...})            # -> ModelBundle
    train(train_df, valid_df, target="y", ...) -> ModelBundle   # all of the above, defaults

Serving::

    ref = save_bundle(bundle, store, bundle_prefix(name, version))  # -> BundleRef(prefix, uri,
                                                                     #    manifest_sha256, files)
    bundle = load_bundle(store, prefix, expected_manifest_sha256=ref.manifest_sha256)
    bundle.predict(frame) -> Prediction(labels, probabilities, classes, values)
    bundle.predict_raw(frame) -> np.ndarray  # (n, K) probas or (n,) values; no postprocessing
    bundle.predict_margin(frame) -> np.ndarray
    bundle.explain(frame | None, method="auto") -> Explanation(method, feature_names,
        output_names, global_importance, contributions (n, outputs, F), base_values (outputs,))
    bundle.signature (inputs, task, target, classes, ...), bundle.metadata (dict)

Studies (the training service's runner follows these; see each module's docstring)::

    arbor_ml.automl     # defaults first, warm-start portfolio, AUTO's order, TimeBudget,
                        # final fit (all | train | trial), refit_iterations
    arbor_ml.cv         # make_folds(frame, k, FoldRule("stratified"|"group"|"time"|"random"))
    arbor_ml.threshold  # tune_threshold(y, p1, "f1" | "precision@recall=0.9" | ...)
    arbor_ml.weights    # the class_weight search parameter (none | balanced | sqrt_balanced)
    arbor_ml.latency    # predict_ms_per_1k_rows(model, x): the leaderboard's serving cost

Pieces, for finer use: :class:`Preprocessor` (``fit``/``transform``/``to_json``/
``from_json``), :class:`Postprocessor`, :class:`Trainer`, :class:`TrainedModel`,
:class:`Explainer`, :class:`ParamSpec`.
"""

from arbor_ml.bundle import (
    BUNDLE_FORMAT_VERSION,
    BundleRef,
    InputColumn,
    ModelBundle,
    Prediction,
    Signature,
    build_bundle,
    bundle_prefix,
    load_bundle,
    save_bundle,
)
from arbor_ml.data import PreparedData, TargetInfo, prepare_data
from arbor_ml.explain import Explainer, Explanation
from arbor_ml.metrics import (
    METRICS,
    compute_metric,
    default_metric,
    evaluate,
    metric_direction,
    metrics_for_task,
    validate_metric,
)
from arbor_ml.postprocessing import ClassValue, PostprocessingOptions, Postprocessor
from arbor_ml.preprocessing import PreprocessingOptions, Preprocessor
from arbor_ml.search_space import ParamSpec
from arbor_ml.tasks import infer_task
from arbor_ml.trainers import (
    FitResult,
    FitSettings,
    OnIteration,
    TrainedModel,
    Trainer,
    get_trainer,
)
from arbor_ml.training import train
from arbor_ml.types import (
    Device,
    Direction,
    ModelType,
    TaskType,
    parse_device,
    parse_model_type,
    parse_task_type,
)

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "METRICS",
    "BundleRef",
    "ClassValue",
    "Device",
    "Direction",
    "Explainer",
    "Explanation",
    "FitResult",
    "FitSettings",
    "InputColumn",
    "ModelBundle",
    "ModelType",
    "OnIteration",
    "ParamSpec",
    "PostprocessingOptions",
    "Postprocessor",
    "Prediction",
    "PreparedData",
    "PreprocessingOptions",
    "Preprocessor",
    "Signature",
    "TargetInfo",
    "TaskType",
    "TrainedModel",
    "Trainer",
    "build_bundle",
    "bundle_prefix",
    "compute_metric",
    "default_metric",
    "evaluate",
    "get_trainer",
    "infer_task",
    "load_bundle",
    "metric_direction",
    "metrics_for_task",
    "parse_device",
    "parse_model_type",
    "parse_task_type",
    "prepare_data",
    "save_bundle",
    "train",
    "validate_metric",
]
