# Copyright 2025 The PVC-InternVL authors. Licensed under the Apache License, Version 2.0.
"""PruneVid (Huang et al., arXiv 2412.16117) for PVC-InternVL: training-free video token reduction.

Stage 1 (`merge_video_tokens`), before the LLM: DPC-kNN temporal segmentation, temporal averaging of static tokens,
DPC-kNN spatial merging. Stage 2 (`pruned_generate`), inside a native causal LM: after layer `selected_layer`, each
Stage-1 group keeps its top `alpha` by the attention of the text after the video, in the hidden states and KV cache.
As the official code (Visual-AI/PruneVid @ b12600c), plus per-row segmentation and pruning, and left padding."""

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput, GenerationConfig
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.utils import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_pvc_internvl import PRUNEVID_STAGE2_MODEL_TYPES
from .layout import left_pad

# The keyword that carries the KV cache through `generate` and the models: `cache` from transformers 5.24 on.
_GENERATE_INPUTS = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
CACHE_ARG = "cache" if "cache" in _GENERATE_INPUTS else "past_key_values"
if CACHE_ARG not in _GENERATE_INPUTS:
    raise ImportError("PVC-InternVL supports transformers>=4.57,<6: this version names the generation cache neither "
                      "`cache` nor `past_key_values` in GenerationMixin.prepare_inputs_for_generation")
_MASK_PARAMETERS = frozenset(inspect.signature(create_causal_mask).parameters)  # version dependent, see _causal_mask


# Settings: the defaults and checks live in configuration_pvc_internvl.PruneVidConfig.
STAGE1_OPTIONS = ("tau", "temporal_segment_ratio", "cluster_ratio", "k", "min_tokens_to_cluster")  # merge_video_tokens
STAGE2_SETTINGS = ("selected_layer", "alpha", "enable_stage2")  # what stage 2 alone reads: may change per prompt


def stage1_min_frames(k: int, temporal_segment_ratio: float) -> int:
    """Smallest frame count T Stage 1 runs on: T >= k (temporal kNN), T >= 2, int(T * temporal_segment_ratio) >= 1."""
    if not 0.0 < temporal_segment_ratio <= 1.0:  # the loop below would not end
        raise ValueError(f"temporal_segment_ratio must lie in (0, 1], got {temporal_segment_ratio}")
    t = max(int(k), 2)
    while int(t * temporal_segment_ratio) < 1:
        t += 1
    return t


# ----------------------------------------------------------------------------------------------------- Stage 1
@torch.no_grad()
def cluster_dpc_knn(x: torch.Tensor, num_clusters: int, k: int, noise: torch.Tensor | None = None):
    """DPC-kNN clustering of `x [B, N, C]` into K = `num_clusters` clusters, `k` neighbours (self included), in
    float32; the density gets `1e-6 * noise` (`[B, N]` unit noise, None: one `torch.rand`). Returns `idx_cluster
    [B, N]` (cluster j is the j-th center) and the centers `index_down [B, K]` in descending score order."""
    batch, num_tokens, channels = x.shape
    xf = x.float()
    dist = torch.cdist(xf, xf) / (channels**0.5)  # [B, N, N]
    nearest, _ = torch.topk(dist, k=k, dim=-1, largest=False)  # [B, N, k], self included
    density = (-(nearest**2).mean(dim=-1)).exp()  # [B, N]
    if noise is None:
        noise = torch.rand(density.shape, device=density.device, dtype=density.dtype)
    density = density + noise.to(device=density.device, dtype=density.dtype) * 1e-6  # official scale
    denser = density[:, None, :] > density[:, :, None]  # [B, i, j]: rho_j > rho_i
    dist_max = dist.flatten(1).max(dim=-1).values[:, None, None]  # [B, 1, 1]
    delta = torch.where(denser, dist, dist_max).min(dim=-1).values  # [B, N]
    score = delta * density
    index_down = torch.topk(score, k=num_clusters, dim=-1).indices  # [B, K], descending
    center_dist = torch.gather(dist, 1, index_down[:, :, None].expand(-1, -1, num_tokens))  # [B, K, N]
    idx_cluster = center_dist.argmin(dim=1)  # [B, N]
    cluster_ids = torch.arange(num_clusters, device=x.device)[None].expand(batch, -1)
    idx_cluster.scatter_(1, index_down, cluster_ids)  # every center owns its cluster
    return idx_cluster, index_down


def _runs(values: list) -> list[tuple]:
    """Maximal runs of equal values as (value, start, length)."""
    starts = [t for t in range(len(values)) if t == 0 or values[t] != values[t - 1]]
    return [(values[s], s, end - s) for s, end in zip(starts, starts[1:] + [len(values)])]


def _refine_row(labels: list[int]) -> list[int]:
    """Make every label contiguous in time. Step A keeps the longest runs (all ties) of each label, if longer
    than 1; step B, left to right, gives each unassigned block the label of its longer neighbouring run (the
    left one on a tie, 0 with no neighbour)."""
    runs = _runs(labels)
    longest = {value: max(n for v, _, n in runs if v == value) for value, _, _ in runs}
    out: list[int | None] = [None] * len(labels)
    for value, start, length in runs:
        if length > 1 and length == longest[value]:
            out[start : start + length] = [value] * length
    for t in range(len(out)):
        if out[t] is not None:  # assigned, or filled as part of an earlier block
            continue
        end = t
        while end < len(out) and out[end] is None:
            end += 1
        left, right = _runs(out[:t])[-1][2] if t else 0, _runs(out[end:])[0][2] if end < len(out) else 0
        out[t:end] = [out[t - 1] if left and left >= right else out[end] if right else 0] * (end - t)
    return [int(v) for v in out]


def refine_clusters(labels: torch.Tensor) -> torch.Tensor:
    """Refine temporal cluster labels `[B, T]` so that every label is contiguous, per row (long, same device)."""
    rows = [_refine_row(row) for row in labels.tolist()]
    return torch.tensor(rows, dtype=torch.long, device=labels.device).reshape(labels.shape)


def segment_lengths(labels: torch.Tensor) -> list[list[int]]:
    """Lengths of the maximal runs of equal labels, per row of a `[B, T]` tensor."""
    return [[length for _, _, length in _runs(row)] for row in labels.tolist()]


def compute_cluster_vectors(x: torch.Tensor, idx_cluster: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Unweighted mean `[B, K, C]` of each cluster's members of `x [B, N, C]` (`idx_cluster [B, N]`), in x's
    dtype; empty clusters are exactly 0."""
    one_hot = F.one_hot(idx_cluster.long(), num_clusters).to(x.dtype)  # [B, N, K]
    sums = one_hot.transpose(1, 2) @ x  # [B, K, C]
    counts = one_hot.sum(dim=1).clamp(min=1)  # [B, K]
    return sums / counts[:, :, None]


def segment_similarity(x: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity `[L]` over distinct frames of one segment `x [W, L, C]` (W >= 2), per
    location: `(sum_{w,t} cos(x_w, x_t) - W) / (W (W - 1))`, in x's dtype."""
    num_frames = x.shape[0]
    xn = F.normalize(x, dim=-1).transpose(0, 1)  # [L, W, C]
    gram = xn @ xn.transpose(1, 2)  # [L, W, W]
    return (gram.sum(dim=(1, 2)) - num_frames) / (num_frames * (num_frames - 1))


@dataclass
class Stage1Result:
    """Output of `merge_video_tokens` for one video sample; the size lists have one entry per segment."""

    features: torch.Tensor  # [M, C] merged tokens, per segment [static][dyn frame 1] ... [dyn frame W]
    static_sizes: list[int]
    dynamic_sizes: list[int]  # over all the segment's frames
    window_sizes: list[int]  # frames
    frame_token_counts: list[int]  # length T: tokens in each frame's slot (a segment's first also has its static)
    group_sizes: list[int]  # Stage-2 groups in output order: per segment, the static group, then one per frame
    raw_labels: list[int]  # temporal labels, length T
    refined_labels: list[int]
    dpc_calls: list[tuple[torch.Tensor, torch.Tensor]]  # (idx_cluster [1, N], index_down [1, K]) per DPC call


@torch.no_grad()
def merge_video_tokens(features: torch.Tensor, *, tau: float, temporal_segment_ratio: float, cluster_ratio: float,
                       k: int, min_tokens_to_cluster: int,
                       noise_fn: Callable[[int, tuple[int, int]], torch.Tensor] | None = None) -> Stage1Result:
    """PruneVid Stage 1 on one video sample: `[T, L, C]` projected tokens (frames in raster order) -> `[M, C]`.

    A location of a segment is static iff its mean cosine similarity is > `tau`; its static set and each frame's
    dynamic set, if larger than `min_tokens_to_cluster`, are DPC-merged into int(n * cluster_ratio) tokens.
    `noise_fn(call_index, (1, N))` gives the unit noise `[1, N]` of each DPC call (temporal, then per segment
    static and one per frame); None: each call draws `torch.rand`."""
    if features.dim() != 3:
        raise ValueError(f"merge_video_tokens expects features of shape [T, L, C], got {tuple(features.shape)}")
    num_frames = features.shape[0]
    min_frames = stage1_min_frames(k, temporal_segment_ratio)
    if num_frames < min_frames:
        raise ValueError(f"PruneVid stage 1 needs at least {min_frames} frames (k={k}, "
                         f"temporal_segment_ratio={temporal_segment_ratio}), got T={num_frames}")
    noise = noise_fn(0, (1, num_frames)) if noise_fn is not None else None
    raw, index_down = cluster_dpc_knn(features.mean(dim=1)[None], int(num_frames * temporal_segment_ratio), k, noise)
    calls = [(raw, index_down)]
    refined = refine_clusters(raw)

    def merge(x: torch.Tensor) -> torch.Tensor:  # `[N, C]` -> int(N * cluster_ratio) cluster means, if N is large
        num_tokens, num_clusters = x.shape[0], int(x.shape[0] * cluster_ratio)
        if num_tokens <= min_tokens_to_cluster or num_clusters < 1 or num_tokens < k:
            return x
        noise = noise_fn(len(calls), (1, num_tokens)) if noise_fn is not None else None
        idx_cluster, index_down = cluster_dpc_knn(x[None], num_clusters, k, noise)
        calls.append((idx_cluster, index_down))
        return compute_cluster_vectors(x[None], idx_cluster, num_clusters)[0]

    out, static_sizes, dynamic_sizes, frame_counts, groups = [], [], [], [], []
    widths = segment_lengths(refined)[0]
    for width, seg in zip(widths, features.split(widths)):  # seg: [W, L, C]
        static = segment_similarity(seg) > tau  # [L]
        static_out = merge(seg[:, static].mean(dim=0))  # [N_s, C]
        dyn_out = [merge(frame) for frame in seg[:, ~static]]  # W x [N_d, C]
        n_static, per_frame = static_out.shape[0], dyn_out[0].shape[0]
        out += [static_out, *dyn_out]
        static_sizes.append(n_static)
        dynamic_sizes.append(width * per_frame)
        frame_counts += [n_static + per_frame] + [per_frame] * (width - 1)
        groups += [n_static] + [per_frame] * width
    return Stage1Result(torch.cat(out, dim=0), static_sizes, dynamic_sizes, widths, frame_counts, groups,
                        raw_labels=raw[0].tolist(), refined_labels=refined[0].tolist(), dpc_calls=calls)


def merge_sample(frames: torch.Tensor, settings) -> Stage1Result | None:
    """Stage 1 on one video sample `(T, L, D)` with `PruneVidConfig` settings (None if too few frames); the DPC noise
    is seeded per sample, so a sample merges alike alone or in any batch (upstream draws unseeded global noise)."""
    if frames.shape[0] < stage1_min_frames(settings.k, settings.temporal_segment_ratio):
        return None
    generator = torch.Generator().manual_seed(0)
    noise = lambda call_index, shape: torch.rand(shape, generator=generator).to(frames.device)  # noqa: E731
    return merge_video_tokens(frames, **{name: getattr(settings, name) for name in STAGE1_OPTIONS}, noise_fn=noise)


# ----------------------------------------------------------------------------------------------------- Stage 2
def text_to_visual_scores(q: torch.Tensor, k: torch.Tensor, visual_mask: torch.Tensor, query_mask: torch.Tensor,
                          key_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per-row scores `[V_b]` of the visual tokens: max over heads and query rows of softmax(q k^T / sqrt(D)), no
    causal mask, from pre-RoPE `q [B, H, S, D]`, `k [B, Hkv, S, D]`, `[B, S]` bool masks (`key_mask`: the real keys).
    As upstream, q k^T runs in the model dtype, the softmax in float32 cast back (upcasting changes bf16's picks)."""
    batch, num_heads, _, head_dim = q.shape
    scores: list[torch.Tensor] = []
    for b in range(batch):
        vis = visual_mask[b].nonzero().flatten()
        rows = query_mask[b].nonzero().flatten()
        if vis.numel() == 0:
            scores.append(q.new_zeros(0))
            continue
        if rows.numel() == 0:
            raise ValueError(f"row {b} has {vis.numel()} visual tokens but no query tokens after them")
        keys = k[b]
        if key_mask is not None:
            keys = keys[:, key_mask[b].bool()]
            vis = key_mask[b].bool().long().cumsum(0)[vis] - 1  # visual columns among the kept keys
        keys = keys.repeat_interleave(num_heads // k.shape[1], dim=0)  # [H, S', D]
        logits = q[b][:, rows] @ keys.transpose(1, 2) / math.sqrt(head_dim)  # [H, nq, S'], model dtype
        probs = logits.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        scores.append(probs.amax(dim=0).amax(dim=0)[vis])
    return scores


def select_kept_tokens(scores: torch.Tensor, group_sizes: list[int], alpha: float, sort: bool = True) -> torch.Tensor:
    """Indices (from the first visual token) of the int(n * alpha) highest `scores [V]` of each group of consecutive
    `group_sizes` (summing to V): ascending, or with `sort=False` in the official order (by group, then by score)."""
    if sum(group_sizes) != scores.numel():
        raise ValueError(f"group sizes sum to {sum(group_sizes)} but there are {scores.numel()} visual scores")
    kept: list[torch.Tensor] = []
    offset = 0
    for size in group_sizes:
        keep = int(size * alpha)
        if keep > 0:
            kept.append(torch.topk(scores[offset : offset + size], keep).indices + offset)
        offset += size
    index = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long, device=scores.device)
    return index.sort().values if sort else index


def build_index_list(real_mask: torch.Tensor, visual_mask: torch.Tensor, kept_visual: torch.Tensor) -> torch.Tensor:
    """Sorted positions one row keeps: its real (`real_mask [S]`) non-visual (`visual_mask [S]`) tokens and the
    visual tokens at `kept_visual` (indices among the row's visual tokens)."""
    vis = visual_mask.nonzero().flatten()
    text = (real_mask.bool() & ~visual_mask.bool()).nonzero().flatten()
    return torch.cat([text, vis[kept_visual.to(vis.device)]]).sort().values


def llm_prefill_flops(n_tokens_per_layer: list[int], hidden: int, intermediate: int) -> float:
    """FastV prefill FLOPs estimate: sum over layers of 4 n d^2 + 2 n^2 d + 2 n d m."""
    d, m = float(hidden), float(intermediate)
    return float(sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in map(float, n_tokens_per_layer)))


def _head_norm(attn: torch.nn.Module, name: str, states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Apply the attention module's per-head `q_norm` / `k_norm` (Qwen3) to `[B, S, heads, D]` states, if any."""
    norm = getattr(attn, name, None)
    if norm is not None and norm.weight.numel() != head_dim:
        raise ValueError(f"PruneVid stage 2 supports a per-head {name} (weight of size head_dim={head_dim}, as in "
                         f"Qwen3); {type(attn).__name__}.{name} has a weight of size {norm.weight.numel()}")
    return states if norm is None else norm(states)


def _pre_rope_qk(attn: torch.nn.Module, x: torch.Tensor, num_heads: int, num_kv: int, head_dim: int):
    """Pre-RoPE q `[B, H, S, D]` and k `[B, Hkv, S, D]` as the layer computes them: q/k_proj (Llama, Mistral,
    Qwen2) or qkv_proj (Phi3), then the per-head q_norm/k_norm where present (Qwen3)."""
    batch, seq_len, _ = x.shape
    if hasattr(attn, "qkv_proj"):
        q, k, _ = attn.qkv_proj(x).split([num_heads * head_dim, num_kv * head_dim, num_kv * head_dim], dim=-1)
    else:
        q, k = attn.q_proj(x), attn.k_proj(x)
    q = _head_norm(attn, "q_norm", q.view(batch, seq_len, num_heads, head_dim), head_dim)
    k = _head_norm(attn, "k_norm", k.view(batch, seq_len, num_kv, head_dim), head_dim)
    return q.transpose(1, 2), k.transpose(1, 2)


def _check_sliding_window(config, total_len: int) -> None:
    """Refuse sliding-window attention that would cut into the sequence (slots differ from positions after pruning)."""
    window, layer_types = getattr(config, "sliding_window", None), getattr(config, "layer_types", None)
    uses_window = any(t != "full_attention" for t in layer_types) if layer_types is not None else window is not None
    if uses_window and window is not None and total_len > window:
        raise ValueError(f"PruneVid stage 2 does not support sliding-window attention cutting into the sequence: "
                         f"window {window} < {total_len} tokens")


def _causal_mask(config, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
    """Native causal mask of a cache-less pass over `embeds [B, S, D]` (v4.5x: `input_embeds`, `cache_position`)."""
    kwargs = {"config": config, "attention_mask": attention_mask, "position_ids": position_ids, CACHE_ARG: None}
    kwargs["inputs_embeds" if "inputs_embeds" in _MASK_PARAMETERS else "input_embeds"] = embeds
    if "cache_position" in _MASK_PARAMETERS:
        kwargs["cache_position"] = torch.arange(embeds.shape[1], device=embeds.device)
    return create_causal_mask(**kwargs)


@torch.no_grad()
def _pruned_prefill(
    lm: torch.nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, visual_mask: torch.Tensor,
    group_sizes: list[list[int]], selected_layer: int, alpha: float, cache: DynamicCache,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Prefill with Stage-2 pruning after layer `selected_layer`, filling `cache` with the pruned K/V. Returns the
    last-position logits `[B, V]` and the pruned prompt's mask, kept positions and lengths (see `_PrunedForward`)."""
    model, config = lm.get_decoder(), lm.config.get_text_config()
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    real = attention_mask.bool()
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, S]

    hidden = inputs_embeds
    mask = _causal_mask(config, hidden, attention_mask, position_ids)
    pos_emb = model.rotary_emb(hidden, position_ids=position_ids)
    for i, layer in enumerate(model.layers[: selected_layer + 1]):
        if i == selected_layer:
            q, k = _pre_rope_qk(layer.self_attn, layer.input_layernorm(hidden), num_heads, num_kv, head_dim)
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            last_visual = torch.where(visual_mask, positions, -1).amax(dim=-1, keepdim=True)  # [B, 1]
            query_mask = real & (positions[None] > last_visual)  # the text after the video
            scores = text_to_visual_scores(q, k, visual_mask, query_mask, key_mask=real)
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, use_cache=True,
                       position_embeddings=pos_emb, **{CACHE_ARG: cache})

    index_lists = [build_index_list(real[b], visual_mask[b], select_kept_tokens(scores[b], list(group_sizes[b]), alpha))
                   for b in range(len(scores))]  # sorted absolute positions to keep, per row
    index, pruned_mask = (t.to(hidden.device) for t in left_pad(index_lists, pad_id=0))  # pad slots point at 0
    hidden = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
    pruned_pos = position_ids.gather(1, index)
    for cached in cache.layers[: selected_layer + 1]:  # keep the same positions of the layers' K/V, in place
        ix = index[:, None, :, None].expand(-1, cached.keys.shape[1], -1, cached.keys.shape[3]).to(cached.keys.device)
        cached.keys, cached.values = cached.keys.gather(2, ix), cached.values.gather(2, ix)

    mask = _causal_mask(config, hidden, pruned_mask, pruned_pos)
    pos_emb = model.rotary_emb(hidden, position_ids=pruned_pos)
    for layer in model.layers[selected_layer + 1 : config.num_hidden_layers]:
        # position_ids=None: gapped ids would look like packed sequences to flash-attention; RoPE comes
        # from position_embeddings, computed from the real (gapped) ids.
        hidden = layer(hidden, attention_mask=mask, position_ids=None, use_cache=True, position_embeddings=pos_emb,
                       **{CACHE_ARG: cache})
    logits = lm.get_output_embeddings()(model.norm(hidden[:, -1:]))[:, -1]
    return logits, pruned_mask, index_lists, real.sum(dim=-1)


class _PrunedForward:
    """Stands in for the causal LM's `forward` during one `generate` call (set on a shallow copy of the model): the
    first call (the prefill) runs `_pruned_prefill` on the (beam-expanded) prompt into generate's cache; later calls
    run the model's own forward on the pruned cache, with positions that continue from the unpruned prompt length."""

    def __init__(self, lm: torch.nn.Module, visual_mask: torch.Tensor, group_sizes: list[list[int]],
                 selected_layer: int, alpha: float) -> None:
        self.lm, self.visual_mask, self.group_sizes = lm, visual_mask, group_sizes
        self.selected_layer, self.alpha = selected_layer, alpha
        self.__wrapped__ = lm.forward  # generate inspects the forward's signature
        # Set by the prefill, per generate row: the pruned prompt's mask `[B, L]`, kept positions, real lengths `[B]`.
        self.expand, self.pruned_mask, self.index_lists, self.full_len = 1, None, [], None

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **kwargs):
        cache = kwargs.pop(CACHE_ARG, None)
        if not isinstance(cache, DynamicCache):
            raise RuntimeError(f"PruneVid stage 2: generate did not pass the pruned DynamicCache as `{CACHE_ARG}`")
        if self.pruned_mask is not None:
            return self._decode(input_ids, inputs_embeds, cache, kwargs)
        device = inputs_embeds.device
        # generate repeats every row num_beams / num_return_sequences times
        self.expand = inputs_embeds.shape[0] // self.visual_mask.shape[0]
        if attention_mask is None:  # generate drops an all-ones mask
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=device)
        visual = self.visual_mask.to(device).repeat_interleave(self.expand, dim=0)
        groups = [g for g in self.group_sizes for _ in range(self.expand)]
        logits, self.pruned_mask, self.index_lists, self.full_len = _pruned_prefill(
            self.lm, inputs_embeds, attention_mask.to(device), visual, groups, self.selected_layer, self.alpha, cache
        )
        return CausalLMOutputWithPast(logits=logits[:, None], **{CACHE_ARG: cache})

    def _decode(self, input_ids, inputs_embeds, cache: DynamicCache, kwargs: dict):
        new = input_ids if input_ids is not None else inputs_embeds
        cached, steps = cache.get_seq_length(), new.shape[1]
        grown = cached + steps - self.pruned_mask.shape[1]  # tokens decoded so far, the new ones included
        mask = torch.cat([self.pruned_mask, self.pruned_mask.new_ones(new.shape[0], grown)], dim=-1)
        first = self.full_len[:, None] + (grown - steps)  # [B, 1] position of the first new token
        positions = first + torch.arange(steps, device=first.device)[None]
        _check_sliding_window(self.lm.config.get_text_config(), int(positions.max()) + 1)
        if "cache_position" in kwargs:  # transformers 4.x: slots in the (pruned) cache, not positions
            kwargs["cache_position"] = torch.arange(cached, cached + steps, device=new.device)
        return self.__wrapped__(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                                position_ids=positions, **{CACHE_ARG: cache}, **kwargs)

    def stats(self) -> dict:
        """Per-row token and FLOPs accounting of the pruned prefill (one entry per input row)."""
        config, layer, expand = self.lm.config.get_text_config(), self.selected_layer, self.expand
        num_layers, hidden, inter = config.num_hidden_layers, config.hidden_size, config.intermediate_size
        n_full = [int(n) for n in self.full_len[::expand].tolist()]
        n_pruned = [int(ix.numel()) for ix in self.index_lists[::expand]]
        n_visual = [int(v) for v in self.visual_mask.sum(-1).tolist()]
        return {
            "visual_tokens_in": n_visual,
            "visual_tokens_kept": [v - (f - p) for v, f, p in zip(n_visual, n_full, n_pruned)],
            "prefill_len_full": n_full, "prefill_len_pruned": n_pruned,
            "prefill_flops": [llm_prefill_flops([f] * (layer + 1) + [p] * (num_layers - layer - 1), hidden, inter)
                              for f, p in zip(n_full, n_pruned)],
            "prefill_flops_unpruned": [llm_prefill_flops([f] * num_layers, hidden, inter) for f in n_full],
            "selected_layer": layer, "alpha": self.alpha,
        }


# Options that would make generate call the model in ways a pruned cache cannot serve.
_REFUSED_GENERATE_KWARGS = ("cache", "past_key_values", "assistant_model", "custom_generate", "prefill_chunk_size")
# Generation modes that call the model once per new token and only reorder the cache, and settings that select others.
_STAGE2_GENERATION_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH,
                            GenerationMode.BEAM_SAMPLE)
_MODE_OPTIONS = ("prompt_lookup_num_tokens", "assistant_early_exit", "penalty_alpha", "dola_layers", "num_beam_groups",
                 "constraints", "force_words_ids")


def _generation_options(lm: torch.nn.Module, generation_config, kwargs: dict) -> tuple[GenerationConfig, dict]:
    """One `GenerationConfig` (`generation_config` or the model's, updated with the settings among `kwargs`) and
    the other `kwargs` (`streamer`, ...); raises `ValueError` naming any option that stage 2 cannot honour."""
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise ValueError("generation_config must be a transformers.GenerationConfig or None, "
                         f"got {type(generation_config).__name__}")
    for name in _REFUSED_GENERATE_KWARGS:
        if kwargs.get(name) is not None:
            raise ValueError(f"PruneVid stage 2 does not support the generation option {name}; leave it unset")
    config = copy.deepcopy(generation_config if generation_config is not None else lm.generation_config)
    others = config.update(**kwargs)
    checks = (
        ("use_cache", config.use_cache is False, "True (stage 2 decodes from its pruned cache)"),
        ("cache_implementation", config.cache_implementation is not None, "None (stage 2 uses a dynamic cache)"),
        ("prefill_chunk_size", getattr(config, "prefill_chunk_size", None) is not None, "None"),
        ("output_attentions", bool(config.output_attentions), "False"),
        ("output_hidden_states", bool(config.output_hidden_states), "False"),
    )
    for name, bad, allowed in checks:
        if bad:
            raise ValueError("PruneVid stage 2 does not support the generation option "
                             f"{name}={getattr(config, name)!r}; use {allowed}, or switch PruneVid off for this call")
    mode = config.get_generation_mode()
    if mode not in _STAGE2_GENERATION_MODES:
        named = [name for name in _MODE_OPTIONS if getattr(config, name, None) not in (None, False, 1, [])]
        raise ValueError(f"PruneVid stage 2 supports greedy search, sampling and beam search, but the generation "
                         f"options {named or list(_MODE_OPTIONS)} select {mode.value}; leave them unset or switch "
                         "PruneVid off for this call")
    return config, others


@torch.no_grad()
def pruned_generate(
    language_model: torch.nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
    visual_mask: torch.Tensor, group_sizes: list[list[int]], selected_layer: int, alpha: float,
    generation_config: GenerationConfig | None = None, return_stats: bool = True, **kwargs,
) -> tuple[torch.LongTensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput, dict]:
    """`GenerationMixin.generate(language_model, inputs_embeds=..., ...)` with PruneVid Stage 2; returns `(output, stats)`.
    `language_model`: a causal LM (`get_decoder()` with `layers` / `rotary_emb` / `norm`, `get_output_embeddings()`),
    a native one or the chat model.

    `inputs_embeds [B, S, D]`, `attention_mask [B, S]` (0 for left padding), `visual_mask [B, S]`, and per row the
    Stage-1 `group_sizes` in visual-position order; decoding continues at the positions after the unpruned prompt.
    `generation_config`, `kwargs` go to `generate` (its output's cache is the pruned one: do not continue from it).
    `stats` (empty unless `return_stats`): per input row the visual tokens in and kept, prefill lengths and FLOPs."""
    config = language_model.config.get_text_config()
    num_layers = config.num_hidden_layers
    batch, seq_len = inputs_embeds.shape[:2]
    if attention_mask.shape != (batch, seq_len) or visual_mask.shape != (batch, seq_len):
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} and visual_mask {tuple(visual_mask.shape)} "
                         f"must be {(batch, seq_len)}")
    if len(group_sizes) != batch:
        raise ValueError(f"group_sizes has {len(group_sizes)} rows for a batch of {batch}")
    if not 0 <= selected_layer < num_layers:
        raise ValueError(f"selected_layer must lie in [0, {num_layers - 1}], got {selected_layer}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if config.model_type not in PRUNEVID_STAGE2_MODEL_TYPES:
        raise ValueError(f"PruneVid stage 2 supports language models of type {list(PRUNEVID_STAGE2_MODEL_TYPES)}, "
                         f"got {config.model_type!r}; switch stage 2 off (prunevid enable_stage2=False) for it")
    attn = language_model.get_decoder().layers[selected_layer].self_attn
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    scaling = getattr(attn, "scaling", None)  # the scores below use 1/sqrt(head_dim)
    if scaling is not None and not math.isclose(float(scaling), head_dim**-0.5, rel_tol=1e-6):
        raise ValueError(f"PruneVid stage 2 scores with 1/sqrt(head_dim) = {head_dim**-0.5:.6g}, but "
                         f"{type(attn).__name__} scales attention by {scaling}; this backbone is not supported")
    _check_sliding_window(config, int(attention_mask.sum(-1).max()))
    generation_config, others = _generation_options(language_model, generation_config, kwargs)
    visual_mask = visual_mask.bool() & attention_mask.bool()
    stage2 = _PrunedForward(language_model, visual_mask, group_sizes, selected_layer, alpha)
    model = copy.copy(language_model)  # shares every module and parameter; only `forward` differs
    model.forward = stage2
    output = GenerationMixin.generate(model, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                      generation_config=generation_config, **{CACHE_ARG: DynamicCache()}, **others)
    return output, (stage2.stats() if return_stats else {})
