"""Promotion gates: an optional JSON rule per model (``models.promotion_gate``).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-29
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
    # Nullable, no default: existing models have no gate, and no row is rewritten.
    op.add_column("models", sa.Column("promotion_gate", _JSON, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has it): a batch copy of "models" would cascade-delete
    # every version through the foreign key.
    op.drop_column("models", "promotion_gate")
