"""The registry's tables (no schema: the engine's search_path picks ``registry`` on PostgreSQL).

The invariants that races could break live here, in the database, not only in code:
``uq_model_versions_model_id_version`` (no duplicate version numbers), the partial unique index
``ux_model_versions_one_production`` (at most one live PRODUCTION version per model, PostgreSQL
and SQLite alike), ``ux_model_versions_live_experiment`` (one live version per experiment) and
``uq_model_versions_request_id`` (idempotent registration).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from arbor_core.db import UtcDateTime, make_metadata
from arbor_core.outbox import outbox_table

metadata = make_metadata()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

STAGES = ("NONE", "STAGING", "PRODUCTION", "ARCHIVED")

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("labels", _JSON, nullable=False),
    # The highest version number issued; bumped under the row lock, never reused.
    sa.Column("latest_version", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.Column("delete_time", UtcDateTime(), nullable=True),
    # The PromotionGate as JSON (domain.PromotionGate.to_json); NULL: no gate. Migration 0002.
    sa.Column("promotion_gate", _JSON, nullable=True),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("model_id", _ID, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True, unique=True),
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
    # Bumped on every change of the row; the etag is derived from it.
    sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.Column("delete_time", UtcDateTime(), nullable=True),
    sa.Column("purge_time", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("model_id", "version"),
    sa.CheckConstraint(f"stage IN {STAGES!r}", name="stage"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.Index(
        "ux_model_versions_one_production",
        "model_id",
        unique=True,
        postgresql_where=sa.text("stage = 'PRODUCTION' AND delete_time IS NULL"),
        sqlite_where=sa.text("stage = 'PRODUCTION' AND delete_time IS NULL"),
    ),
    sa.Index(
        "ux_model_versions_live_experiment",
        "experiment",
        unique=True,
        postgresql_where=sa.text("experiment IS NOT NULL AND delete_time IS NULL"),
        sqlite_where=sa.text("experiment IS NOT NULL AND delete_time IS NULL"),
    ),
    sa.Index("ix_model_versions_model_id_stage", "model_id", "stage"),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("model_id", _ID, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    sa.Column("alias", sa.String(63), nullable=False),
    sa.Column(
        "version_id",
        _ID,
        sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("model_id", "alias"),
    sa.Index("ix_model_aliases_version_id", "version_id"),
)

outbox = outbox_table(metadata)
