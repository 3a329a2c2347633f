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


def test_wheel_ships_the_backbones_by_name(tmp_path):
    """A wheel built from the repo holds the backbones (bytes equal to models/), and the names
    ``emt`` / ``xtb`` resolve to the installed files (model.foundation works from any folder)."""
    import zipfile

    from al_lightning.model.mace import SHIPPED_BACKBONES, foundation_path

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = zipfile.ZipFile(next(tmp_path.glob("al_lightning-*.whl")))
    for name in SHIPPED_BACKBONES:
        for suffix in (".model", ".json"):
            member = f"al_lightning/models/{name}_foundation{suffix}"
            assert wheel.read(member) == (ROOT / "models" / f"{name}_foundation{suffix}").read_bytes()
        assert foundation_path(name).read_bytes() == (ROOT / "models" / f"{name}_foundation.model").read_bytes()
    assert foundation_path("models/x.model") == Path("models/x.model")
