"""The README's snippets run as written, saved as scripts, against the documented demo checkpoint
(``python scripts/make_demo_checkpoint.py``), in a fresh offline process each."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_checkpoint.py")], cwd=folder,
                         capture_output=True, text=True, timeout=600, env=_env(folder))
    assert run.returncode == 0, run.stderr[-3000:]
    assert {"image1.jpg", "image2.jpg", "red-panda.mp4"} <= set(os.listdir(folder / "examples"))
    return folder


def _env(folder) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home"), HF_MODULES_CACHE=str(folder / "modules"))
    return env


def test_readme_has_the_documented_snippets():
    assert len(SNIPPETS) >= 3
    assert "apply_chat_template" in SNIPPETS[0] and "pipeline(" in SNIPPETS[1] and "model.chat(" in SNIPPETS[2]


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_as_written(demo, index):
    script = demo / f"snippet_{index}.py"
    script.write_text(SNIPPETS[index])
    run = subprocess.run([sys.executable, str(script)], cwd=demo, capture_output=True, text=True, timeout=600,
                         env=_env(demo))
    assert run.returncode == 0, f"README snippet {index} failed:\n{run.stderr[-4000:]}"
    assert run.stdout.strip(), "the snippet printed nothing"
