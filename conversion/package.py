"""Import the repository-root remote-code files as the package ``pvc_internvl``.

The remote-code files use relative imports (``from .configuration_pvc_internvl import ...``), exactly as in
the transformers module cache, so they cannot be imported as top-level modules. This shim gives them a
package, the same way ``tests/conftest.py`` does. Nothing in the remote code imports from ``conversion/``.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pvc_internvl"

# Remote-code files copied into every converted checkpoint (flat layout; modeling imports the others).
REMOTE_CODE_FILES = (
    "configuration_pvc_internvl.py",
    "modeling_pvc_internvl.py",
    "conversation.py",
    "prunevid.py",
    "processing.py",
    "media.py",
)
REQUIRED_CODE_FILES = REMOTE_CODE_FILES[:4]


def remote_module(name: str) -> ModuleType:
    """``remote_module("configuration_pvc_internvl")`` -> the module, imported as ``pvc_internvl.<name>``."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(ROOT)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")
