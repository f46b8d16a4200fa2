"""PVC-InternVL benchmark: one command for every figure quoted in the README.

    python benchmarks/run.py                                  # CPU, reduced widths (about 11 minutes)
    python benchmarks/run.py --device cuda --full-size        # GPU, the full 8B shapes in bf16
    python benchmarks/run.py --out benchmarks                 # replace the committed benchmarks/results.*
    python benchmarks/run.py --end-to-end --out benchmarks    # time to first token by stage, several questions

Writes results.md (tables and the must-show targets), results.json (every raw sample) and results.png (time
and tokens vs. frames) into --out: by default the git-ignored scratch folder benchmarks/_work/, so a trial
run never overwrites the committed results. Three configurations share one set of random weights: the
InternVL2 baseline (256 tokens per frame, no temporal modules), PVC (64 tokens per frame, temporal attention
and AdaLN with random non-zero weights) and PVC + PruneVid (paper defaults). Measurements are interleaved
(repeat-major, then frames, then configuration) and summarised by medians.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.decode import positive_float, resolution  # noqa: E402  (standard library only: --help stays fast)
from scripts.cli import HelpFormatter, positive_int, resolve_device  # noqa: E402

PROG = "run.py"
SCRATCH = HERE / "_work"  # git-ignored: default results folder and the conversion benchmark's checkpoint

# The timing process keeps the memory it frees (glibc: no trimming, heap rather than a fresh mapping for
# blocks up to 32 MiB), as PyTorch's caching allocator does on a GPU. Otherwise a short prefill that follows
# a long one pays page faults for the memory the long one gave back, which inflates the short
# configurations' times. glibc reads these settings at start-up only, hence the re-exec.
TIMING_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
                 "MALLOC_TOP_PAD_": str(256 << 20)}


def frame_counts(text: str) -> list[int]:
    """argparse type: ``"8,16,32"`` -> [8, 16, 32], each at least 1."""
    try:
        return [positive_int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 8,16,32, got {text!r}") from None


def video_resolution(text: str) -> str:
    """argparse type: a resolution name or WIDTHxHEIGHT that decode.py can make a video of."""
    try:
        resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (nothing heavy is imported here, so ``--help`` answers at once)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=SCRATCH,
                        help="folder for results.md/.json/.png (`--out benchmarks` replaces the committed results)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--full-size", action="store_true", help="the full 8B shapes in bf16 (needs a GPU)")
    parser.add_argument("--frames", type=frame_counts, default="8,16,32,64,96", help="comma-separated frame counts")
    parser.add_argument("--repeats", type=positive_int, default=3, help="repeats of every measurement")
    parser.add_argument("--large-repeats", type=positive_int, default=None,
                        help="repeats of the costliest items (None: 1 on CPU, --repeats on a GPU)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-memory", action="store_true", help="skip the vision-memory subprocesses")
    parser.add_argument("--skip-conversion", action="store_true", help="skip the conversion memory benchmark")
    parser.add_argument("--conversion-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--end-to-end", action="store_true",
                        help="measure only the time to first token split into stages (8B shapes, one layer each, "
                             "scaled) and the several-questions workload, and add them to the results in --out "
                             "(about 15 min on 2 shared cores)")
    parser.add_argument("--video-minutes", type=positive_float, default=10.0,
                        help="--end-to-end: length of the synthetic test video (made by decode.py, cached)")
    parser.add_argument("--video-resolution", type=video_resolution, default="480p",
                        help="--end-to-end: 480p, 720p, 1080p or WIDTHxHEIGHT")
    parser.add_argument("--vision-frames", type=positive_int, default=8,
                        help="--end-to-end: frames the one-layer 8B vision encoder runs (scaled to 64)")
    args = parser.parse_args(argv)
    if args.full_size and not args.device.startswith("cuda"):
        parser.error("--full-size needs --device cuda (the 8B shapes do not fit the CPU time budget)")
    if args.full_size and args.end_to_end:
        parser.error("--end-to-end measures the 8B widths one layer at a time; leave out --full-size")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder")
    return args


def ensure_timing_malloc() -> None:
    """Re-execute this script once with :data:`TIMING_MALLOC` in the environment (glibc reads it at start-up)."""
    if any(os.environ.get(k) != v for k, v in TIMING_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **TIMING_MALLOC})


def busy_share(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time used (by other processes: this one sleeps) over ``seconds``."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def set_omp_wait_policy() -> float:
    """OpenMP threads spin while they wait (the default) unless other processes are busy at the start: then
    idle threads sleep instead ("PASSIVE"), else a spinning thread starves its partner whenever another
    process takes a core, and every parallel region waits for a time slice. Spinning is faster on an idle
    machine. Must run before torch is imported; returns the other processes' CPU share it measured."""
    load = busy_share()
    if "OMP_WAIT_POLICY" not in os.environ and load >= 0.15:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return load


def main() -> None:
    """Parse, set up the timing process, run every measurement and write the reports into ``--out``."""
    args = parse_args()
    ensure_timing_malloc()
    load_at_start = set_omp_wait_policy()
    resolve_device(args.device, PROG)  # imports torch: after the OpenMP set-up; a missing device is one line
    import suite  # torch, transformers and the models: only now, after the process set-up above
    from report import write_reports

    saved = args.out / "results.json"
    previous = json.loads(saved.read_text()) if saved.is_file() else {}
    if args.end_to_end:  # the suite's results in --out stay; the end-to-end section is replaced
        import end_to_end

        results = previous
        results["end_to_end"] = end_to_end.run_mode(args, SCRATCH, list(TIMING_MALLOC), load_at_start)
        seconds = results["end_to_end"]["environment"]["wall_time_s"]
    else:  # the end-to-end section of the results replaced stays
        results = suite.run_all(args, SCRATCH, list(TIMING_MALLOC), load_at_start)
        results.update({k: v for k, v in previous.items() if k == "end_to_end"})
        seconds = results["environment"]["wall_time_s"]
    paths = write_reports(results, args.out / "results")
    print(f"wrote {', '.join(str(p) for p in paths)} in {seconds:.0f} s")
    failed = [t["target"] for t in results["targets"] if t["status"] == "FAIL"]
    if failed:
        sys.exit(f"{PROG}: error: {'; '.join(failed)} (see {paths[1]})")


if __name__ == "__main__":
    main()
