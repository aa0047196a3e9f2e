"""Add widgets.colour, the parts table (with a foreign key) and the outbox.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from arbor_core.outbox import outbox_columns

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("widgets") as batch:
        batch.add_column(sa.Column("colour", sa.String(16), nullable=True))
    op.create_table(
        "parts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "widget_id",
            sa.Integer(),
            sa.ForeignKey("widgets.id", name="fk_parts_widget_id_widgets"),
            nullable=False,
        ),
    )
    op.create_table("outbox", *outbox_columns())


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("parts")
    with op.batch_alter_table("widgets") as batch:
        batch.drop_column("colour")
