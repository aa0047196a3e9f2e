"""Import the model libraries ahead of their first use, off the caller's thread.

``arbor_ml`` imports LightGBM, XGBoost and CatBoost lazily (a process that never trains or
serves one of them never pays for it), but a serving or training process that will use them
should not pay the import inside its first request or its first timed trial.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import threading
import time

log = logging.getLogger("arbor_ml.preload")

#: Imported at start-up: the first model of each library would otherwise wait for its import
#: (lightgbm ~1.5 s with scikit-learn, xgboost ~2 s, catboost ~0.6 s) inside a Predict.
PRELOAD_LIBRARIES = ("lightgbm", "xgboost", "catboost")


class LibraryPreload:
    """Imports the model libraries on a daemon thread; a readiness check until it is done,
    so health turns SERVING only once a first Predict no longer pays an import. A library
    that fails to import is logged and skipped (its models then fail as before). Then the
    start-up objects are frozen (``gc.freeze``): the process's ~200k long-lived objects (Polars,
    SQLAlchemy, the libraries) stop being traversed by the cyclic collector."""

    def __init__(self, libraries: tuple[str, ...] = PRELOAD_LIBRARIES) -> None:
        self.libraries = libraries
        self.done = threading.Event()
        self.seconds: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="arbor-preload-libraries", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            for name in self.libraries:
                started = time.perf_counter()
                try:
                    importlib.import_module(name)
                except Exception as exc:  # an optional library missing must not stop serving
                    log.warning("could not preload %s: %s", name, exc)
                    continue
                self.seconds[name] = round(time.perf_counter() - started, 3)
            log.info("model libraries imported", extra={"import_seconds": self.seconds})
            # Everything imported so far lives as long as the process: out of the collector's
            # sight, so the collections a busy server runs often stop re-scanning it.
            gc.collect()
            gc.freeze()
        finally:
            self.done.set()

    async def ready(self) -> bool:
        """Readiness check: True once every import has finished (waits within the check's
        timeout, so SERVING follows the imports closely)."""
        self.start()
        if self.done.is_set():
            return True
        return await asyncio.get_running_loop().run_in_executor(None, self.done.wait, 2.0)
