"""Initial registry schema: models, versions, aliases and the outbox.

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

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)
_PRODUCTION_ONLY = "stage = 'PRODUCTION' AND delete_time IS NULL"
_LIVE_EXPERIMENT = "experiment IS NOT NULL AND delete_time IS NULL"


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("latest_version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.Column("delete_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("model_id", _ID, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("experiment", sa.String(160), nullable=True),
        sa.Column("best_trial_number", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("split", sa.String(160), nullable=True),
        sa.Column("split_content_hash", sa.String(256), nullable=False, server_default=""),
        sa.Column("model_type", sa.String(32), nullable=False),
        sa.Column("task_type", sa.String(32), nullable=False),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("signature", _JSON, nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_checksums", _JSON, nullable=False),
        sa.Column("library_versions", _JSON, nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("training_rows", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.Column("delete_time", _TIME, nullable=True),
        sa.Column("purge_time", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_versions_model_id_models",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        sa.UniqueConstraint("request_id", name="uq_model_versions_request_id"),
        sa.CheckConstraint(
            "stage IN ('NONE', 'STAGING', 'PRODUCTION', 'ARCHIVED')",
            name="ck_model_versions_stage",
        ),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version_positive"),
    )
    op.create_index(
        "ux_model_versions_one_production",
        "model_versions",
        ["model_id"],
        unique=True,
        postgresql_where=sa.text(_PRODUCTION_ONLY),
        sqlite_where=sa.text(_PRODUCTION_ONLY),
    )
    op.create_index(
        "ux_model_versions_live_experiment",
        "model_versions",
        ["experiment"],
        unique=True,
        postgresql_where=sa.text(_LIVE_EXPERIMENT),
        sqlite_where=sa.text(_LIVE_EXPERIMENT),
    )
    op.create_index("ix_model_versions_model_id_stage", "model_versions", ["model_id", "stage"])
    op.create_table(
        "model_aliases",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("model_id", _ID, nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("version_id", _ID, nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_aliases"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_aliases_model_id_models",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_model_aliases_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_id_alias"),
    )
    op.create_index("ix_model_aliases_version_id", "model_aliases", ["version_id"])
    op.create_table("outbox", *outbox_columns())


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_model_aliases_version_id", table_name="model_aliases")
    op.drop_table("model_aliases")
    op.drop_index("ix_model_versions_model_id_stage", table_name="model_versions")
    op.drop_index("ux_model_versions_live_experiment", table_name="model_versions")
    op.drop_index("ux_model_versions_one_production", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
