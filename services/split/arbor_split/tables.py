"""The split service's tables (no schema: the engine's search_path picks ``split`` on PostgreSQL).

``splits`` holds one row per split; a row in state ``CREATING`` reserves the id (and the
request id) while the parts are being written and is never shown through the API.
``idempotency`` maps a create's ``request_id`` to the split it made: its primary key is what
makes a repeated create return the first result even when two arrive at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from arbor_core.db import UtcDateTime, make_metadata
from arbor_core.outbox import outbox_table

metadata = make_metadata()

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

STATES = ("CREATING", "READY", "DELETED")

splits = sa.Table(
    "splits",
    metadata,
    sa.Column("split_id", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("display_name", sa.String(512), nullable=False, server_default=""),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("labels", _JSON, nullable=False),
    # {"uri": ..., "format": ...} or {"inline": {"shape": ..., "sha256": ...}}
    sa.Column("source", _JSON, nullable=False),
    sa.Column("target_column", sa.String(512), nullable=False),
    sa.Column("task_type", sa.String(16), nullable=False, server_default=""),
    # {"kind": "random"|"time"|"entity", ...parameters}
    sa.Column("strategy", _JSON, nullable=False),
    sa.Column("fractions", _JSON, nullable=False),
    sa.Column("seed", sa.BigInteger(), nullable=False),
    sa.Column("columns", _JSON, nullable=False),
    sa.Column("parts", _JSON, nullable=False),
    sa.Column("null_counts", _JSON, nullable=False),
    sa.Column("row_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("leakage_report", _JSON, nullable=False),
    # Bumped on every change; the etag is derived from it.
    sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("create_time", UtcDateTime(), nullable=False),
    sa.Column("update_time", UtcDateTime(), nullable=False),
    sa.Column("delete_time", UtcDateTime(), nullable=True),
    sa.Column("purge_time", UtcDateTime(), nullable=True),
    sa.CheckConstraint(f"state IN {STATES!r}", name="state"),
    # ListSplits: newest first within a state.
    sa.Index("ix_splits_state_create_time", "state", "create_time", "split_id"),
)

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column(
        "split_id",
        sa.String(63),
        sa.ForeignKey("splits.split_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # sha256 of the create request without its request_id: a reuse with other content is refused.
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("create_time", UtcDateTime(), nullable=False),
)

outbox = outbox_table(metadata)
