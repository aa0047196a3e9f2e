"""What every trainer and trained model share: settings, results and the two interfaces.

A :class:`Trainer` knows one library and one task: its Optuna search space, its
defaults, and how to fit a model from :class:`~arbor_ml.data.PreparedData`. A
:class:`TrainedModel` wraps the library's native model behind one interface (predict,
margins, SHAP contributions, native importance, bytes in the native file format), so
the bundle and the inference path never branch on the library.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import polars as pl

from arbor_core.errors import InvalidArgument
from arbor_ml import metrics as M
from arbor_ml.data import PreparedData
from arbor_ml.postprocessing import inverse_target_transform
from arbor_ml.search_space import ParamSpec, apply_overrides
from arbor_ml.types import Device, Direction, ModelType, TaskType, parse_device, parse_task_type
from arbor_ml.weights import CLASS_WEIGHT_PARAM, apply_class_weight, class_weight_spec

logger = logging.getLogger("arbor_ml")

#: Called after each boosting round with (round, validation value); return True to stop
#: training (an Optuna pruner, a cancelled experiment). The value is the study metric
#: where the library computes it exactly, else the task loss with its sign flipped when
#: needed, so that it always improves in the study metric's direction.
OnIteration = Callable[[int, float], bool]


@dataclass(frozen=True)
class FitSettings:
    """Knobs that are not hyperparameters: budget, early stopping, seed, threads, device.

    ``threads=0`` lets the library pick (all cores); tests use 1 or 2. It is a maximum: small
    data trains on one thread (:func:`effective_threads`). ``device="cuda"``
    runs on a GPU when the library build and the machine support it and falls back to
    the CPU, with a warning, otherwise (:attr:`FitResult.device` says which ran).
    """

    iterations: int = 1000
    early_stopping_rounds: int | None = 50
    seed: int = 0
    threads: int = 0
    device: Device | str = Device.CPU

    def validate(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise InvalidArgument("iterations must be a positive integer", field="iterations")
        if self.early_stopping_rounds is not None and (
            not isinstance(self.early_stopping_rounds, int) or self.early_stopping_rounds < 1
        ):
            raise InvalidArgument(
                "early_stopping_rounds must be a positive integer or unset",
                field="early_stopping_rounds",
            )
        if not isinstance(self.threads, int) or self.threads < 0:
            raise InvalidArgument("threads must be >= 0 (0: all cores)", field="threads")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise InvalidArgument("seed must be an integer in [0, 2^31)", field="seed")
        parse_device(self.device)


@dataclass(frozen=True)
class EvalMetric:
    """How a library tracks the study metric on the validation part during training.

    ``name`` is the library's metric name (or the name of our custom one); ``exact`` says
    that ``to_study(value)`` equals our metric; otherwise it is the task loss, oriented so
    that it improves in the study's direction.
    """

    name: str
    maximize: bool
    exact: bool = True
    custom: bool = False
    negate: bool = False  # report -value (a loss standing in for a maximised metric)
    complement: bool = False  # report 1 - value (an error rate standing in for accuracy)

    def to_study(self, value: float) -> float:
        if self.complement:
            return 1.0 - value
        return -value if self.negate else value


@dataclass
class FitResult:
    """One fitted model plus what a study records about it.

    ``score`` is :attr:`metric` on the validation part (None without one) and ``metrics``
    every metric of the task there; ``best_iteration`` is 0-based and the model is cut
    there; ``iterations`` counts the rounds actually run (early stopping runs past the
    best one); ``params`` are the search-space values, ``library_params`` all that the
    library received.
    """

    model: TrainedModel
    params: dict[str, Any]
    library_params: dict[str, Any]
    metric: str
    direction: Direction
    score: float | None
    metrics: dict[str, float]
    best_iteration: int | None
    iterations: int
    stopped_by_callback: bool
    device: Device
    duration_s: float
    eval_metric: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class TrainedModel(ABC):
    """A library's native model with the uniform interface the bundle needs.

    Inputs are preprocessed frames (:meth:`Preprocessor.transform` output, columns in
    ``feature_names`` order, native categoricals last).
    """

    model_type: ClassVar[ModelType]
    file_name: ClassVar[str]
    library: ClassVar[str]

    def __init__(
        self,
        native: Any,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> None:
        self.native = native
        self.task = task
        self.feature_names = list(feature_names)
        self.categorical_features = list(categorical_features)
        self.n_classes = n_classes
        self.n_numeric = len(self.feature_names) - len(self.categorical_features)
        #: A :class:`arbor_ml.compiled.CompiledPredictor` that ``predict_output`` and
        #: ``predict_margin`` use instead of the library when set (``enable_compiled``).
        self.compiled: Any = None
        #: SHA-256 of the model file this was loaded from (keys the compiled cache).
        self.source_sha256: str | None = None

    @property
    def n_outputs(self) -> int:
        """Raw outputs per row: one per class for multiclass, else one."""
        return self.n_classes if self.task is TaskType.MULTICLASS else 1

    @abstractmethod
    def predict_output(self, x: pl.DataFrame) -> np.ndarray:
        """Class probabilities ``(n, K)`` (binary too), or regression values ``(n,)``."""

    @abstractmethod
    def predict_margin(self, x: pl.DataFrame) -> np.ndarray:
        """Raw scores before the link function: ``(n,)``, or ``(n, K)`` for multiclass."""

    @abstractmethod
    def native_contributions(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The library's own exact TreeSHAP: ``(n, outputs, F)`` values and ``(outputs,)`` bases."""

    @abstractmethod
    def shap_input(self, x: pl.DataFrame) -> Any:
        """What ``shap.TreeExplainer.shap_values`` takes for this model."""

    @abstractmethod
    def native_importance(self) -> tuple[str, np.ndarray]:
        """(importance type, one value per feature) from the library itself."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The model in the library's native file format (:attr:`file_name`)."""

    @classmethod
    @abstractmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> TrainedModel:
        """Load what :meth:`to_bytes` wrote."""

    def library_feature_names(self, forbidden: str) -> list[str]:
        """Our feature names, or ``f0, f1, ...`` when one holds a character the library
        refuses (XGBoost: ``[]<``; LightGBM: JSON punctuation). Results are positional, so
        what callers see always uses :attr:`feature_names`."""
        if any(ch in name for name in self.feature_names for ch in forbidden):
            return [f"f{i}" for i in range(len(self.feature_names))]
        return self.feature_names

    def _compiled_output(self, raw: np.ndarray) -> np.ndarray:
        """Compiled raw outputs ``(n, outputs)`` in :meth:`predict_output`'s shape."""
        if self.task is TaskType.BINARY:
            return self._binary_stack(raw)
        if self.task is TaskType.MULTICLASS:
            return raw
        return raw.reshape(-1)

    def _binary_stack(self, p1: np.ndarray) -> np.ndarray:
        p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
        return np.column_stack([1.0 - p1, p1])


class Trainer(ABC):
    """One library x one task: search space, defaults and ``fit``.

    Build one with :func:`arbor_ml.get_trainer`. ``search_space`` overrides are validated
    here, so a bad request fails before a study starts.
    """

    model_type: ClassVar[ModelType]
    #: Whether the library runs on OpenMP threads, which small data trains on one of
    #: (:func:`effective_threads`); CatBoost's own thread pool does not suffer from it.
    openmp: ClassVar[bool] = True

    def __init__(
        self,
        task: TaskType | str,
        *,
        metric: str | None = None,
        search_space: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = parse_task_type(task)
        self.metric = M.validate_metric(metric, self.task)
        self.direction = M.metric_direction(self.metric)
        self._library_defaults = self.base_space()
        asked = CLASS_WEIGHT_PARAM in (search_space or {})
        if self.task.is_classification and (self.metric != "log_loss" or asked):
            # Not for the log loss unless asked: reweighting skews the probabilities it scores.
            self._library_defaults.setdefault(CLASS_WEIGHT_PARAM, class_weight_spec())
        self.search_space: dict[str, ParamSpec] = apply_overrides(
            self._library_defaults, search_space
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task.value!r}, metric={self.metric!r})"

    # -- hyperparameters --------------------------------------------------------------

    @abstractmethod
    def base_space(self) -> dict[str, ParamSpec]:
        """The library's well-known ranges for this task, defaults included."""

    def default_params(self) -> dict[str, Any]:
        """The library's defaults for every tuned parameter (enqueue as the first trial).

        A default that a caller's override excludes is moved to the nearest allowed value,
        so the enqueued trial stays inside the study's distributions.
        """
        return {name: spec.clamp(spec.default) for name, spec in self.search_space.items()}

    def default_params_for(self, train_rows: int, settings: FitSettings | None = None) -> dict:
        """The defaults as the library itself would pick them for ``train_rows`` rows and
        ``settings.iterations`` rounds with early stopping (the study's first trial).

        Most libraries' defaults do not depend on the data; CatBoost's learning rate does.
        """
        return self.default_params()

    def planned_rounds(self, settings: FitSettings) -> int | None:
        """The rounds a trial's learning rate is meant for, when the library ties the two
        (:meth:`params_for_rounds` can then trade rounds for rate); None: no such rule."""
        return None

    def params_for_rounds(
        self, params: Mapping[str, Any], train_rows: int, planned: int, rounds: int
    ) -> dict[str, Any]:
        """``params`` for ``rounds`` rounds instead of ``planned``: unchanged by default."""
        return dict(params)

    def suggest_params(self, trial: Any) -> dict[str, Any]:
        """One draw from the search space for an ``optuna.Trial``."""
        return {name: spec.suggest(trial) for name, spec in self.search_space.items()}

    # -- training -----------------------------------------------------------------------

    @abstractmethod
    def eval_metric(self) -> EvalMetric:
        """How this library tracks :attr:`metric` during training."""

    @abstractmethod
    def _fit(
        self,
        data: PreparedData,
        params: dict[str, Any],
        settings: FitSettings,
        device: Device,
        on_iteration: OnIteration | None,
    ) -> tuple[TrainedModel, dict[str, Any], int | None, int, bool]:
        """(model, library params, best iteration, iterations trained, stopped by callback)."""

    @classmethod
    @abstractmethod
    def cuda_available(cls) -> bool:
        """Whether this library build can train on a GPU on this machine."""

    #: Whether :meth:`fit_averaged` can merge several models into one native model.
    can_average: ClassVar[bool] = False

    def fit_averaged(
        self,
        data: PreparedData,
        params: Mapping[str, Any] | None,
        settings: FitSettings,
        models: int,
    ) -> FitResult:
        """Fit ``models`` models that differ only in their seed and average them into one
        model (one native file), where the library can (:attr:`can_average`); else one fit.

        Averaging seeds is a cheap, steady gain for a final model (lower variance); a study's
        final fit uses it when its time budget leaves room.
        """
        seeds = [replace(settings, seed=(settings.seed + i) % 2**31) for i in range(max(models, 1))]
        return self.fit_ensemble(data, [(params, seeded) for seeded in seeds])

    def fit_ensemble(
        self,
        data: PreparedData,
        members: Sequence[tuple[Mapping[str, Any] | None, FitSettings]],
    ) -> FitResult:
        """One model whose output is the mean of ``members`` (each its parameters and fit
        settings), where the library can merge models into one native model
        (:attr:`can_average`); else the first member alone."""
        if not members:
            raise ValueError("an ensemble needs at least one member")
        params, settings = members[0]
        return self.fit(data, params, settings)

    def fit(
        self,
        data: PreparedData,
        params: Mapping[str, Any] | None = None,
        settings: FitSettings | None = None,
        *,
        on_iteration: OnIteration | None = None,
    ) -> FitResult:
        """Train on ``data``'s train part, early-stopping on its validation part.

        ``params`` are search-space values (``suggest_params``/``default_params``; None:
        the defaults) plus, optionally, any other parameter of the library, passed through.
        The returned model is cut at the best iteration when early stopping ran.
        """
        settings = settings or FitSettings()
        settings.validate()
        if data.model_type is not self.model_type:
            raise InvalidArgument(
                f"data was prepared for {data.model_type.value}, not {self.model_type.value}",
                field="model_type",
            )
        if data.task is not self.task:
            raise InvalidArgument(
                f"data was prepared for a {data.task.value} task, not {self.task.value}",
                field="task",
            )
        chosen = self.default_params() if params is None else dict(params)
        library_chosen = dict(chosen)
        mode = library_chosen.pop(CLASS_WEIGHT_PARAM, "none")
        if self.task.is_classification and mode != "none":
            data = replace(
                data,
                w_train=apply_class_weight(
                    data.y_train, data.w_train, str(mode), data.target.n_classes
                ),
            )
        threads = settings.threads
        if self.openmp:
            threads = effective_threads(settings.threads, data.train_rows)
        if threads != settings.threads:
            settings = replace(settings, threads=threads)
        device = resolve_device(self.model_type, parse_device(settings.device))
        started = time.perf_counter()
        model, library_params, best, trained, stopped = self._fit(
            data, library_chosen, settings, device, on_iteration
        )
        duration = time.perf_counter() - started
        scores: dict[str, float] = {}
        if data.x_valid is not None and data.y_valid is not None:
            scores = evaluate_model(model, data)
        logger.info(
            "trained %s %s: %d iterations (best %s) in %.2fs, %s=%s",
            self.model_type.value,
            self.task.value,
            trained,
            best,
            duration,
            self.metric,
            scores.get(self.metric),
            extra={"model_type": self.model_type.value, "task": self.task.value},
        )
        return FitResult(
            model=model,
            params=chosen,
            library_params=library_params,
            metric=self.metric,
            direction=self.direction,
            score=scores.get(self.metric),
            metrics=scores,
            best_iteration=best,
            iterations=trained,
            stopped_by_callback=stopped,
            device=device,
            duration_s=duration,
            eval_metric=self.eval_metric().name,
        )


#: Below this many train rows an OpenMP library trains on one thread: threads that wait for
#: each other cost more than they save on small data, and far more when other processes
#: share the cores (LightGBM on 3,000 rows: 0.4 s on one thread, 8.7 s on two, measured on a
#: busy 2-core machine).
SMALL_DATA_ROWS = 10_000


def effective_threads(requested: int, train_rows: int) -> int:
    """``requested`` threads (0: all cores), or 1 for small data (:data:`SMALL_DATA_ROWS`)."""
    return 1 if train_rows < SMALL_DATA_ROWS else requested


def evaluate_model(
    model: TrainedModel, data: PreparedData, *, threshold: float = 0.5
) -> dict[str, float]:
    """Every metric of the task on the validation part, in the target's units."""
    assert data.x_valid is not None and data.y_valid is not None
    output = model.predict_output(data.x_valid)
    if data.task.is_classification:
        return M.evaluate(
            data.task, data.y_valid, output, weights=data.w_valid, threshold=threshold
        )
    assert data.y_valid_target is not None
    values = inverse_target_transform(data.target.transform, output)
    return M.evaluate(data.task, data.y_valid_target, values, weights=data.w_valid)


# --- helpers shared by the library modules ---------------------------------------------------


def custom_metric_value(
    metric: str, task: TaskType, y_true: np.ndarray, output: np.ndarray, weights: np.ndarray | None
) -> float:
    """Our metric on a library's transformed validation predictions, during training."""
    if task is TaskType.BINARY and output.ndim == 1:
        output = np.column_stack([1.0 - output, output])
    return M.compute_metric(metric, y_true, output, weights=weights)


_device_cache: dict[ModelType, bool] = {}


def resolve_device(model_type: ModelType, requested: Device) -> Device:
    """``cuda`` if asked for and usable by this library here, else ``cpu`` (with a warning)."""
    if requested is Device.CPU:
        return Device.CPU
    from arbor_ml.trainers.dispatch import trainer_class

    if model_type not in _device_cache:
        try:
            _device_cache[model_type] = trainer_class(model_type).cuda_available()
        except Exception:  # a probe must never fail a training run
            logger.exception("probing CUDA support of %s failed", model_type.value)
            _device_cache[model_type] = False
    if _device_cache[model_type]:
        return Device.CUDA
    logger.warning(
        "device cuda requested but %s cannot use a GPU here; training on cpu",
        model_type.value,
        extra={"model_type": model_type.value},
    )
    return Device.CPU


@functools.cache
def nvidia_gpu_present() -> bool:
    """A cheap check before any library probe: is there an NVIDIA driver and device?"""
    import os

    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")
