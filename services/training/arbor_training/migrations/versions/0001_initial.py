"""Initial training schema: experiments, their recorded trials and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from arbor_core.outbox import outbox_columns

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)
_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
_TRIAL_STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAILED")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("split", sa.String(160), nullable=False),
        sa.Column("model_type", sa.String(16), nullable=False),
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
        sa.Column("finalizer", sa.String(128), nullable=True),
        sa.Column("finalizer_lease_until", _TIME, nullable=True),
        sa.Column("worker", sa.String(128), nullable=False, server_default=""),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.Column("start_time", _TIME, nullable=True),
        sa.Column("end_time", _TIME, nullable=True),
        sa.Column("delete_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.UniqueConstraint("request_id", name="uq_experiments_request_id"),
        sa.CheckConstraint(f"state IN {_STATES!r}", name="ck_experiments_state"),
    )
    op.create_index("ix_experiments_create_time_id", "experiments", ["create_time", "id"])
    op.create_index("ix_experiments_state", "experiments", ["state"])
    op.create_index("ix_experiments_split", "experiments", ["split"])
    op.create_table(
        "experiment_trials",
        sa.Column("experiment_id", sa.String(63), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("intermediate_values", _JSON, nullable=False),
        sa.Column("start_time", _TIME, nullable=True),
        sa.Column("end_time", _TIME, nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("fit_seconds", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=False, server_default=""),
        sa.Column("model_type", sa.String(16), nullable=False, server_default=""),
        sa.Column("best_iteration", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=False, server_default=""),
        sa.Column("create_time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "number", name="pk_experiment_trials"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_experiment_trials_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(f"state IN {_TRIAL_STATES!r}", name="ck_experiment_trials_state"),
    )
    op.create_index(
        "ix_experiment_trials_experiment_id_value", "experiment_trials", ["experiment_id", "value"]
    )
    op.create_table("outbox", *outbox_columns())


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_experiment_trials_experiment_id_value", table_name="experiment_trials")
    op.drop_table("experiment_trials")
    op.drop_index("ix_experiments_split", table_name="experiments")
    op.drop_index("ix_experiments_state", table_name="experiments")
    op.drop_index("ix_experiments_create_time_id", table_name="experiments")
    op.drop_table("experiments")
