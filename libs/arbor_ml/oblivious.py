"""Small-batch CatBoost prediction in numpy: the model's oblivious trees as flat arrays.

Why: ``CatBoost.predict`` costs ~0.3 ms per call before it looks at a row (argument checks,
a pool, its calcer's set-up), which dominates a one-row request. A symmetric (oblivious)
tree is one feature/border pair per level, so a batch is a handful of array operations:
``bits = x[:, feature] > border``, ``leaf = sum(bits << level)``, gather the leaf values,
sum over trees, ``scale * sum + bias``. For a few rows that is tens of microseconds.

What it replays (and refuses otherwise): numeric features only, symmetric trees, CatBoost's
float32 comparison (``value > border``; a value equal to a border goes left) and each
feature's NaN treatment from the model (``nan_mode`` Min: NaN is below every border, Max:
above). Categorical, text and embedding features, CTRs, non-symmetric trees, split types
other than float features and any model-JSON field it does not know are refused: the
caller keeps using ``CatBoost.predict``. Trees are summed in model order, as CatBoost does,
so raw values are the same floats (checked at build; the allowed difference is 1e-6).

Where a C compiler is (the one ``arbor_ml.compiled`` uses), the trees are walked by one small
C function instead (:func:`native_evaluator`: model-independent, built once per machine into
the compiled-inference cache): the same float32 comparisons and the same tree-by-tree sums,
without numpy's temporaries; one row of 300 trees in a few microseconds instead of ~30.
Without a compiler, or with ``ARBOR_COMPILED_INFERENCE=off``, the numpy code runs.

Use::

    predictor = build_checked(native, "Probability")   # None (logged) when not replicable
    predictor.predict(x)                               # == native.predict(x, "Probability")
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("arbor_ml.oblivious")

#: Largest allowed |ours - CatBoost| / max(1, |CatBoost|) on the check rows.
TOLERANCE = 1e-6
#: Rows compared with CatBoost at build time.
CHECK_ROWS = 512
#: Prediction types replayed, and the losses whose ``Probability`` is replayed.
PREDICTION_TYPES = ("RawFormulaVal", "Probability")
_SIGMOID_LOSSES = ("Logloss", "CrossEntropy")
_SOFTMAX_LOSSES = ("MultiClass",)

_TOP_KEYS = {"features_info", "model_info", "oblivious_trees", "scale_and_bias"}
_FEATURE_KEYS = {
    "borders",
    "feature_id",
    "feature_index",
    "flat_feature_index",
    "has_nans",
    "nan_value_treatment",
}
_TREE_KEYS = {"leaf_values", "leaf_weights", "splits"}
_SPLIT_KEYS = {"border", "float_feature_index", "split_index", "split_type"}
_NAN_TREATMENTS = ("AsIs", "AsFalse", "AsTrue")
#: uint64 holding 8 bytes that are each 0 or 1, times this, >> 56: byte k becomes bit k
_GATHER_BITS = np.uint64(0x0102040810204080)


class Unsupported(Exception):
    """The model uses something this predictor does not replay exactly."""


# --------------------------------------------------------------------------- C evaluator

_EVALUATOR_C = r"""
#include <math.h>
#include <stdint.h>

/* Oblivious trees over a row-major float32 matrix: tree t's level s tests feature
   feat[t * slots + s] > border[t * slots + s] (NaN: false, or true where nan_true says so);
   the bits pick leaf (t << depth) + index of dim doubles, summed tree after tree into out
   (n x dim). Padding levels have border +inf: their bit is always 0. */
int32_t arbor_oblivious_raw(const float* x, int64_t n, int64_t n_features, int64_t n_trees,
                            int32_t slots, int32_t depth, const int64_t* feat,
                            const float* border, const uint8_t* nan_true,
                            const double* leaves, int32_t dim, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * n_features;
    double* o = out + i * dim;
    for (int32_t d = 0; d < dim; ++d) o[d] = 0.0;
    for (int64_t t = 0; t < n_trees; ++t) {
      const int64_t base = t * slots;
      uint64_t index = 0;
      for (int32_t s = 0; s < slots; ++s) {
        const float v = row[feat[base + s]];
        uint64_t bit = v > border[base + s];
        if (nan_true != 0 && nan_true[base + s] && isnan(v)) bit = 1;
        index |= bit << s;
      }
      const double* leaf = leaves + ((t << depth) + (int64_t)index) * dim;
      for (int32_t d = 0; d < dim; ++d) o[d] += leaf[d];
    }
  }
  return 0;
}
"""

_evaluator_lock = threading.Lock()
_evaluator: list[Any] = []  # [] not tried yet, [None] unavailable, [fn] built


def native_evaluator() -> Any | None:
    """The C function ``arbor_oblivious_raw`` (built on first use into the compiled-inference
    cache, reused from there after), or None without a compiler or with compiled inference
    off (the numpy code then runs)."""
    if _evaluator:
        return _evaluator[0]
    with _evaluator_lock:
        if not _evaluator:
            _evaluator.append(_load_evaluator())
    return _evaluator[0]


def _load_evaluator() -> Any | None:
    from arbor_ml import compiled

    if compiled.mode() == "off":
        return None
    cc = compiled.compiler()
    tag = hashlib.sha256(f"{_EVALUATOR_C}|{cc}|{platform.machine()}".encode()).hexdigest()[:16]
    target = compiled.default_cache_dir() / f"oblivious-{tag}.so"
    try:
        if not target.exists():
            if cc is None:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="arbor-oblivious-", dir=target.parent) as tmp:
                source = Path(tmp) / "oblivious.c"
                source.write_text(_EVALUATOR_C)
                built = Path(tmp) / "oblivious.so"
                error = compiled._run(
                    [cc, "-shared", *compiled.OPT_FLAGS, "-o", str(built), str(source), "-lm"]
                )
                if error:
                    raise RuntimeError(f"compiler failed: {error}")
                os.replace(built, target)
        fn = compiled._dlopen(target).arbor_oblivious_raw
    except Exception:
        log.warning("oblivious trees in numpy: the C evaluator is unavailable", exc_info=True)
        return None
    fn.restype = ctypes.c_int32
    fn.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int32,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_void_p,
    ]
    return fn


class ObliviousPredictor:
    """``predict(x)`` equal to ``CatBoost.predict(x, prediction_type)`` for a numeric matrix."""

    def __init__(self, model_json: dict[str, Any], n_features: int, prediction_type: str) -> None:
        unknown = set(model_json) - _TOP_KEYS
        if unknown:
            raise Unsupported(f"model fields {sorted(unknown)}")
        features = model_json.get("features_info", {})
        if set(features) - {"float_features"}:
            raise Unsupported(f"feature kinds {sorted(set(features) - {'float_features'})}")
        params = model_json.get("model_info", {}).get("params", {})
        policy = params.get("tree_learner_options", {}).get("grow_policy", "SymmetricTree")
        if policy != "SymmetricTree":
            raise Unsupported(f"grow_policy {policy}")
        if prediction_type not in PREDICTION_TYPES:
            raise Unsupported(f"prediction type {prediction_type}")

        column: dict[int, int] = {}  # float_feature_index -> input column
        nan_true: dict[int, bool] = {}  # NaN goes right ("AsTrue", nan_mode Max)
        for feature in features.get("float_features", []):
            if set(feature) - _FEATURE_KEYS:
                raise Unsupported(f"float feature fields {sorted(set(feature) - _FEATURE_KEYS)}")
            treatment = feature.get("nan_value_treatment", "AsIs")
            if treatment not in _NAN_TREATMENTS:
                raise Unsupported(f"nan_value_treatment {treatment}")
            flat = int(feature["flat_feature_index"])
            if not 0 <= flat < n_features:
                raise Unsupported(f"feature column {flat} of {n_features}")
            column[int(feature["feature_index"])] = flat
            nan_true[int(feature["feature_index"])] = treatment == "AsTrue"

        trees = model_json.get("oblivious_trees")
        if not trees:
            raise Unsupported("no oblivious trees")
        depth = max(len(t["splits"]) for t in trees)
        if depth > 16:
            raise Unsupported(f"depth {depth}")
        depth = max(depth, 1)
        dim = len(trees[0]["leaf_values"]) >> len(trees[0]["splits"])
        scale, bias = _scale_and_bias(model_json.get("scale_and_bias"), dim)

        n_trees = len(trees)
        # up to depth 8 each tree gets 8 level slots: its bits are then one uint64 per tree
        slots = 8 if depth <= 8 and sys.byteorder == "little" else depth
        feat = np.zeros((n_trees, slots), dtype=np.intp)
        border = np.full((n_trees, slots), np.inf, dtype=np.float32)  # padding: always 0
        right_on_nan = np.zeros((n_trees, slots), dtype=bool)
        leaves = np.zeros((n_trees, 1 << depth, dim), dtype=np.float64)
        for t, tree in enumerate(trees):
            if set(tree) - _TREE_KEYS:
                raise Unsupported(f"tree fields {sorted(set(tree) - _TREE_KEYS)}")
            splits = tree["splits"]
            for level, split in enumerate(splits):
                if set(split) - _SPLIT_KEYS or split.get("split_type") != "FloatFeature":
                    raise Unsupported(f"split {split.get('split_type')!r}")
                index = int(split["float_feature_index"])
                if index not in column:
                    raise Unsupported(f"split on unknown float feature {index}")
                feat[t, level] = column[index]
                border[t, level] = np.float32(split["border"])
                if float(border[t, level]) != float(split["border"]):
                    raise Unsupported("a border that is not a float32")
                right_on_nan[t, level] = nan_true[index]
            values = np.asarray(tree["leaf_values"], dtype=np.float64)
            if values.shape != ((1 << len(splits)) * dim,):
                raise Unsupported("leaf values do not match the tree's depth and dimension")
            leaves[t, : 1 << len(splits)] = values.reshape(-1, dim)

        self.n_features = n_features
        self.n_trees = n_trees
        self.depth = depth
        self.dim = dim
        self.prediction_type = prediction_type
        self._slots = slots
        self._feat = feat.reshape(-1)
        self._border = border.reshape(-1)
        self._nan_true = right_on_nan.reshape(-1) if right_on_nan.any() else None
        #: (T * 2**depth[, dim]): tree t's leaf i at t * 2**depth + i
        self._leaves: np.ndarray = leaves.reshape(-1) if dim == 1 else leaves.reshape(-1, dim)
        self._offsets = (np.arange(n_trees, dtype=np.intp) << depth)[:, None]  # (T, 1)
        self._weights = (1 << np.arange(slots)).astype(np.int64)
        self._scale = scale
        self._bias = bias
        self._transform = _transform(prediction_type, params, dim)
        #: batches predicted (lets a caller or a test see that this path is taken)
        self.calls = 0
        #: the C evaluator and the model's arrays as it reads them (None: numpy)
        self.native = native_evaluator()
        self._c_feat = np.ascontiguousarray(self._feat, dtype=np.int64)
        self._c_border = np.ascontiguousarray(self._border, dtype=np.float32)
        self._c_nan = (
            None if self._nan_true is None else np.ascontiguousarray(self._nan_true, np.uint8)
        )
        self._c_leaves = np.ascontiguousarray(self._leaves, dtype=np.float64)
        self._c_args = (
            n_features,
            n_trees,
            slots,
            depth,
            self._c_feat.ctypes.data,
            self._c_border.ctypes.data,
            None if self._c_nan is None else self._c_nan.ctypes.data,
            self._c_leaves.ctypes.data,
            dim,
        )
        self._row_call: Any = None  # one row through the C evaluator (``predict_row``)
        if self.native is not None:
            from arbor_ml.compiled import RowCall

            # float32 buffer: the values as CatBoost compares them (np.float32(v))
            self._row_call = RowCall(self.native, n_features, dim, self._c_args, ctypes.c_float)
        self._bias_list: list[float] = self._bias.tolist()
        loss = params.get("loss_function", {}).get("type")
        self._row_sigmoid = (
            prediction_type == "Probability" and dim == 1 and loss in _SIGMOID_LOSSES
        )

    def raw(self, x: np.ndarray) -> np.ndarray:
        """``RawFormulaVal`` as ``(n, dim)`` float64."""
        x32 = np.asarray(x, dtype=np.float32)
        if x32.ndim != 2 or x32.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) features, got {x32.shape}")
        n = x32.shape[0]
        if self.native is not None:
            x32 = np.ascontiguousarray(x32)
            out = np.empty((n, self.dim), dtype=np.float64)
            self.native(x32.ctypes.data, n, *self._c_args, out.ctypes.data)
            return self._scaled(out)
        values = np.take(x32, self._feat, axis=1)  # (n, T*slots), C order (x[:, i] is not)
        bits = values > self._border  # NaN compares False: "AsFalse" and "AsIs"
        if self._nan_true is not None:
            bits |= np.isnan(values) & self._nan_true
        leaf: np.ndarray
        if self._slots == 8:  # 8 bools (0/1 bytes) per tree -> their bits, one multiply
            leaf = (bits.view(np.uint64) * _GATHER_BITS) >> np.uint64(56)  # (n, T)
        else:
            leaf = bits.reshape(n, self.n_trees, self._slots).astype(np.int64) @ self._weights
        # (T, n[, dim]) in C order: the sum below runs over its outer axis
        gathered = self._leaves[leaf.T.astype(np.intp, order="C") + self._offsets]
        # CatBoost adds the trees one after another. Summing over the outer axis of (T, m)
        # does the same; with m == 1 numpy would add pairwise, so cumsum keeps the order.
        if (gathered[0].size > 1 and gathered.flags.c_contiguous) or self.n_trees == 1:
            total = gathered.sum(axis=0)
        else:
            total = np.cumsum(gathered, axis=0)[-1]
        return self._scaled(total.reshape(n, self.dim))

    def predict_row(self, row: Sequence[float]) -> list[float] | None:
        """``predict`` of one row of floats, as a list of floats (row 0 of ``predict``; one
        value for a single-output raw prediction), through the C
        evaluator with buffers of its own; None without it, or while another thread is in
        the buffers (the caller then takes ``predict``)."""
        raw = None if self._row_call is None else self._row_call(row)
        if raw is None:
            return None
        self.calls += 1
        scale, bias = self._scale, self._bias_list
        if scale != 1.0:
            raw = [v * scale for v in raw]
        raw = [v + b for v, b in zip(raw, bias, strict=True)]
        if self._row_sigmoid:
            p1 = 1.0 / (1.0 + np.exp(-np.float64(raw[0])))  # numpy's exp, as ``predict``'s
            return [float(1.0 - p1), float(p1)]
        if self.prediction_type == "RawFormulaVal":
            return raw
        return self._transform(np.array([raw], dtype=np.float64))[0].tolist()  # type: ignore[no-any-return]

    def _scaled(self, total: np.ndarray) -> np.ndarray:
        if self._scale != 1.0:
            total *= self._scale
        total += self._bias
        self.calls += 1
        return total

    def predict(self, x: np.ndarray) -> np.ndarray:
        """What ``CatBoost.predict(x, prediction_type=...)`` returns, as float64."""
        return self._transform(self.raw(x))


def _scale_and_bias(value: Any, dim: int) -> tuple[float, np.ndarray]:
    if value is None:
        return 1.0, np.zeros(dim)
    scale, bias = value
    bias = np.asarray(bias if isinstance(bias, list) else [bias], dtype=np.float64)
    if bias.shape == (1,) and dim > 1 and bias[0] == 0.0:
        bias = np.zeros(dim)
    if bias.shape != (dim,):
        raise Unsupported(f"bias of shape {bias.shape} for {dim} outputs")
    return float(scale), bias


def _transform(prediction_type: str, params: dict[str, Any], dim: int) -> Any:
    """raw (n, dim) -> CatBoost's output for ``prediction_type``."""
    if prediction_type == "RawFormulaVal":
        if dim == 1:
            return lambda raw: raw.reshape(-1)
        return lambda raw: raw
    loss = params.get("loss_function", {}).get("type")
    if dim == 1 and loss in _SIGMOID_LOSSES:

        def sigmoid(raw: np.ndarray) -> np.ndarray:
            p1 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            out = np.empty((raw.shape[0], 2))
            out[:, 1] = p1
            np.subtract(1.0, p1, out=out[:, 0])
            return out

        return sigmoid
    if dim > 1 and loss in _SOFTMAX_LOSSES:

        def softmax(raw: np.ndarray) -> np.ndarray:
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            e /= e.sum(axis=1, keepdims=True)
            return e

        return softmax
    raise Unsupported(f"Probability for loss {loss} with {dim} outputs")


# --------------------------------------------------------------------------- build and check


def model_json(native: Any) -> dict[str, Any]:
    """The model as CatBoost's own JSON export (refused by CatBoost for CTR models)."""
    with tempfile.TemporaryDirectory(prefix="arbor-cb-") as tmp:
        path = Path(tmp) / "model.json"
        native.save_model(str(path), format="json")
        return json.loads(path.read_text())


def check_rows(predictor: ObliviousPredictor, rows: int = CHECK_ROWS, seed: int = 0) -> np.ndarray:
    """Rows on, just below and just above the model's borders, NaN, infinities and noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, (rows, predictor.n_features)).astype(np.float32)
    feat, border = predictor._feat, predictor._border
    for j in range(predictor.n_features):
        b = np.unique(border[(feat == j) & np.isfinite(border)])
        if b.size == 0:
            continue
        inf = np.float32(np.inf)
        with np.errstate(over="ignore"):  # the float32 neighbours of the largest borders
            near = [np.nextafter(b, -inf), np.nextafter(b, inf)]
        pool = np.concatenate([b, *near, [np.nan, -inf, inf, 0.0]]).astype(np.float32)
        pick = rng.random(rows) < 0.8
        x[pick, j] = rng.choice(pool, int(pick.sum()))
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def max_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max(1, |theirs|); inf when shapes or NaNs differ."""
    if ours.shape != theirs.shape or not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return float("inf")
    if ours.size == 0:
        return 0.0
    scale = np.maximum(1.0, np.abs(np.nan_to_num(theirs)))
    return float(np.nanmax(np.abs(ours - theirs) / scale, initial=0.0))


def build(native: Any, prediction_type: str) -> ObliviousPredictor:
    """A predictor for ``native`` (a fitted ``CatBoost``), checked; raises ``Unsupported``."""
    if (
        native.get_cat_feature_indices()
        or _has(native, "get_text_feature_indices")
        or _has(native, "get_embedding_feature_indices")
    ):
        raise Unsupported("categorical, text or embedding features")
    n_features = len(native.feature_names_)
    try:
        exported = model_json(native)
    except Exception as exc:  # CatBoost refuses the JSON export of some models (CTRs)
        raise Unsupported(f"no JSON export: {exc}") from exc
    predictor = ObliviousPredictor(exported, n_features, prediction_type)
    if predictor.n_trees != native.tree_count_:
        raise Unsupported(f"{predictor.n_trees} trees read, the model has {native.tree_count_}")
    x = check_rows(predictor)
    for kind, ours in (
        ("RawFormulaVal", predictor.raw(x)),
        (prediction_type, predictor.predict(x)),
    ):
        theirs = np.asarray(
            native.predict(x, prediction_type=kind, thread_count=1), dtype=np.float64
        )
        if kind == "RawFormulaVal":
            theirs = theirs.reshape(ours.shape)
        difference = max_difference(ours, theirs)
        if difference > TOLERANCE:
            raise Unsupported(f"{kind} differs from CatBoost by {difference:.3g}")
    predictor.calls = 0
    return predictor


def _has(native: Any, method: str) -> bool:
    getter = getattr(native, method, None)
    return bool(getter()) if getter is not None else False


def build_checked(native: Any, prediction_type: str) -> ObliviousPredictor | None:
    """:func:`build`, or None with one log line saying why CatBoost's predict stays."""
    try:
        predictor = build(native, prediction_type)
    except Unsupported as exc:
        log.info("oblivious predictor off for this model: %s", exc)
        return None
    except Exception as exc:
        log.warning("oblivious predictor off for this model: %r", exc)
        return None
    log.info(
        "oblivious predictor on: %d trees, depth %d, %d outputs",
        predictor.n_trees,
        predictor.depth,
        predictor.dim,
    )
    return predictor


__all__ = [
    "ObliviousPredictor",
    "Unsupported",
    "build",
    "build_checked",
    "check_rows",
    "max_difference",
    "model_json",
]
