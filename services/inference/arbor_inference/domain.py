"""The inference pipeline: selector -> version -> cached bundle -> rows -> predictions.

Per call (Predict):

1. **Resolve** the selector with the cached resolver (``resolver.py``): a dict lookup once
   resolved, a ResolveModel call (with the caller's remaining deadline) otherwise.
2. **Load** the version's bundle through the model cache (``cache.py``): once per version,
   checksums verified by ``arbor_ml.load_bundle``, on the thread pool.
3. On the thread pool, in one hop: **decode and validate** the rows against the signature
   (``inputs.py`` documents every rule: missing/extra columns, types, nulls, NaN, inf,
   empty and oversized batches), **preprocess and predict** (the saved Polars
   preprocessing, or for small batches the checked numpy replay in ``fastpath.py``), then
   **postprocess**: labels in their original values and per-class probabilities for
   classification, postprocessed values for regression, optionally as Arrow IPC.

Explain uses the same steps, then SHAP through the ML core (``ModelBundle.explain``): with rows,
per-row contributions (margin space: contributions + base value = raw output) and their mean
|SHAP| ranking; without rows, the ranking stored in the bundle (computed on a validation
sample at training time). SHAP falls back to the library's own TreeSHAP, then to its native
importance, and the answer says which method ran.

Events (``handle_event``): any ``model.*`` event for a model re-resolves that model's cached
selectors (a promotion or alias move loads the new version before the pointer moves); archive
and delete also evict the version from the model cache.

The event loop only awaits: decoding, predicting and encoding answers all run on a thread
pool sized to the machine (numpy, Polars and the tree libraries release the GIL), so health
checks answer while batches run. The exception is a batch of up to ``inline_max_rows`` rows
(16) for a model with a fast path: about 0.1 ms of work, less than the pool hand-off and the
loop's wake-up would add, so it runs inline. A call whose deadline has passed before its
work starts is DEADLINE_EXCEEDED without doing the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from arbor.common.v1 import common_pb2
from arbor_core import metrics as arbor_metrics
from arbor_core.artifacts import ArtifactStore, open_store
from arbor_core.config import env_float, env_int
from arbor_core.errors import ArborError, DeadlineExceeded, FailedPrecondition, InvalidArgument
from arbor_inference.cache import ModelCache
from arbor_inference.fastpath import FastPath
from arbor_inference.inputs import (
    ColumnSpec,
    InputSpec,
    Table,
    WireInput,
    count_rows,
    decode,
    single_row_doubles,
)
from arbor_inference.resolver import ResolvedVersion, Resolver, Selector
from arbor_ml import ModelBundle, TaskType, load_bundle
from arbor_ml.explain import ENSEMBLE_SHAP_METHOD, NATIVE_SHAP_METHODS, SHAP_METHOD

log = logging.getLogger("arbor.inference")

T = TypeVar("T")

MANIFEST = "manifest.json"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ServingOptions:
    """Limits and sizes; ``from_env`` reads ``ARBOR_INFERENCE_*`` (documented per field)."""

    #: ARBOR_INFERENCE_MAX_BATCH_ROWS: more rows in one Predict is INVALID_ARGUMENT.
    max_batch_rows: int = 100_000
    #: ARBOR_INFERENCE_MAX_EXPLAIN_ROWS: SHAP is ~100x the cost of a prediction per row.
    max_explain_rows: int = 10_000
    #: ARBOR_INFERENCE_FAST_PATH_MAX_ROWS: batches up to this size skip Polars (0: never).
    fast_path_max_rows: int = 256
    #: ARBOR_INFERENCE_FAST_PATH_NUMERIC_BATCHES: models without categorical columns use the
    #: (checked) numpy replay at any batch size (0: only up to fast_path_max_rows).
    fast_path_numeric_batches: bool = True
    #: ARBOR_INFERENCE_RESOLVE_TIMEOUT_S: deadline of one ResolveModel call.
    resolve_timeout_s: float = 5.0
    #: ARBOR_INFERENCE_RESOLVE_TTL_S: cached selectors are re-checked in the background after
    #: this long (events make changes visible sooner; this covers missed events).
    resolve_ttl_s: float = 60.0
    #: ARBOR_INFERENCE_CACHE_MAX_MODELS / ARBOR_INFERENCE_CACHE_MAX_BYTES: the model LRU.
    cache_max_models: int = 16
    cache_max_bytes: int = 4 << 30
    #: ARBOR_INFERENCE_COMPILED: LightGBM/XGBoost models get a compiled predictor
    #: (``arbor_ml.compiled``, built in the background, cached on disk, self-checked; the
    #: ML core's ARBOR_COMPILED_INFERENCE=off also turns it off), and CatBoost models with
    #: numeric features only predict small batches with ``arbor_ml.oblivious``. 0: never.
    compiled: bool = True
    #: ARBOR_INFERENCE_WORKERS: threads for CPU work (default: the machine's cores).
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    #: ARBOR_INFERENCE_INLINE_MAX_ROWS: batches up to this size, for a model with a fast
    #: path, run on the event loop (~0.1 ms of work) instead of hopping to the thread pool,
    #: whose hand-off and wake-up cost more than the work itself (0: always the pool).
    inline_max_rows: int = 16

    @classmethod
    def from_env(cls) -> ServingOptions:
        default = cls()
        options = cls(
            max_batch_rows=env_int("ARBOR_INFERENCE_MAX_BATCH_ROWS", default.max_batch_rows),
            max_explain_rows=env_int("ARBOR_INFERENCE_MAX_EXPLAIN_ROWS", default.max_explain_rows),
            fast_path_max_rows=env_int(
                "ARBOR_INFERENCE_FAST_PATH_MAX_ROWS", default.fast_path_max_rows
            ),
            fast_path_numeric_batches=env_int(
                "ARBOR_INFERENCE_FAST_PATH_NUMERIC_BATCHES", int(default.fast_path_numeric_batches)
            )
            != 0,
            resolve_timeout_s=env_float(
                "ARBOR_INFERENCE_RESOLVE_TIMEOUT_S", default.resolve_timeout_s
            ),
            resolve_ttl_s=env_float("ARBOR_INFERENCE_RESOLVE_TTL_S", default.resolve_ttl_s),
            cache_max_models=env_int("ARBOR_INFERENCE_CACHE_MAX_MODELS", default.cache_max_models),
            cache_max_bytes=env_int("ARBOR_INFERENCE_CACHE_MAX_BYTES", default.cache_max_bytes),
            compiled=env_int("ARBOR_INFERENCE_COMPILED", 1) != 0,
            workers=env_int("ARBOR_INFERENCE_WORKERS", default.workers),
            inline_max_rows=env_int("ARBOR_INFERENCE_INLINE_MAX_ROWS", default.inline_max_rows),
        )
        if options.max_batch_rows < 1 or options.max_explain_rows < 1 or options.workers < 1:
            raise InvalidArgument(
                "ARBOR_INFERENCE_MAX_BATCH_ROWS, _MAX_EXPLAIN_ROWS and _WORKERS must be >= 1",
                field="ARBOR_INFERENCE_MAX_BATCH_ROWS",
            )
        return options


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ServedModel:
    """Which version answered, and its stage when it did."""

    model_version: str
    model: str
    version: int
    stage: int
    experiment: str
    model_type: int
    task_type: int

    @classmethod
    def of(cls, version: ResolvedVersion) -> ServedModel:
        return cls(
            model_version=version.name,
            model=version.model,
            version=version.version,
            stage=version.stage,
            experiment=version.experiment,
            model_type=version.model_type,
            task_type=version.task_type,
        )


@lru_cache(maxsize=1024)
def _served_model(version: ResolvedVersion) -> ServedModel:
    """One ``ServedModel`` per resolved version (hashed by identity), not one per call."""
    return ServedModel.of(version)


@dataclass(frozen=True, slots=True)
class PredictInput:
    selector: Selector
    #: the input (None when ``wire`` holds it)
    data: common_pb2.InlineData | None
    include_probabilities: bool = False
    reject_extra: bool = False
    arrow_output: bool = False
    #: ``time.monotonic()`` value after which the caller no longer waits; None: no deadline.
    deadline: float | None = None
    #: rows already decoded and validated against the model's spec (the v2 protocol's
    #: numeric matrix); ``data`` is then ignored
    table: Table | None = None
    #: a large input (typed columns, Arrow) as the request's bytes: read from them directly,
    #: parsed into a message only when the general decoder needs one
    wire: WireInput | None = None

    def inline(self) -> common_pb2.InlineData:
        """The input as a message."""
        if self.data is not None:
            return self.data
        if self.wire is None:
            raise InvalidArgument("input is required", field="input", reason="INPUT_REQUIRED")
        return self.wire.message()


@dataclass(frozen=True, slots=True)
class PredictResult:
    served: ServedModel
    row_count: int
    task: TaskType
    #: classification: class index per row, and the class values (original dtypes)
    label_index: np.ndarray | None = None
    class_values: list[Any] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    #: regression
    values: np.ndarray | None = None
    #: OUTPUT_FORMAT_ARROW: everything above as an Arrow IPC stream instead
    arrow_ipc: bytes | None = None


class RowResult(NamedTuple):
    """The answer for one row from the single-row lane (``Inference.predict_row``): what a
    one-row ``PredictResult`` says, as plain Python values."""

    served: ServedModel
    classes: list[str]
    class_values: list[Any]
    #: classification: the class index, and the probabilities when asked for
    label_index: int | None
    probabilities: list[float] | None
    #: regression
    value: float | None


class ExplainMethod:
    """The request's and the answer's method, as the proto enum numbers."""

    AUTO = 0
    SHAP = 1
    NATIVE = 2


@dataclass(frozen=True, slots=True)
class ExplainInput:
    selector: Selector
    data: common_pb2.InlineData | None
    per_row: bool = False
    top_k: int = 0
    method: int = ExplainMethod.AUTO
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class RowContribution:
    row_index: int
    class_label: str
    base_value: float
    contributions: np.ndarray


@dataclass(frozen=True, slots=True)
class ExplainResult:
    served: ServedModel
    method: int
    fallback_reason: str
    global_importance: list[tuple[str, float]]
    features: list[str]
    rows: list[RowContribution]


# --------------------------------------------------------------------------- loaded model


@dataclass(eq=False)
class LoadedModel:
    """A verified bundle plus what serving derives from it once (spec, fast path, classes)."""

    name: str
    bundle: ModelBundle
    spec: InputSpec
    fast: FastPath | None
    task: TaskType
    class_values: list[Any]
    classes: list[str]
    nbytes: int
    #: one all-double row may take ``Inference.predict_row`` (checked at load)
    row_lane: bool = False

    def fast_for(self, rows: int, fast_max_rows: int, numeric_batches: bool) -> FastPath | None:
        """The fast path when it takes a batch of ``rows``, else None (the Polars path)."""
        fast = self.fast
        if fast is not None and (rows <= fast_max_rows or (numeric_batches and fast.numeric_only)):
            return fast
        return None

    def matrix_dtype(self, rows: int, fast_max_rows: int, numeric_batches: bool) -> Any:
        """What a batch of ``rows`` all-double rows may be decoded as: the fast path's
        element type when it will take the batch (float32 for CatBoost and XGBoost), else
        float64, which every other path reads."""
        fast = self.fast_for(rows, fast_max_rows, numeric_batches)
        return np.float64 if fast is None else fast.matrix_dtype

    def predict_raw(
        self, table: Table, fast_max_rows: int, numeric_batches: bool = True, threads: int = 1
    ) -> np.ndarray:
        """Raw model outputs; ``threads``: how many the model call may use on a large batch
        (the fast path's; the Polars path keeps the libraries' own settings)."""
        fast = self.fast_for(table.height, fast_max_rows, numeric_batches)
        try:
            if fast is not None:
                return fast.predict_raw(table, threads)
            return self.bundle.predict_raw(table.frame())
        except ArborError:
            raise
        except Exception:
            # A compiled predictor is an optimisation: if it fails at run time, detach it
            # (the library takes over, for this call and the next ones) instead of failing.
            model = self.bundle.model
            if model.compiled is None:
                raise
            log.exception("compiled predictor of %s failed; detached, using the library", self.name)
            model.compiled = None
            return self.predict_raw(table, fast_max_rows, numeric_batches, threads)


def input_spec(bundle: ModelBundle, signature: Any | None) -> InputSpec:
    """The bundle's input columns (what its preprocessing needs), with the registry's flags.

    Nullability comes from the registry signature (``InputColumn.nullable``). A signature that
    marks no column nullable at all is read as "not recorded" and every column then accepts
    missing values: the saved preprocessing defines a fill for each one.
    """
    flags = {c.name: c for c in signature.inputs} if signature is not None else {}
    recorded = any(c.nullable for c in flags.values())
    kinds = {c.name: c.kind for c in bundle.preprocessor.columns}
    base = InputSpec.from_signature(_Signature(bundle))
    columns = []
    for col in base.columns:
        registered = flags.get(col.name)
        nullable = registered.nullable if (recorded and registered is not None) else True
        categorical = kinds.get(col.name) == "categorical"
        columns.append(
            ColumnSpec(col.name, col.dtype, col.kind, nullable=nullable, categorical=categorical)
        )
    return InputSpec.of(columns)


@dataclass(frozen=True)
class _InputColumn:
    name: str
    dtype: str
    nullable: bool = True
    categorical: bool = False


class _Signature:
    """The bundle's signature in the registry message's shape (for InputSpec.from_signature)."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.inputs = [_InputColumn(c.name, c.dtype) for c in bundle.signature.inputs]


def load_model(
    version: ResolvedVersion,
    store: ArtifactStore,
    store_root: str,
    *,
    fast_path: bool = True,
    compiled: bool = False,
) -> LoadedModel:
    """Download, verify and prepare one version (blocking: run it on the thread pool).

    With ``compiled``, a cached compiled predictor is attached at once and a missing one is
    built on a background thread (the library answers meanwhile); see ``arbor_ml.compiled``.
    It also lets the fast path use ``arbor_ml.oblivious`` for small CatBoost batches.
    """
    message = version.message
    started = time.perf_counter()
    target_store, prefix = _locate(message.artifact_uri, store, store_root)
    expected = message.artifact_checksums.get(MANIFEST) or None
    bundle = load_bundle(target_store, prefix, expected_manifest_sha256=expected)
    if compiled:
        _enable_compiled(bundle, version.name)
    spec = input_spec(bundle, message.signature if message.HasField("signature") else None)
    fast = FastPath.build(bundle, spec, oblivious=compiled) if fast_path else None
    classes_text = list(message.signature.class_labels) if message.HasField("signature") else []
    class_values = bundle.classes if bundle.task.is_classification else []
    if len(classes_text) != len(class_values):
        classes_text = [_class_text(c) for c in class_values]
    nbytes = 2 * len(bundle.model.to_bytes()) + 64 * 1024
    model = LoadedModel(
        name=version.name,
        bundle=bundle,
        spec=spec,
        fast=fast,
        task=bundle.task,
        class_values=class_values,
        classes=classes_text,
        nbytes=nbytes,
    )
    model.row_lane = _row_lane_agrees(model)
    log.info(
        "loaded %s (%s %s) in %.0f ms, fast path %s",
        version.name,
        bundle.model_type.value,
        bundle.task.value,
        (time.perf_counter() - started) * 1000,
        "on" if fast is not None else "off",
        extra={"model_version": version.name, "bytes": nbytes},
    )
    return model


#: Rows the single-row lane is checked on at load time.
ROW_LANE_CHECK_ROWS = 16


def _row_outcome(
    model: LoadedModel, row: tuple[float, ...], include_probabilities: bool
) -> tuple[int | None, list[float] | None, float | None] | None:
    """(label index, probabilities, value) of one row, as ``_postprocess`` would give them
    for a one-row batch; None when the lane cannot answer (the general path then does)."""
    assert model.fast is not None
    raw = model.fast.predict_row(row)
    if raw is None:
        return None
    post = model.bundle.postprocessor
    task = model.task
    if task.is_classification:
        if task is TaskType.BINARY:
            label = 1 if raw[1] >= post.threshold else 0
        elif any(v != v for v in raw):  # NaN: np.argmax's rule is not max()'s
            return None
        else:
            label = raw.index(max(raw))  # the first maximum, as np.argmax
        return label, (raw if include_probabilities else None), None
    value = float(post.values(np.array(raw, dtype=np.float64))[0])
    return None, None, value


def _row_lane_agrees(model: LoadedModel) -> bool:
    """Whether the single-row lane answers as the general path does (labels equal,
    numbers within 1e-9), on rows drawn at load time; off (logged) otherwise."""
    fast = model.fast
    if fast is None or not fast.direct or not model.spec.all_float64:
        return False
    rng = np.random.default_rng(0)
    names = model.spec.name_list
    try:
        for _ in range(ROW_LANE_CHECK_ROWS):
            row = tuple(rng.normal(0, 3, len(names)).tolist())
            table = Table.from_matrix(names, np.array(row).reshape(-1, 1))
            expected = _postprocess(model, None, model.predict_raw(table, 1), True)  # type: ignore[arg-type]
            got = _row_outcome(model, row, True)
            if got is None:
                return False
            label, probabilities, value = got
            if expected.label_index is not None:
                assert expected.probabilities is not None and probabilities is not None
                same = label == int(expected.label_index[0]) and np.allclose(
                    probabilities, expected.probabilities[0], rtol=1e-9, atol=1e-12
                )
            else:
                assert expected.values is not None and value is not None
                same = np.allclose(value, expected.values[0], rtol=1e-9, atol=1e-12)
            if not same:
                log.warning(
                    "single-row lane off for %s: it disagrees with the batch path", model.name
                )
                return False
    except Exception:
        log.exception("single-row lane off for %s: its check failed", model.name)
        return False
    return True


def _enable_compiled(bundle: ModelBundle, name: str) -> None:
    from arbor_ml.compiled import enable_compiled

    def ready(predictor: Any) -> None:
        if predictor is not None:
            log.info("compiled predictor attached to %s", name, extra={"model_version": name})

    # a blend's LightGBM and XGBoost members are compiled one by one
    members = getattr(bundle.model, "members", None)
    for model in [m.model for m in members] if members else [bundle.model]:
        try:
            enable_compiled(model, background=True, on_ready=ready)
        except Exception:  # an optimisation must never fail a load
            log.exception("compiled inference unavailable for %s", name)


def _class_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _locate(uri: str, store: ArtifactStore, store_root: str) -> tuple[ArtifactStore, str]:
    """(store, key prefix) of a bundle URI: under the configured store, or a GCS bucket.

    A local store takes ``file://`` URIs (percent-encoded or not) or plain absolute paths,
    as the registry does.
    """
    if not uri:
        raise FailedPrecondition(
            "the model version has no artifact URI", reason="MODEL_ARTIFACTS_MISSING"
        )
    original = uri
    uri = uri if uri.endswith("/") else uri + "/"
    root = store_root
    if uri.startswith("/"):
        uri = "file://" + uri
    if root.startswith("file://"):
        root, uri = unquote(root), unquote(uri)
    if uri.startswith(root):
        return store, uri[len(root) :]
    if uri.startswith("gs://"):
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        return open_store(f"gs://{bucket}"), prefix
    raise FailedPrecondition(
        f"model artifacts at {original!r} are outside this service's artifact store {store_root!r}",
        reason="ARTIFACT_URI_OUTSIDE_STORE",
        metadata={"artifact_uri": original, "store": store_root},
    )


def store_root_uri(store: ArtifactStore) -> str:
    """The URI prefix every key of ``store`` is under (``uri_for(key) == root + key``)."""
    return store.uri_for("x")[:-1]


# --------------------------------------------------------------------------- the service


class CoreShare:
    """How many threads one batch's model call may use: every core while it is the only
    batch being predicted, an equal share while others run. A lone 10,000-row CatBoost batch
    on two free cores takes ~3 ms instead of ~5; under concurrent load the batches already
    fill the cores, and splitting each one again would only add hand-offs."""

    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self._running = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self) -> Iterator[int]:
        with self._lock:
            self._running += 1
            running = self._running
        try:
            yield max(1, self.cores // running)
        finally:
            with self._lock:
                self._running -= 1


class Inference:
    """Predict and Explain over cached models; see the module docstring."""

    def __init__(
        self,
        resolver_factory: Callable[[Callable[[ResolvedVersion], Any]], Resolver],
        store: ArtifactStore,
        executor: Executor,
        options: ServingOptions | None = None,
    ) -> None:
        self.options = options or ServingOptions()
        self.store = store
        self.store_root = store_root_uri(store)
        self.executor = executor
        self.models: ModelCache[LoadedModel] = ModelCache(
            executor,
            max_models=self.options.cache_max_models,
            max_bytes=self.options.cache_max_bytes,
        )
        self.resolver = resolver_factory(self._ensure_loaded)
        self.events_handled = 0
        #: one-row Predicts the single-row lane answered (``predict_row``)
        self.row_lane_calls = 0
        self.cores = CoreShare(self.options.workers)

    # -- models ------------------------------------------------------------------------

    async def _ensure_loaded(self, version: ResolvedVersion) -> LoadedModel:
        return await self.models.get(version.key, partial(self._load, version))

    def _load(self, version: ResolvedVersion) -> LoadedModel:
        return load_model(
            version,
            self.store,
            self.store_root,
            fast_path=self.options.fast_path_max_rows > 0,
            compiled=self.options.compiled,
        )

    async def model_for(
        self, selector: Selector, deadline: float | None
    ) -> tuple[ResolvedVersion, LoadedModel]:
        """The version a selector names now, and its loaded model (hot path: two lookups)."""
        version = self.resolver.lookup(selector)
        if version is None:
            version = await self.resolver.resolve(selector, _remaining(deadline))
        model = self.models.peek(version.key)
        if model is None:
            loading = self._ensure_loaded(version)
            if deadline is None:
                model = await loading
            else:
                try:
                    model = await asyncio.wait_for(loading, max(deadline - time.monotonic(), 0))
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"loading {version.name} did not finish before the deadline; "
                        "it keeps loading for the next call",
                        reason="MODEL_LOADING",
                    ) from None
        return version, model

    # -- predict ------------------------------------------------------------------------

    def predict_row(self, request: PredictInput) -> RowResult | None:
        """The single-row lane: one all-double row of a loaded numeric model, answered on the
        spot with plain floats (no batch, no numpy on the way for a compiled model); None when
        the request is anything else, and ``predict`` answers it (and names any problem).

        Why: a one-row Predict spends most of its time in the batch path's fixed costs (a
        table, a matrix, arrays of one element), several times the trees themselves.
        """
        data = request.data
        if data is None or request.arrow_output:
            return None
        version = self.resolver.lookup(request.selector)
        model = None if version is None else self.models.peek(version.key)
        if model is None or not model.row_lane:
            return None
        assert version is not None
        row = single_row_doubles(data, model.spec)
        if row is None:
            return None
        _check_deadline(request.deadline)
        try:
            outcome = _row_outcome(model, row, request.include_probabilities)
        except Exception:  # the general path answers, and detaches a failing compiled model
            log.exception("single-row lane failed for %s; the batch path answers", model.name)
            return None
        if outcome is None:
            return None
        arbor_metrics.predictions_served(1, model=version.model)
        self.row_lane_calls += 1
        return RowResult(_served_model(version), model.classes, model.class_values, *outcome)

    async def predict(self, request: PredictInput, render: Callable[[PredictResult], T]) -> T:
        """Resolve, load, then decode + predict + ``render`` in one thread-pool hop (small
        batches of a model with a fast path: inline, see ``inline_max_rows``)."""
        data = request.data
        rows = -1
        if request.table is not None:
            rows = request.table.height
            _check_rows(rows, self.options.max_batch_rows)
        elif request.wire is not None:
            rows = request.wire.rows
            _check_rows(rows, self.options.max_batch_rows)
        elif data is not None and data.WhichOneof("data") in ("json_rows", "columns"):
            rows = count_rows(data)  # cheap: before any load
            _check_rows(rows, self.options.max_batch_rows)
        version, model = await self.model_for(request.selector, request.deadline)
        served = _served_model(version)
        if 0 < rows <= self.options.inline_max_rows and model.fast is not None:
            return self._predict_sync(request, model, served, render, inline=True)
        work = partial(self._predict_sync, request, model, served, render)
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def matrix_dtype(self, model: LoadedModel, rows: int) -> Any:
        """What a batch of ``rows`` all-double rows for ``model`` may be decoded as, under
        this service's fast-path options (``LoadedModel.matrix_dtype``)."""
        options = self.options
        return model.matrix_dtype(
            rows, options.fast_path_max_rows, options.fast_path_numeric_batches
        )

    def _predict_sync(
        self,
        request: PredictInput,
        model: LoadedModel,
        served: ServedModel,
        render: Callable[[PredictResult], T],
        inline: bool = False,
    ) -> T:
        _check_deadline(request.deadline)
        table = request.table
        if table is None and request.wire is not None:
            table = request.wire.decode(
                model.spec,
                max_rows=self.options.max_batch_rows,
                reject_extra=request.reject_extra,
                dtype=self.matrix_dtype(model, request.wire.rows),
            )
        if table is None:
            table = decode(
                request.inline(),
                model.spec,
                max_rows=self.options.max_batch_rows,
                reject_extra=request.reject_extra,
            )
        if inline:  # a few rows take one thread; they need no share of the cores
            raw = model.predict_raw(table, self.options.fast_path_max_rows)
        else:
            with self.cores.claim() as threads:
                raw = model.predict_raw(
                    table,
                    self.options.fast_path_max_rows,
                    self.options.fast_path_numeric_batches,
                    threads,
                )
        arbor_metrics.predictions_served(len(raw), model=served.model)
        result = _postprocess(model, served, raw, request.include_probabilities)
        if request.arrow_output:
            result = _as_arrow(model, result)
        return render(result)

    # -- explain ------------------------------------------------------------------------

    async def explain(self, request: ExplainInput, render: Callable[[ExplainResult], T]) -> T:
        data = request.data
        has_rows = data is not None and data.WhichOneof("data") is not None
        if request.top_k < 0:
            raise InvalidArgument("top_k must be >= 0 (0: all features)", field="top_k")
        if request.per_row and not has_rows:
            raise InvalidArgument(
                "per_row needs rows in input; an empty input explains the stored background "
                "sample globally",
                field="per_row",
                reason="ROWS_REQUIRED",
            )
        if request.per_row and request.method == ExplainMethod.NATIVE:
            raise InvalidArgument(
                "native importance is global only; per_row needs SHAP",
                field="method",
                reason="PER_ROW_NEEDS_SHAP",
            )
        if has_rows and data is not None and data.WhichOneof("data") in ("json_rows", "columns"):
            _check_rows(count_rows(data), self.options.max_explain_rows)
        version, model = await self.model_for(request.selector, request.deadline)
        served = _served_model(version)
        work = partial(self._explain_sync, request, model, served, has_rows, render)
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def _explain_sync(
        self,
        request: ExplainInput,
        model: LoadedModel,
        served: ServedModel,
        has_rows: bool,
        render: Callable[[ExplainResult], T],
    ) -> T:
        _check_deadline(request.deadline)
        bundle = model.bundle
        if request.method == ExplainMethod.NATIVE:
            explanation = bundle.explainer.native_importance()
        elif has_rows:
            assert request.data is not None
            table = decode(request.data, model.spec, max_rows=self.options.max_explain_rows)
            explanation = bundle.explain(table.frame(), method="auto")
        else:
            explanation = bundle.explain(None)
        method = _method_of(explanation.method)
        fallback = ""
        if request.method != ExplainMethod.NATIVE and explanation.method not in (
            SHAP_METHOD,
            ENSEMBLE_SHAP_METHOD,
        ):
            fallback = (
                f"shap.TreeExplainer could not explain this model; answered by {explanation.method}"
            )
        ranking = list(explanation.global_importance)
        if request.top_k:
            ranking = ranking[: request.top_k]
        rows: list[RowContribution] = []
        if request.per_row and explanation.contributions is not None:
            assert explanation.base_values is not None
            values = explanation.contributions
            multiclass = model.task is TaskType.MULTICLASS
            labels = model.classes if multiclass else [""]
            for i in range(values.shape[0]):
                for o in range(values.shape[1]):
                    rows.append(
                        RowContribution(
                            row_index=i,
                            class_label=labels[o] if multiclass else "",
                            base_value=float(explanation.base_values[o]),
                            contributions=values[i, o],
                        )
                    )
        result = ExplainResult(
            served=served,
            method=method,
            fallback_reason=fallback,
            global_importance=ranking,
            features=list(explanation.feature_names),
            rows=rows,
        )
        return render(result)

    # -- events -------------------------------------------------------------------------

    async def handle_event(self, event: Any) -> None:
        """Apply one ``arbor.events.v1.Event`` (model.* only) to the caches."""
        kind = event.WhichOneof("payload")
        if kind not in ("model_promoted", "model_alias_moved", "model_archived", "model_deleted"):
            return
        payload = getattr(event, kind)
        self.events_handled += 1
        log.info(
            "event %s for %s",
            event.type,
            event.subject,
            extra={"event_id": event.event_id, "event_type": event.type},
        )
        await self.resolver.refresh_model(payload.model)
        if kind in ("model_archived", "model_deleted"):
            prefix = f"{payload.model_version}@"
            evicted = self.models.evict_where(lambda key: key.startswith(prefix))
            if evicted:
                log.info("evicted %s (%s)", payload.model_version, event.type)

    async def refresh_all(self) -> None:
        """Re-resolve every cached selector (after an event gap, e.g. a NATS reconnect)."""
        await asyncio.gather(*(self.resolver.refresh_model(m) for m in self.resolver.models()))


# --------------------------------------------------------------------------- helpers


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the deadline passed before the model was resolved")
    return remaining


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded("the deadline passed before the batch could start")


def _check_rows(n: int, limit: int) -> None:
    if n > limit:
        raise InvalidArgument(
            f"input has {n} rows, more than the limit of {limit}; split the batch",
            field="input",
            reason="BATCH_TOO_LARGE",
            metadata={"rows": str(n), "max_rows": str(limit)},
        )


def _postprocess(
    model: LoadedModel, served: ServedModel, raw: np.ndarray, include_probabilities: bool
) -> PredictResult:
    post = model.bundle.postprocessor
    n = raw.shape[0]
    if model.task.is_classification:
        return PredictResult(
            served=served,
            row_count=n,
            task=model.task,
            label_index=post.label_indices(raw),
            class_values=model.class_values,
            classes=model.classes,
            probabilities=raw if include_probabilities else None,
        )
    return PredictResult(served=served, row_count=n, task=model.task, values=post.values(raw))


def _as_arrow(model: LoadedModel, result: PredictResult) -> PredictResult:
    """Columns ``label`` (original dtype) and ``proba_<class>``, or ``value``."""
    columns: dict[str, Any] = {}
    if result.label_index is not None:
        post = model.bundle.postprocessor
        assert post._class_series is not None
        columns["label"] = post._class_series.gather(result.label_index).to_arrow()
        if result.probabilities is not None:
            for j, name in enumerate(result.classes):
                columns[f"proba_{name}"] = pa.array(result.probabilities[:, j])
    else:
        assert result.values is not None
        columns["value"] = pa.array(result.values)
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return PredictResult(
        served=result.served,
        row_count=result.row_count,
        task=result.task,
        classes=result.classes,
        arrow_ipc=sink.getvalue().to_pybytes(),
    )


def _method_of(name: str) -> int:
    if name == SHAP_METHOD or name in NATIVE_SHAP_METHODS.values():
        return ExplainMethod.SHAP
    return ExplainMethod.NATIVE


__all__ = [
    "ExplainInput",
    "ExplainMethod",
    "ExplainResult",
    "Inference",
    "LoadedModel",
    "PredictInput",
    "PredictResult",
    "RowResult",
    "ServedModel",
    "ServingOptions",
    "load_model",
]
