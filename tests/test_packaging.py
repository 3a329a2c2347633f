"""Packaging: building the project's metadata raises no setuptools deprecation warning."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_editable_metadata_build_has_no_deprecation_warning(tmp_path):
    """``pip install -v -e .`` (dry run, the venv's own setuptools, no download) on a copy of
    pyproject.toml + README: no "deprecated" line (e.g. the table form of project.license)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "al_lightning").mkdir()
    (tmp_path / "al_lightning" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--dry-run",
                           "-v", "-e", "."], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert "Would install al_lightning" in log
    assert "deprecat" not in log.lower(), [ln for ln in log.splitlines() if "deprecat" in ln.lower()][:3]
