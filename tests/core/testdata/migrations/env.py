"""Alembic env for the throwaway test migrations: the same one-liner every service uses."""

from arbor_core.db import run_alembic_env

run_alembic_env(None)
