"""The library and the sweep layer type-check (mypy, configured in pyproject.toml), with no errors."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors_in_e2e_sae_and_sweeps():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "e2e_sae", "sweeps"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
