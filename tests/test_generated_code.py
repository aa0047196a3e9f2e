"""The committed code in gen/python must be what protoc makes from protos/ today."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "gen" / "python"


# Third-party contracts we serve, generated with their own root so their imports match upstream
# (the Open Inference Protocol is `from inference import grpc_predict_v2_pb2`); see the Makefile.
THIRD_PARTY_PROTOS = ["protos/third_party/inference/grpc_predict_v2.proto"]


def _protoc(out: Path, root: str, protos: list[str]) -> None:
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            root,
            "-I",
            include,
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos" / "arbor").rglob("*.proto"))
    _protoc(out, "protos", protos)
    _protoc(out, "protos/third_party", THIRD_PARTY_PROTOS)


def _python_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
    }


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh = _python_files(tmp_path)
    committed = _python_files(GENERATED)
    assert fresh == committed, "gen/python is stale: run `make protos`"
    stale = [
        f for f in sorted(fresh) if not filecmp.cmp(tmp_path / f, GENERATED / f, shallow=False)
    ]
    assert not stale, f"gen/python is stale ({stale[:5]}): run `make protos`"


def test_buf_lint_passes() -> None:
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        buf_path = shutil.which("buf")
        if buf_path is None:
            pytest.fail("buf is not installed: `make test` installs it into .tools/")
        buf = Path(buf_path)
    result = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
