"""docs/design.md names only what exists: every file path and every ``al_lightning.…`` dotted name
it mentions resolves (a renamed or deleted module makes this fail until the page is updated)."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docs" / "design.md").read_text()
PREFIXES = ("al_lightning/", "tests/", "benchmarks/", "examples/", "configs/", "docs/")


def _exists(name: str) -> bool:
    if name.startswith(PREFIXES):
        return (ROOT / name).exists()
    hits = list((ROOT / "al_lightning").rglob(Path(name).name))  # package-relative, e.g. data/xtb.py
    return any(str(h).endswith(name) for h in hits)


def test_every_file_named_exists():
    names = set(re.findall(r"(?<![\w/.])((?:[a-z_]+/)*[a-z_0-9]+\.py)\b", TEXT))
    missing = sorted(n for n in names if not _exists(n))
    assert not missing, f"docs/design.md names files that do not exist: {missing}"


def test_every_dotted_name_resolves():
    missing = []
    for name in sorted(set(re.findall(r"\bal_lightning(?:\.[A-Za-z_]\w*)+", TEXT))):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"docs/design.md names objects that do not exist: {missing}"
