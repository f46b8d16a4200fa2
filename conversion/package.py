"""Import the repository-root remote-code files as the package ``pvc_internvl``, and list them.

The remote-code files use relative imports (``from .configuration_pvc_internvl import ...``), exactly as in
the transformers module cache, so they cannot be imported as top-level modules. This shim gives them a
package, the same way ``tests/conftest.py`` does. Nothing in the remote code imports from ``conversion/``.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pvc_internvl"

# The files the Auto classes load (config.json / processor_config.json auto_map); every sibling they import
# with a relative import is part of the remote code too.
ENTRY_FILES = ("configuration_pvc_internvl.py", "modeling_pvc_internvl.py", "processing.py")
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\b", flags=re.MULTILINE)


def remote_code_files(root: Path = ROOT) -> tuple[str, ...]:
    """The entry files and every file they import relatively, in discovery order. ``FileNotFoundError``
    naming the file when one is missing from ``root``."""
    found: list[str] = []
    pending = list(ENTRY_FILES)
    while pending:
        name = pending.pop(0)
        if name in found:
            continue
        path = root / name
        if not path.is_file():
            importer = "" if name in ENTRY_FILES else " (imported by another remote-code file)"
            raise FileNotFoundError(f"remote-code file {name}{importer} is missing at {root}")
        found.append(name)
        pending += [f"{module}.py" for module in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8"))]
    return tuple(found)


# Remote-code files copied into every converted checkpoint (flat layout).
REMOTE_CODE_FILES = remote_code_files()


def remote_module(name: str) -> ModuleType:
    """``remote_module("configuration_pvc_internvl")`` -> the module, imported as ``pvc_internvl.<name>``."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(ROOT)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")
