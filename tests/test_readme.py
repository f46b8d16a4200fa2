"""The README runs as written: its python and bash blocks, in order, in one fresh folder, each in a fresh
offline process, and each prints what the README says it prints.

Rules the README follows (stated in its *Layout* section):

- A ```` ```text ```` block right after a python / bash block (nothing but blank lines between) is that
  block's expected **stdout**. ``...`` inside a line matches anything on that line (timings, paths); a line
  that is only ``...`` matches any number of lines. Every other line must match exactly.
- A block whose first line starts with ``# not run by the README test:`` is for people only (installs,
  the Hub, a GPU, long runs); the test reports it as skipped with that reason, never silently.

The folder has ``scripts/``, ``conversion/`` and ``benchmarks/`` linked in, so the README's commands run
from it as from the repository root, and whatever they write (demo checkpoint, examples, converted
folders) stays in pytest's temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIP_MARKER = "# not run by the README test:"
LINKED = ("scripts", "conversion", "benchmarks")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", flags=re.S | re.M)


@dataclass
class Block:
    index: int
    language: str  # python | bash
    code: str
    line: int  # README line of the opening fence
    expected: str | None  # the text block after it, or None

    @property
    def skip_reason(self) -> str | None:
        first = self.code.lstrip("\n").split("\n", 1)[0]
        return first[len(SKIP_MARKER):].strip() if first.startswith(SKIP_MARKER) else None

    def __str__(self) -> str:
        return f"README line {self.line} ({self.language})"


def readme_blocks(text: str) -> list[Block]:
    """The python and bash blocks in README order, each with the output block that follows it."""
    fences = list(FENCE.finditer(text))
    blocks: list[Block] = []
    for position, fence in enumerate(fences):
        language = fence[1]
        if language not in ("python", "bash"):
            continue
        expected = None
        following = fences[position + 1] if position + 1 < len(fences) else None
        if following is not None and following[1] == "text" and not text[fence.end():following.start()].strip():
            expected = following[2]
        line = text.count("\n", 0, fence.start()) + 1
        blocks.append(Block(len(blocks), language, fence[2], line, expected))
    return blocks


BLOCKS = readme_blocks((ROOT / "README.md").read_text())


def output_pattern(expected: str) -> re.Pattern:
    """``expected`` as a regular expression: ``...`` in a line -> anything on the line, a ``...`` line ->
    any number of lines."""
    parts = []
    for line in expected.rstrip("\n").split("\n"):
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*".join(re.escape(piece) for piece in line.rstrip().split("...")) + r"\n")
    return re.compile("".join(parts))


def normalised(output: str) -> str:
    lines = [line.rstrip() for line in output.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def matches(expected: str, output: str) -> bool:
    return output_pattern(expected).fullmatch(normalised(output)) is not None


class ReadmeRun:
    """Runs the README's blocks in order in one folder; a block's result is computed once, after every
    earlier block (so a single selected test still runs what precedes it)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.results: dict[int, subprocess.CompletedProcess] = {}
        for name in LINKED:
            (folder / name).symlink_to(ROOT / name, target_is_directory=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", HF_HOME=str(self.folder / ".hf_home"),
                   HF_MODULES_CACHE=str(self.folder / ".hf_modules"), PYTHONUNBUFFERED="1", COLUMNS="100",
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
        return env

    def result(self, index: int) -> subprocess.CompletedProcess:
        for block in BLOCKS[: index + 1]:
            if block.index not in self.results and block.skip_reason is None:
                self.results[block.index] = self.run(block)
        return self.results[index]

    def run(self, block: Block) -> subprocess.CompletedProcess:
        if block.language == "python":
            script = self.folder / f".readme_block_{block.index}.py"
            script.write_text(block.code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", block.code]
        return subprocess.run(command, cwd=self.folder, env=self.env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def readme(tmp_path_factory) -> ReadmeRun:
    return ReadmeRun(tmp_path_factory.mktemp("readme"))


def test_readme_has_the_documented_blocks():
    runnable = [b for b in BLOCKS if b.skip_reason is None]
    python = [b.code for b in runnable if b.language == "python"]
    assert any("apply_chat_template" in code for code in python)
    assert any("pipeline(" in code for code in python)
    assert any("model.chat(" in code for code in python)
    commands = "\n".join(b.code for b in runnable if b.language == "bash")
    for command in ("scripts/make_demo_checkpoint.py", "scripts/make_source_checkpoint.py", "--inspect", "--key-map",
                    "benchmarks/run.py --help"):
        assert command in commands, f"the README runs no {command!r} block"
    assert all(b.expected is not None for b in runnable if b.language == "python"), \
        [str(b) for b in runnable if b.language == "python" and b.expected is None]
    assert all(b.skip_reason for b in BLOCKS if b.skip_reason is not None), "a skip marker without a reason"


def test_output_patterns():
    assert matches("a\ntime: ... s\n", "a\ntime: 1.25 s\n\n")
    assert matches("first\n...\nlast", "first\nx\ny\nlast\n") and matches("first\n...\nlast", "first\nlast\n")
    assert not matches("a\nb", "a\nc\n") and not matches("a", "a\nextra\n")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_block_runs_and_prints_what_the_readme_says(readme, block):
    if block.skip_reason is not None:
        pytest.skip(f"{block}: {block.skip_reason}")
    done = readme.result(block.index)
    assert done.returncode == 0, f"{block} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    if block.expected is not None:
        assert matches(block.expected, done.stdout), \
            f"{block} printed:\n{done.stdout}\nbut the README says:\n{block.expected}"
