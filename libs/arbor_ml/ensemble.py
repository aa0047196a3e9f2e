"""A weighted blend of models from several trials (and libraries), served as one model.

An AUTO study tries CatBoost, LightGBM and XGBoost; their errors differ, so a blend of the
best of them usually beats the best one alone (Caruana et al., "Ensemble selection from
libraries of models", ICML 2004; AutoGluon's weighted ensemble). The blend here is:

* **chosen on validation predictions** the trials already made (out-of-fold with
  cross-validation), by greedy forward selection with replacement (:func:`select_blend`):
  start from the best trial, add the trial that most improves the blend, keep the step
  with the best value; the weights are how often each trial was picked;
* **blended in margin space** (log-odds, softmax inputs, regression values), so that the
  members' exact TreeSHAP values, weighted the same way, add up to the blend's margin
  (:meth:`EnsembleModel.native_contributions`);
* **one model to the rest of Arbor**: :class:`EnsembleModel` is a :class:`TrainedModel`
  (``model_type = ensemble``) that the bundle saves as one ``ensemble.zip`` (each member in
  its library's native format plus ``ensemble.json``), and that inference serves like any
  other model.

Members see one preprocessing, the bundle's (integer codes for categories). A CatBoost member
trained on category strings gets them back from the codes (:class:`Member` ``categories``).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import polars as pl

from arbor_core.errors import FailedPrecondition
from arbor_ml.metrics import compute_metric
from arbor_ml.preprocessing import Preprocessor
from arbor_ml.trainers.base import TrainedModel
from arbor_ml.types import ModelType, TaskType

ENSEMBLE_FORMAT = "arbor.ensemble/1"
ENSEMBLE_MANIFEST = "ensemble.json"

#: Greedy steps of :func:`select_blend` (weights are multiples of 1/steps at most).
SELECTION_STEPS = 25
#: Probabilities are clipped this far from 0 and 1 before they become margins.
PROBABILITY_EPS = 1e-12


@dataclass(frozen=True)
class Member:
    """One model of the blend and how to feed it.

    ``categorical_output`` is the category encoding the model was trained on (``codes`` or
    ``string``, :attr:`Preprocessor.categorical_output`); for ``string``, ``categories`` maps
    each categorical feature to its values in code order, the unknown category last.
    """

    model: TrainedModel
    weight: float
    categorical_output: str = "codes"
    categories: Mapping[str, Sequence[str]] | None = None
    trial: int | None = None

    def input(self, x: pl.DataFrame) -> pl.DataFrame:
        """The blend's preprocessed frame as this member was trained to read it."""
        if self.categorical_output != "string" or not self.categories:
            return x
        return x.with_columns(
            pl.col(name).replace_strict(
                list(range(len(values))), list(values), return_dtype=pl.String
            )
            for name, values in self.categories.items()
        )


class EnsembleModel(TrainedModel):
    """The weighted blend of :class:`Member` models in margin space."""

    model_type: ClassVar[ModelType] = ModelType.ENSEMBLE
    file_name: ClassVar[str] = "ensemble.zip"
    library: ClassVar[str] = "arbor"

    def __init__(
        self,
        members: Sequence[Member],
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        total = sum(m.weight for m in members)
        if not total > 0:
            raise ValueError("ensemble weights must add up to a positive number")
        super().__init__(
            None,
            task=task,
            feature_names=feature_names,
            categorical_features=categorical_features,
            n_classes=n_classes,
        )
        self.members = [replace(m, weight=m.weight / total) for m in members]

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.model.model_type.value} {m.weight:.2f}" for m in self.members)
        return f"EnsembleModel({parts})"

    def predict_margin(self, x: pl.DataFrame) -> np.ndarray:
        total: np.ndarray | None = None
        for member in self.members:
            part = member.weight * member.model.predict_margin(member.input(x))
            total = part if total is None else total + part
        assert total is not None
        return total

    def predict_output(self, x: pl.DataFrame) -> np.ndarray:
        return output_from_margin(self.task, self.predict_margin(x))

    def native_contributions(self, x: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The members' exact TreeSHAP values, weighted: they add up to the blend's margin."""
        values: np.ndarray | None = None
        base: np.ndarray | None = None
        for member in self.members:
            v, b = member.model.native_contributions(member.input(x))
            values = member.weight * v if values is None else values + member.weight * v
            base = member.weight * b if base is None else base + member.weight * b
        assert values is not None and base is not None
        return values, base

    def shap_input(self, x: pl.DataFrame) -> Any:
        raise NotImplementedError("shap.TreeExplainer takes one tree model; use native_shap")

    def native_importance(self) -> tuple[str, np.ndarray]:
        """Each member's own importance as a share of its total, weighted."""
        out = np.zeros(len(self.feature_names))
        for member in self.members:
            _, values = member.model.native_importance()
            values = np.abs(np.asarray(values, dtype=np.float64))
            if values.sum() > 0:
                out += member.weight * values / values.sum()
        return "weighted_share", out

    # -- files --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A zip of each member's native file and ``ensemble.json`` (weights, encodings)."""
        manifest: dict[str, Any] = {"format": ENSEMBLE_FORMAT, "members": []}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for i, member in enumerate(self.members):
                name = f"member-{i}/{member.model.file_name}"
                archive.writestr(_entry(name), member.model.to_bytes())
                manifest["members"].append(
                    {
                        "file": name,
                        "model_type": member.model.model_type.value,
                        "weight": member.weight,
                        "categorical_output": member.categorical_output,
                        "categories": {k: list(v) for k, v in (member.categories or {}).items()},
                        "trial": member.trial,
                    }
                )
            archive.writestr(_entry(ENSEMBLE_MANIFEST), json.dumps(manifest, indent=2))
        return buffer.getvalue()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        task: TaskType,
        feature_names: list[str],
        categorical_features: list[str],
        n_classes: int,
    ) -> EnsembleModel:
        from arbor_ml.trainers.dispatch import model_class, model_from_bytes

        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            manifest = json.loads(archive.read(ENSEMBLE_MANIFEST))
            if manifest.get("format") != ENSEMBLE_FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}, not {ENSEMBLE_FORMAT}")
            members = []
            for entry in manifest["members"]:
                if model_class(entry["model_type"]) is cls:
                    raise ValueError("an ensemble cannot hold an ensemble")
                model = model_from_bytes(
                    entry["model_type"],
                    archive.read(entry["file"]),
                    task=task,
                    feature_names=feature_names,
                    categorical_features=categorical_features,
                    n_classes=n_classes,
                )
                members.append(
                    Member(
                        model,
                        float(entry["weight"]),
                        str(entry.get("categorical_output") or "codes"),
                        entry.get("categories") or None,
                        entry.get("trial"),
                    )
                )
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise FailedPrecondition(
                f"unreadable ensemble model file: {exc}", reason="MODEL_BUNDLE_INCOMPATIBLE"
            ) from exc
        return cls(
            members,
            task=task,
            feature_names=feature_names,
            categorical_features=categorical_features,
            n_classes=n_classes,
        )

    @classmethod
    def blend(
        cls,
        parts: Sequence[tuple[TrainedModel, Preprocessor, float, int | None]],
        shared: Preprocessor,
    ) -> EnsembleModel:
        """The blend of fitted models, each with the preprocessing it was trained on, its
        weight and its trial, fed from ``shared`` (:func:`shared_preprocessor`)."""
        members = []
        for model, pre, weight, trial in parts:
            if pre.feature_names != shared.feature_names:
                raise ValueError("ensemble members must share their features, in order")
            categories = None
            if pre.categorical_output != shared.categorical_output:
                if shared.categorical_output != "codes":
                    raise ValueError("an ensemble's shared preprocessing must give codes")
                categories = member_categories(shared)
            members.append(Member(model, weight, pre.categorical_output, categories, trial))
        first = parts[0][0]
        return cls(
            members,
            task=first.task,
            feature_names=shared.feature_names,
            categorical_features=shared.categorical_features,
            n_classes=first.n_classes,
        )

    @property
    def member_types(self) -> list[str]:
        return [m.model.model_type.value for m in self.members]


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date, so that the same blend gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def blend_bundles(bundles: Sequence[Any], weights: Sequence[float]) -> Any:
    """One :class:`~arbor_ml.bundle.ModelBundle` serving the blend of ``bundles`` that were
    trained on the same data (same features, task, classes and target)."""
    from arbor_ml.bundle import ModelBundle

    if len(bundles) != len(weights) or not bundles:
        raise ValueError("one weight per bundle, at least one bundle")
    first = bundles[0]
    if any(b.signature != first.signature for b in bundles):
        raise ValueError("blended bundles must have the same signature")
    shared = shared_preprocessor([b.preprocessor for b in bundles])
    model = EnsembleModel.blend(
        [(b.model, b.preprocessor, w, None) for b, w in zip(bundles, weights, strict=True)],
        shared,
    )
    metadata = dict(first.metadata) | {
        "model_type": model.model_type.value,
        "library": {"name": model.library, "version": None},
        "blend": {"members": [b.model_type.value for b in bundles], "weights": list(weights)},
    }
    metadata.pop("feature_importance", None)  # the first member's: not the blend's
    return ModelBundle(
        model=model,
        preprocessor=shared,
        postprocessor=first.postprocessor,
        signature=first.signature,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- margins


def output_from_margin(task: TaskType, margin: np.ndarray) -> np.ndarray:
    """What ``predict_output`` returns for a margin: class probabilities ``(n, K)`` (the
    logistic or softmax link), or the regression values themselves."""
    margin = np.asarray(margin, dtype=np.float64)
    if task is TaskType.BINARY:
        p1 = np.exp(-np.logaddexp(0.0, -margin.reshape(-1)))
        return np.column_stack([1.0 - p1, p1])
    if task is TaskType.MULTICLASS:
        shifted = margin - margin.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    return margin.reshape(-1)


def margin_from_output(task: TaskType, output: np.ndarray) -> np.ndarray:
    """The margin behind model outputs, up to what the link ignores (a per-row constant for
    softmax): log-odds of the positive class, log-probabilities, or the values."""
    output = np.asarray(output, dtype=np.float64)
    if task is TaskType.BINARY:
        p1 = np.clip(output[:, 1] if output.ndim == 2 else output, PROBABILITY_EPS, 1.0)
        p1 = np.minimum(p1, 1.0 - PROBABILITY_EPS)
        return np.log(p1) - np.log1p(-p1)
    if task is TaskType.MULTICLASS:
        return np.log(np.clip(output, PROBABILITY_EPS, 1.0))
    return output.reshape(-1)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Blend:
    """What :func:`select_blend` chose: weights by candidate (summing to 1, largest first),
    the blend's validation value and the best single candidate's."""

    weights: dict[int, float]
    value: float
    single_value: float

    @property
    def members(self) -> list[int]:
        return list(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": {str(k): w for k, w in self.weights.items()},
            "validation_value": self.value,
            "best_single_value": self.single_value,
        }


def select_blend(
    margins: Mapping[int, np.ndarray],
    score: Callable[[np.ndarray], float],
    *,
    maximize: bool,
    most: int,
    steps: int = SELECTION_STEPS,
    allowed: Callable[[Sequence[int]], bool] | None = None,
) -> Blend:
    """Greedy forward selection with replacement over ``margins`` (candidate -> validation
    margins), ``score`` judging a blend's margins.

    At most ``most`` distinct candidates are used, and a set of them must pass ``allowed``
    (the time the final fit has for their refits). The step with the best value wins; ties
    keep the earlier (smaller) blend, so a blend no better than the best candidate is that
    candidate alone.
    """
    if not margins:
        raise ValueError("no candidates to blend")

    def better(a: float, b: float) -> bool:
        if not math.isfinite(a):
            return False
        if not math.isfinite(b):
            return True
        return a > b if maximize else a < b

    singles = {k: score(m) for k, m in margins.items()}
    start = next(iter(margins))
    for k, v in singles.items():
        if better(v, singles[start]):
            start = k
    counts: dict[int, int] = {start: 1}
    total = np.array(margins[start], dtype=np.float64, copy=True)
    best_value, best_counts = singles[start], dict(counts)
    for _ in range(max(steps - 1, 0)):
        n = sum(counts.values())
        step: tuple[float, int] | None = None
        full = len(counts) >= most
        for k, m in margins.items():
            if full and k not in counts:
                continue
            if k not in counts and allowed is not None and not allowed([*counts, k]):
                continue
            value = score((total + m) / (n + 1))
            if step is None or better(value, step[0]):
                step = (value, k)
        if step is None:
            break
        value, k = step
        counts[k] = counts.get(k, 0) + 1
        total += margins[k]
        # by more than rounding: a repeat of one member is that member again
        if better(value, best_value) and abs(value - best_value) > 1e-12 * abs(best_value):
            best_value, best_counts = value, dict(counts)
    n = sum(best_counts.values())
    weights = {k: c / n for k, c in sorted(best_counts.items(), key=lambda kv: -kv[1])}
    return Blend(weights=weights, value=best_value, single_value=singles[start])


#: Trials a :class:`ValidationPool` keeps (the best by validation value): more only slows the
#: selection down and gives it more ways to fit the validation part's noise.
POOL_SIZE = 16


@dataclass
class ValidationPool:
    """The validation (out-of-fold) outputs of a study's trials, to choose a blend from.

    Every trial is scored on the same rows in the same order (``y``; model space), which the
    train/validation cut and the cross-validation folds guarantee.
    """

    task: TaskType
    metric: str
    maximize: bool
    y: np.ndarray
    weights: np.ndarray | None = None
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)
    #: what each trial's model is (its library) and what refitting it costs (seconds)
    kinds: dict[int, str] = field(default_factory=dict)
    costs: dict[int, float] = field(default_factory=dict)
    #: the trial's own model, where it made ``outputs`` (no cross-validation): a blend of
    #: these needs no refit
    models: dict[int, TrainedModel] = field(default_factory=dict)

    def add(
        self,
        trial: int,
        value: float,
        output: np.ndarray,
        kind: str,
        cost: float,
        model: TrainedModel | None = None,
    ) -> None:
        """Keep a trial's outputs (and model) if they cover the rows and it is among the best."""
        if output.shape[0] != self.y.shape[0] or not math.isfinite(value):
            return
        self.outputs[trial], self.values[trial] = output, value
        self.kinds[trial], self.costs[trial] = kind, cost
        if model is not None:
            self.models[trial] = model
        if len(self.values) > POOL_SIZE:
            worst = (min if self.maximize else max)(self.values, key=self.values.__getitem__)
            for kept in (self.values, self.outputs, self.kinds, self.costs, self.models):
                kept.pop(worst, None)

    def likely_cost(self, best: int, most: int, limit: float = math.inf) -> float:
        """What refitting a blend of ``best`` and the best trial of each other kind (up to
        ``most`` in all) would cost: the time a study keeps for its final fit.

        Within ``limit`` seconds: the other kinds join in the order of their best value, one
        whose refit would go past the limit is left out and the next is tried. Why: the
        blend's best partner is often the costly one (a CatBoost trial beside a LightGBM best:
        diamonds, 14 of the 19 s), and leaving the whole blend out of the reserve because the
        cheap third member tipped it over a third of the budget left no room for that partner
        at the end (blends of LightGBM and XGBoost alone, 525 and 531 against 518 to 520).
        """
        by_kind: dict[str, int] = {}
        for k in sorted(self.values, key=self.values.__getitem__, reverse=self.maximize):
            if k != best and self.kinds[k] != self.kinds.get(best):
                by_kind.setdefault(self.kinds[k], k)
        total = self.costs.get(best, 0.0)
        joined = 1
        for k in by_kind.values():
            if joined >= most:
                break
            if total + self.costs[k] <= limit:
                total += self.costs[k]
                joined += 1
        return total

    def score(self, margin: np.ndarray) -> float:
        return compute_metric(
            self.metric, self.y, output_from_margin(self.task, margin), weights=self.weights
        )

    def select(self, *, most: int, allowed: Callable[[Sequence[int]], bool] | None = None) -> Blend:
        """The blend of kept trials that scores best here (:func:`select_blend`)."""
        margins = {k: margin_from_output(self.task, o) for k, o in self.outputs.items()}
        return select_blend(margins, self.score, maximize=self.maximize, most=most, allowed=allowed)

    def blended_margin(self, weights: Mapping[int, float]) -> np.ndarray:
        margin = sum(w * margin_from_output(self.task, self.outputs[k]) for k, w in weights.items())
        return np.asarray(margin)

    def blended_output(self, weights: Mapping[int, float]) -> np.ndarray:
        """The blend's outputs on these rows (for its decision threshold and metrics)."""
        return output_from_margin(self.task, self.blended_margin(weights))


def shared_preprocessor(preprocessors: Sequence[Preprocessor]) -> Preprocessor:
    """The preprocessing a blend reads: one that gives category codes, which a CatBoost
    member's strings can be recovered from (and the first when none does)."""
    return next((p for p in preprocessors if p.categorical_output == "codes"), preprocessors[0])


def member_categories(preprocessor: Preprocessor) -> dict[str, list[str]]:
    """Per categorical feature, its values in code order with the unknown category last:
    what turns a codes frame back into the strings a CatBoost member was trained on."""
    return {
        column: [value for value, _ in sorted(codes.items(), key=lambda kv: kv[1])]
        for column in preprocessor.categorical_features
        if (codes := preprocessor.category_codes(column))
    }
