"""How a study spends its budget: defaults first, a warm start, AUTO's rule, the final fit.

The training service's study runner (``arbor_training.study``) follows these rules; they live
here, without Optuna or a database, so that they can be read, tested and reused on their own.

**Defaults first.** A study's first trials are fixed: each library's own defaults
(:meth:`Trainer.default_params_for`: CatBoost's learning rate is the one CatBoost picks for the
data size), so a study can never end worse than the defaults on its validation data. Then a
small portfolio of configurations that do well across tabular data sets
(:func:`portfolio`), then the sampler (TPE by default), whose random start-up phase is
shortened to :func:`startup_trials` since the fixed trials already cover the space.

**AUTO** (``model_type = auto``) searches CatBoost, LightGBM and XGBoost in one budget with a
conditional space: the library is a categorical parameter ``model_type`` and each library's
parameters are named ``<library>.<param>``. The budget rule (:data:`LIBRARY_ORDER`): CatBoost's
defaults first (the strongest untuned baseline), then CatBoost with cheap categorical encodings
(:data:`EARLY_PORTFOLIO`; the two swap places from :data:`LARGE_DATA_ROWS` train rows), then
LightGBM's and XGBoost's defaults, then one portfolio
configuration each for LightGBM and XGBoost, then
TPE over the whole conditional space, which puts its trials where the scores are. One model is
registered: the best trial's library.

**Time budget.** ``timeout`` covers the whole experiment, the final fit included. The
:class:`TimeBudget` gives trials a deadline that leaves room for the final fit
(:func:`estimate_final_seconds`, from the best trial's own fit time) when that refit takes at
most a third of the budget (a slower one is not planned for: the trials keep the time and the
trial's model is registered); a trial that reaches
the deadline stops boosting and is scored as it stands (it is not pruned), so even a study
whose first trial is cut short ends with a model. A CatBoost trial that, at the pace of its
first rounds, would be cut short well before the rounds its learning rate is meant for is
restarted with the rounds that fit and CatBoost's rate for them (:func:`resized_rounds`).

**Final fit** (:class:`FinalFit`): ``all`` refits the best parameters on train + validation
for the rounds early stopping kept, scaled by :func:`refit_iterations` (more data supports a
few more rounds), averaging up to three models into one where the library can
(``Trainer.fit_ensemble``, CatBoost) and the budget holds them (:func:`averaged_models`): the
next best trials of the same library within :data:`ENSEMBLE_TOLERANCE` of the best
(:func:`ensemble_members`), else seeds of the best;
``train`` refits on train only (reproducing the trial's model); ``trial``
keeps the trial's own model; ``auto`` (the default) takes ``all`` when the remaining budget
holds its estimate, else the trial's model when this process still has it, else ``train``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from arbor_core.errors import InvalidArgument
from arbor_ml.trainers.base import FitSettings, Trainer
from arbor_ml.types import ModelType, TaskType

#: The order in which an AUTO study tries the libraries' defaults.
LIBRARY_ORDER: tuple[ModelType, ...] = (ModelType.CATBOOST, ModelType.LIGHTGBM, ModelType.XGBOOST)
#: The order of the portfolio trials in an AUTO study.
PORTFOLIO_ORDER: tuple[ModelType, ...] = (ModelType.CATBOOST, ModelType.LIGHTGBM, ModelType.XGBOOST)
#: Libraries whose portfolio comes right after their own defaults: CatBoost's fast categorical
#: encodings are often as good as its defaults at a fraction of the time, and its defaults can
#: take most of a short budget on data with many categorical columns.
EARLY_PORTFOLIO: frozenset[ModelType] = frozenset({ModelType.CATBOOST})
#: Train rows from which an early portfolio configuration (cheaper than the defaults) is
#: tried before the defaults: on flights (250,000 rows, a 4,000-value categorical column)
#: CatBoost's defaults take twice as long per round as its cheap categorical encodings for
#: the same validation AUC, and a 60-second budget holds one such trial, not two.
LARGE_DATA_ROWS = 100_000
#: Seconds always kept for packaging the final model, whatever the estimate.
MIN_RESERVE_S = 2.0
#: Seconds kept on top of the final fit's estimate (see :meth:`TimeBudget.reserve`).
RESERVE_MARGIN_S = 1.5
#: The largest share of the budget kept for a refit; a slower one is not planned for.
MAX_RESERVE_FRACTION = 1 / 3
#: The Optuna parameter that holds the library in an AUTO study.
MODEL_TYPE_PARAM = "model_type"


class FinalFit(StrEnum):
    """What the registered model is trained on once the trials are done."""

    AUTO = "auto"
    ALL = "all"  # train + validation (or every cross-validation row)
    TRAIN = "train"  # the train part only, as the trial was
    TRIAL = "trial"  # no refit: the best trial's own model


def parse_final_fit(value: str | None, field: str = "study.final_fit") -> FinalFit:
    text = (value or "").strip().lower()
    if not text:
        return FinalFit.AUTO
    try:
        return FinalFit(text)
    except ValueError:
        allowed = ", ".join(f.value for f in FinalFit)
        raise InvalidArgument(f"final_fit must be one of {allowed}", field=field) from None


# --------------------------------------------------------------------------- warm start


#: From this many train rows the XGBoost portfolio adds a deep configuration (depth 8): on
#: 20,000 rows and more (nlswork, diamonds) it is the best single configuration measured,
#: on a few thousand rows it overfits.
DEEP_PORTFOLIO_ROWS = 10_000


def portfolio(
    model_type: ModelType, task: TaskType, train_rows: int = 0, *, categorical: bool = True
) -> list[dict[str, Any]]:
    """Configurations that do well across tabular data sets, tried after the defaults.
    ``categorical``: whether the data has categorical features (without, CatBoost's cheap
    encodings would repeat its defaults: 13 of 60 seconds on breast_cancer).

    Values only for parameters of the default search space; a caller's narrower ranges
    clamp them (:func:`warm_start`). Slower learning with some subsampling and L2 is the
    common thread: it is what tuned gradient boosting tends to converge to. Chosen on the
    shared datasets' validation and holdout parts over three seeds (docs/quality.md): small
    LightGBM trees (16 leaves) ranked first of seven configurations, XGBoost at depth 6
    second of seven, depth 8 first on the two largest data sets.
    """
    match model_type:
        case ModelType.LIGHTGBM:
            return [
                {
                    "learning_rate": 0.03,
                    "num_leaves": 16,
                    "min_child_samples": 10,
                    "feature_fraction": 0.85,
                    "bagging_fraction": 0.8,
                    "lambda_l1": 1e-8,
                    "lambda_l2": 1.0,
                }
            ]
        case ModelType.XGBOOST:
            configs: list[dict[str, Any]] = [
                {
                    "learning_rate": 0.05,
                    "max_depth": 6,
                    "min_child_weight": 2.0,
                    "subsample": 0.8,
                    "colsample_bytree": 0.75,
                    "reg_lambda": 2.0,
                    "reg_alpha": 1e-8,
                    "gamma": 1e-8,
                }
            ]
            if train_rows >= DEEP_PORTFOLIO_ROWS:
                configs.append(
                    {
                        "learning_rate": 0.03,
                        "max_depth": 8,
                        "min_child_weight": 1.0,
                        "subsample": 0.8,
                        "colsample_bytree": 0.7,
                        "reg_lambda": 2.0,
                        "reg_alpha": 1e-8,
                        "gamma": 1e-8,
                    }
                )
            return configs
        case ModelType.CATBOOST:
            # The defaults (learning rate included) with cheap categorical encodings: often as
            # good, several times faster where there are many categorical columns.
            return [{"one_hot_max_size": 64, "max_ctr_complexity": 1}] if categorical else []
    return []


def _complete(trainer: Trainer, partial: Mapping[str, Any], base: Mapping[str, Any]) -> dict:
    """``partial`` over ``base``, every value moved into the trainer's (overridden) space."""
    params = dict(base)
    for name, value in partial.items():
        spec = trainer.search_space.get(name)
        if spec is not None:
            params[name] = spec.clamp(value)
    return params


def warm_start(
    trainers: Mapping[ModelType, Trainer],
    *,
    train_rows: int,
    settings: FitSettings | None = None,
    auto: bool,
    with_portfolio: bool = True,
    categorical: bool = True,
) -> list[dict[str, Any]]:
    """The fixed trials a study starts with, in order, as flat Optuna parameters.

    For a single library: its defaults, then its portfolio. For AUTO: the defaults in
    :data:`LIBRARY_ORDER`, then the portfolio in :data:`PORTFOLIO_ORDER`, each prefixed
    ``<library>.`` with the library in ``model_type``. Duplicates are dropped.
    """
    libraries = [m for m in LIBRARY_ORDER if m in trainers] + [
        m for m in trainers if m not in LIBRARY_ORDER
    ]
    defaults = {m: trainers[m].default_params_for(train_rows, settings) for m in libraries}
    fixed: list[tuple[ModelType, dict[str, Any]]] = []
    for m in libraries:
        early = []
        if with_portfolio and m in EARLY_PORTFOLIO:
            early = [
                (m, _complete(trainers[m], c, defaults[m]))
                for c in portfolio(m, trainers[m].task, train_rows, categorical=categorical)
            ]
        if train_rows >= LARGE_DATA_ROWS:
            fixed += [*early, (m, defaults[m])]  # the cheap variant first: it gets the time
        else:
            fixed += [(m, defaults[m]), *early]
    if with_portfolio:
        for m in [m for m in PORTFOLIO_ORDER if m in trainers and m not in EARLY_PORTFOLIO]:
            for config in portfolio(m, trainers[m].task, train_rows, categorical=categorical):
                fixed.append((m, _complete(trainers[m], config, defaults[m])))
    out: list[dict[str, Any]] = []
    for library, params in fixed:
        flat = dict(params)
        if auto:
            prefixed = {f"{library.value}.{k}": v for k, v in params.items()}
            flat = {MODEL_TYPE_PARAM: library.value} | prefixed
        if flat not in out:
            out.append(flat)
    return out


def averaged_models(
    remaining_s: float | None, per_fit_s: float, *, overhead_s: float = 2.0, most: int = 3
) -> int:
    """How many seeds the final fit can average (1 to ``most``) in the time left: a refit
    whose estimate is ``per_fit_s``, each seed another one of those, plus the overhead."""
    if per_fit_s <= 0:
        return most
    if remaining_s is None:
        return most
    return int(max(1, min(most, (remaining_s - overhead_s) // per_fit_s)))


#: How far from the best value (relative) a trial may be and still join the final average.
ENSEMBLE_TOLERANCE = 0.005


def ensemble_members(
    scored: Sequence[tuple[int, float]], *, best: int, maximize: bool, most: int
) -> list[int]:
    """Trials (numbers) whose models the final fit averages: ``best`` first, then the next
    best of ``scored`` (number, validation value; same library) within
    :data:`ENSEMBLE_TOLERANCE` of it, up to ``most`` in all.

    Averaging a few near-best configurations lowers the variance of the final model more than
    averaging seeds of one (their errors differ more), and cannot pick a trial that was clearly
    worse on validation. The time budget decides ``most`` (:func:`averaged_models`).
    """
    values = dict(scored)
    if best not in values or most < 1:
        return [best][:most]
    top = values[best]
    slack = abs(top) * ENSEMBLE_TOLERANCE
    near = [
        (value, number)
        for number, value in scored
        if number != best
        and math.isfinite(value)
        and (value >= top - slack if maximize else value <= top + slack)
    ]
    near.sort(reverse=maximize)
    return [best] + [number for _, number in near[: most - 1]]


def startup_trials(fixed_trials: int) -> int:
    """TPE's random start-up trials: the fixed ones plus a few, instead of Optuna's 10."""
    return max(fixed_trials + 2, 4)


# --------------------------------------------------------------------------- rounds vs time

#: A trial is resized when, at its measured pace, it would reach less than this share of
#: the rounds its learning rate is meant for before the trials' deadline.
RESIZE_BELOW = 0.7
#: Rounds timed before the pace is judged (the first ones include warm-up).
RESIZE_PROBE_ROUNDS = 10
#: A resized trial with fewer rounds than this is not worth the restart.
MIN_RESIZED_ROUNDS = 40


def resized_rounds(
    *, done: int, pace_s: float, setup_s: float, time_left_s: float, planned: int
) -> int | None:
    """Rounds to restart a trial with when it cannot reach ``planned`` rounds in time.

    At ``pace_s`` seconds a round, with ``time_left_s`` before the trials' deadline, a trial
    ``done`` rounds in would be cut by the budget at ``done + time_left_s / pace_s`` rounds:
    under-fitted, since its learning rate was chosen for ``planned`` rounds. Restarting it
    with fewer rounds and the larger rate that goes with them (``Trainer.params_for_rounds``)
    fits the same time better; the restart pays the fit's setup (``setup_s``) again, and 10%
    is kept for the pace's noise. None: keep going (it will finish, or a restart is no better).
    """
    if pace_s <= 0 or planned <= 0:
        return None
    if done + time_left_s / pace_s >= planned * RESIZE_BELOW:
        return None
    rounds = int((time_left_s - setup_s) / pace_s * 0.9)
    return rounds if rounds >= MIN_RESIZED_ROUNDS else None


#: ``cv_auto``: cross-validate with this many folds up to these sizes (train + validation)
AUTO_CV_FOLDS = 5
AUTO_CV_MAX_ROWS = 5_000
AUTO_CV_MAX_CELLS = 100_000


def auto_cv_folds(rows: int, features: int) -> int:
    """Folds for a study that lets the data decide (``StudyConfig.cv_auto``): 5 up to 5,000
    rows and 100,000 cells (rows x feature columns), else 0 (one train/validation cut).

    Why: on small data one validation part is too noisy to choose trials and a blend on
    (hpc_data: 693 validation rows; the best trial scored 0.358 there and 0.424 on the
    holdout; chosen on 3,464 out-of-fold rows, the blend scored 0.398), and five fits still
    leave room for several trials in a minute; on wider or larger data five fits of each
    trial leave one or two (ames, 80 columns: 23,565 and 24,025 with five folds, 22,271 to
    23,064 without)."""
    if 0 < rows <= AUTO_CV_MAX_ROWS and rows * max(features, 1) <= AUTO_CV_MAX_CELLS:
        return AUTO_CV_FOLDS
    return 0


def fold_time_share(folds: int, libraries_to_compare: int = 1) -> float:
    """The part of the time left that the first fold of a cross-validated trial may plan its
    rounds for (:func:`resized_rounds`): its ``1/folds``, and in an AUTO study, before every
    library has completed a trial, ``1/libraries_to_compare`` of that (the libraries still
    without one, this trial's included), so that the defaults of one library cannot spend the
    budget of all three. Measured: hpc_data on a slow 2-core VM, where CatBoost's defaults took
    52 of 58 seconds over five folds and the study ended with that one trial."""
    return 1.0 / (max(1, folds) * max(1, libraries_to_compare))


# --------------------------------------------------------------------------- final fit


def refit_iterations(
    best_iterations: Sequence[int | None],
    *,
    fit_rows: int,
    refit_rows: int,
    max_iterations: int,
) -> int:
    """Rounds for a refit on ``refit_rows`` rows after trials on ``fit_rows`` rows.

    The mean of the rounds early stopping kept (``best_iteration + 1``), times the square
    root of the data ratio (1.12 for train + validation after an 80/20 cut): more rows
    support more rounds before overfitting. ``max_iterations`` when no round count is known.
    """
    kept = [int(b) + 1 for b in best_iterations if b is not None]
    if not kept:
        return max_iterations
    ratio = math.sqrt(max(refit_rows, 1) / max(fit_rows, 1)) if refit_rows > fit_rows else 1.0
    return max(1, min(round(sum(kept) / len(kept) * ratio), max(max_iterations * 2, 1)))


def estimate_final_seconds(
    fit_seconds: float | None,
    *,
    fit_rows: int,
    refit_rows: int,
    rounds_ratio: float = 1.0,
    overhead_s: float = 2.0,
) -> float:
    """A cautious estimate of a refit: the trial's fit time scaled by rows and rounds, plus
    a margin and the packaging overhead (importance, saving, registering)."""
    if fit_seconds is None or not math.isfinite(fit_seconds):
        return overhead_s
    scale = max(refit_rows, 1) / max(fit_rows, 1) * max(rounds_ratio, 0.0)
    return fit_seconds * scale * 1.25 + overhead_s


def choose_final_fit(
    policy: FinalFit,
    *,
    remaining_s: float | None,
    estimate_all_s: float,
    have_trial_model: bool,
) -> FinalFit:
    """The final fit ``policy`` comes to, given the time left and what is at hand."""
    if policy is FinalFit.TRIAL and not have_trial_model:
        return FinalFit.TRAIN
    if policy is not FinalFit.AUTO:
        return policy
    if remaining_s is None or estimate_all_s <= remaining_s:
        return FinalFit.ALL
    return FinalFit.TRIAL if have_trial_model else FinalFit.TRAIN


# --------------------------------------------------------------------------- time


@dataclass
class TimeBudget:
    """A study's wall-clock budget on the monotonic clock (None: no limit).

    ``reserve_s`` is what the final fit is expected to take; trials get :attr:`trial_deadline`,
    which leaves it free. The reserve grows as better (often slower) trials are found.
    """

    total_s: float | None
    started: float
    reserve_s: float = 2.0  # MIN_RESERVE_S
    #: Seconds the finalization may run past ``total_s`` (the "few seconds" of slack).
    slack_s: float = 0.0

    @classmethod
    def start(cls, total_s: float | None, elapsed_s: float = 0.0) -> TimeBudget:
        """A budget whose clock started ``elapsed_s`` seconds ago (a resumed study)."""
        return cls(total_s, time.monotonic() - max(elapsed_s, 0.0))

    @property
    def deadline(self) -> float | None:
        return None if self.total_s is None else self.started + self.total_s

    @property
    def trial_deadline(self) -> float | None:
        """When trials must stop: the deadline less the final fit's reserve."""
        deadline = self.deadline
        return None if deadline is None else deadline - self.reserve_s

    def remaining(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def reserve(self, seconds: float) -> None:
        """Keep ``seconds`` plus :data:`RESERVE_MARGIN_S` (at least :data:`MIN_RESERVE_S`) for
        the final fit: the estimate for the best trial so far. The margin covers what happens
        between the last trial and the final fit (recording, claiming the finalization).

        A refit that would take more than :data:`MAX_RESERVE_FRACTION` of the budget is not
        planned for: the trials get the time, and the final fit keeps the trial's model.
        """
        if self.total_s is None:
            return
        wanted = max(seconds + RESERVE_MARGIN_S, MIN_RESERVE_S)
        self.reserve_s = wanted if wanted <= self.total_s * MAX_RESERVE_FRACTION else MIN_RESERVE_S

    def trials_over(self) -> bool:
        limit = self.trial_deadline
        return limit is not None and time.monotonic() >= limit
