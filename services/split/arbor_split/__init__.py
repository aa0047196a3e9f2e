"""The split service: turns a table into reproducible train / validation / test parts."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SERVICE = "split"
EVENT_SOURCE = "arbor.split"
