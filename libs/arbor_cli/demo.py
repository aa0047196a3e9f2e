"""``python -m arbor_cli.demo`` (``make demo``): Arbor's whole life on a small real dataset.

Against a running platform (``make up`` in another terminal, or any deployment the
``ARBOR_*_ADDRESS`` variables point at) it splits a sample of ``credit_data`` (or
``breast_cancer``) from ``../shared/datasets``, runs a short hyperparameter study while
watching its trials, promotes the model, predicts held-out rows and explains them. Each step
prints the ``arbor`` command that does the same, and the files those commands read are left
in ``$ARBOR_HOME/demo`` so they can be pasted as they are.

It stays small on purpose (a 1,200-row sample, three LightGBM trials of at most 60 rounds):
about half a minute on a laptop.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from google.protobuf import json_format

from arbor.common.v1 import common_pb2
from arbor.training.v1 import training_service_pb2 as training_pb
from arbor_client import ArborClient, ArborClientError
from arbor_core.devstack import recorded_nats_url

DATASETS = ("credit_data.parquet", "breast_cancer.parquet")
HOLDOUT_ROWS = 5  # rows predicted and explained one by one
SCORE_ROWS = 200  # held-out rows scored for the accuracy line


class DemoError(Exception):
    """A reason the demo cannot go on, said in one line; ``exit_code`` as the CLI's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DemoOptions:
    dataset: Path | None = None
    rows: int = 1200
    trials: int = 3
    max_iterations: int = 60
    model_type: str = "lightgbm"
    model_name: str = ""
    seed: int = 42
    workdir: Path | None = None
    timeout: float = 300.0


@dataclass
class DemoResult:
    split: str
    experiment: str
    model_version: str
    predictions: list[dict[str, Any]]
    accuracy: float | None


def find_dataset(explicit: Path | None = None) -> Path:
    """The demo dataset: ``explicit``, else the first of ``DATASETS`` found in
    ``../shared/datasets`` relative to the repository root (or to the working directory)."""
    if explicit is not None:
        if not explicit.is_file():
            raise DemoError(f"no such dataset file: {explicit}", exit_code=2)
        return explicit
    repo = Path(__file__).resolve().parents[2]
    bases = [repo.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    for base in bases:
        for name in DATASETS:
            if (base / name).is_file():
                return base / name
    raise DemoError(
        f"no demo dataset: expected {' or '.join(DATASETS)} in ../shared/datasets "
        f"(looked in {', '.join(str(b) for b in dict.fromkeys(bases))}); "
        "pass --dataset PATH with a Parquet file that has a manifest.json entry beside it",
        exit_code=2,
    )


def manifest_entry(dataset: Path) -> dict[str, Any]:
    """The dataset's entry in ``manifest.json`` beside it (target, task, split file)."""
    manifest = dataset.parent / "manifest.json"
    try:
        entries = json.loads(manifest.read_text())["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DemoError(f"cannot read {manifest}: {exc}", exit_code=2) from exc
    for entry in entries:
        if entry.get("file") == dataset.name or entry.get("name") == dataset.stem:
            return dict(entry)
    raise DemoError(f"{dataset.name} has no entry in {manifest}", exit_code=2)


def command(*parts: object) -> str:
    """An ``arbor`` command line as a reader would type it (quoted where needed)."""
    return "arbor " + " ".join(shlex.quote(str(p)) for p in parts)


class Demo:
    """The walk-through; ``say`` prints (a test can capture it)."""

    def __init__(
        self, arbor: ArborClient, options: DemoOptions, say: Callable[[str], None] = print
    ) -> None:
        self.arbor = arbor
        self.options = options
        self.say = say
        self.step_number = 0
        self.started = time.monotonic()

    def step(self, title: str, *commands: str) -> None:
        self.step_number += 1
        self.say("")
        self.say(f"== {self.step_number}. {title}")
        for line in commands:
            self.say(f"   $ {line}")

    # -- the steps ------------------------------------------------------------------------

    def check_platform(self) -> None:
        self.step("Is the platform up?", command("status"))
        health = self.arbor.health(timeout=3.0)
        for service, status in health.items():
            self.say(f"   {service:<10} {self.arbor.config.address(service):<22} {status}")
        down = [s for s, status in health.items() if status != "SERVING"]
        if down:
            raise DemoError(
                f"not serving: {', '.join(down)}. Start the platform first (`make up` in "
                "another terminal) or point ARBOR_<SVC>_ADDRESS at a running one"
            )

    def prepare_data(
        self, dataset: Path, entry: dict[str, Any], workdir: Path
    ) -> tuple[Path, Path, pl.DataFrame]:
        """A training sample (from the dataset's own training rows) and held-out rows."""
        target = entry["target"]
        frame = pl.read_parquet(dataset)
        split_file = dataset.parent / str((entry.get("split") or {}).get("file") or "")
        if split_file.is_file():
            is_test = pl.read_parquet(split_file)["is_test"]
            train_pool, holdout = frame.filter(~is_test), frame.filter(is_test)
        else:  # no fixed split beside it: hold out the last fifth
            cut = int(frame.height * 0.8)
            train_pool, holdout = frame[:cut], frame[cut:]
        rows = min(self.options.rows, train_pool.height) if self.options.rows else None
        sample = train_pool.sample(n=rows, seed=self.options.seed) if rows else train_pool
        holdout = holdout.sample(n=min(SCORE_ROWS, holdout.height), seed=self.options.seed)
        workdir.mkdir(parents=True, exist_ok=True)
        sample_path = workdir / f"{dataset.stem}.sample.parquet"
        sample.write_parquet(sample_path)
        rows_path = workdir / "holdout.csv"
        holdout.head(HOLDOUT_ROWS).drop(target).write_csv(rows_path)
        self.say(
            f"   dataset {dataset} ({frame.height} rows, target {target!r}, "
            f"task {entry.get('task', '?')}); using {sample.height} training rows, "
            f"{holdout.height} held-out rows for scoring; files in {workdir}"
        )
        return sample_path, rows_path, holdout

    def create_split(self, sample_path: Path, target: str, classification: bool) -> str:
        flags = ["--stratify"] if classification else []
        self.step(
            "Split the data (train 80% / validation 20%, stratified on the target)",
            command(
                "splits",
                "create",
                sample_path,
                "--target",
                target,
                *flags,
                "--train",
                0.8,
                "--validation",
                0.2,
                "--seed",
                self.options.seed,
                "--label",
                "demo=true",
            ),
        )
        split = self.arbor.split.create_split_from_file(
            sample_path,
            target,
            stratify=classification,
            fractions=(0.8, 0.2),
            seed=self.options.seed,
            labels={"demo": "true"},
            display_name=f"{sample_path.stem} demo",
        )
        parts = ", ".join(f"{p.part} {p.row_count} rows" for p in split.parts)
        self.say(f"   created {split.name}: {parts}; content hash {split.content_hash[:12]}...")
        for part in split.parts:
            if part.class_balance:
                balance = ", ".join(f"{k}: {v}" for k, v in sorted(part.class_balance.items()))
                self.say(f"   {part.part:<10} class balance {balance}")
        self.step("List the splits", command("splits", "list", "--label", "demo=true"))
        for listed in self.arbor.split.iter_splits(labels={"demo": "true"}, limit=5):
            self.say(f"   {listed.name}  {listed.row_count} rows  target {listed.target_column}")
        return str(split.name)

    def train(self, split: str, model_name: str) -> training_pb.Experiment:
        o = self.options
        self.step(
            f"Run a study: {o.trials} {o.model_type} trials, watched live",
            command(
                "experiments",
                "create",
                "--split",
                split,
                "--model-type",
                o.model_type,
                "--trials",
                o.trials,
                "--max-iterations",
                o.max_iterations,
                "--seed",
                o.seed,
                "--model-name",
                model_name,
                "--watch",
            ),
        )
        experiment = self.arbor.training.create_experiment(
            split,
            model_type=o.model_type,
            n_trials=o.trials,
            max_iterations=o.max_iterations,
            seed=o.seed,
            model_name=model_name,
            display_name=f"{model_name} (demo)",
            labels={"demo": "true"},
        )
        metric = experiment.metric or "metric"
        self.say(f"   queued {experiment.name} (metric {metric}); a training worker picks it up")
        state = experiment.state
        final = experiment
        for update in self.arbor.training.watch_experiment(experiment.name, timeout=o.timeout):
            final = update.experiment
            if final.state != state:
                state = final.state
                self.say(f"   state {training_pb.ExperimentState.Name(state)[17:]}")
            if update.HasField("trial"):
                trial = update.trial
                value = _value(trial)
                best = final.best_trial.value if final.HasField("best_trial") else None
                best_text = f"{best:.4f}" if best is not None else "-"
                trial_state = training_pb.TrialState.Name(trial.state)[12:].lower()
                self.say(
                    f"   trial {trial.number}: {trial_state:<8} {metric} {value}  "
                    f"(best so far {best_text}; {final.trials_completed}/{o.trials} done)"
                )
        if final.state != training_pb.EXPERIMENT_STATE_SUCCEEDED:
            raise DemoError(
                f"{final.name} ended {training_pb.ExperimentState.Name(final.state)}: "
                f"{final.error_message or 'see the training worker log'}",
                exit_code=3,
            )
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(final.metrics.items()))
        self.say(f"   {final.name} SUCCEEDED -> {final.model_version}; validation {metrics}")

        self.step(
            "The trials, best first",
            command("experiments", "trials", final.name, "--order-by", "value"),
        )
        for trial in self.arbor.training.iter_trials(final.name, order_by="value"):
            params = json_format.MessageToDict(trial.params)
            text = ", ".join(f"{k}={_short(v)}" for k, v in sorted(params.items())[:4])
            self.say(f"   #{trial.number}  {_value(trial)}  {text}")
        return final

    def promote(self, model_version: str) -> tuple[str, int]:
        # "models/NAME/versions/N"
        _, model, _, number = model_version.split("/")
        version = int(number)
        self.step(
            "Promote the model to production and call it champion",
            command("models", "promote", model, version, "--stage", "production"),
            command("models", "alias", model, "champion", version),
        )
        self.arbor.registry.promote_model(model, version, stage="production")
        self.arbor.registry.set_alias(model, "champion", version)
        got = self.arbor.registry.get_model_version(model, version)
        stage = common_pb2.ModelStage.Name(got.stage)[len("MODEL_STAGE_") :]
        self.say(f"   {model_version} is {stage}; aliases: champion")
        self.step("The registry's view", command("models", "get", model))
        for v in itertools.islice(self.arbor.registry.iter_model_versions(model), 5):
            v_stage = common_pb2.ModelStage.Name(v.stage)[len("MODEL_STAGE_") :]
            self.say(f"   {v.name}  {v_stage}  from {v.experiment}")
        return model, version

    def predict(
        self, model: str, version: int, rows_path: Path, holdout: pl.DataFrame, target: str
    ) -> tuple[list[dict[str, Any]], float | None]:
        self.step(
            f"Predict {HOLDOUT_ROWS} held-out rows with the production model",
            command("predict", "--model", model, rows_path, "--probabilities"),
        )
        rows = holdout.head(HOLDOUT_ROWS).drop(target).to_dicts()
        response = self.arbor.inference.predict_rows(model, rows, include_probabilities=True)
        # The serving cache swaps to a promoted version on the promotion event: a call right
        # after promoting may still meet the version before it, for a moment.
        deadline = time.monotonic() + 10
        while response.served_model.version != version and time.monotonic() < deadline:
            time.sleep(0.2)
            response = self.arbor.inference.predict_rows(model, rows, include_probabilities=True)
        predictions = self.arbor.inference.to_rows(response)
        self.say(f"   served by {response.served_model.model_version}")
        actual = holdout.head(HOLDOUT_ROWS)[target].to_list()
        for i, (row, truth) in enumerate(zip(predictions, actual, strict=False)):
            shown = row.get("label", row.get("value"))
            probas = ", ".join(f"{k[6:]} {v:.2f}" for k, v in row.items() if k.startswith("proba_"))
            self.say(f"   row {i}: predicted {shown!s:<8} actual {truth!s:<8} {probas}")
        accuracy = None
        scored = self.arbor.inference.predict_rows(
            f"{model}@champion", holdout.drop(target).to_dicts()
        )
        labels = [r.get("label") for r in self.arbor.inference.to_rows(scored)]
        truths = holdout[target].to_list()
        if labels and all(label is not None for label in labels):
            accuracy = sum(str(a) == str(b) for a, b in zip(labels, truths, strict=True)) / len(
                truths
            )
            self.say(f"   accuracy on {len(truths)} held-out rows (model@champion): {accuracy:.3f}")
        return predictions, accuracy

    def explain(self, model: str, rows_path: Path, holdout: pl.DataFrame, target: str) -> None:
        self.step(
            "Explain: which features drive the predictions (SHAP)",
            command(
                "explain", "--model", f"{model}@champion", rows_path, "--per-row", "--top-k", 5
            ),
        )
        rows = holdout.head(HOLDOUT_ROWS).drop(target).to_dicts()
        response = self.arbor.inference.explain_rows(f"{model}@champion", rows, top_k=5)
        self.say("   global importance (mean |SHAP| over the rows):")
        for item in response.global_importance:
            self.say(f"     {item.feature:<22} {item.importance:.4f}")
        first = [r for r in response.rows if r.row_index == 0]
        if first:
            contributions = sorted(
                zip(response.features, first[0].contributions, strict=False),
                key=lambda fc: -abs(fc[1]),
            )[:3]
            text = ", ".join(f"{f} {c:+.3f}" for f, c in contributions)
            self.say(f"   row 0 (base value {first[0].base_value:+.3f}): {text}")

    def next_steps(self, experiment: str, home: Path) -> None:
        # `make up` runs its own nats-server (stack.json says where); the CLI must be told.
        nats_url = os.environ.get("ARBOR_NATS_URL") or recorded_nats_url(home)
        tail = command("events", "tail", "--from-start", "--resource", experiment, "--count", 5)
        self.step(
            "Where to look next",
            f"ARBOR_NATS_URL={nats_url} {tail}" if nats_url else tail,
            command("maintenance", "export-metrics"),
            f"grpcurl -plaintext {self.arbor.config.address('inference')} list"
            "   # every service has reflection",
        )
        self.say(f"   done in {time.monotonic() - self.started:.0f} s")

    def run(self) -> DemoResult:
        o = self.options
        dataset = find_dataset(o.dataset)
        entry = manifest_entry(dataset)
        target = str(entry["target"])
        classification = entry.get("task") in {"binary", "multiclass"}
        model_name = o.model_name or f"{dataset.stem.replace('_', '-')}-demo"
        home = Path(os.environ.get("ARBOR_HOME") or ".arbor")
        workdir = o.workdir or home / "demo"
        self.say(f"Arbor demo: {dataset.stem} -> split -> study -> registry -> predict/explain")
        self.check_platform()
        sample_path, rows_path, holdout = self.prepare_data(dataset, entry, workdir)
        split = self.create_split(sample_path, target, classification)
        experiment = self.train(split, model_name)
        model, version = self.promote(experiment.model_version)
        predictions, accuracy = self.predict(model, version, rows_path, holdout, target)
        self.explain(model, rows_path, holdout, target)
        self.next_steps(experiment.name, home)
        return DemoResult(split, experiment.name, experiment.model_version, predictions, accuracy)


def _value(trial: training_pb.Trial) -> str:
    """The trial's objective value, or "-" for a pruned or failed one (it has none)."""
    return f"{trial.value:.4f}" if trial.state == training_pb.TRIAL_STATE_COMPLETE else "-"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def parse_args(argv: Sequence[str] | None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m arbor_cli.demo",
        description="Walk through Arbor end to end against a running platform (make up).",
    )
    parser.add_argument("--dataset", type=Path, help="a Parquet file with a manifest.json entry")
    parser.add_argument("--rows", type=int, default=1200, help="training sample size (0: all)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-iterations", type=int, default=60, help="boosting rounds")
    parser.add_argument("--model-type", default="lightgbm", help="lightgbm, xgboost, catboost")
    parser.add_argument("--model-name", default="", help="default: <dataset>-demo")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, help="default: $ARBOR_HOME/demo")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the study")
    args = parser.parse_args(argv)
    return DemoOptions(
        dataset=args.dataset,
        rows=args.rows,
        trials=args.trials,
        max_iterations=args.max_iterations,
        model_type=args.model_type,
        model_name=args.model_name,
        seed=args.seed,
        workdir=args.workdir,
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None, say: Callable[[str], None] = print) -> int:
    options = parse_args(argv)
    try:
        with ArborClient() as arbor:
            Demo(arbor, options, say).run()
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except ArborClientError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
