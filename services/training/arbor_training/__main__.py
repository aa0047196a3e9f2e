"""``python -m arbor_training``: migrate (unless ARBOR_MIGRATE_ON_START=0), serve until SIGTERM.

Studies run in separate worker processes: ``python -m arbor_training.worker``.
"""

from __future__ import annotations

from arbor_core.server import service_main
from arbor_training.server import build_runner, migrate


def main() -> None:
    service_main("training", build_runner, migrate)


if __name__ == "__main__":
    main()
