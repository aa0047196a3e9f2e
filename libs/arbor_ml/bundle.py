"""A trained model with everything needed to serve it, saved without pickle.

A bundle under a key prefix such as ``models/{name}/v{version}/`` holds:

* the model in its library's native format (``model.cbm`` / ``model.ubj`` / ``model.txt``);
* ``preprocessing.json``, ``postprocessing.json``;
* ``signature.json``: the input columns with their training dtypes, the task, the target
  and the output classes;
* ``metadata.json``: bundle format version, library versions, parameters, metrics,
  training rows, created time, the global feature-importance ranking;
* ``manifest.json``, written last: format version plus the SHA-256 and size of every
  other file. Its own SHA-256 (:attr:`BundleRef.manifest_sha256`) is what a registry
  records; :func:`load_bundle` checks it, every file's checksum, and refuses a bundle whose
  format major version differs from :data:`BUNDLE_FORMAT_VERSION`'s.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import polars as pl

from arbor_core.artifacts import ArtifactRef, ArtifactStore, ChecksumMismatch, validate_prefix
from arbor_core.errors import FailedPrecondition, InvalidArgument, NotFound
from arbor_ml.data import PreparedData
from arbor_ml.explain import Explainer, Explanation
from arbor_ml.postprocessing import ClassValue, PostprocessingOptions, Postprocessor
from arbor_ml.preprocessing import Preprocessor
from arbor_ml.trainers.base import FitResult, TrainedModel, evaluate_model
from arbor_ml.trainers.dispatch import model_class, model_from_bytes
from arbor_ml.types import ModelType, TaskType, parse_task_type

#: ``major.minor``. A reader loads any bundle of its own major version; bump the minor for
#: additions old readers can ignore, the major for anything else.
BUNDLE_FORMAT_VERSION = "1.0"

MANIFEST = "manifest.json"
PREPROCESSING = "preprocessing.json"
POSTPROCESSING = "postprocessing.json"
SIGNATURE = "signature.json"
METADATA = "metadata.json"

#: Rows of the validation part used for the global SHAP ranking stored in metadata.
IMPORTANCE_ROWS = 500


@dataclass(frozen=True)
class Prediction:
    """What :meth:`ModelBundle.predict` returns.

    Classification: ``labels`` (original class values, training dtype), ``probabilities``
    ``(n, K)`` whose columns follow ``classes``. Regression: ``values`` ``(n,)`` after
    postprocessing. Fields of the other kind are ``None``.
    """

    labels: pl.Series | None
    probabilities: np.ndarray | None
    classes: list[ClassValue] | None
    values: np.ndarray | None


@dataclass(frozen=True)
class InputColumn:
    name: str
    dtype: str


@dataclass(frozen=True)
class Signature:
    """The model's contract: required input columns (training dtypes) and its outputs."""

    inputs: tuple[InputColumn, ...]
    task: TaskType
    target: str
    classes: tuple[ClassValue, ...] = ()
    label_dtype: str | None = None
    features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    dropped_columns: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [{"name": c.name, "dtype": c.dtype} for c in self.inputs],
            "task": self.task.value,
            "target": self.target,
            "classes": list(self.classes),
            "label_dtype": self.label_dtype,
            "features": list(self.features),
            "categorical_features": list(self.categorical_features),
            "dropped_columns": list(self.dropped_columns),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(InputColumn(c["name"], c["dtype"]) for c in data["inputs"]),
            task=parse_task_type(data["task"]),
            target=data["target"],
            classes=tuple(data.get("classes", ())),
            label_dtype=data.get("label_dtype"),
            features=tuple(data.get("features", ())),
            categorical_features=tuple(data.get("categorical_features", ())),
            dropped_columns=tuple(data.get("dropped_columns", ())),
        )


@dataclass(frozen=True)
class BundleRef:
    """Where a saved bundle lives and what its files hash to (for the registry)."""

    prefix: str
    uri: str
    manifest_sha256: str
    files: dict[str, ArtifactRef] = field(default_factory=dict)


class ModelBundle:
    """Preprocessing -> model -> postprocessing, ready to predict and explain.

    Build one with :func:`build_bundle` (after training) or :func:`load_bundle`.
    """

    def __init__(
        self,
        *,
        model: TrainedModel,
        preprocessor: Preprocessor,
        postprocessor: Postprocessor,
        signature: Signature,
        metadata: Mapping[str, Any],
    ) -> None:
        self.model = model
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.signature = signature
        self.metadata: dict[str, Any] = dict(metadata)
        self._explainer: Explainer | None = None

    @property
    def model_type(self) -> ModelType:
        return self.model.model_type

    @property
    def task(self) -> TaskType:
        return self.model.task

    @property
    def classes(self) -> list[ClassValue]:
        return list(self.postprocessor.classes)

    def __repr__(self) -> str:
        return (
            f"ModelBundle({self.model_type.value}, {self.task.value}, "
            f"inputs={[c.name for c in self.signature.inputs]!r})"
        )

    # -- predicting ---------------------------------------------------------------------

    def predict(self, frame: pl.DataFrame) -> Prediction:
        """Preprocess, run the model, postprocess. Input errors name the column (and row)."""
        output = self.predict_raw(frame)
        if self.task.is_classification:
            return Prediction(
                labels=self.postprocessor.labels(output),
                probabilities=output,
                classes=self.classes,
                values=None,
            )
        return Prediction(
            labels=None, probabilities=None, classes=None, values=self.postprocessor.values(output)
        )

    def predict_raw(self, frame: pl.DataFrame) -> np.ndarray:
        """The fastest path: class probabilities ``(n, K)`` or raw regression values ``(n,)``,
        without postprocessing (no threshold, labels, target inverse, clipping, rounding)."""
        x = self.preprocessor.transform(frame)
        if x.height == 0:
            shape = (0, self.model.n_classes) if self.task.is_classification else (0,)
            return np.empty(shape, dtype=np.float64)
        return self.model.predict_output(x)

    def predict_margin(self, frame: pl.DataFrame) -> np.ndarray:
        """Raw scores (log-odds, softmax inputs): what SHAP contributions add up to."""
        x = self.preprocessor.transform(frame)
        if x.height == 0:
            shape = (0, self.model.n_classes) if self.task is TaskType.MULTICLASS else (0,)
            return np.empty(shape, dtype=np.float64)
        return self.model.predict_margin(x)

    # -- explaining -----------------------------------------------------------------------

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(self.model, _output_names(self.task, self.classes))
        return self._explainer

    def explain(self, frame: pl.DataFrame | None = None, *, method: str = "auto") -> Explanation:
        """SHAP values for ``frame``'s rows, or (``frame=None``) the global ranking computed
        at training time on the validation part (no per-row values then)."""
        if frame is None:
            stored = self.metadata.get("feature_importance")
            if stored:
                return Explanation(
                    method=stored["method"],
                    feature_names=self.model.feature_names,
                    output_names=stored.get("output_names", self.explainer.output_names),
                    global_importance=[
                        (row["feature"], float(row["importance"])) for row in stored["ranking"]
                    ],
                )
            return self.explainer.native_importance()
        return self.explainer.explain(self.preprocessor.transform(frame), method=method)

    # -- files --------------------------------------------------------------------------------

    def to_files(self) -> dict[str, bytes]:
        """Every file of the bundle except the manifest, by name."""
        return {
            self.model.file_name: self.model.to_bytes(),
            PREPROCESSING: self.preprocessor.to_json().encode(),
            POSTPROCESSING: self.postprocessor.to_json().encode(),
            SIGNATURE: _dumps(self.signature.to_dict()),
            METADATA: _dumps(self.metadata),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> ModelBundle:
        """Rebuild a bundle from its files (checksums are the caller's business)."""
        metadata = json.loads(files[METADATA])
        signature = Signature.from_dict(json.loads(files[SIGNATURE]))
        preprocessor = Preprocessor.from_json(files[PREPROCESSING])
        postprocessor = Postprocessor.from_json(files[POSTPROCESSING])
        model = model_from_bytes(
            metadata["model_type"],
            files[model_class(metadata["model_type"]).file_name],
            task=signature.task,
            feature_names=preprocessor.feature_names,
            categorical_features=preprocessor.categorical_features,
            n_classes=len(signature.classes),
        )
        return cls(
            model=model,
            preprocessor=preprocessor,
            postprocessor=postprocessor,
            signature=signature,
            metadata=metadata,
        )

    def save(self, store: ArtifactStore, prefix: str) -> BundleRef:
        return save_bundle(self, store, prefix)


# --- building --------------------------------------------------------------------------------


def build_bundle(
    data: PreparedData,
    result: FitResult,
    *,
    postprocessing: PostprocessingOptions | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    importance_rows: int = IMPORTANCE_ROWS,
    importance_method: str = "auto",
) -> ModelBundle:
    """Package a fitted model with its preprocessing, postprocessing, signature, metrics
    (recomputed with the bundle's threshold) and a global SHAP ranking (``importance_method``:
    :meth:`Explainer.explain`'s ``method``)."""
    target = data.target
    if data.task.is_classification:
        post = Postprocessor.for_classification(
            data.task, target.classes, target.label_dtype, postprocessing
        )
    else:
        post = Postprocessor.for_regression(target.transform, postprocessing)
    pre = data.preprocessor
    signature = Signature(
        inputs=tuple(InputColumn(name, dtype) for name, dtype in pre.input_schema),
        task=data.task,
        target=target.name,
        classes=target.classes,
        label_dtype=target.label_dtype if data.task.is_classification else None,
        features=tuple(pre.feature_names),
        categorical_features=tuple(pre.categorical_features),
        dropped_columns=tuple(d.name for d in pre.dropped),
    )
    metrics = dict(result.metrics)
    if data.x_valid is not None and data.task is TaskType.BINARY:
        metrics = evaluate_model(result.model, data, threshold=post.threshold)
    bundle = ModelBundle(
        model=result.model,
        preprocessor=pre,
        postprocessor=post,
        signature=signature,
        metadata={},
    )
    sample = data.x_valid if data.x_valid is not None and data.x_valid.height else data.x_train
    importance = bundle.explainer.explain(sample.head(importance_rows), method=importance_method)
    bundle.metadata = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_type": result.model.model_type.value,
        "task": data.task.value,
        "target": target.name,
        "target_transform": target.transform,
        "metric": result.metric,
        "direction": result.direction.value,
        "metrics": {k: (None if np.isnan(v) else v) for k, v in metrics.items()},
        "params": result.params,
        "library_params": result.library_params,
        "best_iteration": result.best_iteration,
        "iterations": result.iterations,
        "device": result.device.value,
        "training_rows": data.train_rows,
        "validation_rows": data.valid_rows,
        "training_seconds": round(result.duration_s, 3),
        "library": {
            "name": result.model.library,
            "version": _version(result.model.library),
        },
        "library_versions": library_versions(),
        "created_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "feature_importance": importance.to_dict(),
        "extra": dict(extra_metadata or {}),
    }
    return bundle


# --- saving and loading ----------------------------------------------------------------------


def bundle_prefix(name: str, version: int) -> str:
    """``models/{name}/v{version}/``; the name must be one path segment."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidArgument(f"model name {name!r} must be one path segment", field="name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidArgument("version must be a positive integer", field="version")
    return f"models/{name}/v{version}/"


def save_bundle(bundle: ModelBundle, store: ArtifactStore, prefix: str) -> BundleRef:
    """Write every file, then the manifest of their checksums (so a manifest means done)."""
    prefix = _normalise_prefix(prefix)
    files = bundle.to_files()
    refs: dict[str, ArtifactRef] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, payload in files.items():
        digest = hashlib.sha256(payload).hexdigest()
        ref = store.put_bytes(prefix + name, payload, _content_type(name))
        if ref.sha256 != digest:
            raise ChecksumMismatch(
                f"artifact store recorded sha256 {ref.sha256} for {name}, wrote {digest}",
                metadata={"key": prefix + name},
            )
        refs[name] = ref
        entries[name] = {"sha256": digest, "size": len(payload)}
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_type": bundle.model_type.value,
        "task": bundle.task.value,
        "model_file": bundle.model.file_name,
        "created_time": bundle.metadata.get("created_time"),
        "files": entries,
    }
    manifest_ref = store.put_bytes(prefix + MANIFEST, _dumps(manifest), "application/json")
    refs[MANIFEST] = manifest_ref
    return BundleRef(
        prefix=prefix,
        uri=store.uri_for(prefix + MANIFEST).removesuffix(MANIFEST),
        manifest_sha256=manifest_ref.sha256,
        files=refs,
    )


def load_bundle(
    store: ArtifactStore, prefix: str, *, expected_manifest_sha256: str | None = None
) -> ModelBundle:
    """Read, verify and rebuild a bundle.

    Raises ``NotFound`` (no manifest under ``prefix``), ``ChecksumMismatch`` (a file or the
    manifest does not match its SHA-256), ``FailedPrecondition`` with reason
    ``MODEL_BUNDLE_INCOMPATIBLE`` (another format major version, or a manifest this reader
    cannot use).
    """
    prefix = _normalise_prefix(prefix)
    if not store.exists(prefix + MANIFEST):
        raise NotFound("model bundle", prefix, reason="MODEL_BUNDLE_NOT_FOUND")
    raw = store.get_bytes(prefix + MANIFEST, expected_sha256=expected_manifest_sha256)
    _check_sha(prefix + MANIFEST, raw, expected_manifest_sha256)
    try:
        manifest = json.loads(raw)
        version = str(manifest["format_version"])
        entries: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _incompatible(prefix, f"unreadable manifest ({exc})") from exc
    if version.split(".")[0] != BUNDLE_FORMAT_VERSION.split(".")[0]:
        raise _incompatible(
            prefix,
            f"bundle format {version} cannot be read by format {BUNDLE_FORMAT_VERSION}",
            version,
        )
    required = {PREPROCESSING, POSTPROCESSING, SIGNATURE, METADATA, manifest.get("model_file")}
    missing = sorted(str(name) for name in required if name not in entries)
    if missing:
        raise _incompatible(prefix, f"manifest lists no {', '.join(missing)}", version)
    files: dict[str, bytes] = {}
    for name, entry in entries.items():
        key = prefix + name
        payload = store.get_bytes(key, expected_sha256=entry["sha256"])
        _check_sha(key, payload, entry["sha256"])
        files[name] = payload
    return ModelBundle.from_files(files)


def _check_sha(key: str, payload: bytes, expected: str | None) -> None:
    """Verify here too, whatever the store did: the manifest is the bundle's own promise."""
    if expected is None:
        return
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected.lower():
        raise ChecksumMismatch(
            f"artifact {key!r} is corrupt: sha256 {actual} != expected {expected}",
            metadata={"key": key, "actual_sha256": actual, "expected_sha256": expected},
        )


def _incompatible(prefix: str, message: str, version: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        f"model bundle {prefix!r}: {message}",
        reason="MODEL_BUNDLE_INCOMPATIBLE",
        metadata={
            "prefix": prefix,
            "format_version": version,
            "supported_format_version": BUNDLE_FORMAT_VERSION,
        },
    )


def _normalise_prefix(prefix: str) -> str:
    if not prefix:
        raise InvalidArgument("a bundle needs a non-empty key prefix", field="prefix")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return validate_prefix(prefix)


def _content_type(name: str) -> str:
    return "application/json" if name.endswith(".json") else "application/octet-stream"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=_json_default, allow_nan=False).encode()


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of what produced (or reads) a bundle, recorded in its metadata."""
    packages = ("arbor", "catboost", "xgboost", "lightgbm", "polars", "numpy", "shap")
    return {"python": platform.python_version()} | {p: _version(p) for p in packages}


def _output_names(task: TaskType, classes: list[ClassValue]) -> list[str]:
    if task is TaskType.MULTICLASS:
        return [str(c) for c in classes]
    if task is TaskType.BINARY:
        return [str(classes[1])]
    return ["value"]
