"""PVC-InternVL: InternViT (+ PVC temporal attention / AdaLN) -> pixel shuffle -> mlp1 -> native causal LM.

In memory the parts sit in the headless :class:`PVCInternVLModel` (``model.*``) and the head is ``lm_head``, as in
transformers' InternVL; checkpoints keep the official InternVL names (``CHECKPOINT_RENAMES``). The PVC temporal modules
start at zero, so a fresh temporal model computes exactly what plain InternViT computes.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModel, BitsAndBytesConfig, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .chat import PVCInternVLChatMixin
from .configuration_pvc_internvl import DataFlag, PVCInternVisionConfig, PVCInternVLConfig
from .conversation import DEFAULT_TEMPLATE, IMG_CONTEXT_TOKEN, get_template
from .generation import PVCInternVLGenerationMixin
from .layout import SampleLayout, check_pixel_values, sample_layouts
from .prunevid import CACHE_ARG
# transformers 4.57 copies into its module cache only the files that a local checkpoint's modeling file imports
# itself; the model does not use these two (chat.py does).
from .media import load_image  # noqa: F401
from .processing import PVCInternVLProcessor  # noqa: F401


# Official checkpoint names -> in-memory names (regex prefixes, in order): official InternVL2 / PVC checkpoints keep the
# head inside the causal LM. from_pretrained renames with them and save_pretrained renames back.
CHECKPOINT_RENAMES = {
    "^language_model.lm_head": "lm_head",
    "^language_model.model": "model.language_model",
    "^vision_model": "model.vision_model",
    "^mlp1": "model.mlp1",
}
# The same in two steps, per class: transformers 5 applies each model's renames in its own scope, the base model's
# under the chat model's (4.x renames in one step, with the class's _checkpoint_conversion_mapping).
SCOPED_RENAMES = {
    "PVCInternVLChatModel": {"^language_model.lm_head": "lm_head", "^language_model": "model.language_model",
                             "^vision_model": "model.vision_model", "^mlp1": "model.mlp1"},
    "PVCInternVLModel": {"^language_model.model": "language_model"},
}
try:  # transformers 5: registered renames (below); 4.x reads the class's _checkpoint_conversion_mapping
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming
except ImportError:
    register_checkpoint_conversion_mapping = None
_TRANSFORMERS_5 = hasattr(PreTrainedModel, "get_expanded_tied_weights_keys")
if _TRANSFORMERS_5 == (register_checkpoint_conversion_mapping is None):
    raise ImportError("PVC-InternVL supports transformers>=4.57,<6: this version's weight renaming on load and save "
                      "(conversion_mapping.register_checkpoint_conversion_mapping) is not the one it knows")
# a tied head (tie_word_embeddings) shares the decoder's input embeddings; transformers 4.x takes the names only
TIED_WEIGHTS = {"lm_head.weight": "model.language_model.embed_tokens.weight"} if _TRANSFORMERS_5 else ["lm_head.weight"]


def checkpoint_name(name: str, renames: dict[str, str] = CHECKPOINT_RENAMES) -> str:
    """The official checkpoint name of an in-memory parameter name (``model.mlp1.0.weight`` -> ``mlp1.0.weight``)."""
    for source, target in renames.items():
        if re.match(re.escape(target) + r"(\.|$)", name):
            return source.lstrip("^") + name[len(target):]
    return name


def eager_attention_forward(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
    scaling: float, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention: q/k/v ``(B, H, S, D)``, bool mask ``(S_q, S_k)`` (True = attend) -> ``(B, S_q, H, D)``."""
    scores = torch.matmul(query * scaling, key.transpose(-2, -1))
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


def attention_function(attn_implementation: str | None) -> Callable:
    """The kernel ``config._attn_implementation`` names (read at every call, so ``set_attn_implementation`` acts)."""
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers 5
        return ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation or "sdpa", eager_attention_forward)
    if attn_implementation in (None, "eager"):  # transformers 4.57
        return eager_attention_forward if attn_implementation == "eager" else ALL_ATTENTION_FUNCTIONS["sdpa"]
    return ALL_ATTENTION_FUNCTIONS[attn_implementation]


class InternRMSNorm(nn.Module):
    """RMSNorm computed in float32, as in InternViT-6B."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(hidden_states.dtype)


def make_norm(config: PVCInternVisionConfig) -> nn.Module:
    """LayerNorm or RMSNorm of the hidden size, as ``config.norm_type`` says."""
    if config.norm_type == "rms_norm":
        return InternRMSNorm(config.hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer that starts (and is re-initialised) at zero, so its branch starts as the identity."""
    linear = nn.Linear(in_features, out_features)
    linear.zero_init = True
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class PVCInternVisionEmbeddings(nn.Module):
    """Patch embedding + CLS token + learned absolute position embedding (bicubically resized)."""

    def __init__(self, config: PVCInternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.grid = config.image_size // config.patch_size  # position embeddings: a grid x grid table (+ CLS)
        self.class_embedding = nn.Parameter(torch.randn(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, self.embed_dim, config.patch_size, config.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, self.grid**2 + 1, self.embed_dim))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 1 + (H / patch) * (W / patch), C)``."""
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))  # (N, C, h, w)
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        pos = self.position_embedding[:, 1:, :].float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(height, width), mode="bicubic", align_corners=False)
        pos = pos.reshape(1, -1, height * width).permute(0, 2, 1)  # (1, h * w, C)
        position = torch.cat([self.position_embedding[:, :1, :], pos.to(dtype)], dim=1)
        return torch.cat([self.class_embedding.expand(batch, 1, -1).to(dtype), patches], dim=1) + position.to(dtype)


class TimeEmbedder(nn.Module):
    """Frame timestamp -> sinusoid (``time_embed_dim``) -> Linear -> SiLU -> Linear -> ``(N, C)``."""

    def __init__(self, config: PVCInternVisionConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(config.time_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, frame_index: torch.Tensor, clip_len: int) -> torch.Tensor:
        """``frame_index`` ``(N,)`` are 0-based positions inside clips of ``clip_len`` frames."""
        config = self.config
        t = frame_index.float() / clip_len if config.time_input == "normalized" else frame_index.float()
        half = config.time_embed_dim // 2
        steps = torch.arange(half, dtype=torch.float32, device=t.device)
        args = t[:, None] * torch.exp(-math.log(config.time_embed_max_period) * steps / half)[None]
        parts = [torch.cos(args), torch.sin(args)] if config.time_embed_order == "cos_sin" else [torch.sin(args), torch.cos(args)]
        return self.mlp(torch.cat(parts, dim=-1).to(self.mlp[0].weight.dtype))


class _MultiHeadAttention(nn.Module):
    """Shared setup of the spatial and temporal attention: heads, scale, fused ``qkv``, output ``proj``."""

    def __init__(self, config: PVCInternVisionConfig, qkv_bias: bool, zero_proj: bool):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.is_causal, self.num_key_value_groups = False, 1  # read by the attention kernels
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=qkv_bias)
        self.proj = (zero_linear if zero_proj else nn.Linear)(self.embed_dim, self.embed_dim)

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, S, C)`` -> q, k, v, each ``(N, H, S, D)``."""
        qkv = self.qkv(x).reshape(*x.shape[:2], 3, self.num_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)


class InternAttention(_MultiHeadAttention):
    """Spatial multi-head self-attention over the tokens of one frame (fused qkv, optional qk-norm)."""

    def __init__(self, config: PVCInternVisionConfig):
        super().__init__(config, qkv_bias=config.qkv_bias, zero_proj=False)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(N, S, C)`` -> ``(N, S, C)``."""
        batch, seq, _ = hidden_states.shape
        q, k, v = self._split_heads(hidden_states)
        if self.qk_normalization:
            q = self.q_norm(q.transpose(1, 2).flatten(-2)).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
            k = self.k_norm(k.transpose(1, 2).flatten(-2)).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        out, _ = attention_function(self.config._attn_implementation)(self, q, k, v, None, scaling=self.scale, dropout=0.0)
        return self.proj(out.reshape(batch, seq, self.embed_dim))


class TemporalAttention(_MultiHeadAttention):
    """PVC causal temporal attention (T-MHA): a token attends to the tokens at the same spatial position
    of the frames of its clip (earlier ones only when ``temporal_causal``). ``proj`` starts at zero."""

    def __init__(self, config: PVCInternVisionConfig):
        super().__init__(config, qkv_bias=True, zero_proj=True)
        self.norm = make_norm(config) if config.temporal_attn_norm else None

    def forward(self, hidden_states: torch.Tensor, clip_len: int, store: TemporalKV | None = None) -> torch.Tensor:
        """``(n_clips * t, S, C)`` (``t`` = ``clip_len`` new frames of every clip, consecutive) -> the residual
        update, same shape. ``store`` holds the earlier frames' keys/values in chunked encoding (None: whole clip)."""
        frames, _, dim = hidden_states.shape
        n_clips = frames // clip_len
        start = 0 if self.config.temporal_include_cls else 1
        x = hidden_states[:, start:] if self.norm is None else self.norm(hidden_states[:, start:])
        spatial = x.shape[1]
        # (n_clips, t, S', C) -> (n_clips * S', t, C): one temporal sequence per clip and position.
        x = x.reshape(n_clips, clip_len, spatial, dim).transpose(1, 2).reshape(n_clips * spatial, clip_len, dim)
        q, k, v = self._split_heads(x)  # each (n_clips * S', H, t, D)
        if store is not None:
            k, v = store.append(k, v)  # (n_clips * S', H, P + t, D)
        mask = None
        if self.config.temporal_causal and clip_len > 1:
            rows = torch.arange(k.shape[2] - clip_len, k.shape[2], device=x.device)[:, None]  # the new frames
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= rows  # (t, P + t)
        # a masked call: eager or SDPA (kernels such as flash attention take no explicit mask)
        attention = attention_function("eager" if self.config._attn_implementation == "eager" else "sdpa")
        out, _ = attention(self, q, k, v, mask, scaling=self.scale, dropout=0.0)  # (n_clips * S', t, H, D)
        out = out.reshape(n_clips, spatial, clip_len, dim).transpose(1, 2)
        return F.pad(self.proj(out.reshape(frames, spatial, dim)), (0, 0, start, 0))  # CLS (if skipped): no update


class InternMLP(nn.Module):
    def __init__(self, config: PVCInternVisionConfig):
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class PVCInternVisionLayer(GradientCheckpointingLayer):
    """InternViT block with optional PVC parts:
    ``x += ls1 * Attn(AdaLN1(x, e))``; ``x += TMHA(x)`` (temporal layers); ``x += ls2 * MLP(AdaLN2(x, e))``,
    ``AdaLN(x, e) = norm(x) * (1 + scale(e)) + shift(e)``. ``adaLN_modulation`` (SiLU -> zero Linear(C, n * C))
    gives ``[shift1, scale1, shift2, scale2]`` (n = 4) or, with gates ``x * (1 + gate)`` on the branches,
    ``[shift1, scale1, gate1, shift2, scale2, gate2]`` (n = 6)."""

    def __init__(self, config: PVCInternVisionConfig, index: int):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = make_norm(config)
        self.norm2 = make_norm(config)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.drop_path_rate = config.drop_path_rate * index / max(config.num_hidden_layers - 1, 1)  # linear in depth
        self.temporal_attn = TemporalAttention(config) if index in config.temporal_layer_ids() else None
        self.num_modulations = config.adaln_num_modulations
        self.adaLN_modulation = None
        if index in config.adaln_layer_ids():
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_linear(self.embed_dim, self.num_modulations * self.embed_dim))

    def _modulations(self, time_emb: torch.Tensor | None) -> list[torch.Tensor | None]:
        """``[shift1, scale1, gate1, shift2, scale2, gate2]``, each ``(N, 1, C)`` or None."""
        if self.adaLN_modulation is None or time_emb is None:
            return [None] * 6
        mods = [m.unsqueeze(1) for m in self.adaLN_modulation(time_emb).chunk(self.num_modulations, dim=-1)]
        return [mods[0], mods[1], None, mods[2], mods[3], None] if self.num_modulations == 4 else mods

    def _branch(self, x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        """A residual branch: gated, then dropped whole per sample in training (stochastic depth)."""
        x = self._modulate(x, gate)
        if self.drop_path_rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_path_rate
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep

    @staticmethod
    def _modulate(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``x * (1 + scale) + shift`` (a gate has no shift); ``x`` when there is no modulation."""
        if scale is None:
            return x
        return x * (1 + scale) if shift is None else x * (1 + scale) + shift

    def forward(
        self, hidden_states: torch.Tensor, time_emb: torch.Tensor | None = None, clip_len: int = 1,
        temporal_store: TemporalKV | None = None,
    ) -> torch.Tensor:
        """``(N, S, C)`` frames (clip-major) -> ``(N, S, C)``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self._modulations(time_emb)
        dtype = hidden_states.dtype
        normed = self._modulate(self.norm1(hidden_states).to(dtype), scale1, shift1)
        hidden_states = hidden_states + self._branch(self.attn(normed) * self.ls1, gate1)
        if self.temporal_attn is not None:
            hidden_states = hidden_states + self.temporal_attn(hidden_states, clip_len, temporal_store)
        normed = self._modulate(self.norm2(hidden_states).to(dtype), scale2, shift2)
        hidden_states = hidden_states + self._branch(self.mlp(normed) * self.ls2, gate2)
        return hidden_states


class PVCInternVisionPreTrainedModel(PreTrainedModel):
    config_class = PVCInternVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    _no_split_modules = ["PVCInternVisionLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_module(module, self.config.initializer_range, self.config.initializer_factor)


@torch.no_grad()
def init_module(module: nn.Module, std: float, layer_scale: float = 1.0) -> None:
    """Initialise one module of the vision model, the projector or the head (``zero_init`` linears stay at zero)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        if getattr(module, "zero_init", False):  # PVC parts start as the identity
            nn.init.zeros_(module.weight)
        else:
            nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, InternRMSNorm)):
        nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, PVCInternVisionEmbeddings):
        nn.init.trunc_normal_(module.class_embedding, std=std)
        nn.init.trunc_normal_(module.position_embedding, std=std)
    elif isinstance(module, PVCInternVisionLayer):
        nn.init.constant_(module.ls1, layer_scale)
        nn.init.constant_(module.ls2, layer_scale)


class TemporalKV:
    """Keys/values of the frames encoded so far in chunked encoding, in buffers sized for the whole clip on
    first use (growing never copies). One store serves every temporal layer in turn (``length = 0`` before each)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys = self.values = None  # (N, H, capacity, D), made on the first append

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(N, H, t, D)`` new keys/values; return views of all stored ones ``(N, H, P + t, D)``."""
        if self.keys is None:
            shape = (*keys.shape[:2], self.capacity, keys.shape[3])
            self.keys, self.values = keys.new_empty(shape), values.new_empty(shape)
        end = self.length + keys.shape[2]  # encode's spans never pass the capacity (the clip length)
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def frame_spans(clip_len: int, chunk_frames: int | None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``clip_len`` frames ``chunk_frames`` at a time (one span if None)."""
    chunk = clip_len if not chunk_frames else min(int(chunk_frames), clip_len)
    return [(start, min(start + chunk, clip_len)) for start in range(0, clip_len, chunk)]


def over_spans(spans: list[tuple[int, int]], step: Callable[[int, int], torch.Tensor], out: torch.Tensor | None = None):
    """Gather ``step(start, end) -> (n_clips, end - start, ...)`` of every span along time into ``out`` (new if
    None; it may be what the steps read, each reading only its span). One span: its part, not copied."""
    if len(spans) == 1:
        return step(*spans[0])
    for start, end in spans:
        part = step(start, end)
        if out is None:
            out = part.new_empty(part.shape[0], spans[-1][1], *part.shape[2:])
        out[:, start:end] = part
    return out


class PVCInternVisionModel(PVCInternVisionPreTrainedModel):
    """InternViT encoder with PVC temporal modules. Frames arrive clip-major ``(n_clips * clip_len, 3, H, W)``;
    temporal attention mixes the frames of each clip at every spatial position, the rest acts per frame."""

    def __init__(self, config: PVCInternVisionConfig):
        super().__init__(config)
        self.embeddings = PVCInternVisionEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(PVCInternVisionLayer(config, i) for i in range(config.num_hidden_layers))
        self.time_embedder = TimeEmbedder(config) if config.adaln_layer_ids() else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def encode(
        self, pixel_values: torch.Tensor, clip_len: int, num_layers: int | None = None, chunk_frames: int | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Encode whole clips ``(n_clips * clip_len, 3, H, W)`` with the first ``num_layers`` blocks (all if None)
        -> the last hidden state ``(n_clips * clip_len, S, C)`` and, if asked, all (embeddings, block 1, ...).
        With ``chunk_frames`` each block runs on ``chunk_frames`` frames of every clip at a time (temporal layers
        read the earlier chunks' keys/values from a store): same result, about 3 instead of 11 hidden states/frame."""
        if pixel_values.shape[0] % clip_len != 0:
            raise ValueError(f"{pixel_values.shape[0]} frames do not split into clips of {clip_len} frames")
        n_clips = pixel_values.shape[0] // clip_len
        layers = self.encoder.layers[: len(self.encoder.layers) if num_layers is None else num_layers]
        spans = frame_spans(clip_len, chunk_frames)
        pixels = pixel_values.view(n_clips, clip_len, *pixel_values.shape[1:])
        hidden = over_spans(spans, lambda s, e: self.embeddings(pixels[:, s:e].flatten(0, 1)).unflatten(0, (n_clips, -1)))
        per_frame = None  # (clip_len, C) time embedding of each position in a clip
        if self.time_embedder is not None:
            per_frame = self.time_embedder(torch.arange(clip_len, device=hidden.device), clip_len).to(hidden.dtype)
        chunked = len(spans) > 1
        if chunked and self.training and any(layer.gradient_checkpointing for layer in layers):
            raise ValueError("chunk_frames is for inference: gradient checkpointing recomputes the blocks; train without it")
        store = TemporalKV(clip_len) if chunked else None
        snapshot = (lambda h: h.flatten(0, 1).clone()) if chunked else (lambda h: h.flatten(0, 1))  # buffer reused
        states = [snapshot(hidden)] if output_hidden_states else None
        for layer in layers:
            if store is not None:  # only temporal layers use it; each writes its keys/values from frame 0
                store.length = 0

            def step(start: int, end: int, layer=layer) -> torch.Tensor:
                time_emb = None if per_frame is None else per_frame[start:end].repeat(n_clips, 1)
                out = layer(hidden[:, start:end].flatten(0, 1), time_emb, end - start, store)
                return out.unflatten(0, (n_clips, -1))

            hidden = over_spans(spans, step, out=hidden if chunked else None)
            if states is not None:
                states.append(snapshot(hidden))
        return hidden.flatten(0, 1), (tuple(states) if states is not None else None)

    def forward(
        self, pixel_values: torch.Tensor, clip_len: int = 1, output_hidden_states: bool = False, return_dict: bool = True
    ) -> BaseModelOutput | tuple:
        """Encode whole clips at once. ``pixel_values`` ``(n_clips * clip_len, 3, H, W)``."""
        last, states = self.encode(pixel_values, clip_len, output_hidden_states=output_hidden_states)
        return BaseModelOutput(last_hidden_state=last, hidden_states=states) if return_dict else (last, states)


class PVCInternVLPreTrainedModel(PreTrainedModel):
    config_class = PVCInternVLConfig
    # transformers 4.x renames checkpoint keys only without a prefix (it would read the official names as a base
    # model's and prepend "model."), as its native InternVL
    base_model_prefix = "model" if _TRANSFORMERS_5 else ""
    main_input_name = "input_ids"
    _no_split_modules = ["PVCInternVisionLayer", "LlamaDecoderLayer", "Qwen2DecoderLayer", "Phi3DecoderLayer",
                         "MistralDecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_flash_attn = True
    _can_compile_fullgraph = True
    supports_gradient_checkpointing = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """Also takes the official ``load_in_8bit`` / ``load_in_4bit``, and names the weights a checkpoint lacks
        (a ``ValueError``) unless ``output_loading_info=True`` or there is no checkpoint (``from_pretrained(None)``)."""
        kwargs = _legacy_quantization_flags(kwargs)
        if kwargs.get("output_loading_info") or pretrained_model_name_or_path is None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except SafetensorError as err:
            raise ValueError(f"the checkpoint {pretrained_model_name_or_path} has an unreadable weights file "
                             f"{_damaged_safetensors(pretrained_model_name_or_path)} ({err}); it is truncated or damaged: "
                             "download or convert it again") from err
        renames = getattr(cls, "_checkpoint_conversion_mapping", None) or {}
        missing = [checkpoint_name(name, renames) for name in _untied_missing_keys(model, info.get("missing_keys") or [])]
        if missing:
            shown = ", ".join(missing[:12]) + (f", ... ({len(missing) - 12} more)" if len(missing) > 12 else "")
            raise ValueError(f"the checkpoint {pretrained_model_name_or_path} lacks {len(missing)} weights of the model: "
                             f"{shown}; convert official checkpoints with conversion/convert_checkpoint.py")
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_module(module, std=0.02)  # the projector and lm_head; the vision model and the decoder initialise their own


class PVCInternVLModel(PVCInternVLPreTrainedModel):
    """The headless model: vision encoder -> pixel shuffle -> ``mlp1`` -> the language model's decoder (no head)."""

    _checkpoint_conversion_mapping = SCOPED_RENAMES["PVCInternVLModel"]  # official names (transformers 4.x)

    def __init__(self, config: PVCInternVLConfig):
        super().__init__(config)
        width = config.vision_config.hidden_size * config.pixel_shuffle_scale**2  # ViT channels after pixel shuffle
        dim = config.llm_config.hidden_size
        self.vision_model = PVCInternVisionModel(config.vision_config)
        self.language_model = AutoModel.from_config(config.llm_config)
        self.mlp1 = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model

    def set_decoder(self, decoder: nn.Module) -> None:
        self.language_model = decoder

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, W, H, C)`` -> ``(N, W / k, H / k, C * k^2)``, k = 1 / downsample_ratio. ``ps_version="v2"``: token
        (i, j) concatenates the k x k block at rows i*k.., columns j*k..; ``"v1"`` leaves the grid transposed."""
        n, w, h, c = x.shape
        r = self.config.downsample_ratio
        x = x.view(n, w, int(h * r), int(c / r)).permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h * r), int(w * r), int(c / (r * r)))
        if self.config.ps_version == "v2":
            x = x.permute(0, 2, 1, 3).contiguous()
        return x

    def project_frames(self, vit_hidden: torch.Tensor) -> torch.Tensor:
        """ViT tokens ``(N, 1 + G^2, C)`` -> LLM tokens ``(N, (G / k)^2, D)`` (drop CLS, shuffle, mlp1)."""
        tokens = vit_hidden[:, 1:, :]
        side = int(tokens.shape[1] ** 0.5)
        tokens = self.pixel_shuffle(tokens.reshape(tokens.shape[0], side, side, -1))
        return self.mlp1(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]))

    def encode_clips(self, frames: torch.Tensor, clip_len: int, chunk_frames: int | None = None) -> torch.Tensor:
        """``(n_clips * clip_len, 3, S, S)`` -> LLM tokens ``(n_clips, clip_len, L, D)``, up to ``select_layer``;
        ``chunk_frames``: chunked as in ``PVCInternVisionModel.encode``, the projection too."""
        n_clips = frames.shape[0] // clip_len
        depth = self.config.select_layer % (self.config.vision_config.num_hidden_layers + 1)  # blocks to run
        hidden, _ = self.vision_model.encode(frames, clip_len, depth, chunk_frames)
        hidden = hidden.view(n_clips, clip_len, *hidden.shape[1:])
        spans = frame_spans(clip_len, chunk_frames)
        return over_spans(spans, lambda s, e: self.project_frames(hidden[:, s:e].flatten(0, 1)).unflatten(0, (n_clips, -1)))

    def check_pixels(self, pixel_values: Any) -> None:
        """``ValueError`` unless ``pixel_values`` is a finite float ``(N, 3, image_size, image_size)`` tensor."""
        check_pixel_values(pixel_values, self.config.image_size)

    def _clip_plan(self, layout: SampleLayout) -> list[tuple[list[int], int]]:
        """The sample's clips as ``(frame indices into the sample, repeat)``: each image tile a static clip of
        ``image_repeat_time`` frames; the video one clip (or clips of ``max_clip_frames``), ``video_repeat_time``."""
        if layout.flag != DataFlag.VIDEO:
            return [([i], self.config.image_repeat_time) for i in range(layout.size)]
        limit = self.config.max_clip_frames or layout.size
        return [(list(range(s, min(s + limit, layout.size))), self.config.video_repeat_time) for s in range(0, layout.size, limit)]

    def encode_samples(
        self, pixel_values: torch.Tensor, layouts: list[SampleLayout], chunk_frames: int | None = None
    ) -> list[torch.Tensor]:
        """Visual tokens of every sample in LLM order, ``(blocks, L, D)`` each (a block is an encoded frame);
        equal-length clips of all samples run as one batch."""
        chunk_frames = chunk_frames if chunk_frames is not None else self.config.vision_chunk_frames
        plans = [self._clip_plan(layout) for layout in layouts]
        by_len: dict[int, list[tuple[int, int, list[int]]]] = {}  # clip length -> (sample, clip, frame indices)
        for s, (layout, plan) in enumerate(zip(layouts, plans)):
            for c, (indices, repeat) in enumerate(plan):
                frames = [layout.start + i for i in indices for _ in range(repeat)]
                by_len.setdefault(len(frames), []).append((s, c, frames))
        encoded: dict[tuple[int, int], torch.Tensor] = {}
        for clip_len, group in by_len.items():
            out = self.encode_clips(_frames(pixel_values, [f for *_, frames in group for f in frames]), clip_len, chunk_frames)
            encoded.update({(s, c): out[i] for i, (s, c, _) in enumerate(group)})  # each (clip_len, L, D)
        return [self._order_blocks(layout, [encoded[(s, c)] for c in range(len(plan))])
                for s, (layout, plan) in enumerate(zip(layouts, plans))]

    def _order_blocks(self, layout: SampleLayout, blocks: list[torch.Tensor]) -> torch.Tensor:
        """A sample's clip outputs in LLM order ``(blocks, L, D)``: ``tile_major`` or, for images,
        ``frame_major`` (all tiles' frame 1, then all tiles' frame 2, ... inside each image)."""
        if layout.flag == DataFlag.VIDEO or self.config.tile_repeat_way in (None, "tile_major"):
            return torch.cat(blocks, dim=0)
        out, start = [], 0
        for tiles in layout.image_tiles:
            stacked = torch.stack(blocks[start : start + tiles])  # (tiles, R, L, D)
            out.append(stacked.transpose(0, 1).reshape(-1, *stacked.shape[2:]))
            start += tiles
        return torch.cat(out, dim=0)

    def extract_feature(
        self, pixel_values: torch.Tensor, data_flag: Any = None, split_sizes: Any = None,
        num_patches_list: list | None = None, chunk_frames: int | None = None,
    ) -> torch.Tensor:
        """Visual tokens for the ``IMG_CONTEXT_TOKEN`` positions, in order: ``(blocks, L, D)``; a block is a tile
        (InternVL2, ``L`` = 256 at 448 px) or an encoded frame (PVC, ``L`` = 64)."""
        self.check_pixels(pixel_values)
        layouts = sample_layouts(pixel_values.shape[0], data_flag, split_sizes, num_patches_list)
        return torch.cat(self.encode_samples(pixel_values, layouts, chunk_frames), dim=0)
    def require_context_id(self) -> int:
        """``config.img_context_token_id`` (a ``ValueError`` when it is not set)."""
        if self.config.img_context_token_id is None:
            raise ValueError(f"config.img_context_token_id is not set; set it to the tokenizer's id of {IMG_CONTEXT_TOKEN} "
                             f"(model.config.img_context_token_id = tokenizer.convert_tokens_to_ids('{IMG_CONTEXT_TOKEN}'))")
        return int(self.config.img_context_token_id)

    def slot_ids(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """``(B, T)``: ``IMG_CONTEXT_TOKEN``'s id where ``inputs_embeds`` holds its embedding, -1 elsewhere."""
        context_id = self.require_context_id()
        context = self.get_input_embeddings().weight[context_id].to(inputs_embeds.dtype)
        return torch.where((inputs_embeds == context).all(-1), context_id, -1)

    def merge_visual_tokens(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Put ``visual`` ``(n, D)`` rows at the ``IMG_CONTEXT_TOKEN`` positions of ``inputs_embeds``, in order."""
        mask = input_ids == self.require_context_id()
        num_slots = int(mask.sum())
        if num_slots != visual.shape[0]:
            raise ValueError(f"the prompt has {num_slots} {IMG_CONTEXT_TOKEN} tokens but the images give "
                             f"{visual.shape[0]} visual tokens")
        visual = visual.to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), visual)

    def _input_embeddings(self, input_ids, inputs_embeds, pixel_values, image_flags, layout, visual_embeds):
        """The LLM's input embeddings ``(B, T, D)`` of a forward call, visual tokens merged into their slots."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or inputs_embeds")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            if input_ids is None:  # the slots hold the IMG_CONTEXT_TOKEN embedding
                input_ids = self.slot_ids(inputs_embeds)
            if image_flags is not None:
                pixel_values = pixel_values[(image_flags.reshape(-1) == 1).to(pixel_values.device)]
            visual = self.extract_feature(pixel_values, *layout)
            return self.merge_visual_tokens(input_ids, inputs_embeds, visual.reshape(-1, visual.shape[-1]))
        if visual_embeds is None or input_ids is None:
            return inputs_embeds
        # row-aligned visual_embeds (B, V, D), row b's tokens last: a prompt's slots take all of its row, the end
        # of a prompt after a prefix cache its last ones, a decode step none
        counts = (input_ids == self.require_context_id()).sum(dim=1)
        if not bool(counts.any()):
            return inputs_embeds
        if visual_embeds.shape[0] != input_ids.shape[0] or int(counts.max()) > visual_embeds.shape[1]:
            raise ValueError(f"visual_embeds {tuple(visual_embeds.shape)} do not fit the {IMG_CONTEXT_TOKEN} slots of the "
                             f"rows {counts.tolist()}")
        slot = torch.arange(visual_embeds.shape[1], device=counts.device)[None]
        taken = slot >= visual_embeds.shape[1] - counts[:, None]
        return self.merge_visual_tokens(input_ids, inputs_embeds, visual_embeds[taken.to(visual_embeds.device)])

    def reset_dynamic_rope(self, cache: Any = None) -> None:
        """A new prompt (empty cache) starts from the original dynamic-NTK rotary frequencies; the cache length is
        read only when some have grown (so a compiled forward has no data-dependent branch)."""
        rotary = getattr(self.language_model, "rotary_emb", None)  # the decoder's (Llama, Qwen2, Phi-3, Mistral)
        original = getattr(rotary, "original_max_seq_len", None)
        if original is None or getattr(rotary, "max_seq_len_cached", original) == original:
            return
        if cache.get_seq_length() if hasattr(cache, "get_seq_length") else (cache[0][0].shape[-2] if cache else 0):
            return
        rotary.register_buffer("inv_freq", rotary.original_inv_freq.to(rotary.inv_freq.device), persistent=False)
        rotary.max_seq_len_cached = original

    def forward(
        self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
        image_flags: torch.LongTensor | None = None, past_key_values: Any = None, use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None, return_dict: bool | None = None,
        data_flag: Any = None, split_sizes: Any = None, num_patches_list: list | None = None,
        inputs_embeds: torch.Tensor | None = None, visual_embeds: torch.Tensor | None = None, cache: Any = None, **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """Visual tokens replace the ``IMG_CONTEXT_TOKEN`` embeddings, then the decoder: hidden states ``(B, T, D)``.
        ``image_flags`` ``(num_tiles, 1)``: tiles flagged 0 are dropped (the official training padding).
        ``visual_embeds`` ``(B, V, D)``: encoded visual tokens, row ``b`` for prompt row ``b`` (from ``generate``).
        The KV cache comes as ``past_key_values`` or (transformers >= 5.24) ``cache``."""
        layout = (data_flag, split_sizes, num_patches_list)
        inputs_embeds = self._input_embeddings(input_ids, inputs_embeds, pixel_values, image_flags, layout, visual_embeds)
        if cache is not None and past_key_values is not None:
            raise ValueError("give the KV cache as cache or as past_key_values, not both")
        cache = cache if cache is not None else past_key_values
        self.reset_dynamic_rope(cache)
        flags = {"use_cache": use_cache, "output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        outputs = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            **{CACHE_ARG: cache}, **{name: value for name, value in flags.items() if value is not None}, **kwargs,
        )  # a None flag: the config decides
        return outputs.to_tuple() if return_dict is False else outputs


class PVCInternVLChatModel(PVCInternVLChatMixin, PVCInternVLGenerationMixin, PVCInternVLPreTrainedModel, GenerationMixin):
    """InternVL2 / PVC chat model: :class:`PVCInternVLModel` and the language model's head ``lm_head``. Checkpoints keep
    the official names (``language_model.model.*``, ``language_model.lm_head.*``): see ``CHECKPOINT_RENAMES``."""

    _checkpoint_conversion_mapping = CHECKPOINT_RENAMES  # official names (transformers 4.x)
    _tied_weights_keys = TIED_WEIGHTS
    _tp_plan = {"lm_head": "colwise_gather_output" if _TRANSFORMERS_5 else "colwise_rep"}  # as the native causal LMs

    def __init__(self, config: PVCInternVLConfig):
        super().__init__(config)
        self.model = PVCInternVLModel(config)
        self.lm_head = nn.Linear(config.llm_config.hidden_size, config.llm_config.vocab_size, bias=False)
        self.loss_type = "ForCausalLM"
        self.post_init()
        # Settable as in InternVL2; the template's default unless the config names one.
        template = get_template(config.template or DEFAULT_TEMPLATE)
        self.system_message = config.system_message if config.system_message is not None else template.system_message
        # Defaults of the language model; from_pretrained replaces them with generation_config.json.
        self.generation_config = GenerationConfig.from_model_config(config.llm_config)

    @property
    def vision_model(self) -> PVCInternVisionModel:
        return self.model.vision_model

    @property
    def mlp1(self) -> nn.Sequential:
        return self.model.mlp1

    @property
    def language_model(self) -> nn.Module:
        """The language model's decoder (headless; the head is ``lm_head``)."""
        return self.model.language_model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_decoder(self) -> nn.Module:
        return self.model.get_decoder()

    def set_decoder(self, decoder: nn.Module) -> None:
        self.model.set_decoder(decoder)

    @property
    def num_image_token(self) -> int:
        return self.config.num_image_token

    @property
    def img_context_token_id(self) -> int | None:
        return self.config.img_context_token_id

    @img_context_token_id.setter
    def img_context_token_id(self, value: int) -> None:
        self.config.img_context_token_id = int(value)

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """The official name of :meth:`PVCInternVLModel.pixel_shuffle`."""
        return self.model.pixel_shuffle(x)

    def extract_feature(self, pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The official name of :meth:`PVCInternVLModel.extract_feature`."""
        return self.model.extract_feature(pixel_values, *args, **kwargs)

    def forward(
        self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
        image_flags: torch.LongTensor | None = None, past_key_values: Any = None, labels: torch.LongTensor | None = None,
        use_cache: bool | None = None, output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        return_dict: bool | None = None, data_flag: Any = None, split_sizes: Any = None,
        num_patches_list: list | None = None, inputs_embeds: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None, cache: Any = None, logits_to_keep: int | torch.Tensor = 0, **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Official-compatible forward (:meth:`PVCInternVLModel.forward`, then ``lm_head`` on the last
        ``logits_to_keep`` positions, all when 0); ``labels`` ``(B, T)`` give the shifted next-token loss."""
        outputs = self.model(
            input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, position_ids=position_ids,
            image_flags=image_flags, past_key_values=past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, data_flag=data_flag,
            split_sizes=split_sizes, num_patches_list=num_patches_list, inputs_embeds=inputs_embeds,
            visual_embeds=visual_embeds, cache=cache, **kwargs,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.llm_config.vocab_size, **kwargs)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions, **{CACHE_ARG: getattr(outputs, CACHE_ARG)})
        return result.to_tuple() if return_dict is False else result


def _legacy_quantization_flags(kwargs: dict) -> dict:
    """The official ``load_in_8bit`` / ``load_in_4bit`` (gone in transformers 5) as a ``quantization_config``."""
    flags = {name: kwargs.pop(name) for name in ("load_in_8bit", "load_in_4bit") if name in kwargs}
    for name, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    enabled = [name for name, value in flags.items() if value]
    if not enabled:
        return kwargs
    if len(enabled) > 1:
        raise ValueError("load_in_8bit and load_in_4bit cannot both be True")
    if kwargs.get("quantization_config") is not None:
        raise ValueError(f"give quantization_config or {enabled[0]}=True, not both")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"{enabled[0]}=True needs the bitsandbytes package (pip install bitsandbytes) and a CUDA GPU")
    kwargs["quantization_config"] = BitsAndBytesConfig(**{enabled[0]: True})
    return kwargs


def _damaged_safetensors(folder: Any) -> str:
    """The first ``*.safetensors`` file of a local checkpoint folder whose header cannot be read (or "")."""
    for path in sorted(Path(str(folder)).glob("*.safetensors")) if Path(str(folder)).is_dir() else []:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return path.name
    return ""


def _untied_missing_keys(model: nn.Module, missing: Any) -> list[str]:
    """The missing parameter names that are not tied to a loaded parameter (e.g. a tied ``lm_head``)."""
    missing = sorted(set(missing))
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(param) for name, param in params.items() if name not in missing}
    return [name for name in missing if name not in params or id(params[name]) not in loaded]


def _frames(pixel_values: torch.Tensor, order: list[int]) -> torch.Tensor:
    """``pixel_values[order]``: a view (no copy) when the frames are consecutive, as for a video."""
    if order == list(range(order[0], order[0] + len(order))):
        return pixel_values[order[0] : order[0] + len(order)]
    return pixel_values.index_select(0, torch.tensor(order, device=pixel_values.device))


for _class_name, _renames in SCOPED_RENAMES.items() if register_checkpoint_conversion_mapping is not None else ():
    register_checkpoint_conversion_mapping(
        _class_name, [WeightRenaming(source_patterns=k, target_patterns=v) for k, v in _renames.items()],
        overwrite=True,  # the module is imported again from each checkpoint's copy
    )

__all__ = ["PVCInternVisionModel", "PVCInternVLModel", "PVCInternVLChatModel", "PVCInternVLPreTrainedModel",
           "PVCInternVisionPreTrainedModel", "checkpoint_name"]
