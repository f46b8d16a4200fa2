"""scripts/bootstrap.py, the README's two commands: its install decision (idempotent re-runs), its one-line
failures, and the demo chat it runs printing what the README's first output block shows.

The real install (venv + torch + requirements) takes minutes and is not run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_readme import matches

BOOTSTRAP = ROOT / "scripts" / "bootstrap.py"


@pytest.fixture(scope="module")
def bootstrap():
    import runpy

    return runpy.run_path(str(BOOTSTRAP), run_name="bootstrap")


def fake_venv(folder: Path, bootstrap) -> Path:
    python = bootstrap["venv_python"](folder)
    python.parent.mkdir(parents=True)
    python.write_text("")
    return folder


def test_complete_venv_needs_no_install(tmp_path, bootstrap):
    venv = fake_venv(tmp_path / ".venv", bootstrap)
    wanted = bootstrap["requirements_hash"]()
    assert bootstrap["needs_install"](venv, wanted)  # no stamp yet: an interrupted install is redone
    (venv / bootstrap["STAMP_NAME"]).write_text(wanted + "\n")
    assert not bootstrap["needs_install"](venv, wanted)
    assert bootstrap["needs_install"](venv, "0" * 64)
    assert bootstrap["needs_install"](tmp_path / "missing", wanted)


def test_requirements_hash_follows_the_requirements_files_and_python(tmp_path, bootstrap):
    for name in bootstrap["REQUIREMENTS"]:
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    first = bootstrap["requirements_hash"](tmp_path, "3.11.7")
    assert first == bootstrap["requirements_hash"](tmp_path, "3.11.7")
    assert first != bootstrap["requirements_hash"](tmp_path, "3.12.1")
    with open(tmp_path / "requirements.txt", "a") as handle:
        handle.write("einops\n")
    assert first != bootstrap["requirements_hash"](tmp_path, "3.11.7")


def test_old_python_is_one_clear_error(bootstrap):
    with pytest.raises(bootstrap["BootstrapError"], match=r"Python 3\.10 or newer is needed, this is 3\.9\.18"):
        bootstrap["check_python"]((3, 9, 18))
    bootstrap["check_python"]((3, 10, 0))


def test_pip_failure_names_the_log(tmp_path, bootstrap):
    log = tmp_path / "pip.log"
    with pytest.raises(bootstrap["BootstrapError"], match=f"failed \\(exit 3\\); the full pip output is in {log}"):
        bootstrap["run_logged"]([sys.executable, "-c", "print('resolver says no'); raise SystemExit(3)"], log,
                                "pip install torch")
    assert "resolver says no" in log.read_text()


def test_usage_without_a_command():
    done = subprocess.run([sys.executable, str(BOOTSTRAP)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert "python3 scripts/bootstrap.py chat" in done.stderr and "python3 scripts/bootstrap.py test" in done.stderr


def test_demo_chat_prints_what_the_readme_shows(tmp_path, bootstrap):
    """The README's first output block (after the two commands) is what ``bootstrap.py chat`` prints: its chat.py runs, on a demo
    checkpoint built by make_demo_checkpoint.py, here in a temporary folder with this interpreter."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("python3 scripts/bootstrap.py chat"):]
    expected = after[after.index("```text\n") + len("```text\n"):].split("```", 1)[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"))
    checkpoint, examples = tmp_path / "demo-checkpoint", tmp_path / "examples"
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_checkpoint.py"), "--dst", str(checkpoint),
                           "--examples", str(examples)], capture_output=True, text=True, env=env, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    printed = []
    for args in bootstrap["demo_chats"](checkpoint, examples):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "chat.py"), *args], capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        printed.append(done.stdout)
    output = "\n".join(text.rstrip("\n") + "\n" for text in printed)
    assert matches(expected, output), f"bootstrap chat printed:\n{output}\nthe README says:\n{expected}"
