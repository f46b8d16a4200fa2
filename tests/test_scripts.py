"""The command-line scripts: `scripts/chat.py` and `benchmarks/run.py`, each run in a fresh process.

Help and argument errors must come before anything heavy is imported (checked by running the script
through a probe that reports whether torch / transformers ended up in `sys.modules`); the chat demo must
honour `--dtype` and print PruneVid figures exactly when PruneVid is on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAT = ROOT / "scripts" / "chat.py"
BENCH = ROOT / "benchmarks" / "run.py"
HEAVY = ("torch", "transformers")

# Runs a script as __main__ and reports, on the last stdout line, its exit code and which heavy modules it imported.
PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code
sys.stdout.write("\\nPROBE %s %s\\n" % (code, ",".join(m for m in {heavy!r} if m in sys.modules) or "-"))
""".format(heavy=HEAVY)


def probe(script: Path, *args: str) -> tuple[int, list[str], str, str]:
    """(exit code, heavy modules imported, stdout without the probe line, stderr) of ``script args``."""
    env = {**os.environ, "COLUMNS": "200"}  # help lines unwrapped
    done = subprocess.run([sys.executable, "-c", PROBE, str(script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    *out, last = done.stdout.rstrip("\n").split("\n")
    _, code, heavy = last.split(" ")
    return int(code), [] if heavy == "-" else heavy.split(","), "\n".join(out), done.stderr


def run_chat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHAT), *args], capture_output=True, text=True, cwd=ROOT, timeout=180)


# ---------------------------------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "script, defaults",
    [
        (CHAT, ["--num-segments NUM_SEGMENTS", "(default: 16)", "(default: 128)", "(default: cpu)", "(default: auto)",
                "(default: None)"]),
        (BENCH, ["(default: 8,16,32,64,96)", "(default: 3)", "(default: 2)", "(default: cpu)",
                 f"(default: {ROOT / 'benchmarks' / '_work'})"]),
    ],
    ids=["chat", "benchmark"],
)
def test_help_shows_defaults_without_importing_torch(script, defaults):
    code, heavy, out, _ = probe(script, "--help")
    assert code == 0
    assert heavy == []
    for text in defaults:
        assert text in out
    entries = option_entries(out)
    lacking = [entry for entry in entries if "(default:" not in entry]
    assert len(entries) >= 9 and lacking == [], lacking


def option_entries(help_text: str) -> list[str]:
    """Each option's help entry (its first line and continuation lines joined), ``--help`` left out."""
    entries: list[str] = []
    section = help_text.split("\noptions:\n", 1)[1]
    for line in section.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("      ") and entries:
            entries[-1] += " " + line.strip()
    return [entry for entry in entries if not entry.startswith("-h, --help")]


def test_benchmark_writes_only_where_asked():
    """The default results folder is the git-ignored scratch folder, never the committed benchmarks/results.*."""
    code = ("import runpy; ns = runpy.run_path('benchmarks/run.py'); "
            "print(ns['parse_args']([]).out); print(ns['parse_args'](['--out', 'benchmarks']).out)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           check=True).stdout.split()
    assert lines == [str(ROOT / "benchmarks" / "_work"), "benchmarks"]
    assert "/benchmarks/_work/" in (ROOT / ".gitignore").read_text().split(), "benchmarks/_work/ must be git-ignored"


# ------------------------------------------------------------------------------- errors before loading


@pytest.mark.parametrize(
    "script, args, phrase",
    [
        (CHAT, ["--model", "no/such/folder"], "--model no/such/folder: no such folder"),
        (CHAT, ["--max-num", "0", "--image", "x.png"], "argument --max-num: must be at least 1, got 0"),
        (CHAT, ["--num-segments", "-3"], "argument --num-segments: must be at least 1, got -3"),
        (CHAT, ["--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1, got 0"),
        (CHAT, ["--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
        (CHAT, ["--image", "missing.jpg"], "--image missing.jpg: no such file"),
        (CHAT, ["--video", "missing.mp4"], "--video missing.mp4: no such file"),
        (CHAT, ["--image", "README.md", "--prunevid"], "--prunevid prunes video tokens only"),
        (CHAT, ["--max-num", "2"], "--max-num sets the tiles per image"),
        (CHAT, ["--question", "  "], "--question is empty"),
        (BENCH, ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (BENCH, ["--frames", "8,x"], "argument --frames: must be comma-separated integers"),
        (BENCH, ["--full-size"], "--full-size needs --device cuda"),
    ],
)
def test_bad_arguments_refused_before_loading(script, args, phrase):
    code, heavy, out, err = probe(script, *args)
    assert code == 2
    assert heavy == []
    assert phrase in err
    if script == CHAT:
        assert err.count("\n") == 1 and out == ""


def test_model_folder_without_media_refused_before_loading(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    code, heavy, _, err = probe(CHAT, "--model", str(tmp_path))
    assert (code, heavy) == (2, [])
    assert err == f"chat.py: error: --model {tmp_path} needs --image or --video (only the demo has its own clip)\n"


def test_model_folder_without_config_refused(tmp_path):
    code, heavy, _, err = probe(CHAT, "--model", str(tmp_path), "--video", "README.md")
    assert (code, heavy) == (2, [])
    assert f"--model {tmp_path} has no config.json" in err


def test_unknown_device_is_one_line():
    done = run_chat("--device", "warp9")
    assert done.returncode == 2
    assert done.stderr.startswith("chat.py: error: --device 'warp9' is not a torch device")
    assert done.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------- the demo

DEMO = ["--device", "cpu", "--num-segments", "4", "--max-new-tokens", "3"]


def test_demo_without_prunevid_prints_no_prunevid_figures():
    done = run_chat(*DEMO, "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    assert "TINY RANDOM-WEIGHT DEMO MODEL" in done.stdout
    assert "weights: float32 on cpu" in done.stdout
    assert "token budget: 4 frames x 4 tokens per frame = 16 visual tokens" in done.stdout
    assert "PruneVid" not in done.stdout and "stage" not in done.stdout


def test_demo_with_prunevid_prints_its_figures_in_the_dtype_asked():
    done = run_chat("--device", "cpu", "--num-segments", "8", "--max-new-tokens", "3", "--dtype", "bfloat16",
                    "--prunevid")
    assert done.returncode == 0, done.stderr
    assert "weights: bfloat16 on cpu" in done.stdout
    found = re.search(r"PruneVid: (\d+) visual tokens after stage 1 \(merging\), (\d+) after stage 2", done.stdout)
    assert found, done.stdout
    after1, after2 = int(found[1]), int(found[2])
    assert "token budget: 8 frames x 4 tokens per frame = 32 visual tokens" in done.stdout
    assert 0 < after2 < after1 < 32  # similar frames: stage 1 merges some tokens, stage 2 keeps fewer


def test_demo_on_images(tmp_path):
    from PIL import Image

    paths = []
    for i, size in enumerate([(224, 112), (100, 100)]):
        paths.append(tmp_path / f"image{i}.png")
        Image.new("RGB", size, (40 * i, 90, 200)).save(paths[-1])
    done = run_chat("--image", *map(str, paths), "--max-num", "2", "--max-new-tokens", "2", "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    # 224x112 -> 2 tiles + thumbnail, 100x100 -> 1 tile (no thumbnail for one tile); 4 x 4 tokens per tile
    assert "token budget: 4 tiles x 16 tokens per tile = 64 visual tokens" in done.stdout
    assert "PruneVid" not in done.stdout
