#!/usr/bin/env python
"""Peak memory of the checkpoint converter on an InternVL2-2B-shaped checkpoint.

Generates the synthetic checkpoint (``make_synthetic_checkpoint.py``) under ``--work`` if it is not there,
runs ``conversion/convert_checkpoint.py`` on it in a subprocess, and reads that process's peak resident
set size from ``os.wait4`` (the kernel's ``ru_maxrss`` of exactly that child). The requirement: peak RSS
<= largest source shard + 2048 MB.

    python benchmarks/conversion_memory.py --work /tmp/pvc-conversion-memory \
        --results benchmarks/results_conversion.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADROOM_MB = 2048
MB = 1e6


def ensure_checkpoint(folder: Path, size_gb: float) -> None:
    if (folder / "config.json").is_file() and (folder / "model.safetensors.index.json").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "make_synthetic_checkpoint.py"), "--out", str(folder),
               "--size-gb", str(size_gb)]
    print("generating:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def source_shards(folder: Path) -> dict[str, int]:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return {name: (folder / name).stat().st_size for name in sorted(set(weight_map.values()))}


def run_converter(command: list[str], env: dict) -> tuple[int, int, float, str]:
    """Return (exit code, peak RSS in bytes, wall seconds, stderr tail) of one converter run."""
    start = time.perf_counter()
    log = Path(env["PVC_BENCH_LOG"])
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kilobytes on Linux
    return process.returncode, usage.ru_maxrss * scale, wall, log.read_text()[-3000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/pvc-conversion-memory", help="work folder (outside the repository)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "_work" / "results_conversion.json"),
                        help="results JSON (`--results benchmarks/results_conversion.json` replaces the committed one)")
    parser.add_argument("--size-gb", type=float, default=2.2, help="synthetic checkpoint size")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument("--keep-output", action="store_true", help="keep the converted checkpoint")
    args = parser.parse_args()

    work = Path(args.work).resolve()
    source, output = work / "synthetic-internvl2-2b", work / "converted"
    ensure_checkpoint(source, args.size_gb)
    shards = source_shards(source)
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, str(ROOT / "conversion" / "convert_checkpoint.py"), "--src", str(source),
               "--dst", str(output), "--img-context-token-id", "92546", "--max-shard-size", args.max_shard_size]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf_home"), PVC_BENCH_LOG=str(work / "converter.log"))
    code, peak, wall, log_tail = run_converter(command, env)

    largest = max(shards.values())
    total = sum(shards.values())
    limit = largest + HEADROOM_MB * MB
    outputs = sorted(p.name for p in output.glob("*.safetensors")) if output.is_dir() else []
    result = {
        "benchmark": "conversion_memory",
        "peak_rss_mb": round(peak / MB, 1),
        "largest_source_shard_mb": round(largest / MB, 1),
        "total_source_mb": round(total / MB, 1),
        "num_source_shards": len(shards),
        "limit_mb": round(limit / MB, 1),
        "limit_rule": f"largest source shard + {HEADROOM_MB} MB",
        "pass": bool(code == 0 and peak <= limit),
        "wall_time_s": round(wall, 1),
        "converter_exit_code": code,
        "output_files": outputs,
        "max_shard_size": args.max_shard_size,
        "source": "synthetic InternVL2-2B-shaped checkpoint (benchmarks/make_synthetic_checkpoint.py), bf16",
        "measurement": "os.wait4 ru_maxrss of the converter subprocess",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if code != 0:
        result["converter_log_tail"] = log_tail
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep_output:
        shutil.rmtree(output, ignore_errors=True)
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"{verdict}: converter peak RSS {result['peak_rss_mb']:.0f} MB (limit {result['limit_mb']:.0f} MB = largest "
          f"shard {result['largest_source_shard_mb']:.0f} MB + {HEADROOM_MB} MB); source {result['total_source_mb']:.0f} "
          f"MB in {len(shards)} shards; {result['wall_time_s']:.1f} s; results -> {results}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
