"""The training service's tables (no schema: the engine's search_path picks ``training``).

Optuna's RDB storage lives in the same schema (``studies``, ``trials``, ``trial_params``, ...,
``version_info`` and its own ``alembic_version``), so these tables avoid those names and the
service's migrations keep their revision in ``training_alembic_version`` instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from arbor_core.db import UtcDateTime, make_metadata
from arbor_core.outbox import outbox_table

metadata = make_metadata()

#: Alembic's version table for the service's own migrations (Optuna owns ``alembic_version``).
VERSION_TABLE = "training_alembic_version"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TRIAL_STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAILED")

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("request_id", sa.String(128), nullable=True, unique=True),
    sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("labels", _JSON, nullable=False),
    sa.Column("split", sa.String(160), nullable=False),
    sa.Column("model_type", sa.String(16), nullable=False),
    # The validated ExperimentSpec (domain.ExperimentSpec.to_dict()): what the worker runs.
    sa.Column("spec", _JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("trials_completed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("trials_pruned", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("trials_failed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("best_trial_number", sa.Integer(), nullable=True),
    sa.Column("best_value", sa.Float(), nullable=True),
    sa.Column("model_version", sa.String(200), nullable=False, server_default=""),
    sa.Column("metrics", _JSON, nullable=False),
    sa.Column("error_message", sa.Text(), nullable=False, server_default=""),
    # The worker that finalizes (refit + register) and until when its lease holds.
    sa.Column("finalizer", sa.String(128), nullable=True),
    sa.Column("finalizer_lease_until", UtcDateTime(), nullable=True),
    sa.Column("worker", sa.String(128), nullable=False, server_default=""),
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
    # Bumped on every change; the etag is derived from it.
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.Column("start_time", UtcDateTime(), nullable=True),
    sa.Column("end_time", UtcDateTime(), nullable=True),
    sa.Column("delete_time", UtcDateTime(), nullable=True),
    # StudySummary as JSON once the experiment is final (migration 0002); NULL before.
    sa.Column("summary", _JSON, nullable=True),
    sa.CheckConstraint(f"state IN {STATES!r}", name="state"),
    sa.Index("ix_experiments_create_time_id", "create_time", "id"),
    sa.Index("ix_experiments_state", "state"),
    sa.Index("ix_experiments_split", "split"),
)

experiment_trials = sa.Table(
    "experiment_trials",
    metadata,
    sa.Column(
        "experiment_id",
        sa.String(63),
        sa.ForeignKey("experiments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Optuna's trial number: unique per study, so a re-recorded trial is a no-op.
    sa.Column("number", sa.Integer(), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("params", _JSON, nullable=False),
    # [[step, value], ...] reported for pruning.
    sa.Column("intermediate_values", _JSON, nullable=False),
    sa.Column("start_time", UtcDateTime(), nullable=True),
    sa.Column("end_time", UtcDateTime(), nullable=True),
    sa.Column("duration_seconds", sa.Float(), nullable=True),
    # Seconds spent inside the library's fit and predict (the rest is platform overhead).
    sa.Column("fit_seconds", sa.Float(), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=False, server_default=""),
    sa.Column("model_type", sa.String(16), nullable=False, server_default=""),
    sa.Column("best_iteration", sa.Integer(), nullable=True),
    sa.Column("worker", sa.String(128), nullable=False, server_default=""),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    # Per-fold values with cross-validation, [] without (migration 0002).
    sa.Column("fold_values", _JSON, nullable=True),
    # The trial model's prediction latency on 1,000 validation rows (migration 0002).
    sa.Column("predict_ms_per_1k_rows", sa.Float(), nullable=True),
    sa.CheckConstraint(f"state IN {TRIAL_STATES!r}", name="state"),
    sa.Index("ix_experiment_trials_experiment_id_value", "experiment_id", "value"),
)

outbox = outbox_table(metadata)
