#!/usr/bin/env python3
"""Set everything up and run the demo chat or the tests: the README's two commands.

    python3 scripts/bootstrap.py chat             # the demo: a chat about the example image and video
    python3 scripts/bootstrap.py chat ARGS...     # scripts/chat.py ARGS... (e.g. --model DIR --image a.jpg)
    python3 scripts/bootstrap.py test             # the test suite: python -m pytest -q tests
    python3 scripts/bootstrap.py test ARGS...     # python -m pytest ARGS... (e.g. -q tests/test_readme.py)
    python3 scripts/bootstrap.py setup            # only the virtual environment

Needs nothing but Python 3.10 or newer. The first run creates the virtual environment `.venv/` in the
repository and installs torch (TORCH_PIN) and requirements-dev.txt into it (which pulls requirements.txt);
a stamp file in `.venv/` records a hash of those requirements, so a later run with the same requirements
installs nothing and starts at once. `chat` builds the tiny random-weight demo checkpoint
(scripts/make_demo_checkpoint.py -> demo-checkpoint/ and examples/) on first use.

Standard library only: it runs before anything is installed. Progress goes to stderr as "bootstrap: ..."
lines; a failure is one "bootstrap: error: ..." line and exit code 1 (pip's output is kept in a log file).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 10)
TORCH_PIN = "torch==2.13.0"  # the torch CI installs (.ci/run)
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STAMP_NAME = "pvc-bootstrap.stamp"
LOG_NAME = "pvc-bootstrap-pip.log"
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")
DEMO_CHECKPOINT, EXAMPLES = ROOT / "demo-checkpoint", ROOT / "examples"
DEMO_FILES = ("image1.jpg", "image2.jpg", "red-panda.mp4")
COMMANDS = ("chat", "test", "setup")


class BootstrapError(Exception):
    """A failure reported as one line."""


def say(message: str) -> None:
    sys.stderr.write(f"bootstrap: {message}\n")
    sys.stderr.flush()


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> None:
    if tuple(version[:2]) < MIN_PYTHON:
        found = ".".join(map(str, version))
        raise BootstrapError(f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer is needed, this is {found} "
                             f"({sys.executable}); run the command with a newer python3")


def requirements_hash(root: Path = ROOT, python_version: str = sys.version.split()[0]) -> str:
    """What the installed environment must match: the torch pin, the requirements files' contents and the
    Python version the venv was made with."""
    digest = hashlib.sha256()
    digest.update(f"{TORCH_PIN}\npython {python_version}\n".encode())
    for name in REQUIREMENTS:
        digest.update(f"--- {name}\n".encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def needs_install(venv: Path, wanted: str) -> bool:
    """True unless ``venv`` has its interpreter and a stamp equal to ``wanted`` (a complete earlier install)."""
    stamp = venv / STAMP_NAME
    if not venv_python(venv).is_file() or not stamp.is_file():
        return True
    return stamp.read_text().strip() != wanted


def run_logged(command: list[str], log: Path, what: str) -> None:
    """Run ``command`` with its output appended to ``log``; a failure names the log."""
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        raise BootstrapError(f"{what} failed (exit {code}); the full pip output is in {log}")


def ensure_venv(venv: Path = VENV) -> Path:
    """Create ``venv`` and install torch + requirements-dev.txt into it unless the stamp says it is done."""
    wanted = requirements_hash()
    python = venv_python(venv)
    if not needs_install(venv, wanted):
        return python
    if not python.is_file():
        say(f"creating the virtual environment {venv}")
        code = subprocess.call([sys.executable, "-m", "venv", str(venv)])
        if code != 0 or not python.is_file():
            raise BootstrapError(f"'{sys.executable} -m venv {venv}' failed (exit {code}); on Debian / Ubuntu "
                                 "install the venv module first: apt-get install python3-venv")
    (venv / STAMP_NAME).unlink(missing_ok=True)
    log = venv / LOG_NAME
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    say(f"installing {TORCH_PIN} (a few minutes the first time; log: {log})")
    run_logged([*pip, TORCH_PIN], log, f"pip install {TORCH_PIN}")
    say("installing requirements-dev.txt (transformers and the rest)")
    run_logged([*pip, "-r", "requirements-dev.txt"], log, "pip install -r requirements-dev.txt")
    (venv / STAMP_NAME).write_text(wanted + "\n")
    say("virtual environment ready")
    return python


def ensure_demo(python: Path, checkpoint: Path = DEMO_CHECKPOINT, examples: Path = EXAMPLES) -> None:
    """Build the demo checkpoint and the example media once (``--overwrite`` repairs a partial earlier run)."""
    if (checkpoint / "config.json").is_file() and all((examples / name).is_file() for name in DEMO_FILES):
        return
    say(f"building the tiny random-weight demo checkpoint ({checkpoint.name}/, {examples.name}/)")
    command = [str(python), str(ROOT / "scripts" / "make_demo_checkpoint.py"), "--dst", str(checkpoint),
               "--examples", str(examples), "--overwrite"]
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        raise BootstrapError(f"scripts/make_demo_checkpoint.py failed (exit {code}); its error is above")


def demo_chats(checkpoint: Path = DEMO_CHECKPOINT, examples: Path = EXAMPLES) -> list[list[str]]:
    """scripts/chat.py arguments of the demo: the example image, then the example video with PruneVid on."""
    model = ["--model", str(checkpoint), "--max-new-tokens", "16"]
    return [
        [*model, "--image", str(examples / "image1.jpg")],
        [*model, "--video", str(examples / "red-panda.mp4"), "--num-segments", "16", "--prunevid"],
    ]


def chat(python: Path, args: list[str]) -> int:
    """``scripts/chat.py ARGS``; without arguments the demo (the demo checkpoint is built first if needed)."""
    if args:
        return subprocess.call([str(python), str(ROOT / "scripts" / "chat.py"), *args])
    ensure_demo(python)
    for index, run in enumerate(demo_chats()):
        if index:
            print(flush=True)
        code = subprocess.call([str(python), str(ROOT / "scripts" / "chat.py"), *run])
        if code != 0:
            return code
    return 0


def test(python: Path, args: list[str]) -> int:
    command = [str(python), "-m", "pytest", *(args or ["-q", "tests"])]
    say(" ".join(["python", *command[1:]]))
    return subprocess.call(command, cwd=ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    command, args = argv[0], argv[1:]
    try:
        check_python()
        python = ensure_venv()
        if command == "chat":
            return chat(python, args)
        if command == "test":
            return test(python, args)
        say(f"ready: {python}")
        return 0
    except BootstrapError as err:
        say(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
