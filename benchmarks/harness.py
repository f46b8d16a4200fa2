"""Shared set-up of the benchmark: package import, model shapes, random models, synthetic inputs.

The flat remote-code files of the repository root are imported as the package ``pvc_internvl`` through
``conversion/package.py`` (the one shim of the repository); after ``import harness`` the other benchmark
modules import from ``pvc_internvl.*`` directly.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from conversion.package import ROOT, remote_module  # noqa: E402
from conversion.tiny_tokenizer import make_tiny_tokenizer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_configuration = remote_module("configuration_pvc_internvl")
DataFlag, PruneVidConfig = _configuration.DataFlag, _configuration.PruneVidConfig
PVCInternVLConfig = _configuration.PVCInternVLConfig
PVCInternVLChatModel = remote_module("modeling_pvc_internvl").PVCInternVLChatModel
PVCInternVLProcessor = remote_module("processing").PVCInternVLProcessor
IMG_CONTEXT_TOKEN = remote_module("conversation").IMG_CONTEXT_TOKEN
_media = remote_module("media")

FULL_CONFIG = ROOT / "config.json"
VIDEO_FLAG = int(DataFlag.VIDEO)
TEMPORAL_STD = 0.05  # std of the random values given to the zero-initialised PVC parameters

# The question after the video in every benchmark prompt (an MVBench-style multiple choice). The prompt around
# it is the package's: see video_prompt.
QUESTION = ("What does the textured square in the middle of the video do?\nA. It moves to the right.\n"
            "B. It moves to the left.\nC. It stays where it is.\nD. It turns around.\n"
            "Answer with the option's letter from the given choices directly.")

# Reduced widths for CPU runs: real token counts (448 px, patch 14 -> 1025 ViT tokens per frame) and real
# layer counts (24 ViT layers, 32 LLM layers); widths cut so the whole run fits 15 minutes on 2 cores.
REDUCED_VISION = dict(hidden_size=32, num_attention_heads=1, intermediate_size=128, time_embed_dim=64)
# The LLM keeps the 8B head size (128), grouped KV heads and MLP ratio (3.5): 2 heads / 1 KV head, hidden 256.
REDUCED_LLM = dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=128, intermediate_size=896)


@dataclass(frozen=True)
class BenchSpec:
    """Model shapes and numerics of one benchmark run."""

    full_size: bool
    device: str
    dtype: torch.dtype
    temporal_layers: list[int] | None = None  # PVC temporal layers (None = all, the 8B default)
    vision: dict = field(default_factory=dict)  # vision_config overrides
    llm: dict = field(default_factory=dict)  # llm_config overrides

    def describe(self) -> dict:
        """Plain-dict description for the results."""
        base = json.loads(FULL_CONFIG.read_text())
        vision = {**{k: base["vision_config"][k] for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                                            "num_hidden_layers", "image_size", "patch_size")},
                  **self.vision}
        llm = {**{k: base["llm_config"][k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                      "head_dim", "intermediate_size", "num_hidden_layers",
                                                      "vocab_size")},
               **self.llm}
        return {"full_size": self.full_size, "device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
                "vision": vision, "llm": llm,
                "temporal_layers": "all" if self.temporal_layers is None else self.temporal_layers}


def make_spec(full_size: bool, device: str, temporal_layers: list[int] | None = None) -> BenchSpec:
    """Full-size 8B shapes in bf16, or the reduced CPU shapes in fp32."""
    if full_size:
        return BenchSpec(True, device, torch.bfloat16, temporal_layers)
    return BenchSpec(False, device, torch.float32, temporal_layers, dict(REDUCED_VISION), dict(REDUCED_LLM))


def model_config(spec: BenchSpec, pvc: bool, llm_layers: int | None = None,
                 vocab_size: int | None = None) -> PVCInternVLConfig:
    """InternVL2 baseline (256 tokens per frame, no temporal modules) or PVC (64 tokens, temporal on).

    ``llm_layers`` overrides the LLM depth (the vision-memory subprocess needs no language model), ``vocab_size``
    its vocabulary (a language model that is thrown away: the image slot id becomes its last id).
    """
    raw = json.loads(FULL_CONFIG.read_text())
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "auto_map", "model_type", "transformers_version")}
    raw["vision_config"] = {**raw["vision_config"], **spec.vision, "temporal_attn_layers": spec.temporal_layers}
    raw["llm_config"] = {**raw["llm_config"], **spec.llm}
    if llm_layers is not None:
        raw["llm_config"]["num_hidden_layers"] = llm_layers
    if vocab_size is not None:
        raw["llm_config"]["vocab_size"], raw["img_context_token_id"] = vocab_size, vocab_size - 1
    raw["dynamic_image_size"] = False
    raw["prunevid"] = {}
    if pvc:
        raw.update(use_temporal=True, downsample_ratio=0.25, video_repeat_time=1)
    else:
        raw.update(use_temporal=False, downsample_ratio=0.5, video_repeat_time=1, image_repeat_time=1)
    return PVCInternVLConfig(**raw)


def prunevid_settings() -> PruneVidConfig:
    """The paper defaults: tau .8, gamma .25, beta .5, k 7, selected_layer 10, alpha .4."""
    return PruneVidConfig(enabled=True)


def randomize_temporal(model: PVCInternVLChatModel, seed: int, std: float = TEMPORAL_STD) -> None:
    """Give the zero-initialised PVC parameters (AdaLN modulation, temporal attention) random non-zero values,
    so the temporal path really computes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.vision_model.named_parameters():
            if "temporal_attn" in name or "adaLN_modulation" in name or "time_embedder" in name:
                param.copy_(torch.randn(param.shape, generator=generator, device="cpu") * std)


@contextlib.contextmanager
def _constructing_on(spec: BenchSpec) -> Iterator[None]:
    """Create parameters directly on the target device and in the target dtype (no fp32 copy of 8B)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(spec.dtype)
    try:
        with torch.device(spec.device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_pvc(spec: BenchSpec, seed: int = 0, llm_layers: int | None = None) -> PVCInternVLChatModel:
    """The PVC model with random weights (seeded, so a subprocess rebuilds the same vision weights)."""
    torch.manual_seed(seed)
    with _constructing_on(spec):
        model = PVCInternVLChatModel(model_config(spec, pvc=True, llm_layers=llm_layers)).eval()
    randomize_temporal(model, seed + 1)
    return model.to(device=spec.device, dtype=spec.dtype)


def build_baseline(spec: BenchSpec, pvc: PVCInternVLChatModel, seed: int = 0) -> PVCInternVLChatModel:
    """The InternVL2 baseline on the same random weights: the ViT blocks are copied from ``pvc`` and the
    language model (decoder and head) are the very same modules (only ``mlp1`` differs in shape)."""
    torch.manual_seed(seed + 2)
    config = model_config(spec, pvc=False, llm_layers=1, vocab_size=16)  # its LLM is replaced by the shared one
    with _constructing_on(spec):
        model = PVCInternVLChatModel(config).eval()
    config.llm_config = copy.deepcopy(pvc.config.llm_config)
    config.img_context_token_id = pvc.config.img_context_token_id
    model.model.set_decoder(pvc.get_decoder())
    model.set_output_embeddings(pvc.get_output_embeddings())
    shared = {k: v for k, v in pvc.vision_model.state_dict().items() if k in model.vision_model.state_dict()}
    model.vision_model.load_state_dict(shared)
    return model.to(device=spec.device, dtype=spec.dtype)


def synthetic_video(frames: int, size: int = 448, seed: int = 0) -> torch.Tensor:
    """A clip ``(frames, 3, size, size)``: a smooth static background and two textured squares moving over it
    (one horizontally, one vertically, wrapping at the border), plus a little sensor noise, so that
    PruneVid stage 1 finds both static and dynamic tokens."""
    generator = torch.Generator().manual_seed(seed)
    background = F.interpolate(torch.randn(1, 3, 56, 56, generator=generator), size=(size, size), mode="bicubic")
    video = background.repeat(frames, 1, 1, 1)
    side, step = int(0.3 * size), size // 22
    textures = [2.0 * torch.randn(3, side, side, generator=generator) for _ in range(2)]
    for t in range(frames):
        along = [(t * step) % (size - side), (t * step + size // 3) % (size - side)]
        across = [(size - side) // 2, (size - side) // 5]
        video[t, :, across[0] : across[0] + side, along[0] : along[0] + side] = textures[0]
        video[t, :, along[1] : along[1] + side, across[1] : across[1] + side] = textures[1]
    video = video + 0.02 * torch.randn(video.shape, generator=generator)
    mean, std = torch.tensor(_media.IMAGENET_MEAN)[:, None, None], torch.tensor(_media.IMAGENET_STD)[:, None, None]
    return video.clamp(-mean / std, (1 - mean) / std)  # what normalised 0-1 pixels can be


@dataclass(frozen=True)
class PromptLayout:
    """Token layout of one video prompt: which tokens are visual slots."""

    visual_mask: torch.Tensor  # (1, S) bool

    @property
    def length(self) -> int:
        """Prompt tokens."""
        return int(self.visual_mask.shape[1])

    @property
    def visual_tokens(self) -> int:
        """Visual tokens in the prompt."""
        return int(self.visual_mask.sum())


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The repository's tiny offline tokenizer (``conversion/tiny_tokenizer.py``, also the tests' and the demo
    checkpoint's): the InternVL2 special tokens, one token per CJK character, digit and punctuation mark, spaces
    dropped. The real InternLM2 tokenizer is not available offline; it would give the system message fewer tokens."""
    with tempfile.TemporaryDirectory() as folder:
        return make_tiny_tokenizer(folder)


def chat_processor(config: PVCInternVLConfig):
    """The package's processor for ``config``, with :func:`tokenizer`."""
    return PVCInternVLProcessor.from_model_config(tokenizer(), config)


@functools.lru_cache(maxsize=8)
def text_runs(frames: int) -> tuple[int, ...]:
    """Token counts of the text around the visual runs of the official chat prompt for a ``frames``-frame video
    and :data:`QUESTION`, as the package's processor writes it (template, system message, the per-frame prefixes,
    image tokens): ``frames + 1`` counts, the first before frame 1's visual tokens, the last after frame
    ``frames``'s (tokenized by :func:`tokenizer`; only the counts matter to the LLM cost)."""
    processor = chat_processor(model_config(make_spec(False, "cpu"), pvc=True))
    size = processor.image_size
    pixels = torch.empty(frames, 3, size, size)  # only its length is read: the prompt is built from the layout
    inputs, _ = processor.chat_inputs([QUESTION], pixels, data_flag=[VIDEO_FLAG], split_sizes=[frames],
                                      num_patches_list=[[1] * frames])
    visual = inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    edges = torch.nonzero(visual[1:] != visual[:-1]).flatten() + 1  # where a visual run starts or ends
    bounds = [0, *edges.tolist(), visual.numel()]
    runs = [bounds[i + 1] - bounds[i] for i in range(0, len(bounds) - 1, 2)]  # text, visual, text, ...
    if len(runs) != frames + 1:
        raise ValueError(f"the processor's prompt for {frames} frames has {len(runs) - 1} visual runs, not {frames}")
    return tuple(runs)


def prompt_summary(frames: int) -> dict:
    """Text tokens before, between and after the frames' visual runs (for the results)."""
    runs = text_runs(frames)
    between = runs[1:-1]
    return {"before_video_tokens": runs[0], "after_video_tokens": runs[-1],
            "between_frames_tokens": f"{min(between)}-{max(between)}" if between else "-", "frames": frames}


def video_prompt(frame_token_counts: list[int]) -> PromptLayout:
    """Layout of the official chat prompt (see :func:`text_runs`) with ``frame_token_counts[i]`` visual tokens in
    frame i's run."""
    runs = text_runs(len(frame_token_counts))
    pieces = [torch.zeros(runs[0], dtype=torch.bool)]
    for count, text in zip(frame_token_counts, runs[1:]):
        pieces += [torch.ones(int(count), dtype=torch.bool), torch.zeros(text, dtype=torch.bool)]
    return PromptLayout(torch.cat(pieces)[None])


def measuring_env(**extra: str) -> dict:
    """Environment for a memory-measuring subprocess: this one's, without the timing process's ``MALLOC_*``
    settings (they keep freed memory resident, which a peak-memory measurement must not see)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **extra}


def sync(device: str) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
