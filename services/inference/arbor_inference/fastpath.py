"""Small batches without Polars: the saved preprocessing replayed in numpy, the model called
natively. Same numbers as ``ModelBundle.predict_raw``, a fraction of the fixed cost.

Why: building a 30-column Polars frame and running the preprocessing's ``select`` costs about
a millisecond of fixed overhead per call, more than the model itself for one row. Large
batches still take the Polars path (its per-row cost is what matters there).

For LightGBM and XGBoost, when the ML core has attached a compiled predictor
(``arbor_ml.compiled``: the trees as native code, self-checked against the library), the
replay calls it exactly as the model's own ``predict_output`` would, so both paths keep
giving the same numbers before and after it is attached. For CatBoost models with numeric
features only, batches of up to :data:`OBLIVIOUS_TREE_ROWS` / trees rows go through
``arbor_ml.oblivious`` (the symmetric trees as numpy arrays, checked against CatBoost when
built): ``CatBoost.predict`` has ~0.3 ms of fixed cost per call, the arrays ~0.05 ms for one
row; from about 64 rows (300 trees) CatBoost's own evaluation is faster, so larger batches
use it.

A blend (``arbor_ml.ensemble``) replays the same way: each member is called natively for its
margin (compiled LightGBM/XGBoost, a CatBoost member's own numpy predictor for small batches
of numeric data), the margins weighted as ``EnsembleModel.predict_margin`` weights them: one
row of a three-library blend of 300-tree models in 45 µs, against 1.28 ms through Polars
(``bench/bench_blend.py``).

The replay covers numeric, boolean and categorical columns (datetime parts fall back to
Polars) and the three libraries. A model without categorical columns can use it for batches
of any size (pure numpy, no per-row Python); with categoricals only small batches do, since
its category lookup is per value. Trust comes from a check, not from reading code twice:
``FastPath.build`` runs both paths on synthetic rows (fill values, nulls, unseen and missing
categories) and only enables the fast path when the outputs are equal; otherwise it logs why
and every batch takes the Polars path.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from arbor_inference.inputs import InputSpec, NumericColumn, Table
from arbor_ml import ModelBundle, TaskType
from arbor_ml.preprocessing import ColumnSpec as PreSpec

log = logging.getLogger("arbor.inference.fastpath")

#: Rows used for the equivalence check at load time.
CHECK_ROWS = 24
#: Up to this many rows the libraries run on one thread (starting threads costs more).
SMALL_BATCH = 512
#: CatBoost up to this many rows: one thread (starting its threads costs more than they save);
#: larger batches use the threads the service grants (``domain.CoreShare``: all cores while
#: the batch runs alone; 10,000 rows on 2 idle cores: 5.0 ms on one thread, 2.9 to 3.7 ms on
#: two).
CATBOOST_ONE_THREAD_ROWS = 4_096
#: XGBoost from this many rows: its own predictor, not the compiled code. XGBoost's block
#: predictor overtakes the compiled nested ``if``s between 256 and 512 rows (300 trees, one
#: thread: 1.30 vs 1.40 ms at 512 rows, 22.3 vs 28.5 ms at 10,000); below, the compiled code
#: wins by far (16 rows: 0.013 vs 0.170 ms).
XGBOOST_LIBRARY_ROWS = 512
#: CatBoost batches of up to this many rows x trees use ``arbor_ml.oblivious`` when the model
#: allows it. Its cost grows with rows x trees, CatBoost's is mostly fixed up to ~100 rows;
#: measured crossover (depth 6, one thread): ~64 to 100 rows at 300 trees, ~25 at 1,000.
OBLIVIOUS_TREE_ROWS = 16_384


class Unsupported(Exception):
    """The bundle uses something the fast path does not replay."""


class FastPath:
    """``predict_raw(table)`` for a validated table; build with :meth:`build`."""

    def __init__(self, bundle: ModelBundle, spec: InputSpec, *, oblivious: bool = False) -> None:
        pre = bundle.preprocessor
        self._numeric: list[tuple[str, float]] = []
        self._categorical: list[tuple[str, Callable[[list[Any]], list[Any]]]] = []
        for column in (c for c in pre.columns if c.kind in ("numeric", "boolean")):
            fill = np.nan if column.fill is None else float(column.fill)
            self._numeric.append((column.name, fill))
        if any(c.kind == "datetime" for c in pre.columns):
            raise Unsupported("datetime columns")
        codes = pre.categorical_output != "string"
        for column in (c for c in pre.columns if c.kind == "categorical"):
            self._categorical.append((column.name, _category_encoder(column, pre, codes)))
        self._codes = codes
        self._spec = spec
        #: without categorical columns the replay is pure numpy at any batch size
        self.numeric_only = not self._categorical
        #: the features are exactly the input columns, in order: a decoded matrix is used as is
        self.direct = self.numeric_only and [n for n, _ in self._numeric] == spec.names
        #: small CatBoost batches may use ``arbor_ml.oblivious`` (numeric features only)
        self.allow_oblivious = oblivious and self.numeric_only
        #: ``arbor_ml.oblivious`` predictor for small CatBoost batches (None: CatBoost's own)
        self.oblivious: Any = None
        #: batches up to this many rows use ``self.oblivious`` (54 for 300 trees)
        self.oblivious_max_rows = 0
        #: a blend's members' own (``_blend``)
        self.member_slots: list[_ObliviousSlot] = []
        if self.allow_oblivious and bundle.model.library == "catboost":
            self.oblivious, self.oblivious_max_rows = _oblivious_for(
                bundle.model.native,
                bundle.model.output_prediction_type,  # type: ignore[attr-defined]
            )
        self._predict = _predictor(bundle, self)
        self.n_features = len(pre.feature_names)
        #: a single LightGBM/XGBoost model: one row may go straight to its compiled function
        self._model = bundle.model
        self._task = bundle.model.task
        single = getattr(bundle.model, "members", None) is None
        self._row_library = bundle.model.library if single else None
        #: what a decoded matrix of doubles may be read as: float32 for a single CatBoost or
        #: XGBoost model taking the matrix as is (both compare float32 features; their
        #: predictors cast to float32 first thing), float64 otherwise
        self.matrix_dtype: type[np.floating[Any]] = (
            np.float32
            if self.direct and self._row_library in ("catboost", "xgboost")
            else np.float64
        )

    @classmethod
    def build(
        cls, bundle: ModelBundle, spec: InputSpec, *, oblivious: bool = False
    ) -> FastPath | None:
        """A checked fast path, or None (logged) when it is unsupported or disagrees.

        ``oblivious``: small CatBoost batches use ``arbor_ml.oblivious`` where it replicates
        the model (numeric features only); the check below then covers it too.
        """
        # the check feeds nulls everywhere, so it validates against an all-nullable spec
        relaxed = InputSpec.of(replace(c, nullable=True) for c in spec.columns)
        try:
            fast = cls(bundle, spec, oblivious=oblivious)
            sample = synthetic_frame(bundle, relaxed, CHECK_ROWS)
            expected = bundle.predict_raw(sample)
            actual = fast.predict_raw(Table.from_frame(sample, relaxed))
        except Unsupported as exc:
            log.info("fast path off for this model: %s", exc)
            return None
        except Exception as exc:
            log.warning("fast path off for this model: self-check failed: %r", exc)
            return None
        if expected.shape != actual.shape or not np.allclose(
            expected, actual, rtol=1e-9, atol=1e-12, equal_nan=True
        ):
            log.warning(
                "fast path off for this model: it disagrees with the Polars path",
                extra={"max_abs_diff": float(np.nanmax(np.abs(expected - actual)))},
            )
            return None
        return fast

    def predict_raw(self, table: Table, threads: int = 1) -> np.ndarray:
        """Raw outputs; the model call of a large batch may use ``threads`` threads."""
        n = table.height
        if self.direct and table.matrix is not None:  # all present: no fills to apply
            return self._predict(table.matrix.T, [], n, threads)
        columns = [table.columns[name] for name, _ in self._numeric]
        if not all(isinstance(c, NumericColumn) for c in columns):
            raise Unsupported("a numeric feature is not a numeric column")
        if columns:  # one C call for the block, then fills only where values are missing
            numeric = np.array([c.values for c in columns], dtype=np.float64).T  # type: ignore[union-attr]
            for j, (column, (_, fill)) in enumerate(zip(columns, self._numeric, strict=True)):
                if column.mask is not None:  # type: ignore[union-attr]
                    numeric[column.mask, j] = fill  # type: ignore[union-attr]
        else:
            numeric = np.empty((n, 0), dtype=np.float64)
        categorical: list[list[Any]] = []
        for name, encode in self._categorical:
            column = table.columns[name]
            values = column.to_list() if isinstance(column, pl.Series) else _numeric_as_list(column)
            categorical.append(encode(values))
        return self._predict(numeric, categorical, n, threads)

    def predict_row(self, row: Sequence[float]) -> list[float] | None:
        """One row of the signature's columns, all present and finite, in its order -> the
        row's raw outputs as floats, exactly ``predict_raw``'s row 0; None for a model whose
        features are not those columns as they are.

        A compiled LightGBM/XGBoost model takes the row through its C function with buffers
        of its own (``CompiledPredictor.row``: no numpy on the way), a CatBoost model through the C
        evaluator of its oblivious trees (``ObliviousPredictor.predict_row``); anything else
        through the predictor ``predict_raw`` uses, on a one-row matrix.
        """
        if not self.direct:
            return None
        if self._row_library in ("lightgbm", "xgboost"):
            out = self._compiled_row(row)
            if out is not None:
                return out
        elif self._row_library == "catboost" and self.oblivious is not None:
            out = self.oblivious.predict_row(row)  # the model's output type, as ``predict``
            if out is not None:
                return out
        raw = self._predict(np.array(row, dtype=np.float64).reshape(1, -1), [], 1, 1)
        return raw[0].tolist() if raw.ndim == 2 else raw.tolist()

    def _compiled_row(self, row: Sequence[float]) -> list[float] | None:
        compiled = self._model.compiled  # attached (or detached) at any time
        if compiled is None:
            return None
        if self._row_library == "xgboost":
            row = array("f", row)  # what its fast path feeds it: float32 values (as doubles)
        out = compiled.row(row)
        if out is not None and self._task is TaskType.BINARY and len(out) == 1:
            return [1.0 - out[0], out[0]]  # as ``shape`` makes both columns of (n, 1)
        return out


def _numeric_as_list(column: NumericColumn) -> list[Any]:
    values = column.values.tolist()
    if column.mask is not None:
        for i in np.flatnonzero(column.mask):
            values[i] = None
    return values


def _category_encoder(column: PreSpec, pre: Any, codes: bool) -> Callable[[list[Any]], list[Any]]:
    """Value list -> codes (or strings), exactly as ``Preprocessor._encode`` does it."""
    if column.dtype not in ("String", "Categorical", "Enum") and not column.dtype.startswith(
        ("Int", "UInt")
    ):
        raise Unsupported(f"categorical column {column.name!r} of dtype {column.dtype}")
    vocabulary = list(column.categories)
    missing, unknown = pre.missing_category, pre.unknown_category
    as_text = str if column.dtype.startswith(("Int", "UInt")) else (lambda v: v)
    if codes:
        index = {value: i for i, value in enumerate(vocabulary)}
        n_vocab = len(vocabulary)
        missing_code = index.get(missing, n_vocab)

        def encode_codes(values: list[Any]) -> list[Any]:
            return [missing_code if v is None else index.get(as_text(v), n_vocab) for v in values]

        return encode_codes
    known = set(vocabulary)
    missing_text = missing if missing in known else unknown

    def encode_text(values: list[Any]) -> list[Any]:
        out = []
        for v in values:
            if v is None:
                out.append(missing_text)
            else:
                text = as_text(v)
                out.append(text if text in known else unknown)
        return out

    return encode_text


# --------------------------------------------------------------------------- native calls

#: ``(numeric, categorical, rows, threads) -> raw outputs``
Predictor = Callable[[np.ndarray, list[list[Any]], int, int], np.ndarray]


def _predictor(bundle: ModelBundle, fast: FastPath) -> Predictor:
    members = getattr(bundle.model, "members", None)  # arbor_ml.ensemble.EnsembleModel
    return _native_predictor(bundle.model, fast) if members is None else _blend(bundle, fast)


def _oblivious_for(native: Any, prediction_type: str) -> tuple[Any, int]:
    """A CatBoost model's checked numpy predictor and the batch size up to which it is
    faster than CatBoost's own predict; (None, 0) when it cannot replicate the model."""
    from arbor_ml.oblivious import build_checked

    predictor = build_checked(native, prediction_type)
    if predictor is None:
        return None, 0
    return predictor, max(1, OBLIVIOUS_TREE_ROWS // predictor.n_trees)


@dataclass
class _ObliviousSlot:
    """Where a predictor finds its model's numpy predictor (a blend member's own; a single
    model's is its :class:`FastPath`): dropped on its first failure."""

    oblivious: Any = None
    oblivious_max_rows: int = 0


def _blend(bundle: ModelBundle, fast: FastPath) -> Predictor:
    """A blend's members called natively for their margins, weighted as
    ``EnsembleModel.predict_margin`` weights them; a CatBoost member trained on category
    strings gets them back from the codes."""
    from arbor_ml.ensemble import output_from_margin

    model = bundle.model
    parts = []
    for member in model.members:  # type: ignore[attr-defined]
        strings = None
        if member.categories:
            strings = [list(member.categories[name]) for name in model.categorical_features]
        slot = _ObliviousSlot()
        if fast.allow_oblivious and member.model.library == "catboost":
            slot.oblivious, slot.oblivious_max_rows = _oblivious_for(
                member.model.native, "RawFormulaVal"
            )
        fast.member_slots.append(slot)
        parts.append((member.weight, _native_predictor(member.model, slot, margin=True), strings))
    task = model.task

    def predict_blend(
        numeric: np.ndarray, categorical: list[list[Any]], n: int, threads: int
    ) -> np.ndarray:
        total: np.ndarray | None = None
        for weight, predict, strings in parts:
            member_categorical = categorical
            if strings is not None:
                member_categorical = [
                    [names[code] for code in codes]
                    for codes, names in zip(categorical, strings, strict=True)
                ]
            part = weight * predict(numeric, member_categorical, n, threads)
            total = part if total is None else total + part
        assert total is not None
        return output_from_margin(task, total)

    return predict_blend


def _native_predictor(
    model: Any, fast: FastPath | _ObliviousSlot, *, margin: bool = False
) -> Predictor:
    """The library's (or compiled) predict of ``model``: outputs, or margins (``margin``);
    ``fast.oblivious`` answers small CatBoost batches (built for the same output)."""
    task = model.task
    library = model.library
    native = model.native

    def shape(out: np.ndarray, n: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        if margin:
            return out.reshape(n, -1) if task is TaskType.MULTICLASS else out.reshape(-1)
        if task is TaskType.BINARY and (out.ndim == 1 or out.shape[-1] == 1):
            p1 = out.reshape(-1)
            both = np.empty((p1.shape[0], 2))  # column_stack's Python costs more at 1 row
            both[:, 1] = p1
            np.subtract(1.0, p1, out=both[:, 0])
            return both
        if task.is_classification:
            return out.reshape(n, -1)
        return out.reshape(-1)

    def stacked(numeric: np.ndarray, categorical: list[list[Any]], dtype: Any) -> np.ndarray:
        if not categorical:
            return np.ascontiguousarray(numeric, dtype=dtype)
        codes = np.asarray(categorical, dtype=dtype).T.reshape(numeric.shape[0], -1)
        return np.ascontiguousarray(np.hstack([numeric.astype(dtype), codes]))

    if library == "xgboost":
        # Boosters by thread count (copies: ``set_param`` on one shared by concurrent calls
        # would race); small batches on one thread, which costs less than starting threads.
        boosters: dict[int, Any] = {}

        def booster(threads: int) -> Any:
            found = boosters.get(threads)
            if found is None:
                found = native.copy()
                found.set_param({"nthread": threads})
                boosters[threads] = found
            return found

        booster(1)

        def predict_xgb(
            numeric: np.ndarray, categorical: list[list[Any]], n: int, threads: int
        ) -> np.ndarray:
            x = stacked(numeric, categorical, np.float32)  # what XGBoostModel.matrix gives
            compiled = model.compiled  # attached by arbor_ml.compiled, possibly later
            if compiled is not None and n < XGBOOST_LIBRARY_ROWS:
                return shape(compiled.predict(x, threads=threads, margin=margin), n)
            booster_n = booster(1 if n <= SMALL_BATCH else threads)
            kind = "margin" if margin else "value"
            return shape(booster_n.inplace_predict(x, predict_type=kind), n)

        return predict_xgb

    if library == "lightgbm":

        def predict_lgb(
            numeric: np.ndarray, categorical: list[list[Any]], n: int, threads: int
        ) -> np.ndarray:
            x = stacked(numeric, categorical, np.float64)
            compiled = model.compiled
            if compiled is not None:
                return shape(compiled.predict(x, threads=threads, margin=margin), n)
            count = 1 if n <= SMALL_BATCH else threads
            return shape(native.predict(x, num_threads=count, raw_score=margin), n)

        return predict_lgb

    if library == "catboost":
        from catboost import FeaturesData, Pool

        names = list(model.feature_names)
        n_numeric = model.n_numeric
        prediction_type = "RawFormulaVal" if margin else model.output_prediction_type

        def predict_cb(
            numeric: np.ndarray, categorical: list[list[Any]], n: int, threads: int
        ) -> np.ndarray:
            arrays = fast.oblivious
            if arrays is not None and n <= fast.oblivious_max_rows and not categorical:
                try:
                    return shape(arrays.predict(numeric), n)
                except Exception:
                    log.exception("oblivious predictor failed; dropped, using CatBoost's predict")
                    fast.oblivious = None
            # column-major: CatBoost builds its Pool from it without a copy (10,000 x 30:
            # 0.03 ms, against 1 to 2 ms from a row-major matrix); ``numeric`` is often the
            # transposed view of a column-major decode, so this is a plain float32 copy
            num32 = np.asfortranarray(numeric, dtype=np.float32)
            pool: Any
            if categorical:
                cats = np.empty((n, len(categorical)), dtype=object)
                for j, values in enumerate(categorical):
                    cats[:, j] = values
                pool = Pool(
                    FeaturesData(
                        num_feature_data=num32,
                        cat_feature_data=cats,
                        num_feature_names=names[:n_numeric],
                        cat_feature_names=names[n_numeric:],
                    )
                )
            else:
                # numeric features only: the matrix as is (a Pool with names costs as much
                # as the prediction); the load-time self-check holds this to the Polars path
                pool = num32
            count = 1 if n <= CATBOOST_ONE_THREAD_ROWS else threads
            out = native.predict(pool, prediction_type=prediction_type, thread_count=count)
            return shape(out, n)

        return predict_cb

    raise Unsupported(f"library {library}")


# --------------------------------------------------------------------------- self-check


def synthetic_frame(bundle: ModelBundle, spec: InputSpec, rows: int) -> pl.DataFrame:
    """Rows in the signature's dtypes that exercise fills, nulls and every category path."""
    rng = np.random.default_rng(0)
    pre_columns = {c.name: c for c in bundle.preprocessor.columns}
    series: list[pl.Series] = []
    for col in spec.columns:
        pre = pre_columns.get(col.name)
        missing = rng.random(rows) < 0.2
        if pre is not None and pre.kind == "categorical":
            vocabulary = [v for v in pre.categories if v != bundle.preprocessor.missing_category]
            if col.dtype.is_integer():
                choices: list[Any] = [int(v) for v in vocabulary if _is_int(v)] + [987654321]
            else:
                choices = [*vocabulary, "__never_seen_in_training__"]
            picks = [choices[i % len(choices)] for i in range(rows)]
            values: list[Any] = [None if m else v for v, m in zip(picks, missing, strict=True)]
            series.append(pl.Series(col.name, values, dtype=col.dtype))
        elif col.dtype == pl.Boolean:
            flags = rng.random(rows) < 0.5
            bools = [None if m else bool(f) for f, m in zip(flags, missing, strict=True)]
            series.append(pl.Series(col.name, bools, dtype=pl.Boolean))
        elif col.dtype.is_numeric():
            draws: np.ndarray = rng.normal(0, 3, rows)
            if col.dtype.is_integer():
                draws = np.round(np.abs(draws)).astype(np.float64)
            values = [None if m else float(v) for v, m in zip(draws, missing, strict=True)]
            series.append(pl.Series(col.name, values).cast(col.dtype))
        else:
            raise Unsupported(f"column {col.name!r} of dtype {col.dtype}")
    return pl.DataFrame(series)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
