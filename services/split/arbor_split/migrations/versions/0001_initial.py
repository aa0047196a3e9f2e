"""Initial split schema: splits, idempotency keys and the outbox.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
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


def upgrade() -> None:
    op.create_table(
        "splits",
        sa.Column("split_id", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(512), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("source", _JSON, nullable=False),
        sa.Column("target_column", sa.String(512), nullable=False),
        sa.Column("task_type", sa.String(16), nullable=False, server_default=""),
        sa.Column("strategy", _JSON, nullable=False),
        sa.Column("fractions", _JSON, nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("columns", _JSON, nullable=False),
        sa.Column("parts", _JSON, nullable=False),
        sa.Column("null_counts", _JSON, nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("leakage_report", _JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.Column("delete_time", _TIME, nullable=True),
        sa.Column("purge_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("split_id", name="pk_splits"),
        sa.CheckConstraint(
            "state IN ('CREATING', 'READY', 'DELETED')", name=op.f("ck_splits_state")
        ),
    )
    op.create_index("ix_splits_state_create_time", "splits", ["state", "create_time", "split_id"])
    op.create_table(
        "idempotency",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("split_id", sa.String(63), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_idempotency"),
        sa.ForeignKeyConstraint(
            ["split_id"],
            ["splits.split_id"],
            name="fk_idempotency_split_id_splits",
            ondelete="CASCADE",
        ),
    )
    op.create_table("outbox", *outbox_columns())


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("idempotency")
    op.drop_index("ix_splits_state_create_time", table_name="splits")
    op.drop_table("splits")
