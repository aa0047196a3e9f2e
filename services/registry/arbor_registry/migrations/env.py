"""Alembic environment of the registry (see arbor_core.db.run_alembic_env)."""

from arbor_core.db import run_alembic_env
from arbor_registry.tables import metadata

run_alembic_env(metadata)
