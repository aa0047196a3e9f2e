"""Compiled inference: LightGBM and XGBoost models turned into native code at load time.

Why: a tree library's ``predict`` pays per call for argument checks, dataset wrappers and
thread start-up, and walks its trees through generic node arrays. The same trees emitted as
nested ``if``s in C and built with the system compiler predict the same numbers several
times faster, and a one-row call costs a few microseconds.

How: Treelite reads the model (``treelite.frontend.from_lightgbm`` / ``from_xgboost``),
TL2cgen writes it as C (``tl2cgen.generate_c_code``), and this module adds one small C
function, ``arbor_predict``, that walks a dense row-major ``float64`` matrix (NaN = missing)
and writes the raw outputs, so a call is one ``ctypes`` call that releases the GIL: no
TL2cgen ``DMatrix``, no Python object per row. ``gcc`` (or ``$CC``) builds the shared
library; TL2cgen's own runtime (which needs CMake) is not used.

Why not lleaves: lleaves 1.3 needs llvmlite 0.44 while shap pulls numba 0.68 / llvmlite 0.50,
and its compile cache is reused without checking the model. Here the cache is keyed by the
model file's SHA-256 (plus the toolchain and wrapper versions), and the built library embeds
that SHA-256 and is refused if it does not match, so a changed model never reuses a stale
artifact and a restart does not recompile.

Safety: a compiled predictor is only used after a self-check: it must agree with the library
within :func:`tolerance` (1e-6; XGBoost's float32 margins and values: 1e-5 relative) on
rows built from the model's own split thresholds (values on, just below and just above each
threshold, NaN, and every category code). Anything that fails (no compiler, no
treelite/tl2cgen, an unsupported model such as LightGBM linear trees, a disagreement) is
logged and the model keeps predicting with its library.

Settings (environment):

* ``ARBOR_COMPILED_INFERENCE``: ``auto`` (default: compile where it is safe) or ``off``.
* ``ARBOR_COMPILED_CACHE_DIR``: where built libraries live (default
  ``$XDG_CACHE_HOME/arbor/compiled``, else ``~/.cache/arbor/compiled``).
* ``ARBOR_COMPILED_THREADS``: threads one large batch (4,096 rows or more) is split over
  (default: the machine's cores; 1 keeps every call on its caller's thread).
* ``ARBOR_COMPILED_JOBS``: parallel compiler processes (default: the machine's cores); they
  run at ``nice 10`` so a background build does not starve serving.

Runtime needs: ``treelite`` and ``tl2cgen`` from PyPI, and a C compiler (``gcc``;
``python:3.11-slim`` has none: install ``gcc`` and ``libc6-dev`` in the image). Without a
compiler, libraries already in the cache directory (built on the same platform, e.g. baked
into the image) are still used; only new builds are skipped.

Use::

    predictor = enable_compiled(bundle)               # blocking; None if not possible
    enable_compiled(bundle, background=True)          # serve with the library, swap when built
    bundle.model.compiled                             # the CompiledPredictor in use, or None
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arbor_ml.types import ModelType

if TYPE_CHECKING:
    from arbor_ml.bundle import ModelBundle
    from arbor_ml.trainers.base import TrainedModel

log = logging.getLogger("arbor_ml.compiled")

#: Largest absolute difference allowed between compiled and library outputs.
TOLERANCE = 1e-6
#: XGBoost margins and regression values: relative, float32 resolution (see ``tolerance``).
XGBOOST_VALUE_TOLERANCE = 1e-5
#: Saved check rows replayed when a cached library is loaded (the build checked them all).
CACHE_HIT_CHECK_ROWS = 128
#: Bump when the generated wrapper or build flags change: part of the cache key.
WRAPPER_VERSION = "3"
#: Optimisation level: -O2 builds about as fast code as -O3 for nested ifs, and sooner.
OPT_FLAGS = ("-O2", "-fPIC", "-std=gnu99", "-fno-math-errno")
#: Trees per translation unit (TL2cgen ``parallel_comp``): small units keep gcc's memory and
#: time per file low and let several compilers run at once.
TREES_PER_UNIT = 20

SUPPORTED = (ModelType.LIGHTGBM, ModelType.XGBOOST)

_WRAPPER_C = r"""
/* Arbor's batch entry point over TL2cgen's generated code: one call per batch.
   Tree-blocked: each group of trees (a TL2cgen translation unit, TREES_PER_UNIT trees)
   runs over a block of rows before the next group, so its code stays in the instruction
   cache instead of every row walking all the trees' code (lleaves' fblocksize idea). */
#include "header.h"
#define ZERO_SNAP @ZERO_SNAP@
/* 1: the trees test "missing" as NaN comparisons (see _nan_tests), values are copied as is */
#define NAN_IS_MISSING @NAN_IS_MISSING@
#define ROW_BLOCK 64
#define N_UNITS @N_UNITS@

const char* arbor_model_sha256(void) { return "@SHA256@"; }
int32_t arbor_wrapper_version(void) { return @WRAPPER_VERSION@; }
int32_t arbor_num_output(void) { return N_TARGET * MAX_N_CLASS; }

#if N_UNITS > 0
static void (*const arbor_units[N_UNITS])(union Entry*, double*) = { @UNIT_LIST@ };
static void arbor_base(double* result) {
@BASE_LINES@
}
#endif

static void arbor_row(const double* src, int32_t nfeat, union Entry* row) {
  for (int32_t j = 0; j < nfeat; ++j) {
    const double v = src[j];
    if (!NAN_IS_MISSING && v != v) {
      row[j].missing = -1;
    } else {
#if ZERO_SNAP
      /* LightGBM reads |v| <= kZeroThreshold (1e-35) as 0 when it builds a row */
      const double z = 1.0000000180025095e-35;
      row[j].fvalue = (@THRESHOLD_TYPE@)((v <= z && v >= -z) ? 0.0 : v);
#else
      row[j].fvalue = (@THRESHOLD_TYPE@)v;
#endif
    }
  }
}

/* x: n rows of ncol doubles, row-major, NaN = missing; out: n * arbor_num_output() doubles.
   Returns 0, -1 when ncol differs from the model's feature count, -2 out of memory. */
int32_t arbor_predict(const double* x, int64_t n, int64_t ncol, int32_t margin, double* out) {
  const int32_t nfeat = get_num_feature();
  if (ncol != nfeat) return -1;
  const int nout = N_TARGET * MAX_N_CLASS;
  const size_t width = (size_t)(nfeat > 0 ? nfeat : 1);
  union Entry* rows = (union Entry*)malloc(sizeof(union Entry) * width * ROW_BLOCK);
  if (rows == NULL) return -2;
  for (int64_t start = 0; start < n; start += ROW_BLOCK) {
    const int64_t m = (n - start < ROW_BLOCK) ? (n - start) : ROW_BLOCK;
    double* dst = out + start * nout;
    for (int64_t r = 0; r < m; ++r) arbor_row(x + (start + r) * ncol, nfeat, rows + r * width);
    for (int64_t k = 0; k < m * nout; ++k) dst[k] = 0.0;
#if N_UNITS > 0
    for (int u = 0; u < N_UNITS; ++u) {
      for (int64_t r = 0; r < m; ++r) arbor_units[u](rows + r * width, dst + r * nout);
    }
    for (int64_t r = 0; r < m; ++r) {
      arbor_base(dst + r * nout);
      if (!margin) postprocess(dst + r * nout);
    }
#else
    for (int64_t r = 0; r < m; ++r) predict(rows + r * width, margin, dst + r * nout);
#endif
  }
  free(rows);
  return 0;
}
"""

_C_TYPES = {"float32": "float", "float64": "double"}


# --------------------------------------------------------------------------- settings


def mode() -> str:
    """``auto`` or ``off`` (``ARBOR_COMPILED_INFERENCE``); anything else reads as ``auto``."""
    value = os.environ.get("ARBOR_COMPILED_INFERENCE", "auto").strip().lower()
    return "off" if value in ("off", "0", "false", "no", "none") else "auto"


def default_cache_dir() -> Path:
    configured = os.environ.get("ARBOR_COMPILED_CACHE_DIR", "").strip()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "arbor" / "compiled"


def _jobs() -> int:
    raw = os.environ.get("ARBOR_COMPILED_JOBS", "").strip()
    return max(1, int(raw)) if raw else max(1, os.cpu_count() or 1)


def compiler() -> str | None:
    """The C compiler to use (``$CC``, else ``gcc``, else ``cc``), or None."""
    for name in (os.environ.get("CC", "").strip(), "gcc", "cc"):
        if name and shutil.which(name):
            return name
    return None


def unavailable_reason(
    model_type: ModelType | str | None = None, *, need_compiler: bool = True
) -> str | None:
    """Why compiled inference cannot run here (None: it can)."""
    if mode() == "off":
        return "ARBOR_COMPILED_INFERENCE=off"
    if model_type is not None and ModelType(model_type) not in SUPPORTED:
        return f"{ModelType(model_type).value} models are served by their library"
    # find_spec, not import: importing treelite costs ~0.3 s (scipy), and a cache hit never
    # needs it
    for package in ("treelite", "tl2cgen"):
        if importlib.util.find_spec(package) is None:
            return f"treelite/tl2cgen are not installed ({package})"
    if need_compiler and compiler() is None:
        return "no C compiler (gcc) on PATH"
    return None


# --------------------------------------------------------------------------- predictor


@dataclass(frozen=True)
class CompiledInfo:
    """What a compiled predictor was built from and how (for logs and benchmarks)."""

    model_sha256: str
    path: str
    n_features: int
    n_outputs: int
    compile_seconds: float | None  # None: loaded from the cache
    load_seconds: float


class CompiledPredictor:
    """A loaded native library: ``predict(x)`` -> raw outputs ``(n, n_outputs)`` float64.

    ``x`` is a 2-D array of the model's features (converted to C-contiguous float64 if it
    is not already one); NaN is a missing value. Outputs follow the model's objective
    (probabilities for binary/multiclass, values for regression) or, with ``margin=True``,
    the raw scores. Thread-safe; the GIL is released during the call.
    """

    def __init__(self, path: Path, expected_sha256: str) -> None:
        started = time.perf_counter()
        self._lib = _dlopen(path)
        self._lib.arbor_model_sha256.restype = ctypes.c_char_p
        self._lib.arbor_num_output.restype = ctypes.c_int32
        self._lib.get_num_feature.restype = ctypes.c_int32
        self._lib.arbor_wrapper_version.restype = ctypes.c_int32
        embedded = self._lib.arbor_model_sha256().decode()
        if embedded != expected_sha256:
            raise StaleArtifact(f"{path} was built for model {embedded}, not {expected_sha256}")
        if self._lib.arbor_wrapper_version() != int(WRAPPER_VERSION):
            raise StaleArtifact(f"{path} was built by another wrapper version")
        fn = self._lib.arbor_predict
        fn.restype = ctypes.c_int32
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int32,
            ctypes.c_void_p,
        ]
        self._fn = fn
        self.path = path
        self.model_sha256 = expected_sha256
        self.n_features = int(self._lib.get_num_feature())
        self.n_outputs = int(self._lib.arbor_num_output())
        self.load_seconds = time.perf_counter() - started
        self.compile_seconds: float | None = None

    @property
    def info(self) -> CompiledInfo:
        return CompiledInfo(
            self.model_sha256,
            str(self.path),
            self.n_features,
            self.n_outputs,
            self.compile_seconds,
            self.load_seconds,
        )

    def predict(
        self, x: np.ndarray, *, margin: bool = False, threads: int | None = None
    ) -> np.ndarray:
        """Raw outputs; batches of :data:`PARALLEL_ROWS` rows or more are split over
        ``threads`` (default ``ARBOR_COMPILED_THREADS``, else the machine's cores) threads."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) features, got {x.shape}")
        n = x.shape[0]
        out = np.empty((n, self.n_outputs), dtype=np.float64)
        if n < PARALLEL_ROWS:  # the common small batch: no thread count to look up
            threads = 1
        elif threads is None:
            threads = _threads()
        if threads > 1:
            bounds = np.linspace(0, n, threads + 1).astype(int)
            parts = list(itertools.pairwise(int(b) for b in bounds))
            for rc in _pool().map(lambda p: self._call(x, out, p[0], p[1], margin), parts):
                if rc != 0:
                    raise RuntimeError(f"compiled predict failed with code {rc}")
        elif n:
            rc = self._call(x, out, 0, n, margin)
            if rc != 0:
                raise RuntimeError(f"compiled predict failed with code {rc}")
        return out

    def _call(self, x: np.ndarray, out: np.ndarray, start: int, stop: int, margin: bool) -> int:
        row_bytes_in = x.strides[0]
        row_bytes_out = out.strides[0]
        return int(
            self._fn(
                x.ctypes.data + start * row_bytes_in,
                stop - start,
                self.n_features,
                int(margin),
                out.ctypes.data + start * row_bytes_out,
            )
        )

    @functools.cached_property
    def row(self) -> RowCall:
        """One row at a time through preallocated buffers (see :class:`RowCall`)."""
        return RowCall(self._fn, self.n_features, self.n_outputs, (self.n_features, 0))

    def __repr__(self) -> str:
        return f"CompiledPredictor({self.path.name}, features={self.n_features})"


class RowCall:
    """One row of Python floats through a C function ``fn(x, 1, *middle, out)`` that reads a
    row-major matrix and writes ``n_out`` doubles per row, into preallocated ctypes buffers.

    Why: for a single row, numpy's side of a call (a contiguous copy, an output array, two
    ``.ctypes`` lookups) costs several times the trees themselves. Here the row is copied into
    a buffer whose address is known and the outputs read back as floats: the same C function
    on the same values (``in_type``: the element type the function reads), so the same
    numbers. One caller at a time: a call that finds the buffers busy (another thread), or a
    function that reports a failure, answers None and the caller takes the batch path.
    """

    def __init__(
        self,
        fn: Any,
        n_in: int,
        n_out: int,
        middle: tuple[Any, ...],
        in_type: Any = ctypes.c_double,
    ) -> None:
        self._fn = fn
        self._x = (in_type * n_in)()
        self._out = (ctypes.c_double * n_out)()
        self._args = (ctypes.addressof(self._x), 1, *middle, ctypes.addressof(self._out))
        self._busy = threading.Lock()

    def __call__(self, row: Sequence[float]) -> list[float] | None:
        """The outputs of ``row`` (``n_in`` floats), or None when busy or failed."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            self._x[:] = row  # type: ignore[call-overload]  # any sequence of floats will do
            if self._fn(*self._args) != 0:
                return None
            return self._out[:]
        finally:
            self._busy.release()


_loads = itertools.count()

#: Batches from this many rows up are split over threads (the call releases the GIL).
PARALLEL_ROWS = 4096
_pool_lock = threading.Lock()
_shared_pool: ThreadPoolExecutor | None = None


def _threads() -> int:
    raw = os.environ.get("ARBOR_COMPILED_THREADS", "").strip()
    return max(1, int(raw)) if raw else _CORES


#: ``os.cpu_count()`` reads sysfs on every call: once is enough
_CORES = max(1, os.cpu_count() or 1)


def _pool() -> ThreadPoolExecutor:
    global _shared_pool
    with _pool_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPoolExecutor(_threads(), thread_name_prefix="arbor-compiled")
        return _shared_pool


def _dlopen(path: Path) -> ctypes.CDLL:
    """Load ``path`` under a name never used before in this process.

    glibc's ``dlopen`` returns an already loaded object whose *name* matches, without
    looking at the file: after a rebuild at the same path it would hand back the old code.
    A fresh hard link (removed once loaded) makes every load read the file as it is now.
    CDLL, not PyDLL: calls release the GIL.
    """
    alias = path.with_name(f".{path.stem}.{os.getpid()}.{next(_loads)}.so")
    try:
        os.link(path, alias)
    except OSError:
        shutil.copyfile(path, alias)
    try:
        return ctypes.CDLL(str(alias))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(alias)


class StaleArtifact(Exception):
    """A cached library does not belong to this model (or this wrapper version)."""


# --------------------------------------------------------------------------- building


def model_sha256(model: TrainedModel) -> str:
    """SHA-256 of the model file (as stored in the bundle when it was loaded from one)."""
    known = getattr(model, "source_sha256", None)
    if known:
        return str(known)
    digest = hashlib.sha256(model.to_bytes()).hexdigest()
    model.source_sha256 = digest  # type: ignore[attr-defined]
    return digest


@functools.cache
def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def artifact_tag() -> str:
    """What else the built library depends on: toolchain, wrapper, machine."""
    cc = compiler() or "gcc"  # no compiler: find what a gcc build left in the cache
    parts = [
        f"tl2cgen{_package_version('tl2cgen')}",
        f"treelite{_package_version('treelite')}",
        f"w{WRAPPER_VERSION}",
        platform.machine(),
        cc,
        hashlib.sha256(" ".join(OPT_FLAGS).encode()).hexdigest()[:8],
    ]
    return "-".join(p.replace("/", "_") for p in parts)


def artifact_path(cache_dir: Path, sha256: str) -> Path:
    """``<cache_dir>/<model sha256>/<tag>.so``: one directory per model file content."""
    return cache_dir / sha256 / f"{artifact_tag()}.so"


def _treelite_model(model: TrainedModel) -> Any:
    import treelite

    if model.model_type is ModelType.LIGHTGBM:
        return treelite.frontend.from_lightgbm(model.native)
    if model.model_type is ModelType.XGBOOST:
        return treelite.frontend.from_xgboost(model.native)
    raise ValueError(f"{model.model_type.value} models are not compiled")


def _model_json(tl_model: Any) -> dict[str, Any]:
    """Treelite's JSON dump; it writes some tiny thresholds as nothing (``"threshold":,``)."""
    text = tl_model.dump_as_json(pretty_print=False)
    return dict(json.loads(re.sub(r":\s*(?=[,}\]])", ":null", text)))


def _double_accumulation(source: str) -> str:
    """Sum float32 leaves in double (TL2cgen sums them in the leaf type): the trees' sum is
    then exact to double precision instead of drifting by float32 roundings per tree."""
    for old, new in _FLOAT_TO_DOUBLE:
        source = source.replace(old, new)
    return source


_FLOAT_TO_DOUBLE = (
    ("float* result", "double* result"),
    ("float* target_result", "double* target_result"),
    ("float max_margin", "double max_margin"),
    ("float t;", "double t;"),
    ("expf(", "exp("),
    ("(float)norm_const", "norm_const"),
)


_UNIT_RE = re.compile(r"void (predict_unit\d+)\(union Entry\* data, double\* result\);")
_BASE_RE = re.compile(r"// Apply base_scores\n(?P<lines>(?:\s*result\[\d+\] \+= [^;\n]+;\n)*)")


_NUM = r"\((?:float|double)\)[-+0-9.eE]+"
#: missing goes left: ``!(missing) || (v OP t)`` is ``!(v FLIP t)`` when missing is NaN
_DEFAULT_LEFT = re.compile(
    r"!\(data\[(\d+)\]\.missing != -1\) \|\| \(data\[\1\]\.fvalue (<=|<|>=|>) (" + _NUM + r")\)"
)
#: missing goes right: ``(present) && (v OP t)`` is ``(v OP t)`` (NaN compares false)
_DEFAULT_RIGHT = re.compile(
    r"\(data\[(\d+)\]\.missing != -1\) && \(data\[\1\]\.fvalue (<=|<|>=|>) (" + _NUM + r")\)"
)
_FLIP = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}


def _nan_tests(sources: list[Path]) -> bool:
    """Rewrite every numeric test so that a NaN value is the missing value: one comparison
    per node instead of a flag load, a branch and a comparison. Only when every test of the
    model has that shape (no categorical splits); otherwise the sources stay as they are
    and the wrapper sets TL2cgen's ``missing = -1`` flag. Returns whether it rewrote."""
    rewritten = {}
    for path in sources:
        text = path.read_text()
        text = _DEFAULT_LEFT.sub(lambda m: f"!(data[{m[1]}].fvalue {_FLIP[m[2]]} {m[3]})", text)
        text = _DEFAULT_RIGHT.sub(lambda m: f"(data[{m[1]}].fvalue {m[2]} {m[3]})", text)
        if ".missing" in text or ".qvalue" in text:
            return False
        rewritten[path] = text
    for path, text in rewritten.items():
        path.write_text(text)
    return True


def _blocking_parts(header: str, main_c: str) -> tuple[list[str], list[str]]:
    """The per-unit tree functions TL2cgen declared and the base-score lines of its
    ``predict()``; ([], []) when the code does not have that shape (then the wrapper calls
    ``predict()`` row by row, unblocked)."""
    units = sorted(_UNIT_RE.findall(header), key=lambda name: int(name[len("predict_unit") :]))
    base = _BASE_RE.search(main_c)
    calls = re.findall(r"predict_unit\d+\(data, result\);", main_c)
    if not units or base is None or len(calls) != len(units):
        return [], []
    lines = [line.strip() for line in base.group("lines").splitlines() if line.strip()]
    return units, lines


@ctypes.CFUNCTYPE(None, ctypes.c_char_p)
def _tl2cgen_message(message: bytes) -> None:
    log.debug("tl2cgen: %s", message.decode("utf-8", "replace").strip())


def _route_tl2cgen_logs() -> None:
    """Send TL2cgen's native log lines to this module's logger: its own callback prints them
    on stdout, which a background compile would write into whatever the process is printing
    (a command-line tool's CSV output, say)."""
    from tl2cgen import libloader

    lib = libloader._LIB
    if lib is not None and getattr(lib, "log_callback", None) is not _tl2cgen_message:
        lib.log_callback = _tl2cgen_message  # type: ignore[attr-defined]  # kept: called later
        lib.TL2cgenRegisterLogCallback(lib.log_callback)


def _build(model: TrainedModel, sha256: str, target: Path) -> float:
    """Generate C, compile, link to ``target`` (atomically). Returns the seconds taken."""
    import tl2cgen

    _route_tl2cgen_logs()

    started = time.perf_counter()
    tl_model = _treelite_model(model)
    spec = _model_json(tl_model)
    n_trees = len(spec.get("trees", [])) or 1
    units = max(1, min(64, -(-n_trees // TREES_PER_UNIT)))
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arbor-compile-", dir=target.parent) as tmp:
        src = Path(tmp) / "src"
        tl2cgen.generate_c_code(tl_model, str(src), params={"parallel_comp": units}, verbose=False)
        threshold_type = _C_TYPES[spec.get("threshold_type", "float64")]
        if spec.get("leaf_output_type", "float64") == "float32":
            for path in [*src.glob("*.c"), *src.glob("*.h")]:
                path.write_text(_double_accumulation(path.read_text()))
        header = (src / "header.h").read_text()
        if f"{threshold_type} fvalue;" not in header:
            raise RuntimeError("unexpected TL2cgen header: no fvalue of the threshold type")
        nan_tests = _nan_tests(list(src.glob("*.c")))
        unit_names, base_lines = _blocking_parts(header, (src / "main.c").read_text())
        wrapper = (
            _WRAPPER_C.replace("@SHA256@", sha256)
            .replace("@WRAPPER_VERSION@", WRAPPER_VERSION)
            .replace("@THRESHOLD_TYPE@", threshold_type)
            .replace("@N_UNITS@", str(len(unit_names)))
            .replace("@UNIT_LIST@", ", ".join(unit_names))
            .replace("@BASE_LINES@", "\n".join(base_lines))
            .replace("@NAN_IS_MISSING@", "1" if nan_tests else "0")
            .replace("@ZERO_SNAP@", "1" if model.model_type is ModelType.LIGHTGBM else "0")
        )
        (src / "arbor_predict.c").write_text(wrapper)
        sources = sorted(src.glob("*.c"))
        objects = [s.with_suffix(".o") for s in sources]
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        commands = [
            [*nice, cc, "-c", *OPT_FLAGS, "-o", str(o), str(s)]
            for s, o in zip(sources, objects, strict=True)
        ]
        with ThreadPoolExecutor(_jobs()) as pool:
            for result in pool.map(_run, commands):
                if result:
                    raise RuntimeError(f"compiler failed: {result}")
        linked = Path(tmp) / "model.so"
        error = _run([cc, "-shared", "-o", str(linked), *map(str, objects), "-lm"])
        if error:
            raise RuntimeError(f"linker failed: {error}")
        os.replace(linked, target)  # atomic: readers see the old file or the whole new one
    return time.perf_counter() - started


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (
        "" if done.returncode == 0 else (done.stderr.strip()[-2000:] or f"exit {done.returncode}")
    )


# --------------------------------------------------------------------------- self-check


def check_rows(model: TrainedModel, rows: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that visit both sides of the model's splits: values on, just below and just
    above its thresholds, NaN (10%), and every category code the model knows plus unseen
    ones, as the float64 matrix the library receives."""
    rng = np.random.default_rng(seed)
    n_features = len(model.feature_names)
    thresholds = _thresholds(model, n_features)
    x = np.empty((rows, n_features), dtype=np.float64)
    n_numeric = model.n_numeric
    for j in range(n_features):
        if j >= n_numeric:
            top = max(int(np.nanmax(thresholds[j])) if thresholds[j].size else 0, 4) + 2
            x[:, j] = rng.integers(0, top + 1, rows)
            continue
        points = thresholds[j]
        if points.size == 0:
            x[:, j] = rng.normal(0.0, 1.0, rows)
            continue
        picks = rng.choice(points, rows)
        spread = np.maximum(np.abs(picks) * 1e-3, 1e-3)
        jitter = rng.choice([-1.0, 0.0, 1.0], rows) * spread * rng.random(rows)
        x[:, j] = picks + jitter
    x[rng.random(x.shape) < 0.1] = np.nan
    if model.model_type is ModelType.XGBOOST:
        x = x.astype(np.float32).astype(np.float64)  # what XGBoost sees anyway
    return x


def _thresholds(model: TrainedModel, n_features: int) -> list[np.ndarray]:
    """Per feature: its numeric split thresholds (or, for categoricals, the largest code)."""
    found: list[list[float]] = [[] for _ in range(n_features)]
    try:
        spec = _model_json(_treelite_model(model))
    except Exception:  # the check rows are then random normals
        return [np.array([]) for _ in range(n_features)]
    for tree in spec.get("trees", []):
        for node in tree.get("nodes", []):
            j = node.get("split_feature_id")
            if j is None or not 0 <= j < n_features:
                continue
            if node.get("threshold") is not None:
                found[j].append(float(node["threshold"]))
            for code in node.get("category_list", []) or []:
                found[j].append(float(code))
    return [np.unique(np.asarray(v, dtype=np.float64)) for v in found]


def library_predict(model: TrainedModel, x: np.ndarray, *, margin: bool = False) -> np.ndarray:
    """The library's own raw outputs, shaped ``(n, outputs)`` like the compiled ones."""
    n = x.shape[0]
    if model.model_type is ModelType.LIGHTGBM:
        out = model.native.predict(x, raw_score=margin, num_threads=1)
    else:
        kind = "margin" if margin else "value"
        out = model.native.inplace_predict(x.astype(np.float32), predict_type=kind)
    return np.asarray(out, dtype=np.float64).reshape(n, -1)


def tolerance(model: TrainedModel, *, margin: bool) -> float:
    """Allowed |compiled - library| / max(1, |library|).

    LightGBM computes in float64 like the compiled code: :data:`TOLERANCE`. XGBoost sums
    its trees in float32 and returns float32, while the compiled code sums in float64; its
    probabilities still agree within :data:`TOLERANCE`, but raw margins and regression
    values only to float32 resolution (one float32 step is 1.2e-7 relative, and 300 trees
    add up several), hence :data:`XGBOOST_VALUE_TOLERANCE` relative there.
    """
    if model.model_type is ModelType.XGBOOST and (margin or not model.task.is_classification):
        return XGBOOST_VALUE_TOLERANCE
    return TOLERANCE


def max_difference(
    model: TrainedModel, predictor: CompiledPredictor, x: np.ndarray, *, margin: bool
) -> float:
    """max |compiled - library| / max(1, |library|) over ``x``."""
    expected = library_predict(model, x, margin=margin)
    actual = predictor.predict(x, margin=margin)
    if expected.shape != actual.shape:
        return float("inf")
    scale = np.maximum(np.abs(expected), 1.0)
    return float(np.max(np.abs(expected - actual) / scale, initial=0.0))


def self_check(
    model: TrainedModel, predictor: CompiledPredictor, rows: np.ndarray | None = None
) -> float:
    """Worst ratio of difference to :func:`tolerance` over ``rows`` (default
    :func:`check_rows`), outputs and margins: the predictor is usable when it is <= 1."""
    x = check_rows(model) if rows is None else rows
    return max(
        max_difference(model, predictor, x, margin=margin) / tolerance(model, margin=margin)
        for margin in (False, True)
    )


def _save_rows(path: Path, rows: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, rows)
    os.replace(tmp, path)


def _load_rows(path: Path, model: TrainedModel) -> np.ndarray:
    try:
        rows = np.load(path)
    except (OSError, ValueError):
        return check_rows(model)
    if rows.ndim != 2 or rows.shape[1] != len(model.feature_names):
        return check_rows(model)
    return np.asarray(rows, dtype=np.float64)


# --------------------------------------------------------------------------- entry points

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def compile_model(
    model: TrainedModel, cache_dir: Path | str | None = None, *, check: bool = True
) -> CompiledPredictor | None:
    """A checked compiled predictor for ``model`` (from the cache, else built), or None.

    Never raises for an environment or model it cannot handle: it logs why and returns None,
    and the caller keeps the library.
    """
    reason = unavailable_reason(model.model_type, need_compiler=False)
    if reason is not None:
        log.info("compiled inference off for this model: %s", reason)
        return None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        sha = model_sha256(model)
        path = artifact_path(cache, sha)
        if compiler() is None and not path.exists():
            log.info("compiled inference off for this model: no C compiler (gcc) on PATH")
            return None
        with _lock_for(str(path)):
            built: float | None = None
            predictor: CompiledPredictor | None = None
            rows_path = path.with_suffix(".check.npy")
            if path.exists():
                try:
                    predictor = CompiledPredictor(path, sha)
                except (OSError, StaleArtifact) as exc:
                    log.warning("ignoring cached compiled model %s: %s", path, exc)
                    predictor = None
            if predictor is None:
                built = _build(model, sha, path)
                predictor = CompiledPredictor(path, sha)
                predictor.compile_seconds = built
                fresh = check_rows(model)
                _save_rows(rows_path, fresh)
            if predictor.n_features != len(model.feature_names):
                raise RuntimeError(
                    f"compiled model has {predictor.n_features} features, "
                    f"the bundle {len(model.feature_names)}"
                )
            if check:
                # cache hit: the rows saved at build time (cheap); a build: fresh ones
                if built is None:  # cache hit: a slice of the rows the build was checked on
                    rows = _load_rows(rows_path, model)[:CACHE_HIT_CHECK_ROWS]
                else:
                    rows = fresh
                worst = self_check(model, predictor, rows)
                if not worst <= 1.0:
                    log.warning(
                        "compiled inference off for this model: it differs from %s by "
                        "%.3g times the tolerance",
                        model.library,
                        worst,
                        extra={"tolerance_ratio": worst},
                    )
                    return None
    except Exception as exc:
        log.warning("compiled inference off for this model: %r", exc)
        return None
    log.info(
        "compiled %s model %s (%s)",
        model.library,
        sha[:12],
        "from cache" if built is None else f"built in {built:.1f}s",
        extra={"model_sha256": sha, "compile_seconds": built},
    )
    return predictor


def _model_of(bundle: ModelBundle | TrainedModel) -> TrainedModel:
    from arbor_ml.trainers.base import TrainedModel

    return bundle if isinstance(bundle, TrainedModel) else bundle.model


def enable_compiled(
    bundle: ModelBundle | TrainedModel,
    cache_dir: Path | str | None = None,
    *,
    background: bool = False,
    on_ready: Callable[[CompiledPredictor | None], None] | None = None,
) -> CompiledPredictor | None:
    """Make the bundle's model predict with compiled code when that is possible and safe.

    Blocking (default): compile (or load from the cache), check, attach; returns the
    predictor or None. ``background=True``: a cached library is attached at once (a few
    milliseconds), otherwise the build runs on a daemon thread while the model keeps
    predicting with its library, and is attached when checked (``on_ready`` is then called
    with the predictor or None); returns what is attached now.
    """
    model = _model_of(bundle)
    if unavailable_reason(model.model_type, need_compiler=False) is not None:
        if on_ready is not None:
            on_ready(None)
        return None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def attach() -> CompiledPredictor | None:
        predictor = compile_model(model, cache)
        if predictor is not None:
            model.compiled = predictor
        return predictor

    if not background:
        predictor = attach()
        if on_ready is not None:
            on_ready(predictor)
        return predictor
    with contextlib.suppress(Exception):
        if artifact_path(cache, model_sha256(model)).exists():
            predictor = attach()
            if on_ready is not None:
                on_ready(predictor)
            return predictor

    def build_later() -> None:
        predictor = attach()
        if on_ready is not None:
            on_ready(predictor)

    threading.Thread(target=build_later, name="arbor-compile", daemon=True).start()
    return None


def disable_compiled(bundle: ModelBundle | TrainedModel) -> None:
    model = _model_of(bundle)
    model.compiled = None


__all__ = [
    "TOLERANCE",
    "XGBOOST_VALUE_TOLERANCE",
    "CompiledInfo",
    "CompiledPredictor",
    "StaleArtifact",
    "artifact_path",
    "compile_model",
    "compiler",
    "default_cache_dir",
    "disable_compiled",
    "enable_compiled",
    "max_difference",
    "mode",
    "model_sha256",
    "self_check",
    "tolerance",
    "unavailable_reason",
]
