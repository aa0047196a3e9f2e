"""Alembic environment of the training service (see arbor_core.db.run_alembic_env).

The revision is kept in ``training_alembic_version``: Optuna's storage shares the schema and
stamps its own revision in ``alembic_version``.
"""

from arbor_core.db import run_alembic_env
from arbor_training.tables import VERSION_TABLE, metadata

run_alembic_env(metadata, version_table=VERSION_TABLE)
