"""Leaderboard and summary: per-trial fold values and latency, the experiment's study summary.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable columns without defaults: no existing row is rewritten.
    op.add_column("experiments", sa.Column("summary", _JSON, nullable=True))
    op.add_column("experiment_trials", sa.Column("fold_values", _JSON, nullable=True))
    op.add_column(
        "experiment_trials", sa.Column("predict_ms_per_1k_rows", sa.Float(), nullable=True)
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy of a table with foreign keys pointing
    # at it could cascade deletes.
    op.drop_column("experiment_trials", "predict_ms_per_1k_rows")
    op.drop_column("experiment_trials", "fold_values")
    op.drop_column("experiments", "summary")
