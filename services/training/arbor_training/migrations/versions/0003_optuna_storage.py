"""Optuna's storage tables, created by the migration instead of by the first worker.

Optuna creates its tables (``studies``, ``trials``, ..., ``version_info``) and stamps its own
``alembic_version`` when an ``RDBStorage`` first opens a database. Two workers starting
together on a fresh database did that at once and raced (``UniqueViolation`` on ``pg_type``:
one of them exited). Migrations run under an advisory lock (``arbor_core.db``), so creating the
tables here, once, leaves the workers nothing to create. A schema whose tables Optuna already
created is left as it is (``checkfirst``; the version row and stamp only when missing).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    import optuna
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from optuna.storages._rdb import models

    bind = op.get_bind()
    models.BaseModel.metadata.create_all(bind, checkfirst=True)
    info = models.VersionInfoModel.__table__
    if bind.execute(sa.select(sa.func.count()).select_from(info)).scalar() == 0:
        bind.execute(
            info.insert().values(
                version_info_id=1,
                schema_version=models.SCHEMA_VERSION,
                library_version=optuna.__version__,
            )
        )
    # Optuna's own revision, in its own ``alembic_version`` (ours is training_alembic_version).
    context = MigrationContext.configure(bind)
    if context.get_current_revision() is None:
        config = Config()
        config.set_main_option(
            "script_location", os.path.join(os.path.dirname(models.__file__), "alembic")
        )
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        if head is not None:  # Optuna ships one linear history: there is always a head
            context.stamp(script, head)


def downgrade() -> None:
    from optuna.storages._rdb import models

    bind = op.get_bind()
    models.BaseModel.metadata.drop_all(bind, checkfirst=True)
    op.execute("DROP TABLE IF EXISTS alembic_version")
