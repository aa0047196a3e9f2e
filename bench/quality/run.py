"""Model-quality benchmark: Arbor end to end against the anchor scores of the shared datasets.

For each dataset of ``/work/shared/datasets`` (see its README.md), through the real services
running in this process (split, training API + one worker, registry; PostgreSQL and NATS on
127.0.0.1, a fresh database and namespace each run):

1. the fixed 20% holdout (``<name>.split.parquet``, ``is_test``) is set aside, unseen;
2. the other 80% becomes a split (CreateSplit: random, stratified for classification) into
   train and validation; validation is 20% of it up to 10,000 rows, 10% up to 60,000, 5% above
   (a large part is wasted on validation, a small one is too noisy to select on);
3. an experiment with ``model_type = AUTO`` (CatBoost, LightGBM and XGBoost in one budget),
   a ``--budget`` second time budget that includes the final fit, ``--threads`` threads, no
   trial limit, the dataset's metric; optional cross-validation (``--cv``);
4. the registered model version's bundle is loaded from the artifact store and scored on the
   holdout, as a client would score it.

It prints, per dataset, Arbor's holdout score beside the README's anchor scores and writes
``bench/results/quality.json``.

    python -m bench.quality.run                              # every dataset, 60 s each
    python -m bench.quality.run --datasets breast_cancer,credit_data --budget 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("ARBOR_DATASETS", "/work/shared/datasets"))
RESULTS = ROOT / "bench" / "results" / "quality.json"
PG_ADMIN = os.environ.get(
    "ARBOR_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("ARBOR_BENCH_NATS_URL", "nats://127.0.0.1:4222")
ORDER = (
    "breast_cancer",
    "credit_data",
    "hpc_data",
    "ames",
    "diamonds",
    "nlswork",
    "flights",
)

#: The README's anchor scores at a 60-second budget (2 threads, mean over 3 seeds).
ANCHORS: dict[str, dict[str, float]] = {
    "breast_cancer": {"catboost_default": 0.9948, "lgbm_default": 0.9897, "xgb_default": 0.9901,
                      "optuna_lgbm": 0.9881, "flaml": 0.9894},
    "credit_data": {"catboost_default": 0.8635, "lgbm_default": 0.8427, "xgb_default": 0.834,
                    "optuna_lgbm": 0.8613, "flaml": 0.8676},
    "hpc_data": {"catboost_default": 0.4181, "lgbm_default": 0.4339, "xgb_default": 0.4466,
                 "optuna_lgbm": 0.4221, "flaml": 0.4124},
    "ames": {"catboost_default": 22910.0, "lgbm_default": 24940.0, "xgb_default": 24510.0,
             "optuna_lgbm": 24440.0, "flaml": 24560.0},
    "diamonds": {"catboost_default": 524.0, "lgbm_default": 540.0, "xgb_default": 545.2,
                 "optuna_lgbm": 530.8, "flaml": 544.7},
    "nlswork": {"catboost_default": 0.3143, "lgbm_default": 0.3187, "xgb_default": 0.3245,
                "optuna_lgbm": 0.3105, "flaml": 0.3118},
    "flights": {"catboost_default": 0.7981, "lgbm_default": 0.7519, "xgb_default": 0.73,
                "optuna_lgbm": 0.7887, "flaml": 0.7928},
}  # fmt: skip
METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False, "rmse": False}
TOLERANCE = 0.01  # "never more than 1% worse"


def validation_fraction(rows: int) -> float:
    """Share of the 80% kept for validation (see the module docstring)."""
    if rows <= 10_000:
        return 0.2
    if rows <= 60_000:
        return 0.1
    return 0.05


# --------------------------------------------------------------------------- data


def load(name: str) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    """(manifest entry, the 80% to train on, the 20% holdout), features and target only."""
    manifest = json.loads((DATASETS / "manifest.json").read_text())
    entry = next(d for d in manifest["datasets"] if d["name"] == name)
    frame = pl.read_parquet(DATASETS / entry["file"])
    is_test = pl.read_parquet(DATASETS / entry["split"]["file"])["is_test"]
    if is_test.len() != frame.height:
        raise SystemExit(f"{name}: split file has {is_test.len()} rows, data {frame.height}")
    frame = frame.select([*entry["features"], entry["target"]])
    return entry, frame.filter(~is_test), frame.filter(is_test)


def holdout_score(entry: dict[str, Any], bundle: Any, holdout: pl.DataFrame) -> float:
    """The dataset's metric on the holdout, from the registered bundle's predictions."""
    from arbor_ml import metrics as M

    target = entry["target"]
    task = entry["task"]
    if task == "regression":
        values = bundle.predict(holdout).values
        return M.rmse(holdout[target].cast(pl.Float64).to_numpy(), values)
    proba = bundle.predict_raw(holdout)
    classes = [str(c) for c in bundle.classes]
    truth = [str(v) for v in holdout[target].to_list()]
    if task == "binary":
        positive = classes.index(str(entry["positive_label"]))
        return M.roc_auc_binary(
            np.array([t == classes[positive] for t in truth]), proba[:, positive]
        )
    y = np.array([classes.index(t) for t in truth])
    return M.log_loss(y, proba)


def member_scores(
    entry: dict[str, Any], bundle: Any, holdout: pl.DataFrame
) -> list[dict[str, Any]]:
    """Each member of a blend scored alone on the holdout (what the blend adds to them)."""
    from arbor_ml.bundle import ModelBundle
    from arbor_ml.ensemble import EnsembleModel

    blend = bundle.model
    scores = []
    for member in blend.members:
        alone = EnsembleModel(
            [member],
            task=blend.task,
            feature_names=blend.feature_names,
            categorical_features=blend.categorical_features,
            n_classes=blend.n_classes,
        )
        solo = ModelBundle(
            model=alone,
            preprocessor=bundle.preprocessor,
            postprocessor=bundle.postprocessor,
            signature=bundle.signature,
            metadata=bundle.metadata,
        )
        scores.append(
            {
                "trial": member.trial,
                "model_type": member.model.model_type.value,
                "weight": round(member.weight, 4),
                "holdout": holdout_score(entry, solo, holdout),
            }
        )
    return scores


async def leaderboard(s: dict[str, Any], experiment: str) -> list[dict[str, Any]]:
    """Every trial, best first (``ListTrials(order_by="value")``): what the study tried, for
    reading a result (the JSON's ``trials``)."""
    from google.protobuf import json_format

    from arbor.common.v1 import common_pb2
    from arbor.training.v1 import training_service_pb2 as pb

    board = await s["training"].ListTrials(
        pb.ListTrialsRequest(parent=experiment, order_by="value", page_size=1000), timeout=30
    )
    return [
        {
            "number": trial.number,
            "state": pb.TrialState.Name(trial.state).removeprefix("TRIAL_STATE_").lower(),
            "model_type": common_pb2.ModelType.Name(trial.model_type)
            .removeprefix("MODEL_TYPE_")
            .lower(),
            "value": trial.value,
            "fold_values": list(trial.fold_values),
            "best_iteration": trial.best_iteration,
            "fit_seconds": round(trial.fit_seconds, 2),
            "seconds": round(trial.duration.ToNanoseconds() / 1e9, 2),
            "params": json_format.MessageToDict(trial.params),
            "error": trial.error_message,
        }
        for trial in board.trials
    ]


def best_by_library(trials: list[dict[str, Any]]) -> dict[str, float]:
    """The best validation value each library reached (the leaderboard's top per library)."""
    best: dict[str, float] = {}
    for trial in trials:
        if trial["state"] == "complete":
            best.setdefault(trial["model_type"], trial["value"])
    return best


def verdict(name: str, metric: str, score: float) -> tuple[str, str, float]:
    """(best anchor, "at/above" | "within 1%" | "worse", relative gap to it)."""
    anchors = ANCHORS[name]
    higher = HIGHER_IS_BETTER[metric]
    best_name = (max if higher else min)(anchors, key=anchors.__getitem__)
    best = anchors[best_name]
    gap = (best - score) / best if higher else (score - best) / best  # > 0: worse
    if not math.isfinite(score):
        return best_name, "failed", math.inf
    if gap <= 1e-9:
        return best_name, "at/above", gap
    return best_name, "within 1%" if gap <= TOLERANCE else "worse", gap


# --------------------------------------------------------------------------- the stack


@contextlib.asynccontextmanager
async def stack(workdir: Path) -> AsyncIterator[dict[str, Any]]:
    """Split, registry and training servers plus one worker, on a fresh database."""
    import grpc
    import psycopg

    from arbor.registry.v1 import registry_service_pb2_grpc
    from arbor.split.v1 import split_service_pb2_grpc
    from arbor.training.v1 import training_service_pb2_grpc
    from arbor_core.config import load_settings
    from arbor_registry.server import build_runner as registry_runner
    from arbor_registry.server import migrate as registry_migrate
    from arbor_split.server import build_runner as split_runner
    from arbor_split.server import migrate as split_migrate
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate
    from arbor_training.worker import Worker, WorkerConfig

    dbname = f"arbor_quality_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    database_url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    database_url = f"{database_url}/{dbname}"
    data_root = workdir / "data"
    data_root.mkdir()
    namespace = f"q{uuid.uuid4().hex[:8]}"

    def settings(service: str, **extra: Any) -> Any:
        return dataclasses.replace(
            load_settings(service),
            host="127.0.0.1",
            port=0,
            home=workdir,
            database_url=database_url,
            nats_url=NATS_URL,
            nats_namespace=namespace,
            artifact_uri=str(workdir / "artifacts"),
            allowed_data_roots=[str(data_root)],
            auth_tokens=[],
            grace_seconds=0.5,
            **extra,
        )

    runners: list[Any] = []
    channels: list[Any] = []
    worker_task = None
    stop = asyncio.Event()
    try:
        split_settings = settings("split")
        await asyncio.to_thread(split_migrate, split_settings)
        runners.append(split_runner(split_settings, relay_poll_interval=0.2))
        registry_settings = settings("registry")
        await asyncio.to_thread(registry_migrate, registry_settings)
        runners.append(registry_runner(registry_settings, relay_poll_interval=0.2))
        for runner in runners:
            await runner.start()
        addresses = {"split": runners[0].address, "registry": runners[1].address}
        training_settings = settings("training", service_addresses=addresses)
        await asyncio.to_thread(training_migrate, training_settings)
        runners.append(training_runner(training_settings, relay_poll_interval=0.2))
        await runners[2].start()
        channels = [grpc.aio.insecure_channel(r.address) for r in runners]
        worker = Worker(training_settings, WorkerConfig(ack_wait=120.0, fetch_timeout=0.5))
        worker_task = asyncio.create_task(worker.run(stop))
        yield {
            "data_root": data_root,
            "artifacts": workdir / "artifacts",
            "split": split_service_pb2_grpc.SplitServiceStub(channels[0]),
            "registry": registry_service_pb2_grpc.RegistryServiceStub(channels[1]),
            "training": training_service_pb2_grpc.TrainingServiceStub(channels[2]),
        }
    finally:
        stop.set()
        if worker_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker_task, 120)
        for channel in channels:
            await channel.close()
        for runner in reversed(runners):
            with contextlib.suppress(Exception):
                await runner.stop(0.5)
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --------------------------------------------------------------------------- one dataset


async def run_dataset(s: dict[str, Any], name: str, args: argparse.Namespace) -> dict[str, Any]:
    from google.protobuf import duration_pb2, json_format

    from arbor.common.v1 import common_pb2
    from arbor.registry.v1 import registry_service_pb2 as registry_pb
    from arbor.split.v1 import split_service_pb2 as split_pb
    from arbor.training.v1 import training_service_pb2 as pb
    from arbor_core.artifacts import open_store
    from arbor_ml import load_bundle

    entry, dev, holdout = load(name)
    task = entry["task"]
    metric = METRIC[task]
    path = s["data_root"] / f"{name}.parquet"
    dev.write_parquet(path)
    valid = validation_fraction(dev.height) if args.validation == "auto" else float(args.validation)
    split = await s["split"].CreateSplit(
        split_pb.CreateSplitRequest(
            split=split_pb.Split(
                source=split_pb.DataSource(uri=str(path)),
                target_column=entry["target"],
                strategy=split_pb.SplitStrategy(
                    random=split_pb.RandomStrategy(stratify=task != "regression")
                ),
                fractions=split_pb.Fractions(train=1 - valid, validation=valid, test=0.0),
                seed=args.seed,
            ),
            split_id=f"{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}",
        ),
        timeout=300,
    )
    # ``--cv auto``: the study chooses (``StudyConfig.cv_auto``: 5 folds up to 5,000 rows and
    # 100,000 cells, none above); a number: that many folds
    auto = args.cv == "auto"
    study = pb.StudyConfig(
        n_trials=0,
        timeout=duration_pb2.Duration(seconds=int(args.budget)),
        seed=args.seed,
        threads=args.threads,
        max_iterations=args.max_iterations,
        early_stopping_rounds=args.early_stopping,
        cv_folds=0 if auto else int(args.cv),
        cv_auto=auto,
        ensemble_size=args.ensemble,
    )
    created = await s["training"].CreateExperiment(
        pb.CreateExperimentRequest(
            experiment=pb.Experiment(
                split=split.split.name,
                model_type=common_pb2.MODEL_TYPE_AUTO,
                task_type=common_pb2.TaskType.Value(f"TASK_TYPE_{task.upper()}"),
                metric=metric,
                study=study,
                model_name=f"quality-{name.replace('_', '-')}",
            )
        ),
        timeout=60,
    )
    folds = created.experiment.study.cv_folds  # as the study resolved it
    started = time.monotonic()
    while True:
        got = await s["training"].GetExperiment(
            pb.GetExperimentRequest(name=created.experiment.name), timeout=30
        )
        experiment = got.experiment
        if experiment.state in (
            pb.EXPERIMENT_STATE_SUCCEEDED,
            pb.EXPERIMENT_STATE_FAILED,
            pb.EXPERIMENT_STATE_CANCELLED,
        ):
            break
        if time.monotonic() - started > args.budget * 4 + 300:
            raise SystemExit(f"{name}: experiment did not finish")
        await asyncio.sleep(0.5)
    members: list[dict[str, Any]] = []
    if experiment.state != pb.EXPERIMENT_STATE_SUCCEEDED:
        print(f"{name}: {pb.ExperimentState.Name(experiment.state)} {experiment.error_message}")
        score = math.nan
        library = ""
    else:
        version = await s["registry"].GetModelVersion(
            registry_pb.GetModelVersionRequest(name=experiment.model_version), timeout=30
        )
        uri = version.model_version.artifact_uri
        root = str(s["artifacts"])
        prefix = uri[uri.index(root) + len(root) :].strip("/") + "/"
        bundle = load_bundle(open_store(root), prefix)
        score = holdout_score(entry, bundle, holdout)
        library = bundle.metadata["model_type"]
        if library == "ensemble":  # which libraries, and how much of the blend each is
            library = " + ".join(
                f"{m.model.model_type.value} {m.weight:.2f}"
                for m in bundle.model.members  # type: ignore[attr-defined]  # an EnsembleModel
            )
            members = member_scores(entry, bundle, holdout)
    trials = await leaderboard(s, experiment.name)
    for trial in trials:
        if trial["state"] == "failed":
            print(f"  failed trial {trial['number']}: {trial['error'][:300]}", flush=True)
    summary = experiment.summary
    took = (experiment.end_time.ToNanoseconds() - experiment.start_time.ToNanoseconds()) / 1e9
    best_anchor, judged, gap = verdict(name, metric, score)
    return {
        "dataset": name,
        "task": task,
        "metric": metric,
        "rows": entry["rows"],
        "arbor": score,
        "anchors": ANCHORS[name],
        "best_anchor": best_anchor,
        "verdict": judged,
        "gap": gap,
        "library": library,
        "trials_complete": summary.trials_complete,
        "trials_pruned": summary.trials_pruned,
        "trials_failed": summary.trials_failed,
        "final_fit": summary.final_fit,
        "cv_folds": folds,
        "validation_fraction": valid,
        "experiment_seconds": round(took, 1),
        "trials_seconds": round(summary.trials_time.ToNanoseconds() / 1e9, 1),
        "final_seconds": round(summary.final_time.ToNanoseconds() / 1e9, 1),
        "validation_value": experiment.best_trial.value,
        "best_trial": experiment.best_trial.number,
        "best_params": json_format.MessageToDict(experiment.best_trial.params),
        "final_iterations": summary.final_iterations,
        "blend_members": members,
        "best_validation_by_library": best_by_library(trials),
        "trials": trials,
    }


def fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.0f}" if metric == "rmse" and value > 100 else f"{value:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | metric | Arbor | best anchor | catboost_default | flaml | optuna_lgbm "
        "| verdict | winner | trials (ok/pruned/failed) | final fit | time (s) |\n"
        "|---|---|---:|---|---:|---:|---:|---|---|---|---|---:|"
    )
    lines = [head]
    for r in rows:
        m, a = r["metric"], r["anchors"]
        judged = r["verdict"] if r["verdict"] == "at/above" else f"{r['verdict']} ({r['gap']:+.2%})"
        best = f"{r['best_anchor']} {fmt(m, a[r['best_anchor']])}"
        anchors = " | ".join(fmt(m, a[k]) for k in ("catboost_default", "flaml", "optuna_lgbm"))
        counts = f"{r['trials_complete']}/{r['trials_pruned']}/{r['trials_failed']}"
        lines.append(
            f"| {r['dataset']} | {m} | **{fmt(m, r['arbor'])}** | {best} | {anchors} | {judged} "
            f"| {r['library']} | {counts} | {r['final_fit']} | {r['experiment_seconds']} |"
        )
    return "\n".join(lines)


def means(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per dataset, Arbor's mean holdout score over the runs (seeds) and its verdict: how the
    anchors are reported (each a mean over three seeds), so the target is judged on the same
    footing as the anchors rather than on one seed's luck."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            by_name.setdefault(row["dataset"], []).append(row)
    out = []
    for name in [n for n in ORDER if n in by_name]:
        rows = by_name[name]
        metric = rows[0]["metric"]
        scores = [r["arbor"] for r in rows]
        mean = float(np.mean(scores)) if all(map(math.isfinite, scores)) else math.nan
        best_anchor, judged, gap = verdict(name, metric, mean)
        out.append(
            {
                "dataset": name,
                "metric": metric,
                "arbor_mean": mean,
                "n": len(scores),
                "scores": scores,
                "best_anchor": best_anchor,
                "anchor": ANCHORS[name][best_anchor],
                "verdict": judged,
                "gap": gap,
            }
        )
    return out


def means_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | metric | Arbor (mean) | n | best anchor | verdict | each run |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        m = r["metric"]
        judged = r["verdict"] if r["verdict"] == "at/above" else f"{r['verdict']} ({r['gap']:+.2%})"
        each = ", ".join(fmt(m, v) for v in r["scores"])
        lines.append(
            f"| {r['dataset']} | {m} | **{fmt(m, r['arbor_mean'])}** | {r['n']} "
            f"| {r['best_anchor']} {fmt(m, r['anchor'])} | {judged} | {each} |"
        )
    return "\n".join(lines)


def tally(rows: list[dict[str, Any]]) -> str:
    at = sum(r["verdict"] == "at/above" for r in rows)
    near = sum(r["verdict"] == "within 1%" for r in rows)
    return (
        f"at or above the best anchor: {at}/{len(rows)}; within 1%: {near}; "
        f"worse: {len(rows) - at - near}"
    )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else ORDER
    unknown = [n for n in names if n not in ANCHORS]
    if unknown:
        raise SystemExit(f"unknown datasets: {', '.join(unknown)}; known: {', '.join(ORDER)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="arbor-quality-") as tmp:
        async with stack(Path(tmp)) as s:
            for name in names:
                print(f"{datetime.now(UTC):%H:%M:%S} {name}: {args.budget:.0f} s ...", flush=True)
                row = await run_dataset(s, name, args)
                rows.append(row)
                m = row["metric"]
                best = f"{row['best_anchor']} {fmt(m, ANCHORS[name][row['best_anchor']])}"
                print(
                    f"  {m} {fmt(m, row['arbor'])} ({row['verdict']}, best anchor {best}); "
                    f"{row['library']}, {row['trials_complete']} trials, "
                    f"final fit {row['final_fit']}, {row['experiment_seconds']} s",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="", help="comma-separated (default: all seven)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per experiment")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        default="",
        help="comma-separated seeds: one run each, then the table of their means (as the "
        "anchors are reported)",
    )
    parser.add_argument(
        "--mean-of",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="no run: the means table of earlier runs' result files",
    )
    parser.add_argument("--cv", default="auto", help="folds, 0 for none, or auto")
    parser.add_argument(
        "--validation", default="auto", help="validation share of the 80%%, or auto (by size)"
    )
    parser.add_argument(
        "--ensemble", type=int, default=0, help="most trials blended (0: AUTO's default, 3)"
    )
    parser.add_argument("--max-iterations", type=int, default=3000)
    parser.add_argument("--early-stopping", type=int, default=50)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.mean_of:
        earlier: list[list[dict[str, Any]]] = []
        for path in args.mean_of:  # a --seeds file holds every seed's run
            saved = json.loads(path.read_text())
            earlier.extend(run["rows"] for run in saved.get("runs") or [{"rows": saved["rows"]}])
        averaged = means(earlier)
        print(means_table(averaged))
        print(f"\n{tally(averaged)} (means over {len(earlier)} runs)")
        return
    from arbor_core.logging import configure_logging

    configure_logging("quality-bench", os.environ.get("ARBOR_LOG_LEVEL", "WARNING"))
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] or [args.seed]
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        args.seed = seed
        rows = asyncio.run(main_async(args))
        runs.append({"seed": seed, "rows": rows})
        print(f"\nseed {seed}:\n")
        print(table(rows))
        print(f"\n{tally(rows)}")
    averaged = means([run["rows"] for run in runs]) if len(runs) > 1 else []
    if averaged:
        print(f"\nmeans over seeds {', '.join(map(str, seeds))}:\n")
        print(means_table(averaged))
        print(f"\n{tally(averaged)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
                f"python {platform.python_version()}",
                "load_average": os.getloadavg(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": runs[-1]["rows"],  # the last run (one run: its rows, as before)
                "runs": runs,
                "means": averaged,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
