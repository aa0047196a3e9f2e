"""The model registry service: named models, integer versions, stages, aliases, lineage."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SERVICE = "registry"
