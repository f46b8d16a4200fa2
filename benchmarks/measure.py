"""Single measurements: vision encoding, LLM prefill, decode, PruneVid stage 1 and stage 2.

Every function runs one measurement under ``torch.no_grad`` and synchronises the device around the timed
region. ``track_peak`` measures the peak memory rise of a block: the peak resident set (VmHWM, reset through
``/proc/self/clear_refs``) over the resident set at its start, or on CUDA the rise of
``torch.cuda.max_memory_allocated``; it is used in fresh processes only (``vision_memory.py``), where the
allocator holds no cached memory.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import VIDEO_FLAG, PromptLayout, sync
from pvc_internvl.configuration_pvc_internvl import PruneVidConfig
from pvc_internvl.modeling_pvc_internvl import PVCInternVLChatModel
from pvc_internvl.prunevid import CACHE_ARG, Stage1Result, merge_video_tokens, pruned_generate

STATUS = pathlib.Path("/proc/self/status")
CLEAR_REFS = pathlib.Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes() -> int:
    """Current resident set size."""
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` value 5); False where that is not allowed."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Peak memory rise over the start of a ``track_peak`` block, in bytes (filled when the block ends)."""

    bytes: int = 0
    method: str = ""


@contextlib.contextmanager
def track_peak(device: str) -> Iterator[PeakMemory]:
    """Measure the peak memory rise of the enclosed code (host RSS on CPU, allocator peak on CUDA)."""
    result = PeakMemory()
    if device.startswith("cuda"):
        sync(device)
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        sync(device)
        result.bytes, result.method = torch.cuda.max_memory_allocated() - start, "cuda max_memory_allocated"
        return
    start = rss_bytes()
    if not reset_peak_rss():
        raise OSError("cannot reset the peak RSS through /proc/self/clear_refs; run the benchmark on Linux")
    yield result
    result.bytes, result.method = _status_kib("VmHWM") * 1024 - start, "VmHWM after clear_refs minus VmRSS"


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Wall time of ``fn()`` in seconds (device synchronised before and after) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@torch.no_grad()
def encode_video(model: PVCInternVLChatModel, video: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
    """Projected visual tokens ``(T, L, D)`` of one video sample (``DataFlag.VIDEO``, one tile per frame)."""
    frames = video.shape[0]
    return model.extract_feature(video, data_flag=[VIDEO_FLAG], split_sizes=[frames], num_patches_list=[[1] * frames],
                                 chunk_frames=chunk_frames)


def time_vision(model: PVCInternVLChatModel, video: torch.Tensor, device: str,
                chunk_frames: int | None = None) -> tuple[float, torch.Tensor]:
    """Seconds to encode ``video`` (in one pass, or ``chunk_frames`` at a time), and the projected tokens
    ``(T, L, D)``."""
    return timed(lambda: encode_video(model, video, chunk_frames), device)


def prompt_embeds(layout: PromptLayout, visual: torch.Tensor, hidden: int, dtype: torch.dtype, device: str,
                  seed: int = 0) -> torch.Tensor:
    """``(1, S, D)`` prompt embeddings: random text embeddings with ``visual`` ``(n, D)`` in the visual slots."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, layout.length, hidden, generator=generator).to(device=device, dtype=dtype)
    mask = layout.visual_mask.to(device)
    return embeds.masked_scatter(mask[..., None], visual.reshape(-1, hidden).to(device=device, dtype=dtype))


@dataclass
class PrefillResult:
    """A timed prefill: seconds, and what decoding needs."""

    seconds: float
    logits: torch.Tensor | None = None
    cache: Any = None
    stats: dict = field(default_factory=dict)


@torch.no_grad()
def time_dense_prefill(language_model: torch.nn.Module, embeds: torch.Tensor, device: str) -> PrefillResult:
    """Time to first token of the plain LLM: one forward over ``embeds`` with the native (SDPA) attention."""
    seconds, out = timed(lambda: language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1), device)
    return PrefillResult(seconds, out.logits[:, -1].float(), getattr(out, CACHE_ARG))


@torch.no_grad()
def dense_decode_steps(language_model: torch.nn.Module, prefill: PrefillResult, prompt_len: int, steps: int,
                       device: str) -> list[float]:
    """Seconds of each of ``steps`` greedy decode steps after a dense prefill (the same per-step work as
    ``pruned_generate``'s loop: one token, a 2-D mask, an explicit position id, ``logits_to_keep=1``)."""
    embed = language_model.get_input_embeddings()
    token = prefill.logits.argmax(dim=-1)
    mask = torch.ones(1, prompt_len, dtype=torch.long, device=device)
    durations = []
    for step in range(steps):
        start = time.perf_counter()
        mask = torch.cat([mask, mask.new_ones(1, 1)], dim=-1)
        out = language_model(inputs_embeds=embed(token[:, None]), attention_mask=mask,
                             position_ids=torch.tensor([[prompt_len + step]], device=device),
                             use_cache=True, logits_to_keep=1, **{CACHE_ARG: prefill.cache})
        token = out.logits[:, -1].float().argmax(dim=-1)
        sync(device)
        durations.append(time.perf_counter() - start)
    return durations


def _pruned_kwargs(layout: PromptLayout, groups: list[int], settings: PruneVidConfig, alpha: float | None) -> dict:
    return dict(attention_mask=torch.ones_like(layout.visual_mask, dtype=torch.long), visual_mask=layout.visual_mask,
                group_sizes=[list(groups)], selected_layer=settings.selected_layer,
                alpha=settings.alpha if alpha is None else alpha, eos_token_id=None, pad_token_id=0)


@torch.no_grad()
def time_pruned_prefill(language_model: torch.nn.Module, embeds: torch.Tensor, layout: PromptLayout,
                        groups: list[int], settings: PruneVidConfig, device: str) -> PrefillResult:
    """Time to first token with PruneVid stage 2: ``pruned_generate(..., max_new_tokens=1)``."""
    kwargs = _pruned_kwargs(layout, groups, settings, None)
    kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    seconds, (_, stats) = timed(
        lambda: pruned_generate(language_model, embeds, max_new_tokens=1, return_stats=True, **kwargs), device)
    return PrefillResult(seconds, stats=stats)


class StepClock:
    """A ``pruned_generate`` streamer that records when every generated token arrives."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, ids: torch.Tensor) -> None:
        """Record the arrival time of a generated token."""
        if ids.numel():
            self.stamps.append(time.perf_counter())

    def end(self) -> None:
        """Nothing to do at the end of generation."""

    def steps(self) -> list[float]:
        """Seconds between consecutive tokens (the decode steps)."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


@torch.no_grad()
def pruned_decode_steps(language_model: torch.nn.Module, embeds: torch.Tensor, layout: PromptLayout,
                        groups: list[int], settings: PruneVidConfig, steps: int, device: str,
                        alpha: float | None = None) -> list[float]:
    """Seconds of each decode step of ``pruned_generate`` (``alpha=1.0`` keeps every token: the same loop
    on the full cache, the fair reference for the unpruned model)."""
    kwargs = _pruned_kwargs(layout, groups, settings, alpha)
    kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    clock = StepClock()
    pruned_generate(language_model, embeds, max_new_tokens=steps + 1, streamer=clock, return_stats=False, **kwargs)
    return clock.steps()


def seeded_noise(seed: int = 0) -> Callable[[int, tuple], torch.Tensor]:
    """DPC-kNN tie-break noise from one seeded generator (as the chat model does per sample)."""
    generator = torch.Generator().manual_seed(seed)
    return lambda call_index, shape: torch.rand(shape, generator=generator)


@torch.no_grad()
def time_stage1(features: torch.Tensor, settings: PruneVidConfig, device: str) -> tuple[float, Stage1Result]:
    """Seconds of PruneVid stage 1 (``merge_video_tokens``) on projected tokens ``(T, L, D)``."""
    noise = seeded_noise()
    return timed(lambda: merge_video_tokens(
        features, tau=settings.tau, temporal_segment_ratio=settings.temporal_segment_ratio,
        cluster_ratio=settings.cluster_ratio, k=settings.k, min_tokens_to_cluster=settings.min_tokens_to_cluster,
        noise_fn=lambda i, shape: noise(i, shape).to(features.device)), device)
