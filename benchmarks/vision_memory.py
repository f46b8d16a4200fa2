"""Peak memory of the PVC vision encoder for one setting, measured in a fresh process.

Run by ``run.py`` once per (temporal layers, frames, chunking) so that no allocator state carries over:

    python benchmarks/vision_memory.py --frames 96 --mode chunked --temporal-layers=-1

Modes (one clip of all frames, through the model's own methods):

* ``chunked``: ``encode_clips(video, T, chunk_frames=2)``: layer by layer, 2 frames at a time, each temporal
  layer reading the keys/values of the earlier frames from one store shared by all layers;
* ``oneshot``: ``encode_clips(video, T)``, every block on all frames at once;
* ``extract_chunked``: ``extract_feature(video, data_flag=[DataFlag.VIDEO], ..., chunk_frames=2)``, the public entry point
  (it must cost what ``chunked`` costs: a contiguous clip is not copied).

The process builds the PVC model (the language model cut to one layer: it is not used), creates the video,
runs a one-frame warm-up (so one-time kernel and thread-pool buffers are not counted), then reports the
peak rise of the resident set during the encoding over the resident set just before it (VmHWM reset
through ``/proc/self/clear_refs``). ``MALLOC_MMAP_THRESHOLD_`` is set by the caller so that every large
tensor is its own mapping, returned to the system when freed: the resident set then follows the live
tensors. On CUDA the allocator's ``max_memory_allocated`` rise is reported instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

import harness
from measure import encode_video, track_peak
from pvc_internvl.modeling_pvc_internvl import PVCInternVLChatModel

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # large tensors get their own mappings (no heap caching)
MODES = ("chunked", "oneshot", "extract_chunked")
CHUNK_FRAMES = 2


def parse_layers(text: str) -> list[int] | None:
    """``"all"`` -> None (every layer); ``"-4,-3,-2,-1"`` -> a list of indices."""
    return None if text == "all" else [int(x) for x in text.split(",")]


@torch.no_grad()
def encode(model: PVCInternVLChatModel, video: torch.Tensor, mode: str) -> torch.Tensor:
    """Encode ``video`` as one clip in ``mode`` (see the module docstring)."""
    if mode == "chunked":
        return model.model.encode_clips(video, video.shape[0], chunk_frames=CHUNK_FRAMES)
    if mode == "oneshot":
        return model.model.encode_clips(video, video.shape[0])
    if mode == "extract_chunked":
        return encode_video(model, video, chunk_frames=CHUNK_FRAMES)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def measure(frames: int, mode: str, layers: list[int] | None, full_size: bool, device: str, threads: int) -> dict:
    """Peak memory rise (bytes) of encoding ``frames`` frames in ``mode``."""
    torch.set_num_threads(threads)
    spec = harness.make_spec(full_size, device, layers)
    model = harness.build_pvc(spec, llm_layers=1)
    if model.config.select_layer != -1:
        raise ValueError(f"the benchmark assumes select_layer -1, got {model.config.select_layer}")
    video = harness.synthetic_video(frames, size=model.config.image_size).to(device=device, dtype=spec.dtype)
    encode(model, video[:1], mode)  # warm-up: kernels, thread pool, allocator
    with track_peak(device) as peak:
        out = encode(model, video, mode)
    vision = model.config.vision_config
    return {
        "frames": frames,
        "mode": mode,
        "chunk_frames": CHUNK_FRAMES if mode == "chunked" else None,
        "temporal_layers": len(vision.temporal_layer_ids()),
        "peak_bytes": peak.bytes,
        "method": peak.method,
        "tokens_per_frame": (vision.image_size // vision.patch_size) ** 2 + 1,
        "temporal_tokens_per_frame": (vision.image_size // vision.patch_size) ** 2 + int(vision.temporal_include_cls),
        "vision_hidden": vision.hidden_size,
        "bytes_per_element": out.element_size(),
        "pixel_bytes_per_frame": video[0].numel() * video.element_size(),
        "output_bytes_per_frame": out.reshape(-1, out.shape[-2], out.shape[-1])[0].numel() * out.element_size(),
    }


def run_in_subprocess(frames: int, mode: str, layers: str, full_size: bool, device: str, threads: int,
                      timeout_s: float = 600.0) -> dict:
    """Run :func:`measure` in a fresh interpreter and return its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), "--frames", str(frames), "--mode", mode,
               f"--temporal-layers={layers}", "--device", device, "--threads", str(threads)]
    if full_size:
        command.append("--full-size")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=harness.measuring_env(**MALLOC_ENV))
    if done.returncode != 0:
        raise RuntimeError(f"vision memory run {command[2:]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Command line: one measurement, its JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="chunked")
    parser.add_argument("--temporal-layers", default="all", help='"all" or comma-separated layer indices')
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = measure(args.frames, args.mode, parse_layers(args.temporal_layers), args.full_size, args.device,
                     args.threads)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
