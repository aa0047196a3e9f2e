"""Alembic environment of the split service (see arbor_core.db.run_alembic_env)."""

from arbor_core.db import run_alembic_env
from arbor_split.tables import metadata

run_alembic_env(metadata)
