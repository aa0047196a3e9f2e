"""`make up`: the whole platform starts on embedded defaults, reports SERVING, stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from arbor_core.devstack import SERVICE_NAMES, available_services
from arbor_core.healthcheck import is_serving

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_make_up_starts_every_service_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env["ARBOR_HOME"] = str(tmp_path / "home")
    # Ports of their own, so a developer's running stack is left alone.
    for offset, name in enumerate(SERVICE_NAMES):
        env[f"ARBOR_{name.upper()}_PORT"] = str(56100 + offset)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Arbor is up" in line:
                break
        output = "".join(lines)
        assert "Arbor is up" in output, output
        state = json.loads((tmp_path / "home" / "stack.json").read_text())
        services = available_services()
        assert set(state["addresses"]) == set(services)
        for name in services:
            assert is_serving(state["addresses"][name], SERVICE_NAMES[name]), name
        pids = list(state["pids"].values())
        # Ctrl-C as the stack's supervisor sees it (make itself would report the interrupt).
        os.kill(state["supervisor_pid"], signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert "Stopped." in rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
