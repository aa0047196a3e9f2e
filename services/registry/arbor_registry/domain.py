"""The registry's rules: versions, stages, aliases, lineage, deletion and resolution.

This module knows neither gRPC nor SQLAlchemy. It validates requests (``InvalidArgument`` with
the proto field path), decides every state change, stages the events, and runs each change as
one transaction of a ``RegistryStore`` (``repository.py``), which the store retries whenever the
database reports a lost race (``Conflict``). Invariants that must survive races (consecutive
version numbers, one PRODUCTION version per model, one live version per experiment) are also
enforced by the database, so a retry is always the worst that a race can cause.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, unquote

from arbor.common.v1 import common_pb2
from arbor.events.v1 import events_pb2
from arbor_core.artifacts import validate_prefix
from arbor_core.errors import (
    Aborted,
    AlreadyExists,
    ErrorCollector,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Unavailable,
)
from arbor_core.pagination import clamp_page_size

log = logging.getLogger("arbor.registry")

EVENT_SOURCE = "arbor.registry"

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
RESOURCE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")

MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_DESCRIPTION = 4096
MAX_MAP_ENTRIES = 256
MAX_MAP_KEY = 256
MAX_MAP_VALUE = 512
MAX_URI = 2048
MAX_INPUTS = 10_000
MAX_CLASS_LABELS = 10_000
MAX_COLUMN_NAME = 256
MAX_DTYPE = 64
GET_MODEL_VERSIONS = 100


T = TypeVar("T")


class Stage(StrEnum):
    """Lifecycle stage of a version; stored as these strings."""

    NONE = "NONE"
    STAGING = "STAGING"
    PRODUCTION = "PRODUCTION"
    ARCHIVED = "ARCHIVED"


class Conflict(Exception):
    """A lost race detected by the database (unique violation, changed row): retry the unit."""


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class InputColumn:
    name: str
    dtype: str
    nullable: bool = False
    categorical: bool = False


@dataclass(frozen=True)
class Signature:
    inputs: tuple[InputColumn, ...] = ()
    class_labels: tuple[str, ...] = ()
    label_dtype: str = ""


@dataclass(frozen=True)
class NewVersion:
    """What a registration supplies: the immutable lineage and artifacts of one trained model."""

    model: str
    experiment: str = ""
    best_trial_number: int = 0
    split: str = ""
    split_content_hash: str = ""
    model_type: str = "UNSPECIFIED"
    task_type: str = "UNSPECIFIED"
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    signature: Signature = field(default_factory=Signature)
    artifact_uri: str = ""
    artifact_checksums: Mapping[str, str] = field(default_factory=dict)
    library_versions: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    training_rows: int = 0


@dataclass(frozen=True)
class ModelVersionRecord:
    """One stored version, as the store returns it."""

    id: int
    model_id: int
    model: str
    version: int
    data: NewVersion
    stage: Stage
    revision: int
    request_id: str | None
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None = None
    purge_time: datetime | None = None
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return version_name(self.model, self.version)

    @property
    def etag(self) -> str:
        """Opaque, changes on every mutation of the row (stage, aliases aside, deletion)."""
        return hashlib.sha256(f"{self.id}:{self.revision}".encode()).hexdigest()[:20]

    @property
    def deleted(self) -> bool:
        return self.delete_time is not None


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    description: str
    labels: Mapping[str, str]
    latest_version: int
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None = None
    production_version: int = 0
    aliases: Mapping[str, int] = field(default_factory=dict)
    promotion_gate: PromotionGate | None = None

    @property
    def deleted(self) -> bool:
        return self.delete_time is not None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""


# ---------------------------------------------------------------------------------------------
# The store the domain runs on (implemented by repository.SqlRegistryStore)


class RegistryTx(Protocol):
    """One database transaction. Mutations compare-and-set and raise ``Conflict`` on a lost race."""

    def get_model(self, name: str, *, lock: bool = False) -> ModelRecord | None: ...

    def insert_model(self, name: str, labels: Mapping[str, str], now: datetime) -> ModelRecord: ...

    def update_model(
        self,
        model: ModelRecord,
        now: datetime,
        *,
        latest_version: int | None = None,
        labels: Mapping[str, str] | None = None,
        delete_time: datetime | None = None,
        undelete: bool = False,
    ) -> None: ...

    def version_by_request_id(self, request_id: str) -> ModelVersionRecord | None: ...

    def live_version_by_experiment(self, experiment: str) -> ModelVersionRecord | None: ...

    def get_version(self, model_id: int, version: int) -> ModelVersionRecord | None: ...

    def production_version(self, model_id: int) -> ModelVersionRecord | None: ...

    def versions(
        self, model_id: int, *, deleted: bool | None, limit: int | None = None
    ) -> list[ModelVersionRecord]: ...

    def insert_version(
        self,
        model: ModelRecord,
        version: int,
        data: NewVersion,
        request_id: str | None,
        now: datetime,
    ) -> ModelVersionRecord: ...

    def update_version(
        self,
        version: ModelVersionRecord,
        now: datetime,
        *,
        stage: Stage | None = None,
        delete_time: datetime | None = None,
        purge_time: datetime | None = None,
    ) -> ModelVersionRecord: ...

    def set_alias(self, model_id: int, alias: str, version_id: int, now: datetime) -> int: ...

    def delete_alias(self, model_id: int, alias: str) -> int | None: ...

    def delete_aliases_of_version(self, version_id: int) -> list[str]: ...

    def live_versions_sharing_uri(self, artifact_uri: str, exclude_ids: set[int]) -> list[str]: ...

    def set_promotion_gate(
        self, model: ModelRecord, gate: Mapping[str, Any] | None, now: datetime
    ) -> None: ...

    def add_event(self, event: events_pb2.Event) -> None: ...


class RegistryStore(Protocol):
    def transaction(self) -> AbstractContextManager[RegistryTx]: ...

    def run(self, unit: Callable[[RegistryTx], T]) -> T: ...

    def list_models(
        self, page_size: int, page_token: str, label_filter: Mapping[str, str], show_deleted: bool
    ) -> Page[ModelRecord]: ...

    def list_versions(
        self,
        model_id: int,
        page_size: int,
        page_token: str,
        stage: Stage | None,
        show_deleted: bool,
    ) -> Page[ModelVersionRecord]: ...

    def resolve(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        experiment: str | None = None,
        stage: Stage | None = None,
        alias: str | None = None,
    ) -> ModelVersionRecord | None: ...


class ArtifactDeleter(Protocol):
    """What the registry needs of ``arbor_core.artifacts.ArtifactStore``."""

    def delete_prefix(self, prefix: str) -> int: ...

    def uri_for(self, key: str) -> str: ...


# ---------------------------------------------------------------------------------------------
# Names and validation


def model_resource(model: str) -> str:
    return f"models/{model}"


def version_name(model: str, version: int) -> str:
    return f"models/{model}/versions/{version}"


def parse_model_name(value: str, field_path: str, *, bare_ok: bool = True) -> str:
    """``models/{model}`` (or, where ``bare_ok``, just ``{model}``) -> the model name."""
    model = value.removeprefix("models/") if value.startswith("models/") else value
    if not value.startswith("models/") and not bare_ok:
        raise InvalidArgument(f"expected 'models/{{model}}', got {value!r}", field=field_path)
    check_model_name(model, field_path)
    return model


def check_model_name(model: str, field_path: str) -> None:
    # "." and ".." match the pattern but would be path segments in artifact keys and URLs.
    if not MODEL_NAME_RE.fullmatch(model) or model in {".", ".."}:
        raise InvalidArgument(
            f"model name must match [A-Za-z0-9_.-]{{1,128}}, got {model[:140]!r}",
            field=field_path,
            reason="INVALID_MODEL_NAME",
        )


def parse_version_name(value: str, field_path: str) -> tuple[str, int]:
    """``models/{model}/versions/{version}`` -> (model, version)."""
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[2] != "versions":
        raise InvalidArgument(
            f"expected 'models/{{model}}/versions/{{version}}', got {value[:300]!r}",
            field=field_path,
            reason="INVALID_VERSION_NAME",
        )
    check_model_name(parts[1], field_path)
    if not parts[3].isdigit() or int(parts[3]) < 1 or len(parts[3]) > 18:
        raise InvalidArgument(
            f"version must be a positive integer, got {parts[3][:30]!r}",
            field=field_path,
            reason="INVALID_VERSION_NAME",
        )
    return parts[1], int(parts[3])


def check_alias(alias: str, field_path: str) -> None:
    if not ALIAS_RE.fullmatch(alias):
        raise InvalidArgument(
            f"alias must match [a-z][a-z0-9_-]{{0,62}}, got {alias[:80]!r}",
            field=field_path,
            reason="INVALID_ALIAS",
        )


def check_experiment(experiment: str, field_path: str) -> None:
    _check_resource(experiment, "experiments", field_path)


def _check_resource(
    value: str, collection: str, field_path: str, errors: ErrorCollector | None = None
) -> None:
    prefix = collection + "/"
    if not value.startswith(prefix) or not RESOURCE_ID_RE.fullmatch(value[len(prefix) :]):
        message = f"expected '{collection}/{{id}}', got {value[:200]!r}"
        if errors is None:
            raise InvalidArgument(message, field=field_path)
        errors.add(field_path, message)


def check_labels(labels: Mapping[str, str], field_path: str, errors: ErrorCollector) -> None:
    if len(labels) > MAX_LABELS:
        errors.add(field_path, f"at most {MAX_LABELS} labels, got {len(labels)}")
        return
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            errors.add(
                f"{field_path}[{key[:70]}]", "label key must match [A-Za-z0-9][A-Za-z0-9_./-]{0,62}"
            )
        elif len(value) > MAX_LABEL_VALUE:
            errors.add(
                f"{field_path}[{key}]", f"label value longer than {MAX_LABEL_VALUE} characters"
            )


def _check_map(values: Mapping[str, Any], field_path: str, errors: ErrorCollector) -> None:
    if len(values) > MAX_MAP_ENTRIES:
        errors.add(field_path, f"at most {MAX_MAP_ENTRIES} entries, got {len(values)}")
        return
    for key, value in values.items():
        if not key or len(key) > MAX_MAP_KEY:
            errors.add(field_path, f"keys must be 1..{MAX_MAP_KEY} characters")
            return
        if isinstance(value, str) and len(value) > MAX_MAP_VALUE:
            errors.add(f"{field_path}[{key}]", f"value longer than {MAX_MAP_VALUE} characters")


def validate_new_version(new: NewVersion, request_id: str) -> None:
    """Every bad field of a registration at once, with proto field paths."""
    errors = ErrorCollector()
    if not MODEL_NAME_RE.fullmatch(new.model) or new.model in {".", ".."}:
        errors.add("model", "model name must match [A-Za-z0-9_.-]{1,128} (not '.' or '..')")
    if request_id and not REQUEST_ID_RE.fullmatch(request_id):
        errors.add("request_id", "request_id must match [A-Za-z0-9_.:-]{1,128}")
    p = "model_version."
    if new.experiment:
        _check_resource(new.experiment, "experiments", p + "experiment", errors)
    if new.split:
        _check_resource(new.split, "splits", p + "split", errors)
    if len(new.split_content_hash) > 256:
        errors.add(p + "split_content_hash", "longer than 256 characters")
    if new.best_trial_number < 0:
        errors.add(p + "best_trial_number", "must be >= 0")
    if new.training_rows < 0:
        errors.add(p + "training_rows", "must be >= 0")
    if not new.artifact_uri:
        errors.add(p + "artifact_uri", "required: where the model bundle lives")
    elif len(new.artifact_uri) > MAX_URI or any(c in new.artifact_uri for c in "\x00\n\r"):
        errors.add(p + "artifact_uri", f"must be a URI of at most {MAX_URI} characters")
    _check_map(new.artifact_checksums, p + "artifact_checksums", errors)
    for file_name, digest in new.artifact_checksums.items():
        if not SHA256_RE.fullmatch(digest):
            errors.add(
                f"{p}artifact_checksums[{file_name[:100]}]", "must be a lowercase hex sha256"
            )
    _check_map(new.metrics, p + "metrics", errors)
    for metric, value in new.metrics.items():
        if not math.isfinite(value):
            errors.add(f"{p}metrics[{metric[:100]}]", "must be a finite number")
    _check_map(new.library_versions, p + "library_versions", errors)
    _check_map(new.params, p + "params", errors)
    check_labels(new.labels, p + "labels", errors)
    if len(new.description) > MAX_DESCRIPTION:
        errors.add(p + "description", f"longer than {MAX_DESCRIPTION} characters")
    inputs = new.signature.inputs
    if len(inputs) > MAX_INPUTS:
        errors.add(p + "signature.inputs", f"at most {MAX_INPUTS} columns")
    seen: set[str] = set()
    for i, column in enumerate(inputs):
        if not column.name:
            errors.add(f"{p}signature.inputs[{i}].name", "required")
        elif len(column.name) > MAX_COLUMN_NAME:
            errors.add(f"{p}signature.inputs[{i}].name", f"longer than {MAX_COLUMN_NAME}")
        elif len(column.dtype) > MAX_DTYPE:
            errors.add(f"{p}signature.inputs[{i}].dtype", f"longer than {MAX_DTYPE}")
        elif column.name in seen:
            errors.add(f"{p}signature.inputs[{i}].name", f"duplicate column {column.name[:100]!r}")
        seen.add(column.name)
    labels = new.signature.class_labels
    if len(labels) > MAX_CLASS_LABELS:
        errors.add(p + "signature.class_labels", f"at most {MAX_CLASS_LABELS} class labels")
    elif any(len(label) > MAX_MAP_VALUE for label in labels):
        errors.add(p + "signature.class_labels", f"labels are at most {MAX_MAP_VALUE} characters")
    if len(new.signature.label_dtype) > MAX_DTYPE:
        errors.add(p + "signature.label_dtype", f"longer than {MAX_DTYPE}")
    errors.raise_if_any("invalid RegisterModelVersion request")


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Events


def _stage_pb(stage: Stage | None) -> int:
    if stage is None:
        return common_pb2.MODEL_STAGE_UNSPECIFIED
    return int(common_pb2.ModelStage.Value("MODEL_STAGE_" + stage.value))


def _event(type_: str, subject: str, **payload: Any) -> events_pb2.Event:
    from arbor_core.events import new_event
    from arbor_core.logging import get_request_id

    return new_event(type_, subject, EVENT_SOURCE, request_id=get_request_id() or "", **payload)


def registered_event(v: ModelVersionRecord) -> events_pb2.Event:
    return _event(
        "model.registered",
        v.name,
        model_registered=events_pb2.ModelRegistered(
            model_version=v.name, model=v.model, version=v.version, experiment=v.data.experiment
        ),
    )


def promoted_event(
    v: ModelVersionRecord, old: Stage, previous_production: int = 0
) -> events_pb2.Event:
    return _event(
        "model.promoted",
        v.name,
        model_promoted=events_pb2.ModelPromoted(
            model_version=v.name,
            model=v.model,
            version=v.version,
            old_stage=_stage_pb(old),  # type: ignore[arg-type]
            new_stage=_stage_pb(v.stage),  # type: ignore[arg-type]
            previous_production_version=previous_production,
        ),
    )


def archived_event(v: ModelVersionRecord, old: Stage) -> events_pb2.Event:
    return _event(
        "model.archived",
        v.name,
        model_archived=events_pb2.ModelArchived(
            model_version=v.name,
            model=v.model,
            version=v.version,
            old_stage=_stage_pb(old),  # type: ignore[arg-type]
        ),
    )


def deleted_event(v: ModelVersionRecord, purged: bool) -> events_pb2.Event:
    return _event(
        "model.deleted",
        v.name,
        model_deleted=events_pb2.ModelDeleted(
            model_version=v.name,
            model=v.model,
            version=v.version,
            old_stage=_stage_pb(v.stage),  # type: ignore[arg-type]
            purged=purged,
        ),
    )


def alias_event(model: str, alias: str, old: int, new: int) -> events_pb2.Event:
    return _event(
        "model.alias_moved",
        model_resource(model),
        model_alias_moved=events_pb2.ModelAliasMoved(
            model=model, alias=alias, old_version=old, new_version=new
        ),
    )


# ---------------------------------------------------------------------------------------------
# Promotion gate

#: The metric key under which a version records its prediction latency (arbor_ml.latency).
LATENCY_METRIC = "predict_ms_per_1k_rows"
DEFAULT_GUARDED_ALIASES = ("champion",)
MAXIMIZE = "MAXIMIZE"
MINIMIZE = "MINIMIZE"
#: Directions of the metrics Arbor records, for a gate that names none.
_KNOWN_DIRECTIONS = {
    "roc_auc": MAXIMIZE,
    "accuracy": MAXIMIZE,
    "f1": MAXIMIZE,
    "r2": MAXIMIZE,
    "log_loss": MINIMIZE,
    "rmse": MINIMIZE,
    "mae": MINIMIZE,
}
_METRIC_PREFIXES = ("test_", "validation_", "valid_", "holdout_")


def infer_direction(metric: str) -> str | None:
    """MAXIMIZE/MINIMIZE for a metric Arbor knows (a ``test_`` etc. prefix ignored), else None."""
    name = metric.strip().lower()
    for prefix in _METRIC_PREFIXES:
        name = name.removeprefix(prefix)
    return _KNOWN_DIRECTIONS.get(name)


@dataclass(frozen=True)
class PromotionGate:
    """A model's rule for PRODUCTION and guarded aliases (see ``PromotionGate`` in the proto).

    ``direction`` is MAXIMIZE, MINIMIZE or "" (inferred by :func:`validate_gate`).
    """

    metric: str
    direction: str = ""
    min_improvement: float = 0.0
    max_latency: float = 0.0
    latency_metric: str = LATENCY_METRIC
    allow_different_split: bool = False
    guarded_aliases: tuple[str, ...] = DEFAULT_GUARDED_ALIASES
    update_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": self.direction,
            "min_improvement": self.min_improvement,
            "max_latency": self.max_latency,
            "latency_metric": self.latency_metric,
            "allow_different_split": self.allow_different_split,
            "guarded_aliases": list(self.guarded_aliases),
            "update_time": self.update_time.isoformat() if self.update_time else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromotionGate:
        stamp = data.get("update_time")
        return cls(
            metric=str(data["metric"]),
            direction=str(data.get("direction") or ""),
            min_improvement=float(data.get("min_improvement") or 0.0),
            max_latency=float(data.get("max_latency") or 0.0),
            latency_metric=str(data.get("latency_metric") or LATENCY_METRIC),
            allow_different_split=bool(data.get("allow_different_split")),
            guarded_aliases=tuple(data.get("guarded_aliases") or DEFAULT_GUARDED_ALIASES),
            update_time=datetime.fromisoformat(stamp) if stamp else None,
        )


def validate_gate(gate: PromotionGate, prefix: str = "gate") -> PromotionGate:
    """Every bad field at once (``gate.<field>``); returns the gate with defaults resolved."""
    errors = ErrorCollector()
    metric = gate.metric.strip()
    if not metric:
        errors.add(f"{prefix}.metric", "required: the ModelVersion.metrics key to compare")
    elif len(metric) > MAX_MAP_KEY:
        errors.add(f"{prefix}.metric", f"longer than {MAX_MAP_KEY} characters")
    direction = gate.direction or (infer_direction(metric) if metric else None) or ""
    if metric and direction not in (MAXIMIZE, MINIMIZE):
        errors.add(
            f"{prefix}.direction",
            f"cannot infer whether a larger {metric!r} is better; set the direction",
        )
    if not math.isfinite(gate.min_improvement) or gate.min_improvement < 0:
        errors.add(f"{prefix}.min_improvement", "must be a finite number >= 0")
    if not math.isfinite(gate.max_latency) or gate.max_latency < 0:
        errors.add(f"{prefix}.max_latency", "must be a finite number >= 0 (0: no check)")
    latency_metric = gate.latency_metric.strip() or LATENCY_METRIC
    if len(latency_metric) > MAX_MAP_KEY:
        errors.add(f"{prefix}.latency_metric", f"longer than {MAX_MAP_KEY} characters")
    aliases = tuple(dict.fromkeys(gate.guarded_aliases)) or DEFAULT_GUARDED_ALIASES
    for i, alias in enumerate(aliases):
        if not ALIAS_RE.fullmatch(alias):
            errors.add(f"{prefix}.guarded_aliases[{i}]", "alias must match [a-z][a-z0-9_-]{0,62}")
    errors.raise_if_any("invalid promotion gate")
    return replace(
        gate,
        metric=metric,
        direction=direction,
        latency_metric=latency_metric,
        guarded_aliases=aliases,
    )


@dataclass(frozen=True)
class GateDecision:
    """The outcome of a gate check, with every number it looked at."""

    gate: PromotionGate
    candidate: ModelVersionRecord
    incumbent: ModelVersionRecord | None
    target: str
    candidate_value: float | None
    incumbent_value: float | None
    required_value: float | None
    candidate_latency: float | None
    reasons: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.reasons

    def metadata(self) -> dict[str, str]:
        """The numbers, as ErrorInfo metadata (strings; absent values left out)."""
        values: dict[str, Any] = {
            "name": self.candidate.name,
            "target": self.target,
            "metric": self.gate.metric,
            "direction": self.gate.direction,
            "min_improvement": self.gate.min_improvement,
            "candidate_value": self.candidate_value,
            "incumbent_version": self.incumbent.version if self.incumbent else None,
            "incumbent_value": self.incumbent_value,
            "required_value": self.required_value,
            "latency_metric": self.gate.latency_metric if self.gate.max_latency else None,
            "candidate_latency": self.candidate_latency if self.gate.max_latency else None,
            "max_latency": self.gate.max_latency or None,
        }
        return {
            k: f"{v:.6g}" if isinstance(v, float) else str(v)
            for k, v in values.items()
            if v is not None
        }

    def error(self) -> FailedPrecondition:
        subject = self.candidate.name
        return FailedPrecondition(
            f"promotion gate refused {subject} for {self.target}: " + "; ".join(self.reasons),
            reason="PROMOTION_GATE_REFUSED",
            metadata=self.metadata(),
            violations=[PreconditionViolation("PROMOTION_GATE", subject, r) for r in self.reasons],
        )


def _metric(version: ModelVersionRecord, key: str) -> float | None:
    value = version.data.metrics.get(key)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def evaluate_gate(
    gate: PromotionGate,
    candidate: ModelVersionRecord,
    incumbent: ModelVersionRecord | None,
    target: str,
) -> GateDecision:
    """Check ``candidate`` against the version holding ``target`` now (None: nobody).

    Refused when: the candidate lacks the metric, or (with ``max_latency``) its latency is
    missing or above the limit; against an incumbent, when the two were scored on different
    held-out data (split content hashes) unless allowed, when the incumbent lacks the metric,
    or when the candidate does not beat it by ``min_improvement``.
    """
    if incumbent is not None and incumbent.id == candidate.id:
        incumbent = None
    reasons: list[str] = []
    metric = gate.metric
    value = _metric(candidate, metric)
    if value is None:
        reasons.append(f"{candidate.name} has no value for metric {metric!r}")
    latency = _metric(candidate, gate.latency_metric)
    if gate.max_latency:
        if latency is None:
            reasons.append(f"{candidate.name} has no latency metric {gate.latency_metric!r}")
        elif latency > gate.max_latency:
            reasons.append(
                f"{gate.latency_metric} {latency:.6g} is above the limit {gate.max_latency:.6g}"
            )
    incumbent_value: float | None = None
    required: float | None = None
    if incumbent is not None:
        incumbent_value = _metric(incumbent, metric)
        if not gate.allow_different_split:
            mine = candidate.data.split_content_hash or candidate.data.split
            theirs = incumbent.data.split_content_hash or incumbent.data.split
            if not mine or not theirs:
                reasons.append(
                    f"cannot tell whether {candidate.name} and {incumbent.name} were scored on "
                    "the same held-out data (no split recorded)"
                )
            elif mine != theirs:
                reasons.append(
                    f"{candidate.name} and {incumbent.name} were scored on different held-out "
                    f"data (split {mine[:16]} vs {theirs[:16]})"
                )
        if incumbent_value is None:
            reasons.append(f"the incumbent {incumbent.name} has no value for metric {metric!r}")
        else:
            sign = 1.0 if gate.direction == MAXIMIZE else -1.0
            required = incumbent_value + sign * gate.min_improvement
            if value is not None and sign * (value - required) < -1e-12:
                better = "at least" if gate.direction == MAXIMIZE else "at most"
                reasons.append(
                    f"{metric} {value:.6g} does not beat {incumbent.name}'s {incumbent_value:.6g}"
                    f" by {gate.min_improvement:.6g} (needs {better} {required:.6g})"
                )
    return GateDecision(
        gate=gate,
        candidate=candidate,
        incumbent=incumbent,
        target=target,
        candidate_value=value,
        incumbent_value=incumbent_value,
        required_value=required,
        candidate_latency=latency,
        reasons=tuple(reasons),
    )


@dataclass(frozen=True)
class _Refused:
    """A unit's result when the gate refused: its transaction commits only the event."""

    decision: GateDecision


def decision_event(decision: GateDecision, *, bypassed: bool = False) -> events_pb2.Event:
    c = decision.candidate
    return _event(
        "model.promotion_decided",
        c.name,
        promotion_decided=events_pb2.PromotionDecided(
            model_version=c.name,
            model=c.model,
            version=c.version,
            target=decision.target,
            incumbent_version=decision.incumbent.version if decision.incumbent else 0,
            accepted=decision.accepted,
            bypassed=bypassed and not decision.accepted,
            metric=decision.gate.metric,
            candidate_value=decision.candidate_value or 0.0,
            incumbent_value=decision.incumbent_value or 0.0,
            required_value=decision.required_value or 0.0,
            candidate_latency=decision.candidate_latency or 0.0,
            max_latency=decision.gate.max_latency,
            reasons=list(decision.reasons),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Artifact keys


def store_root_uri(store: ArtifactDeleter) -> str:
    """The URI of the store's root, "/"-terminated (``file:///srv/artifacts/``, ``gs://b/p/``)."""
    return store.uri_for("x")[:-1]


def artifact_key(artifact_uri: str, store: ArtifactDeleter) -> str:
    """The store key prefix ("/"-terminated) of a version's bundle; refuses anything outside.

    Purging deletes every object under the prefix, so the prefix must be a proper directory of
    the store: not the store root, no ``..``, no empty segments, and always "/"-terminated so that
    ``models/churn/v3`` never takes ``models/churn/v30`` with it. A local store accepts the
    bundle as a ``file://`` URI or a plain absolute path.
    """
    root = store_root_uri(store)
    uri = artifact_uri
    if uri.startswith("/"):
        uri = "file://" + quote(uri)
    if root.startswith("file://"):
        root, uri = unquote(root), unquote(uri)
    uri = uri if uri.endswith("/") else uri + "/"
    key = uri[len(root) :] if uri.startswith(root) else ""
    try:
        valid = bool(key.strip("/")) and validate_prefix(key) == key
    except InvalidArgument:
        valid = False
    if not valid:
        raise FailedPrecondition(
            f"artifact_uri {artifact_uri!r} is not a directory inside the artifact store "
            f"{store_root_uri(store)!r}; refusing to purge it",
            reason="ARTIFACT_URI_OUTSIDE_STORE",
            metadata={"artifact_uri": artifact_uri, "store": store_root_uri(store)},
            violations=[
                PreconditionViolation(
                    "ARTIFACT_LOCATION", artifact_uri, "purge only deletes inside the store"
                )
            ],
        )
    return key


# ---------------------------------------------------------------------------------------------
# The service


def _precondition(message: str, reason: str, subject: str, **metadata: str) -> FailedPrecondition:
    return FailedPrecondition(
        message,
        reason=reason,
        metadata={"name": subject, **metadata},
        violations=[PreconditionViolation(reason, subject, message)],
    )


def _check_etag(v: ModelVersionRecord, etag: str) -> None:
    if etag and etag != v.etag:
        raise Aborted(
            f"etag {etag!r} of {v.name} is stale; re-read the version and retry",
            reason="ETAG_MISMATCH",
            metadata={"name": v.name, "etag": v.etag},
        )


class Registry:
    """Use cases of the registry, each one transaction (plus artifact deletion after commit)."""

    def __init__(
        self, store: RegistryStore, artifacts: Callable[[], ArtifactDeleter] | None = None
    ) -> None:
        self._store = store
        self._artifacts = artifacts

    # -- registration ---------------------------------------------------------------------------

    def register(self, new: NewVersion, request_id: str = "") -> tuple[ModelVersionRecord, bool]:
        """Next version under ``new.model``; a replay (request_id, experiment) returns the first."""
        validate_new_version(new, request_id)

        def unit(tx: RegistryTx) -> tuple[ModelVersionRecord, bool]:
            if request_id and (earlier := tx.version_by_request_id(request_id)) is not None:
                if earlier.model != new.model:
                    raise AlreadyExists(
                        f"request_id {request_id!r} was already used to register {earlier.name}",
                        reason="REQUEST_ID_REUSED",
                        metadata={"request_id": request_id, "model_version": earlier.name},
                    )
                return earlier, False
            if new.experiment and (earlier := tx.live_version_by_experiment(new.experiment)):
                if earlier.model != new.model:
                    raise AlreadyExists(
                        f"{new.experiment} already registered {earlier.name}",
                        reason="EXPERIMENT_ALREADY_REGISTERED",
                        metadata={"experiment": new.experiment, "model_version": earlier.name},
                    )
                return earlier, False
            now = _now()
            model = tx.get_model(new.model, lock=True)
            if model is None:
                # A concurrent first registration makes this insert fail: the retry finds the row.
                model = tx.insert_model(new.model, new.labels, now)
            # The model's labels follow its registrations: later versions add and overwrite keys.
            labels = {**model.labels, **new.labels}
            if len(labels) > MAX_LABELS:
                labels = dict(model.labels)
            number = model.latest_version + 1
            tx.update_model(
                model, now, latest_version=number, labels=labels, undelete=model.deleted
            )
            version = tx.insert_version(model, number, new, request_id or None, now)
            tx.add_event(registered_event(version))
            return version, True

        version, created = self._store.run(unit)
        if created:
            log.info("registered %s", version.name, extra={"model_version": version.name})
        return version, created

    # -- reads ------------------------------------------------------------------------------------

    def get_model(
        self, model: str, show_deleted: bool = False
    ) -> tuple[ModelRecord, list[ModelVersionRecord]]:
        with self._store.transaction() as tx:
            record = tx.get_model(model)
            if record is None or (record.deleted and not show_deleted):
                raise NotFound("model", model_resource(model))
            versions = tx.versions(
                record.id, deleted=None if show_deleted else False, limit=GET_MODEL_VERSIONS
            )
        return record, versions

    def get_version(
        self, model: str, version: int, show_deleted: bool = False
    ) -> ModelVersionRecord:
        with self._store.transaction() as tx:
            return self._version(tx, model, version, show_deleted=show_deleted)

    def list_models(
        self, page_size: int, page_token: str, label_filter: Mapping[str, str], show_deleted: bool
    ) -> Page[ModelRecord]:
        errors = ErrorCollector()
        check_labels(label_filter, "label_filter", errors)
        errors.raise_if_any("invalid ListModels request")
        return self._store.list_models(page_size, page_token, label_filter, show_deleted)

    def list_versions(
        self, model: str, page_size: int, page_token: str, stage: Stage | None, show_deleted: bool
    ) -> Page[ModelVersionRecord]:
        clamp_page_size(page_size)  # a bad page_size is INVALID_ARGUMENT even for a missing model
        with self._store.transaction() as tx:
            record = tx.get_model(model)
        if record is None or (record.deleted and not show_deleted):
            raise NotFound("model", model_resource(model))
        return self._store.list_versions(record.id, page_size, page_token, stage, show_deleted)

    def resolve(
        self,
        *,
        model_version: tuple[str, int] | None = None,
        experiment: str | None = None,
        stage: tuple[str, Stage] | None = None,
        alias: tuple[str, str] | None = None,
    ) -> ModelVersionRecord:
        """One live version for a selector; deleted versions never resolve."""
        if model_version is not None:
            found = self._store.resolve(model=model_version[0], version=model_version[1])
            wanted = version_name(*model_version)
        elif experiment is not None:
            found = self._store.resolve(experiment=experiment)
            wanted = experiment
        elif stage is not None:
            found = self._store.resolve(model=stage[0], stage=stage[1])
            wanted = f"{model_resource(stage[0])} in stage {stage[1].value}"
        elif alias is not None:
            found = self._store.resolve(model=alias[0], alias=alias[1])
            wanted = f"{model_resource(alias[0])}@{alias[1]}"
        else:
            raise InvalidArgument(
                "selector is required", field="selector", reason="SELECTOR_REQUIRED"
            )
        if found is None:
            raise NotFound("model_version", wanted, f"no model version matches {wanted}")
        return found

    # -- stage changes ----------------------------------------------------------------------------

    def promote(
        self,
        model: str,
        version: int,
        stage: Stage,
        *,
        previous_production_stage: Stage = Stage.ARCHIVED,
        etag: str = "",
        allow_archived: bool = False,
        bypass_gate: bool = False,
    ) -> tuple[ModelVersionRecord, ModelVersionRecord | None]:
        """Move a version to STAGING or PRODUCTION; the old PRODUCTION leaves in the same tx.

        With a promotion gate on the model, PRODUCTION is refused (``FailedPrecondition``,
        reason ``PROMOTION_GATE_REFUSED``) unless the version passes it or ``bypass_gate``;
        either way the decision is a ``model.promotion_decided`` event.
        """
        if stage not in (Stage.STAGING, Stage.PRODUCTION):
            raise InvalidArgument(
                "stage must be MODEL_STAGE_STAGING or MODEL_STAGE_PRODUCTION", field="stage"
            )
        if previous_production_stage == Stage.PRODUCTION:
            raise InvalidArgument(
                "previous_production_stage cannot be PRODUCTION", field="previous_production_stage"
            )

        def unit(
            tx: RegistryTx,
        ) -> tuple[ModelVersionRecord, ModelVersionRecord | None] | _Refused:
            record = self._lock_model(tx, model)
            target = self._version(tx, model, version, show_deleted=True, model_id=record.id)
            if target.deleted:
                raise _precondition(
                    f"{target.name} is deleted and cannot be promoted",
                    "VERSION_DELETED",
                    target.name,
                )
            _check_etag(target, etag)
            if target.stage == Stage.ARCHIVED and not allow_archived:
                raise _precondition(
                    f"{target.name} is ARCHIVED; set allow_archived to promote it",
                    "VERSION_ARCHIVED",
                    target.name,
                )
            if target.stage == stage:
                return target, None
            now = _now()
            previous: ModelVersionRecord | None = None
            if stage == Stage.PRODUCTION and record.promotion_gate is not None:
                decision = evaluate_gate(
                    record.promotion_gate,
                    target,
                    tx.production_version(record.id),
                    f"stage:{Stage.PRODUCTION.value}",
                )
                tx.add_event(decision_event(decision, bypassed=bypass_gate))
                if not decision.accepted and not bypass_gate:
                    return _Refused(decision)
            if stage == Stage.PRODUCTION:
                current = tx.production_version(record.id)
                if current is not None and current.id != target.id:
                    # Demote first: the partial unique index allows one PRODUCTION row at a time.
                    previous = tx.update_version(current, now, stage=previous_production_stage)
                    if previous_production_stage == Stage.ARCHIVED:
                        tx.add_event(archived_event(previous, Stage.PRODUCTION))
                    else:
                        tx.add_event(promoted_event(previous, Stage.PRODUCTION))
            promoted = tx.update_version(target, now, stage=stage)
            tx.update_model(record, now)
            tx.add_event(
                promoted_event(promoted, target.stage, previous.version if previous else 0)
            )
            return promoted, previous

        outcome = self._store.run(unit)
        if isinstance(outcome, _Refused):
            # The decision event is committed; the promotion is not.
            raise outcome.decision.error()
        promoted, previous = outcome
        log.info("promoted %s to %s", promoted.name, promoted.stage.value)
        return promoted, previous

    def archive(
        self, model: str, version: int, *, etag: str = "", force: bool = False
    ) -> ModelVersionRecord:
        """Move a version to ARCHIVED; the PRODUCTION version only with ``force``."""

        def unit(tx: RegistryTx) -> ModelVersionRecord:
            record = self._lock_model(tx, model)
            target = self._version(tx, model, version, show_deleted=True, model_id=record.id)
            if target.deleted:
                raise _precondition(
                    f"{target.name} is deleted and cannot be archived",
                    "VERSION_DELETED",
                    target.name,
                )
            _check_etag(target, etag)
            if target.stage == Stage.ARCHIVED:
                return target
            if target.stage == Stage.PRODUCTION and not force:
                raise _precondition(
                    f"{target.name} is the PRODUCTION version; set force to archive it",
                    "VERSION_IN_PRODUCTION",
                    target.name,
                )
            now = _now()
            archived = tx.update_version(target, now, stage=Stage.ARCHIVED)
            tx.update_model(record, now)
            tx.add_event(archived_event(archived, target.stage))
            return archived

        return self._store.run(unit)

    # -- aliases ----------------------------------------------------------------------------------

    def set_alias(
        self, model: str, alias: str, version: int, *, bypass_gate: bool = False
    ) -> tuple[ModelVersionRecord, int]:
        """Point ``alias`` at ``version`` (moving it atomically); returns the old version or 0.

        An alias the model's promotion gate guards (``champion`` by default) moves only to a
        version that passes the gate against the one it points at now (or with
        ``bypass_gate``); the decision is an event, as for promotions.
        """
        check_alias(alias, "alias")
        if version < 1:
            raise InvalidArgument("version must be >= 1", field="version")

        def unit(tx: RegistryTx) -> tuple[ModelVersionRecord, int] | _Refused:
            record = self._lock_model(tx, model)
            target = self._version(tx, model, version, show_deleted=True, model_id=record.id)
            if target.deleted:
                raise _precondition(
                    f"{target.name} is deleted; an alias cannot point at it",
                    "VERSION_DELETED",
                    target.name,
                )
            gate = record.promotion_gate
            current_version = record.aliases.get(alias, 0)
            if gate is not None and alias in gate.guarded_aliases and current_version != version:
                incumbent = tx.get_version(record.id, current_version) if current_version else None
                decision = evaluate_gate(gate, target, incumbent, f"alias:{alias}")
                tx.add_event(decision_event(decision, bypassed=bypass_gate))
                if not decision.accepted and not bypass_gate:
                    return _Refused(decision)
            now = _now()
            old = tx.set_alias(record.id, alias, target.id, now)
            if old != version:
                tx.update_model(record, now)
                tx.add_event(alias_event(model, alias, old, version))
            refreshed = tx.get_version(record.id, version)
            assert refreshed is not None
            return refreshed, old

        outcome = self._store.run(unit)
        if isinstance(outcome, _Refused):
            raise outcome.decision.error()
        return outcome

    # -- promotion gate -------------------------------------------------------------------------

    def set_promotion_gate(self, model: str, gate: PromotionGate | None) -> ModelRecord:
        """Set (``None``: remove) the model's promotion gate; returns the model."""
        if gate is not None:
            gate = validate_gate(gate)

        def unit(tx: RegistryTx) -> ModelRecord:
            record = self._lock_model(tx, model)
            now = _now()
            stored = None if gate is None else replace(gate, update_time=now).to_json()
            tx.set_promotion_gate(record, stored, now)
            refreshed = tx.get_model(model)
            assert refreshed is not None
            return refreshed

        updated = self._store.run(unit)
        log.info(
            "promotion gate of %s %s",
            model_resource(model),
            "removed" if gate is None else f"set on {gate.metric}",
        )
        return updated

    def delete_alias(self, model: str, alias: str) -> int:
        check_alias(alias, "alias")

        def unit(tx: RegistryTx) -> int:
            record = self._lock_model(tx, model)
            old = tx.delete_alias(record.id, alias)
            if old is None:
                raise NotFound(
                    "alias", f"{model_resource(model)}@{alias}", reason="ALIAS_NOT_FOUND"
                )
            now = _now()
            tx.update_model(record, now)
            tx.add_event(alias_event(model, alias, old, 0))
            return old

        return self._store.run(unit)

    # -- deletion ---------------------------------------------------------------------------------

    def delete(
        self,
        model: str,
        version: int | None,
        *,
        purge: bool = False,
        force: bool = False,
        etag: str = "",
    ) -> list[ModelVersionRecord]:
        """Soft-delete one version or a whole model; with ``purge`` also delete the artifacts.

        The rows change in one transaction; artifacts go only after it commits (a file cannot be
        rolled back). Deleting again with ``purge`` finishes a purge that failed half-way.
        """
        store = self._artifacts() if (purge and self._artifacts is not None) else None
        if purge and store is None:
            raise FailedPrecondition(
                "no artifact store configured; cannot purge", reason="NO_ARTIFACT_STORE"
            )

        def unit(tx: RegistryTx) -> tuple[list[ModelVersionRecord], list[ModelVersionRecord]]:
            record = tx.get_model(model, lock=True)
            if record is None:
                raise NotFound("model", model_resource(model))
            if version is not None:
                target = self._version(tx, model, version, show_deleted=True, model_id=record.id)
                if target.deleted and not purge:
                    raise NotFound("model_version", target.name)
                _check_etag(target, etag)
                candidates = [target]
            else:
                if record.deleted and not purge:
                    raise NotFound("model", model_resource(model))
                candidates = tx.versions(record.id, deleted=None)
            live = [v for v in candidates if not v.deleted]
            in_production = [v for v in live if v.stage == Stage.PRODUCTION]
            if in_production and not force:
                raise _precondition(
                    f"{in_production[0].name} is the PRODUCTION version; set force to delete it",
                    "VERSION_IN_PRODUCTION",
                    in_production[0].name,
                )
            to_purge = candidates if purge else []
            if store is not None:
                for v in to_purge:
                    artifact_key(v.data.artifact_uri, store)  # refuses before anything changes
                ids = {v.id for v in candidates}
                for v in to_purge:
                    sharing = tx.live_versions_sharing_uri(v.data.artifact_uri, ids)
                    if sharing:
                        raise _precondition(
                            f"{v.name} shares its artifacts with {sharing[0]}; not purging",
                            "ARTIFACTS_SHARED",
                            v.name,
                            shared_with=sharing[0],
                        )
            now = _now()
            changed: list[ModelVersionRecord] = []
            for v in candidates:
                newly_purged = purge and v.purge_time is None
                if v.deleted and not newly_purged:
                    continue
                if not v.deleted:
                    for alias in tx.delete_aliases_of_version(v.id):
                        tx.add_event(alias_event(model, alias, v.version, 0))
                updated = tx.update_version(
                    v,
                    now,
                    delete_time=v.delete_time or now,
                    purge_time=now if newly_purged else None,
                )
                tx.add_event(deleted_event(updated, purged=purge))
                changed.append(updated)
            if version is None and not record.deleted:
                tx.update_model(record, now, delete_time=now)
            elif changed:
                tx.update_model(record, now)
            return changed, to_purge

        changed, to_purge = self._store.run(unit)
        if store is not None:
            for v in to_purge:
                key = artifact_key(v.data.artifact_uri, store)
                try:
                    removed = store.delete_prefix(key)
                except Exception as exc:  # the rows say purged; a repeated purge finishes the job
                    log.exception("purging %s (%s) failed", v.name, key)
                    raise Unavailable(
                        f"{v.name} is deleted but its artifacts could not be purged; "
                        "repeat the purge",
                        reason="ARTIFACT_PURGE_FAILED",
                        metadata={"name": v.name, "key": key},
                    ) from exc
                log.info("purged %s: %d objects under %s", v.name, removed, key)
        return changed or [v for v in to_purge if version is not None]

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _lock_model(tx: RegistryTx, model: str) -> ModelRecord:
        record = tx.get_model(model, lock=True)
        if record is None or record.deleted:
            raise NotFound("model", model_resource(model))
        return record

    @staticmethod
    def _version(
        tx: RegistryTx,
        model: str,
        version: int,
        *,
        show_deleted: bool,
        model_id: int | None = None,
    ) -> ModelVersionRecord:
        if model_id is None:
            record = tx.get_model(model)
            if record is None:
                raise NotFound("model_version", version_name(model, version))
            model_id = record.id
        found = tx.get_version(model_id, version)
        if found is None or (found.deleted and not show_deleted):
            raise NotFound("model_version", version_name(model, version))
        return found
