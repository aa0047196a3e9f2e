"""``python -m arbor_inference``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

from arbor_core.server import service_main
from arbor_inference.server import build_runner


def main() -> None:
    service_main("inference", build_runner)


if __name__ == "__main__":
    main()
