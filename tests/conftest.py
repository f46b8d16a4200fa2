"""Test setup: expose the flat remote-code files as the package ``pvc_internvl`` (they use relative
imports, exactly as in the transformers module cache) and keep Hugging Face caches inside pytest's tmp."""

import os
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]

if "pvc_internvl" not in sys.modules:
    package = types.ModuleType("pvc_internvl")
    package.__path__ = [str(ROOT)]
    sys.modules["pvc_internvl"] = package
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
