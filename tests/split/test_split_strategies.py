"""Each strategy on small frames: sizes, ordering, stratification, leakage, determinism."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from split_support import DATASETS, Splitter, classification_frame, read_parts

from arbor_core.errors import FailedPrecondition
from arbor_split.domain import (
    DataAccess,
    EntityStrategy,
    Fractions,
    RandomStrategy,
    SplitSpec,
    TaskType,
    TimeStrategy,
    UriSource,
    execute_split,
    random_key,
    splitmix64,
)


def test_splitmix_in_polars_matches_the_reference() -> None:
    values = [0, 1, 2, 12345, 2**63, 2**64 - 1]
    frame = pl.DataFrame({"i": pl.Series(values, dtype=pl.UInt64)})
    got = frame.select(random_key(pl.col("i"), 0, 0).alias("k")).to_series().to_list()
    offset = splitmix64(0)
    assert got == [splitmix64((v + offset) % 2**64) for v in values]


# --------------------------------------------------------------------------- random


def test_random_split_sizes_cover_every_row_once(splitter: Splitter) -> None:
    frame = classification_frame(400).with_row_index("rid")
    out = splitter.run(splitter.file(frame))
    parts = read_parts(out)
    assert [p.name for p in out.parts] == ["train", "validation", "test"]
    assert [p.row_count for p in out.parts] == [240, 80, 80]
    ids = pl.concat([df.get_column("rid") for df in parts.values()])
    assert sorted(ids.to_list()) == list(range(400))
    # Source order is kept inside each part.
    for df in parts.values():
        assert df.get_column("rid").is_sorted()
    assert out.task_type is TaskType.BINARY
    assert out.row_count == 400
    assert ("label", "String") in out.schema


def test_random_split_without_test_part(splitter: Splitter) -> None:
    out = splitter.run(splitter.file(classification_frame(100)), fractions=Fractions(0.75, 0.25))
    assert [(p.name, p.row_count) for p in out.parts] == [("train", 75), ("validation", 25)]


def test_stratified_random_keeps_class_ratios_within_one_row(splitter: Splitter) -> None:
    rng = np.random.default_rng(3)
    frame = pl.DataFrame(
        {"x": rng.normal(size=997), "label": rng.choice(["a", "b", "c"], 997, p=[0.7, 0.2, 0.1])}
    )
    fractions = Fractions(0.7, 0.2, 0.1)
    out = splitter.run(
        splitter.file(frame), strategy=RandomStrategy(stratify=True), fractions=fractions
    )
    totals = dict(frame.group_by("label").len().iter_rows())
    for part, share in zip(out.parts, (0.7, 0.2, 0.1), strict=True):
        for cls, n_cls in totals.items():
            assert abs(part.class_balance[cls] - n_cls * share) <= 1, (part.name, cls)
    assert sum(sum(p.class_balance.values()) for p in out.parts) == 997


def test_random_split_is_byte_identical_across_runs_and_differs_by_seed(
    splitter: Splitter,
) -> None:
    path = splitter.file(classification_frame(300))
    first = splitter.run(path, seed=11)
    second = splitter.run(path, seed=11)
    other = splitter.run(path, seed=12)
    assert first.content_hash == second.content_hash
    for a, b in zip(first.parts, second.parts, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()
    assert other.content_hash != first.content_hash


def test_same_hash_in_a_fresh_single_threaded_process(splitter: Splitter) -> None:
    """No process state (thread count, string cache) leaks into the bytes."""
    path = splitter.file(classification_frame(300))
    here = splitter.run(path, strategy=RandomStrategy(stratify=True), seed=5)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from arbor_split.domain import *\n"
        "spec = SplitSpec(UriSource(sys.argv[1]), 'label', RandomStrategy(True),"
        " Fractions(0.6, 0.2, 0.2), 5)\n"
        "out = execute_split(spec, DataAccess([sys.argv[2]]), Path(sys.argv[3]))\n"
        "print(json.dumps(out.content_hash))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, path, str(splitter.root), str(splitter.root / "fresh")],
        capture_output=True,
        text=True,
        env={"POLARS_MAX_THREADS": "1", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == here.content_hash


# --------------------------------------------------------------------------- time


def _time_frame(n: int = 240) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    # 60 distinct days, 4 rows each, shuffled: ties at every boundary candidate.
    days = [
        dt.date(2023, 1, 1) + dt.timedelta(days=int(d))
        for d in rng.permutation(np.repeat(np.arange(60), 4))
    ]
    return pl.DataFrame({"day": days, "x": rng.normal(size=n), "y": rng.normal(size=n)})


def _assert_ordered(parts: dict[str, pl.DataFrame], column: str) -> None:
    names = [n for n in ("train", "validation", "test") if n in parts]
    for earlier, later in itertools.pairwise(names):
        assert parts[earlier].get_column(column).max() < parts[later].get_column(column).min()


@pytest.mark.parametrize("mode", ["row_fraction", "time_range"])
def test_time_split_puts_every_later_part_after_train(splitter: Splitter, mode: str) -> None:
    out = splitter.run(
        splitter.file(_time_frame()),
        target="y",
        strategy=TimeStrategy("day", mode),  # type: ignore[arg-type]
        fractions=Fractions(0.7, 0.15, 0.15),
    )
    parts = read_parts(out)
    _assert_ordered(parts, "day")
    assert out.leakage.time_order_violations == 0
    assert out.task_type is TaskType.REGRESSION
    assert sum(p.row_count for p in out.parts) == 240
    # Ties stay together: boundaries fall between days, so counts are multiples of 4.
    assert all(p.row_count % 4 == 0 for p in out.parts)


def test_time_split_by_cutoffs(splitter: Splitter) -> None:
    strategy = TimeStrategy(
        "day",
        "cutoffs",
        validation_start=dt.datetime(2023, 2, 1, tzinfo=dt.UTC),
        test_start=dt.datetime(2023, 2, 20, tzinfo=dt.UTC),
    )
    out = splitter.run(splitter.file(_time_frame()), target="y", strategy=strategy)
    parts = read_parts(out)
    assert parts["train"].get_column("day").max() < dt.date(2023, 2, 1)
    assert parts["validation"].get_column("day").min() >= dt.date(2023, 2, 1)
    assert parts["validation"].get_column("day").max() < dt.date(2023, 2, 20)
    assert parts["test"].get_column("day").min() >= dt.date(2023, 2, 20)
    assert [p.row_count for p in out.parts] == [31 * 4, 19 * 4, 10 * 4]


def test_time_split_parses_a_string_time_column(splitter: Splitter) -> None:
    frame = _time_frame().with_columns(pl.col("day").cast(pl.String))
    out = splitter.run(
        splitter.file(frame, "strings.csv"), target="y", strategy=TimeStrategy("day")
    )
    parts = read_parts(out)
    assert parts["train"].get_column("day").str.to_date().max() < (
        parts["validation"].get_column("day").str.to_date().min()
    )


def test_time_split_on_nlswork_years(splitter: Splitter) -> None:
    frame = pl.read_parquet(DATASETS / "nlswork.parquet").head(3000)
    frame = frame.with_columns(pl.date(1900 + pl.col("year"), 1, 1).alias("date"))
    out = splitter.run(
        splitter.file(frame),
        target="ln_wage",
        strategy=TimeStrategy("date", "row_fraction"),
        fractions=Fractions(0.7, 0.3),
    )
    parts = read_parts(out)
    _assert_ordered(parts, "date")
    assert out.task_type is TaskType.REGRESSION


# --------------------------------------------------------------------------- entity


@pytest.mark.parametrize("stratify", [False, True])
def test_entity_split_keeps_entities_whole(splitter: Splitter, stratify: bool) -> None:
    frame = classification_frame(800)
    out = splitter.run(splitter.file(frame), strategy=EntityStrategy("customer", stratify))
    parts = read_parts(out)
    seen: dict[int, str] = {}
    for name, df in parts.items():
        for customer in df.get_column("customer").unique().to_list():
            assert seen.setdefault(customer, name) == name, f"customer {customer} in two parts"
    assert out.leakage.shared_entities == 0
    shares = [p.row_count / 800 for p in out.parts]
    assert shares == pytest.approx([0.6, 0.2, 0.2], abs=0.06)


def test_entity_split_on_nlswork_women(splitter: Splitter) -> None:
    frame = pl.read_parquet(DATASETS / "nlswork.parquet").head(4000)
    out = splitter.run(
        splitter.file(frame),
        target="ln_wage",
        strategy=EntityStrategy("idcode"),
        fractions=Fractions(0.8, 0.2),
    )
    parts = read_parts(out)
    train_ids = set(parts["train"].get_column("idcode").to_list())
    assert train_ids.isdisjoint(parts["validation"].get_column("idcode").to_list())


def test_stratified_entity_split_balances_classes(splitter: Splitter) -> None:
    rng = np.random.default_rng(4)
    groups = np.arange(300)
    group_label = rng.random(300) < 0.2
    rows = np.repeat(groups, 3)
    frame = pl.DataFrame(
        {"g": rows, "x": rng.normal(size=900), "label": np.where(group_label[rows], "pos", "neg")}
    )
    out = splitter.run(splitter.file(frame), strategy=EntityStrategy("g", stratify=True))
    for part in out.parts:
        rate = part.class_balance["pos"] / part.row_count
        assert rate == pytest.approx(group_label.mean(), abs=0.03), part.name


def test_entity_split_is_deterministic(splitter: Splitter) -> None:
    path = splitter.file(classification_frame(300))
    a = splitter.run(path, strategy=EntityStrategy("customer"), seed=3)
    b = splitter.run(path, strategy=EntityStrategy("customer"), seed=3)
    assert a.content_hash == b.content_hash


# --------------------------------------------------------------------------- leakage


def test_leakage_report_finds_duplicates_and_a_leaking_feature(splitter: Splitter) -> None:
    base = classification_frame(400)
    frame = pl.concat([base, base.head(50)]).with_columns(
        (pl.col("label") == "yes").cast(pl.Float64).alias("leak")
    )
    out = splitter.run(splitter.file(frame))
    report = out.leakage
    assert report.duplicate_rows_across_parts > 0
    assert [f.column for f in report.suspicious_features] == ["leak"]
    assert report.suspicious_features[0].metric == "roc_auc"
    assert report.suspicious_features[0].score > 0.99
    assert any("leak" in w for w in report.warnings)


def test_regression_leak_is_found_and_ids_are_not(splitter: Splitter) -> None:
    rng = np.random.default_rng(2)
    y = rng.lognormal(size=600)
    frame = pl.DataFrame(
        {"id": np.arange(600), "noise": rng.normal(size=600), "copy": np.log(y) * 3, "y": y}
    )
    out = splitter.run(splitter.file(frame), target="y")
    assert [(f.column, f.metric) for f in out.leakage.suspicious_features] == [("copy", "r2")]


def test_clean_data_has_no_findings(splitter: Splitter) -> None:
    out = splitter.run(
        str(DATASETS / "credit_data.parquet"),
        target="Status",
        strategy=RandomStrategy(stratify=True),
    )
    assert out.leakage.suspicious_features == []
    assert out.leakage.shared_entities == 0


def test_fail_on_leakage_refuses_and_writes_nothing(splitter: Splitter, tmp_path: Path) -> None:
    frame = classification_frame(300).with_columns((pl.col("label") == "yes").alias("leak_flag"))
    workdir = tmp_path / "work"
    with pytest.raises(FailedPrecondition) as info:
        splitter.run(splitter.file(frame), fail_on_leakage=True, workdir=workdir)
    assert info.value.reason == "SPLIT_LEAKAGE_DETECTED"
    assert any("leak_flag" in v.description for v in info.value.violations)
    assert list(workdir.glob("*.parquet")) == []


def test_execute_split_reads_the_real_dataset_lazily(tmp_path: Path) -> None:
    spec = SplitSpec(
        UriSource(str(DATASETS / "credit_data.parquet")),
        "Status",
        RandomStrategy(),
        Fractions(0.8, 0.2),
        1,
    )
    out = execute_split(spec, DataAccess([str(DATASETS)]), tmp_path / "w")
    assert out.null_counts["Income"] == 381
    assert sum(p.row_count for p in out.parts) == 4454
