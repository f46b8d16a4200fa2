"""The one place that locates the golden reference data the tests compare against.

The data lives inside the repository (``tests/data/golden``, copied unchanged from the project's shared
reference set; provenance in its README.md), so a bare clone runs every golden test. A missing file is a
broken checkout and fails the test that needs it; it is never skipped.
"""

from __future__ import annotations

from pathlib import Path

GOLDEN_ROOT = Path(__file__).resolve().parent / "data" / "golden"


def golden_path(*parts: str) -> Path:
    """``golden_path("prunevid", "index.json")`` -> the file or folder; ``FileNotFoundError`` if absent."""
    path = GOLDEN_ROOT.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"golden reference data missing: {path} (the checkout is incomplete)")
    return path
