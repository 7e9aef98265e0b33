"""The shipped type stub matches the extension at runtime (mypy's stubtest)."""

import subprocess
import sys

import pytest

pytest.importorskip("mypy", reason="stubtest needs mypy (pip install mypy)")


def test_stub_matches_runtime():
    p = subprocess.run([sys.executable, "-m", "mypy.stubtest", "trajdb"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
