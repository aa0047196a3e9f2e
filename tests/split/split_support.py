"""Helpers for split tests: small generated frames, writing files, running a split."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from arbor_split.domain import (
    DataAccess,
    Fractions,
    SplitOutcome,
    SplitSpec,
    Strategy,
    UriSource,
    execute_split,
)

DATASETS = Path("/work/shared/datasets")


def classification_frame(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """A binary target (about 30% positive), numeric and categorical noise, a time and an entity."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.integers(0, 100, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "when": [
                dt.datetime(2024, 1, 1) + dt.timedelta(hours=int(h)) for h in rng.permutation(n)
            ],
            "customer": rng.integers(0, n // 8, size=n),
            "label": np.where(rng.random(n) < 0.3, "yes", "no"),
        }
    )


def write(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    match path.suffix:
        case ".parquet":
            frame.write_parquet(path)
        case ".csv":
            frame.write_csv(path)
        case ".ndjson" | ".jsonl":
            frame.write_ndjson(path)
        case _:
            raise ValueError(path)
    return path


@dataclass
class Splitter:
    """Runs ``execute_split`` on files under ``root`` (an allowed data root)."""

    root: Path

    @property
    def access(self) -> DataAccess:
        return DataAccess([str(self.root), str(DATASETS)])

    def file(self, frame: pl.DataFrame, name: str = "data.parquet") -> str:
        return str(write(frame, self.root / name))

    def run(
        self,
        source: Any,
        target: str = "label",
        strategy: Strategy | None = None,
        fractions: Fractions = Fractions(0.6, 0.2, 0.2),
        seed: int = 7,
        *,
        fail_on_leakage: bool = False,
        workdir: Path | None = None,
    ) -> SplitOutcome:
        from arbor_split.domain import RandomStrategy

        if isinstance(source, str):
            source = UriSource(source)
        spec = SplitSpec(source, target, strategy or RandomStrategy(), fractions, seed)
        out = workdir or self.root / f"out-{uuid.uuid4().hex[:6]}"
        return execute_split(spec, self.access, out, fail_on_leakage=fail_on_leakage)


def read_parts(outcome: SplitOutcome) -> dict[str, pl.DataFrame]:
    return {p.name: pl.read_parquet(p.path) for p in outcome.parts}
