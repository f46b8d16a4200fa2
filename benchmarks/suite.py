"""The measurement run of ``run.py``: models, the interleaved schedule, memory subprocesses, environment.

Imported by ``run.py`` only after it has parsed its arguments and set up the timing process (glibc
``MALLOC_*`` settings, ``OMP_WAIT_POLICY``), because torch reads those when it is first imported.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from tqdm import tqdm

import harness
import measure
import vision_memory
from analysis import BASE, PRUNEVID, PVC, Samples

HERE = pathlib.Path(__file__).resolve().parent
TARGET_FRAMES = 64
DECODE_STEPS = 12
OVERHEAD_TOKENS = 16  # tiny prompt that measures the fixed cost of one prefill call
MEMORY_LAYERS = ("all",)  # temporal layer settings of the memory benchmark: all 24 (the 8B default)


@dataclass(frozen=True)
class Task:
    """One measurement of the interleaved schedule."""

    repeat: int
    frames: int
    kind: str  # "vision", "vision_chunked", "stage1", "prefill" (then decode), "prefill_only", "decode_same_loop"
    config: str


def schedule(frames: list[int], repeats: int, large_repeats: int) -> list[Task]:
    """Repeat-major, interleaved list of measurements. The costliest item (the baseline prefill at the
    largest frame count) gets ``large_repeats``. The short PVC and PVC + PruneVid prefills, whose relative
    noise is the largest, run twice per repeat: before the baseline prefill (prefill only) and after it
    (prefill, then decode)."""
    def count(kind: str, config: str, f: int) -> int:
        large = kind == "prefill" and config == BASE and f == max(frames)
        return large_repeats if large else repeats

    items = [("vision", BASE), ("vision", PVC), ("stage1", PRUNEVID), ("prefill_only", PVC),
             ("prefill_only", PRUNEVID), ("prefill", BASE), ("prefill", PVC), ("prefill", PRUNEVID),
             ("decode_same_loop", PVC), ("vision_chunked", PVC)]
    tasks = []
    for r in range(repeats):
        for f in frames:
            for kind, config in items:
                if kind in ("decode_same_loop", "vision_chunked") and f != TARGET_FRAMES:
                    continue
                if r < count(kind, config, f):
                    tasks.append(Task(r, f, kind, config))
    return tasks


class Bench:
    """The models, inputs and everything measured so far."""

    def __init__(self, spec: harness.BenchSpec) -> None:
        self.spec = spec
        self.pvc = harness.build_pvc(spec)
        self.baseline = harness.build_baseline(spec, self.pvc)
        self.lm = self.pvc  # as a causal LM: the calls below give it embeddings, no media
        self.hidden = self.pvc.config.llm_config.hidden_size
        self.settings = harness.prunevid_settings()
        self.samples = Samples()
        self.features: dict[tuple[str, int], torch.Tensor] = {}
        self.stage1: dict[int, object] = {}
        self.tokens: dict[int, dict] = {}
        self.videos: dict[int, torch.Tensor] = {}

    def video(self, frames: int) -> torch.Tensor:
        """The synthetic clip of ``frames`` frames (made once)."""
        if frames not in self.videos:
            video = harness.synthetic_video(frames, size=self.pvc.config.image_size)
            self.videos[frames] = video.to(device=self.spec.device, dtype=self.spec.dtype)
        return self.videos[frames]

    def model(self, config: str):
        """The chat model whose vision path a configuration uses."""
        return self.baseline if config == BASE else self.pvc

    def dense_layout(self, config: str, frames: int) -> harness.PromptLayout:
        """Prompt layout with every frame at the configuration's tokens per frame."""
        per_frame = self.model(config).config.num_image_token
        return harness.video_prompt([per_frame] * frames)

    def embeds(self, layout: harness.PromptLayout, visual: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings with ``visual`` in the visual slots."""
        return measure.prompt_embeds(layout, visual, self.hidden, self.spec.dtype, self.spec.device)

    # ---------------------------------------------------------------------------------- measurements
    def run(self, task: Task) -> None:
        """Run one scheduled measurement."""
        getattr(self, f"_{task.kind}")(task)
        gc.collect()

    def _vision(self, task: Task) -> None:
        seconds, features = measure.time_vision(self.model(task.config), self.video(task.frames), self.spec.device)
        self.samples.add("vision_s", task.config, task.frames, seconds)
        self.features.setdefault((task.config, task.frames), features)

    def _vision_chunked(self, task: Task) -> None:
        """PVC encoding ``vision_memory.CHUNK_FRAMES`` frames at a time (the setting of the memory benchmark)."""
        seconds, _ = measure.time_vision(self.pvc, self.video(task.frames), self.spec.device,
                                         chunk_frames=vision_memory.CHUNK_FRAMES)
        self.samples.add("vision_chunked_s", PVC, task.frames, seconds)

    def _stage1(self, task: Task) -> None:
        seconds, result = measure.time_stage1(self.features[(PVC, task.frames)], self.settings, self.spec.device)
        self.samples.add("stage1_s", PRUNEVID, task.frames, seconds)
        self.stage1.setdefault(task.frames, result)

    def _prefill_only(self, task: Task) -> None:
        self._prefill(task, decode=False)

    def _prefill(self, task: Task, decode: bool = True) -> None:
        if task.config == PRUNEVID:
            return self._pruned_prefill(task, decode)
        layout = self.dense_layout(task.config, task.frames)
        embeds = self.embeds(layout, self.features[(task.config, task.frames)])
        result = measure.time_dense_prefill(self.lm, embeds, self.spec.device)
        self.samples.add("prefill_s", task.config, task.frames, result.seconds)
        if decode:
            steps = measure.dense_decode_steps(self.lm, result, layout.length, DECODE_STEPS, self.spec.device)
            self.samples.extend("decode_step_s", task.config, task.frames, steps)
        self.tokens.setdefault(task.frames, {}).update({
            f"{task.config}_visual": layout.visual_tokens, f"{task.config}_prompt": layout.length})

    def _pruned_inputs(self, frames: int) -> tuple[harness.PromptLayout, torch.Tensor, list[int]]:
        result = self.stage1[frames]
        layout = harness.video_prompt(result.frame_token_counts)
        return layout, self.embeds(layout, result.features), result.group_sizes

    def _pruned_prefill(self, task: Task, decode: bool) -> None:
        layout, embeds, groups = self._pruned_inputs(task.frames)
        result = measure.time_pruned_prefill(self.lm, embeds, layout, groups, self.settings, self.spec.device)
        self.samples.add("prefill_s", PRUNEVID, task.frames, result.seconds)
        if decode:
            steps = measure.pruned_decode_steps(self.lm, embeds, layout, groups, self.settings, DECODE_STEPS,
                                                self.spec.device)
            self.samples.extend("decode_step_s", PRUNEVID, task.frames, steps)
        stage1 = self.stage1[task.frames]
        self.tokens.setdefault(task.frames, {}).update({
            "pvc_prunevid_stage1_visual": layout.visual_tokens,
            "pvc_prunevid_stage1_prompt": result.stats["prefill_len_full"][0],
            "pvc_prunevid_stage2_visual": result.stats["visual_tokens_kept"][0],
            "pvc_prunevid_stage2_prompt": result.stats["prefill_len_pruned"][0],
            "pvc_prunevid_prefill_flops_package": result.stats["prefill_flops"][0],
            "stage1_segments": len(stage1.window_sizes),
            "stage1_dpc_calls": len(stage1.dpc_calls),
            "stage1_static_tokens": sum(stage1.static_sizes),
        })

    def _decode_same_loop(self, task: Task) -> None:
        """PVC decoded by the PruneVid loop with alpha = 1 (every token kept): the same code path as
        PVC + PruneVid, so only the cache length differs."""
        layout = self.dense_layout(PVC, task.frames)
        embeds = self.embeds(layout, self.features[(PVC, task.frames)])
        groups = [self.pvc.config.num_image_token] * task.frames
        steps = measure.pruned_decode_steps(self.lm, embeds, layout, groups, self.settings, DECODE_STEPS,
                                            self.spec.device, alpha=1.0)
        self.samples.extend("decode_same_loop_step_s", PVC, task.frames, steps)

    def warm_up(self, frames: int) -> None:
        """One untimed pass of every measurement at ``frames`` (kernels, thread pools, allocator)."""
        for kind, config in [("vision", BASE), ("vision", PVC), ("stage1", PRUNEVID), ("prefill", BASE),
                             ("prefill", PVC), ("prefill", PRUNEVID)]:
            self.run(Task(0, frames, kind, config))
        self.samples = Samples()

    def measure_overhead(self, repeats: int) -> None:
        """Fixed cost of one prefill call, from a tiny prompt (used to explain ratio deviations)."""
        embeds = torch.randn(1, OVERHEAD_TOKENS, self.hidden).to(device=self.spec.device, dtype=self.spec.dtype)
        for _ in range(repeats + 1):
            self.samples.add("overhead_s", BASE, OVERHEAD_TOKENS, measure.time_dense_prefill(self.lm, embeds,
                                                                                             self.spec.device).seconds)
        self.samples.data[("overhead_s", BASE, OVERHEAD_TOKENS)].pop(0)  # the first call warms up


def vision_memory_runs(spec: harness.BenchSpec, threads: int) -> list[dict]:
    """Peak memory of the vision encoder, one fresh subprocess per measurement."""
    plan = [(layers, mode, frames) for layers in MEMORY_LAYERS for mode in ("chunked", "oneshot")
            for frames in (16, 96)]
    plan += [("all", "extract_chunked", 16), ("all", "extract_chunked", 96)]  # the public entry point
    records = []
    for layers, mode, frames in tqdm(plan, desc="vision memory (subprocesses)", leave=False):
        record = vision_memory.run_in_subprocess(frames, mode, layers, spec.full_size, spec.device, threads)
        records.append({**record, "temporal_layers_setting": layers})
    return records


def conversion_memory(timeout_s: float, scratch: pathlib.Path) -> dict:
    """Run the conversion memory benchmark (``benchmarks/conversion_memory.py``) in ``scratch``; quote its JSON."""
    script = HERE / "conversion_memory.py"
    if not script.exists():
        return {"status": "skipped", "reason": f"{script.relative_to(harness.ROOT)} does not exist in this checkout"}
    work, results = scratch / "conversion", scratch / "conversion_memory.json"
    work.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    command = [sys.executable, str(script), "--work", str(work), "--results", str(results)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=harness.measuring_env())
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s", "command": command[1:]}
    seconds = time.perf_counter() - start
    if not results.exists():
        return {"status": "failed", "reason": f"exit code {done.returncode} and no results file",
                "stderr_tail": done.stderr[-1500:], "command": command[1:], "seconds": seconds}
    return {"status": "ok", "exit_code": done.returncode, "seconds": seconds, "command": command[1:],
            "stdout_tail": done.stdout[-500:], "results": json.loads(results.read_text())}


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by all processes on this machine, CPU seconds used by this run and its children)."""
    fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy, own


def load_report(start_cpu: tuple[float, float], wall_s: float) -> dict:
    """How busy the machine was with other work during the run (timings are only as good as this)."""
    busy, own = cpu_seconds()
    other = max((busy - start_cpu[0]) - (own - start_cpu[1]), 0.0)
    return {"other_processes_cpu_share": other / (wall_s * (os.cpu_count() or 1)),
            "loadavg_at_end": pathlib.Path("/proc/loadavg").read_text().split()[:3]}


def environment(spec: harness.BenchSpec, timing_malloc: list[str], load_at_start: float) -> dict:
    """Versions, hardware and invocation (``timing_malloc``: the glibc variables ``run.py`` sets)."""
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name() if spec.device.startswith("cuda") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], harness.ROOT)] + sys.argv[1:]),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "device": spec.device, "gpu": gpu or "no GPU in this run",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spin, then sleep)"),
        "timing_malloc": {k: os.environ.get(k) for k in timing_malloc},
        "other_processes_cpu_share_at_start": load_at_start,
        "loadavg_at_start": pathlib.Path("/proc/loadavg").read_text().split()[:3],
    }


def run_all(args: argparse.Namespace, scratch: pathlib.Path, timing_malloc: list[str], load_at_start: float) -> dict:
    """Run every measurement ``run.py``'s arguments ask for and return the raw results (no summary yet);
    ``scratch`` holds the conversion benchmark's synthetic checkpoint."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    torch.set_num_threads(args.threads)
    spec = harness.make_spec(args.full_size, args.device)
    env = environment(spec, timing_malloc, load_at_start)
    frames = sorted(args.frames)
    large = args.large_repeats if args.large_repeats is not None else (args.repeats if args.full_size else 1)
    tqdm.write(f"building models ({'full size' if spec.full_size else 'reduced widths'}, {spec.device})")
    bench = Bench(spec)
    bench.warm_up(frames[0])
    bench.measure_overhead(args.repeats)
    for task in tqdm(schedule(frames, args.repeats, large), desc="timing (interleaved)"):
        bench.run(task)
    memory = [] if args.skip_memory else vision_memory_runs(spec, args.threads)
    conversion = ({"status": "skipped", "reason": "--skip-conversion"} if args.skip_conversion
                  else conversion_memory(args.conversion_timeout, scratch))
    results = {
        "environment": env,
        "settings": {"frames": frames, "repeats": args.repeats, "large_repeats": large, "decode_steps": DECODE_STEPS,
                     "target_frames": TARGET_FRAMES, "chunk_frames": vision_memory.CHUNK_FRAMES,
                     "overhead_tokens": OVERHEAD_TOKENS},
        "models": {**spec.describe(), "prunevid": bench.settings.settings(),
                   "temporal_weight_std": harness.TEMPORAL_STD,
                   "tokens_per_frame": {BASE: bench.baseline.config.num_image_token,
                                        PVC: bench.pvc.config.num_image_token},
                   "prompt": harness.prompt_summary(TARGET_FRAMES)},
        "samples": bench.samples.records(),
        "tokens": {str(f): v for f, v in sorted(bench.tokens.items())},
        "vision_memory": memory,
        "conversion_memory": conversion,
    }
    results["environment"]["wall_time_s"] = time.perf_counter() - start
    results["environment"].update(load_report(start_cpu, results["environment"]["wall_time_s"]))
    return results
