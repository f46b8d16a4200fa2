# Copyright 2025 The PVC-InternVL authors. Licensed under the Apache License, Version 2.0.
"""PruneVid (Huang et al., arXiv 2412.16117) for PVC-InternVL: training-free video token reduction.

Stage 1 (`merge_video_tokens`) runs on the projected tokens of one video sample, before the LLM:
temporal segmentation by DPC-kNN over frame means, a static/dynamic split per segment, temporal
averaging of static tokens and DPC-kNN spatial merging.

Stage 2 (`pruned_generate`) runs inside a native transformers causal LM (Llama / Mistral / Qwen2 / Qwen3 /
Phi3): at decoder layer `selected_layer` it scores every visual token by the attention that the text after
the video pays to it (pre-RoPE, unmasked, Q K^T in the model dtype, fp32 softmax, max over heads and
queries), keeps the top `alpha` of every Stage-1 group and drops the rest from the hidden states and from
the KV cache of all earlier layers. The real attention stays on the model's own implementation (SDPA /
eager / flash), and decoding is transformers' own `generate` on the pruned cache.

Behaviour follows the official code (Visual-AI/PruneVid @ b12600c) as specified in the project's
design notes, with these deliberate extensions: every batch row is segmented and pruned on its own,
left padding is supported, and visual tokens are found from an explicit mask.
"""

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput, GenerationConfig
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.utils import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging


logger = logging.get_logger(__name__)

DENSITY_NOISE_SCALE = 1e-6  # tie-break noise added to the DPC density (official value)


def _cache_argument() -> str:
    """The keyword that carries the KV cache between `generate`, the models' `forward` and their decoder layers:
    `cache` from transformers 5.24 on, `past_key_values` before. Read once from the signature of generate's
    input preparation (a public override point); an installed version that has neither is refused at import."""
    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise ImportError(
        "this transformers version names the generation cache neither `cache` nor `past_key_values` in "
        "GenerationMixin.prepare_inputs_for_generation; PVC-InternVL supports transformers>=4.57,<6"
    )


CACHE_ARG = _cache_argument()


# Settings: the defaults and checks live in configuration_pvc_internvl.PruneVidConfig.
STAGE1_OPTIONS = ("tau", "temporal_segment_ratio", "cluster_ratio", "k", "min_tokens_to_cluster")  # merge_video_tokens
STAGE2_SETTINGS = ("selected_layer", "alpha", "enable_stage2")  # what stage 2 alone reads: may change per prompt


def stage1_min_frames(k: int, temporal_segment_ratio: float) -> int:
    """Smallest frame count T for which Stage 1 can run.

    The temporal DPC-kNN needs k nearest frames (T >= k, upstream crashes otherwise), at least one
    temporal cluster (int(T * temporal_segment_ratio) >= 1), and the similarity needs T >= 2.
    """
    if not 0.0 < temporal_segment_ratio <= 1.0:
        raise ValueError(f"temporal_segment_ratio must lie in (0, 1], got {temporal_segment_ratio}")
    t = max(int(k), 2)  # a segment needs >= 2 frames for the pairwise similarity
    while int(t * temporal_segment_ratio) < 1:
        t += 1
    return t


def can_merge(num_frames: int, k: int, temporal_segment_ratio: float) -> bool:
    """Whether Stage 1 can run on a video of `num_frames` frames (see `stage1_min_frames`)."""
    return num_frames >= stage1_min_frames(k, temporal_segment_ratio)


# --------------------------------------------------------------------------------------------------
# Stage 1 building blocks
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def cluster_dpc_knn(
    x: torch.Tensor, num_clusters: int, k: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN clustering, per batch row.

    Args:
        x: `[B, N, C]` tokens (any float dtype; distances and densities are computed in float32).
        num_clusters: K, with 1 <= K <= N.
        k: neighbour count for the density (self included), 1 <= k <= N.
        noise: optional `[B, N]` unit noise u; the density gets `1e-6 * u`. When None, u is drawn by
            one `torch.rand(B, N)` on x's device (global RNG).

    Returns:
        idx_cluster: `[B, N]` long, cluster id of every token (cluster j = j-th center).
        index_down: `[B, K]` long, center token indices in descending score order.
    """
    if x.dim() != 3:
        raise ValueError(f"cluster_dpc_knn expects x of shape [B, N, C], got {tuple(x.shape)}")
    batch, num_tokens, channels = x.shape
    if not 1 <= num_clusters <= num_tokens:
        raise ValueError(
            f"cluster_dpc_knn needs 1 <= num_clusters <= N, got num_clusters={num_clusters}, N={num_tokens}"
        )
    if not 1 <= k <= num_tokens:
        raise ValueError(f"cluster_dpc_knn needs 1 <= k <= N, got k={k}, N={num_tokens}")
    if noise is not None and tuple(noise.shape) != (batch, num_tokens):
        raise ValueError(f"cluster_dpc_knn noise must have shape {(batch, num_tokens)}, got {tuple(noise.shape)}")

    xf = x.float()
    dist = torch.cdist(xf, xf) / (channels**0.5)  # [B, N, N]

    nearest, _ = torch.topk(dist, k=k, dim=-1, largest=False)  # [B, N, k], self included
    density = (-(nearest**2).mean(dim=-1)).exp()  # [B, N]
    if noise is None:
        noise = torch.rand(density.shape, device=density.device, dtype=density.dtype)
    density = density + noise.to(device=density.device, dtype=density.dtype) * DENSITY_NOISE_SCALE

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


def _runs(values: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values as (value, start, length)."""
    runs: list[tuple[int, int, int]] = []
    for t, v in enumerate(values):
        if runs and runs[-1][0] == v and runs[-1][1] + runs[-1][2] == t:
            runs[-1] = (v, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((v, t, 1))
    return runs


def _refine_row(labels: list[int]) -> list[int]:
    """Make every label contiguous in time (step A: keep longest runs; step B: absorb the rest)."""
    runs = _runs(labels)
    longest: dict[int, int] = {}
    for value, _, length in runs:
        longest[value] = max(longest.get(value, 0), length)
    out: list[int | None] = [None] * len(labels)
    for value, start, length in runs:
        if length > 1 and length == longest[value]:
            out[start : start + length] = [value] * length

    t, num_frames = 0, len(out)
    while t < num_frames:
        if out[t] is not None:
            t += 1
            continue
        end = t
        while end + 1 < num_frames and out[end + 1] is None:
            end += 1
        left = out[t - 1] if t > 0 else None
        right = out[end + 1] if end + 1 < num_frames else None
        left_len = right_len = 0
        j = t - 1
        while j >= 0 and left is not None and out[j] == left:
            left_len, j = left_len + 1, j - 1
        j = end + 1
        while j < num_frames and right is not None and out[j] == right:
            right_len, j = right_len + 1, j + 1
        if left is None and right is None:
            fill = 0
        elif right is None or (left is not None and left_len >= right_len):
            fill = left
        else:
            fill = right
        out[t : end + 1] = [fill] * (end + 1 - t)
        t = end + 1
    return [int(v) for v in out]


def refine_clusters(labels: torch.Tensor) -> torch.Tensor:
    """Refine temporal cluster labels so that every label is contiguous, per row.

    Args:
        labels: `[B, T]` integer labels.

    Returns:
        `[B, T]` long refined labels (same device).
    """
    if labels.dim() != 2:
        raise ValueError(f"refine_clusters expects labels of shape [B, T], got {tuple(labels.shape)}")
    rows = [_refine_row(row) for row in labels.tolist()]
    return torch.tensor(rows, dtype=torch.long, device=labels.device).reshape(labels.shape)


def segment_lengths(labels: torch.Tensor) -> list[list[int]]:
    """Lengths of the maximal runs of equal labels, per row of a `[B, T]` tensor."""
    if labels.dim() != 2:
        raise ValueError(f"segment_lengths expects labels of shape [B, T], got {tuple(labels.shape)}")
    return [[length for _, _, length in _runs(row)] for row in labels.tolist()]


def compute_cluster_vectors(x: torch.Tensor, idx_cluster: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Unweighted mean of each cluster's members, in x's dtype; empty clusters are exactly 0.

    Args:
        x: `[B, N, C]` features.
        idx_cluster: `[B, N]` cluster ids in [0, num_clusters).
        num_clusters: K.

    Returns:
        `[B, K, C]` cluster means.
    """
    if idx_cluster.shape != x.shape[:2]:
        raise ValueError(f"idx_cluster shape {tuple(idx_cluster.shape)} does not match x tokens {tuple(x.shape[:2])}")
    one_hot = F.one_hot(idx_cluster.long(), num_clusters).to(x.dtype)  # [B, N, K]
    sums = one_hot.transpose(1, 2) @ x  # [B, K, C]
    counts = one_hot.sum(dim=1).clamp(min=1)  # [B, K]
    return sums / counts[:, :, None]


def segment_similarity(x: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity over distinct frames, per location.

    Args:
        x: `[W, L, C]` tokens of one segment (W >= 2).

    Returns:
        `[L]` similarity `(sum_{w,t} cos(x_w, x_t) - W) / (W (W - 1))`, in x's dtype.
    """
    num_frames = x.shape[0]
    if num_frames < 2:
        raise ValueError(f"segment_similarity needs at least 2 frames, got W={num_frames}")
    xn = F.normalize(x, dim=-1).transpose(0, 1)  # [L, W, C]
    gram = xn @ xn.transpose(1, 2)  # [L, W, W]
    return (gram.sum(dim=(1, 2)) - num_frames) / (num_frames * (num_frames - 1))


# --------------------------------------------------------------------------------------------------
# Stage 1
# --------------------------------------------------------------------------------------------------


@dataclass
class Stage1Result:
    """Output of `merge_video_tokens` for one video sample.

    features: `[M, C]` merged tokens, per segment `[static][dyn frame 1] ... [dyn frame W]`.
    static_sizes / dynamic_sizes / window_sizes: one entry per segment (upstream lists; dynamic size is
        the total over the segment's frames).
    frame_token_counts: length T; tokens for each original frame slot (segment s puts static_s plus its
        first frame's dynamic tokens in that frame's slot), so the features fill slots 0..T-1 in order.
    group_sizes: Stage-2 groups in output order (static group, then one group per frame, per segment).
    raw_labels / refined_labels: temporal labels, length T.
    dpc_calls: `(idx_cluster [1, N], index_down [1, K])` of every DPC call, in call order.
    """

    features: torch.Tensor
    static_sizes: list[int]
    dynamic_sizes: list[int]
    window_sizes: list[int]
    frame_token_counts: list[int]
    group_sizes: list[int]
    raw_labels: list[int] = field(default_factory=list)
    refined_labels: list[int] = field(default_factory=list)
    dpc_calls: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


NoiseFn = Callable[[int, tuple[int, int]], torch.Tensor]


def _spatial_merge(
    x: torch.Tensor,
    cluster_ratio: float,
    k: int,
    min_tokens_to_cluster: int,
    noise_fn: NoiseFn | None,
    calls: list[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """DPC-merge `[N, C]` tokens into int(N * ratio) cluster means if N > min_tokens_to_cluster."""
    num_tokens = x.shape[0]
    num_clusters = int(num_tokens * cluster_ratio)
    if num_tokens <= min_tokens_to_cluster or num_clusters < 1 or num_tokens < k:
        return x
    noise = noise_fn(len(calls), (1, num_tokens)) if noise_fn is not None else None
    idx_cluster, index_down = cluster_dpc_knn(x[None], num_clusters, k, noise)
    calls.append((idx_cluster, index_down))
    return compute_cluster_vectors(x[None], idx_cluster, num_clusters)[0]


@torch.no_grad()
def merge_video_tokens(
    features: torch.Tensor,
    *,
    tau: float,
    temporal_segment_ratio: float,
    cluster_ratio: float,
    k: int,
    min_tokens_to_cluster: int,
    noise_fn: NoiseFn | None = None,
) -> Stage1Result:
    """PruneVid Stage 1 for one video sample.

    Args:
        features: `[T, L, C]` projected tokens, each frame in raster order (model dtype).
        tau: location is static iff its mean cosine similarity is > tau.
        temporal_segment_ratio: temporal DPC clusters = int(T * ratio).
        cluster_ratio: spatial DPC clusters = int(n * ratio).
        k: DPC-kNN neighbours (self included).
        min_tokens_to_cluster: static / per-frame dynamic sets are merged only if larger than this.
        noise_fn: optional `(call_index, (1, N)) -> [1, N]` unit noise for DPC call `call_index`
            (temporal call first, then per segment the static call and one call per frame); when
            None every call draws `torch.rand` itself.

    Returns:
        `Stage1Result`; `features` is `[M, C]` in the input dtype.
    """
    if features.dim() != 3:
        raise ValueError(f"merge_video_tokens expects features of shape [T, L, C], got {tuple(features.shape)}")
    num_frames = features.shape[0]
    min_frames = stage1_min_frames(k, temporal_segment_ratio)
    if num_frames < min_frames:
        raise ValueError(
            f"PruneVid stage 1 needs at least {min_frames} frames (k={k}, "
            f"temporal_segment_ratio={temporal_segment_ratio}), got T={num_frames}"
        )
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    frame_means = features.mean(dim=1)  # [T, C], model dtype
    noise = noise_fn(0, (1, num_frames)) if noise_fn is not None else None
    raw, index_down = cluster_dpc_knn(frame_means[None], int(num_frames * temporal_segment_ratio), k, noise)
    calls.append((raw, index_down))
    refined = refine_clusters(raw)

    out: list[torch.Tensor] = []
    static_sizes, dynamic_sizes, window_sizes, frame_counts, groups = [], [], [], [], []
    start = 0
    for width in segment_lengths(refined)[0]:
        seg = features[start : start + width]  # [W, L, C]
        static = segment_similarity(seg) > tau  # [L]
        static_tokens = seg[:, static].mean(dim=0)  # [N_s, C]
        static_out = _spatial_merge(static_tokens, cluster_ratio, k, min_tokens_to_cluster, noise_fn, calls)
        dynamic = seg[:, ~static]  # [W, N_d, C]
        dyn_out = [_spatial_merge(f, cluster_ratio, k, min_tokens_to_cluster, noise_fn, calls) for f in dynamic]
        per_frame = dyn_out[0].shape[0]
        out.append(static_out)
        out.extend(dyn_out)
        static_sizes.append(static_out.shape[0])
        dynamic_sizes.append(width * per_frame)
        window_sizes.append(width)
        frame_counts.extend([static_out.shape[0] + per_frame] + [per_frame] * (width - 1))
        groups.extend([static_out.shape[0]] + [per_frame] * width)
        start += width
    return Stage1Result(
        features=torch.cat(out, dim=0),
        static_sizes=static_sizes,
        dynamic_sizes=dynamic_sizes,
        window_sizes=window_sizes,
        frame_token_counts=frame_counts,
        group_sizes=groups,
        raw_labels=raw[0].tolist(),
        refined_labels=refined[0].tolist(),
        dpc_calls=calls,
    )


def merge_sample(frames: torch.Tensor, settings) -> Stage1Result | None:
    """Stage 1 on one video sample ``(T, L, D)`` with the ``PruneVidConfig`` settings, or None when it has too few
    frames. The DPC tie-break noise comes from a generator seeded per sample, so a sample gives the same tokens
    alone or in any batch (upstream draws unseeded global noise)."""
    if not can_merge(frames.shape[0], settings.k, settings.temporal_segment_ratio):
        return None
    generator = torch.Generator().manual_seed(0)
    noise = lambda call_index, shape: torch.rand(shape, generator=generator).to(frames.device)  # noqa: E731
    return merge_video_tokens(frames, **{name: getattr(settings, name) for name in STAGE1_OPTIONS}, noise_fn=noise)


def group_sizes_from_upstream(
    static_sizes: list[int], dynamic_sizes: list[int], window_sizes: list[int]
) -> list[int]:
    """Flat Stage-2 group sizes from the upstream per-segment lists (static, then W equal frame groups)."""
    if not len(static_sizes) == len(dynamic_sizes) == len(window_sizes):
        raise ValueError(
            f"size lists differ in length: static {len(static_sizes)}, dynamic {len(dynamic_sizes)}, "
            f"window {len(window_sizes)}"
        )
    groups: list[int] = []
    for n_static, n_dynamic, width in zip(static_sizes, dynamic_sizes, window_sizes):
        if width < 1 or n_dynamic % width:
            raise ValueError(f"dynamic size {n_dynamic} is not a multiple of window size {width}")
        groups.extend([int(n_static)] + [int(n_dynamic) // int(width)] * int(width))
    return groups


# --------------------------------------------------------------------------------------------------
# Stage 2 building blocks
# --------------------------------------------------------------------------------------------------


def text_to_visual_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    visual_mask: torch.Tensor,
    query_mask: torch.Tensor,
    key_mask: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per-row visual-token scores: max over heads and query rows of softmax(q k^T / sqrt(D)).

    No causal mask and no RoPE. The softmax runs over all S keys, or over the keys in `key_mask` when
    given (used to leave out left padding so a padded row scores like the row alone). The order of
    operations and dtypes follow the official code: q k^T and the 1/sqrt(D) scaling in the model dtype,
    the softmax in float32, the probabilities cast back to the model dtype, then the maxes. (Upcasting
    q and k before the product is not equivalent in bf16: it changes which tokens are kept.)

    Args:
        q: `[B, H, S, D]` pre-RoPE queries.
        k: `[B, Hkv, S, D]` pre-RoPE keys (H must be a multiple of Hkv; KV heads are repeated).
        visual_mask: `[B, S]` bool, visual positions.
        query_mask: `[B, S]` bool, query positions (text after the video).
        key_mask: optional `[B, S]` bool, keys taking part in the softmax.

    Returns:
        list of B tensors `[V_b]` in q's dtype, scores of the row's visual tokens in position order.
    """
    batch, num_heads, seq_len, head_dim = q.shape
    num_kv = k.shape[1]
    if num_heads % num_kv:
        raise ValueError(f"query heads {num_heads} are not a multiple of key heads {num_kv}")
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
        keys = keys.repeat_interleave(num_heads // num_kv, dim=0)  # [H, S', D]
        logits = q[b][:, rows] @ keys.transpose(1, 2) / math.sqrt(head_dim)  # [H, nq, S'], model dtype
        probs = logits.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        scores.append(probs.amax(dim=0).amax(dim=0)[vis])
    return scores


def select_kept_tokens(
    scores: torch.Tensor, group_sizes: list[int], alpha: float, sort: bool = True
) -> torch.Tensor:
    """Keep the int(n * alpha) highest-scoring tokens of every group.

    Args:
        scores: `[V]` visual-token scores in visual-position order.
        group_sizes: consecutive group sizes, summing to V.
        alpha: kept fraction per group.
        sort: return ascending indices (default); else the official order (by group, then by score).

    Returns:
        LongTensor of kept indices relative to the first visual token.
    """
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
    """Sorted absolute positions kept after pruning: all real non-visual tokens plus the kept visual ones.

    Args:
        real_mask: `[S]` bool, real (non-pad) tokens of one row.
        visual_mask: `[S]` bool, visual tokens of the row.
        kept_visual: kept indices relative to the row's visual tokens (position order).
    """
    vis = visual_mask.nonzero().flatten()
    text = (real_mask.bool() & ~visual_mask.bool()).nonzero().flatten()
    return torch.cat([text, vis[kept_visual.to(vis.device)]]).sort().values


def llm_prefill_flops(n_tokens_per_layer: list[int], hidden: int, intermediate: int) -> float:
    """FastV prefill FLOPs estimate: sum over layers of 4 n d^2 + 2 n^2 d + 2 n d m."""
    d, m = float(hidden), float(intermediate)
    return float(sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in map(float, n_tokens_per_layer)))


# --------------------------------------------------------------------------------------------------
# Stage 2: pruned prefill, then transformers' own `generate` on the pruned cache
# --------------------------------------------------------------------------------------------------

# Backbones whose decoder layers this module runs by hand (input norm -> attention with q/k_proj or
# qkv_proj, optional per-head q_norm/k_norm, RoPE); anything else could score or decode wrongly.
STAGE2_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")

# Generation modes that call the model one new token per step and only reorder the cache (beams).
_STAGE2_GENERATION_MODES = (
    GenerationMode.GREEDY_SEARCH,
    GenerationMode.SAMPLE,
    GenerationMode.BEAM_SEARCH,
    GenerationMode.BEAM_SAMPLE,
)


def _check_backbone(config, attn: torch.nn.Module, head_dim: int) -> None:
    """Refuse language models whose pre-RoPE scores or layer-by-layer prefill this module cannot reproduce."""
    if config.model_type not in STAGE2_MODEL_TYPES:
        raise ValueError(
            f"PruneVid stage 2 supports language models of type {list(STAGE2_MODEL_TYPES)}, got "
            f"{config.model_type!r}; switch stage 2 off (prunevid enable_stage2=False) for this backbone"
        )
    scaling = getattr(attn, "scaling", None)
    if scaling is not None and not math.isclose(float(scaling), head_dim**-0.5, rel_tol=1e-6):
        raise ValueError(
            f"PruneVid stage 2 scores with 1/sqrt(head_dim) = {head_dim**-0.5:.6g}, but {type(attn).__name__} "
            f"scales attention by {scaling}; this backbone is not supported"
        )


def _head_norm(attn: torch.nn.Module, name: str, states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Apply the attention module's per-head `q_norm` / `k_norm` (Qwen3) to `[B, S, heads, D]` states, if it has one."""
    norm = getattr(attn, name, None)
    if norm is None:
        return states
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.numel() != head_dim:
        width = None if not isinstance(weight, torch.Tensor) else weight.numel()
        raise ValueError(
            f"PruneVid stage 2 supports a per-head {name} (weight of size head_dim={head_dim}, as in Qwen3); "
            f"{type(attn).__name__}.{name} has a weight of size {width}"
        )
    return norm(states)


def _pre_rope_qk(attn: torch.nn.Module, x: torch.Tensor, num_heads: int, num_kv: int, head_dim: int):
    """Pre-RoPE q `[B, H, S, D]` and k `[B, Hkv, S, D]` as the layer computes them before RoPE: q/k_proj
    (Llama, Mistral, Qwen2) or qkv_proj (Phi3), then the per-head q_norm/k_norm where present (Qwen3)."""
    batch, seq_len, _ = x.shape
    if hasattr(attn, "qkv_proj"):
        qkv = attn.qkv_proj(x)
        q = qkv[..., : num_heads * head_dim]
        k = qkv[..., num_heads * head_dim : (num_heads + num_kv) * head_dim]
    elif hasattr(attn, "q_proj") and hasattr(attn, "k_proj"):
        q, k = attn.q_proj(x), attn.k_proj(x)
    else:
        raise ValueError(f"unsupported attention module {type(attn).__name__}: no q_proj/k_proj or qkv_proj")
    q = _head_norm(attn, "q_norm", q.view(batch, seq_len, num_heads, head_dim), head_dim)
    k = _head_norm(attn, "k_norm", k.view(batch, seq_len, num_kv, head_dim), head_dim)
    return q.transpose(1, 2), k.transpose(1, 2)


def _check_sliding_window(config, total_len: int) -> None:
    """Refuse sliding-window attention that would cut into the sequence (slots differ from positions after pruning)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    uses_window = any(t != "full_attention" for t in layer_types) if layer_types is not None else window is not None
    if uses_window and window is not None and total_len > window:
        raise ValueError(
            f"PruneVid stage 2 does not support sliding-window attention cutting into the sequence: "
            f"window {window} < {total_len} tokens"
        )


def _row_index_lists(
    visual_mask: torch.Tensor,
    real: torch.Tensor,
    group_sizes: list[list[int]],
    scores: list[torch.Tensor],
    alpha: float,
) -> list[torch.Tensor]:
    """Sorted absolute positions to keep, per row (rows without visual tokens keep every real token)."""
    index_lists = []
    for b in range(visual_mask.shape[0]):
        if not visual_mask[b].any():
            index_lists.append(real[b].nonzero().flatten())
            continue
        kept = select_kept_tokens(scores[b], list(group_sizes[b]), alpha)
        index_lists.append(build_index_list(real[b], visual_mask[b], kept))
    return index_lists


def _left_pad_indices(index_lists: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad per-row index lists to `[B, L]` (pad slots point at index 0) and return the 2-D mask."""
    length = max(int(ix.numel()) for ix in index_lists)
    index = torch.zeros(len(index_lists), length, dtype=torch.long, device=device)
    mask = torch.zeros(len(index_lists), length, dtype=torch.long, device=device)
    for b, ix in enumerate(index_lists):
        if ix.numel():
            index[b, length - ix.numel() :] = ix
            mask[b, length - ix.numel() :] = 1
    return index, mask


_MASK_PARAMETERS = frozenset(inspect.signature(create_causal_mask).parameters)


def _causal_mask(config, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
    """The native causal mask for a fresh (cache-less) pass over `embeds [B, S, D]`, on any
    transformers version (v5 names the argument `inputs_embeds`; v4.5x `input_embeds` + `cache_position`)."""
    kwargs = dict(config=config, attention_mask=attention_mask, position_ids=position_ids)
    kwargs[CACHE_ARG] = None
    kwargs["inputs_embeds" if "inputs_embeds" in _MASK_PARAMETERS else "input_embeds"] = embeds
    if "cache_position" in _MASK_PARAMETERS:
        kwargs["cache_position"] = torch.arange(embeds.shape[1], device=embeds.device)
    return create_causal_mask(**kwargs)


def _gather_cache(cache: DynamicCache, layers: int, index: torch.Tensor) -> None:
    """Gather the KV cache of layers [0, layers) along the sequence axis with `index [B, L]`, in place."""
    for layer in cache.layers[:layers]:
        heads, head_dim = layer.keys.shape[1], layer.keys.shape[3]
        ix = index[:, None, :, None].expand(-1, heads, -1, head_dim).to(layer.keys.device)
        layer.keys = layer.keys.gather(2, ix)
        layer.values = layer.values.gather(2, ix)


@dataclass
class _Prefill:
    """What the pruned prefill leaves for the decode steps (one entry per generate row)."""

    logits: torch.Tensor  # [B, V] last-position logits, in the lm_head dtype
    pruned_mask: torch.Tensor  # [B, L] 2-D mask of the pruned prompt (left padded)
    index_lists: list[torch.Tensor]  # kept absolute positions per row
    full_len: torch.Tensor  # [B] real (unpruned) prompt length: decode positions continue from here


@torch.no_grad()
def _pruned_prefill(
    lm: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    group_sizes: list[list[int]],
    selected_layer: int,
    alpha: float,
    cache: DynamicCache,
) -> _Prefill:
    """Prefill with Stage-2 pruning after layer `selected_layer`, filling `cache` with the pruned K/V."""
    model, config = lm.model, lm.config
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    real = attention_mask.bool()
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, S]

    hidden = inputs_embeds
    mask = _causal_mask(config, hidden, attention_mask, position_ids)
    pos_emb = model.rotary_emb(hidden, position_ids=position_ids)
    scores: list[torch.Tensor] = []
    for i, layer in enumerate(model.layers[: selected_layer + 1]):
        if i == selected_layer:
            q, k = _pre_rope_qk(layer.self_attn, layer.input_layernorm(hidden), num_heads, num_kv, head_dim)
            vis_pos = torch.where(visual_mask, torch.arange(hidden.shape[1], device=hidden.device), -1)
            last_visual = vis_pos.amax(dim=-1, keepdim=True)  # [B, 1]
            after = torch.arange(hidden.shape[1], device=hidden.device)[None] > last_visual
            query_mask = real & ~visual_mask & after
            scores = text_to_visual_scores(q, k, visual_mask, query_mask, key_mask=real)
        hidden = layer(
            hidden, attention_mask=mask, position_ids=position_ids, use_cache=True, position_embeddings=pos_emb,
            **{CACHE_ARG: cache},
        )

    index_lists = _row_index_lists(visual_mask, real, group_sizes, scores, alpha)
    index, pruned_mask = _left_pad_indices(index_lists, hidden.device)
    hidden = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
    pruned_pos = position_ids.gather(1, index)
    _gather_cache(cache, selected_layer + 1, index)

    mask = _causal_mask(config, hidden, pruned_mask, pruned_pos)
    pos_emb = model.rotary_emb(hidden, position_ids=pruned_pos)
    for layer in model.layers[selected_layer + 1 : config.num_hidden_layers]:
        # position_ids=None: gapped ids would look like packed sequences to flash-attention; RoPE comes
        # from position_embeddings, computed from the real (gapped) ids.
        hidden = layer(
            hidden, attention_mask=mask, position_ids=None, use_cache=True, position_embeddings=pos_emb,
            **{CACHE_ARG: cache},
        )
    logits = lm.lm_head(model.norm(hidden[:, -1:]))[:, -1]
    return _Prefill(logits, pruned_mask, index_lists, real.sum(dim=-1))


class _PrunedForward:
    """Stands in for `language_model.forward` during one `generate` call (set on a shallow copy of the model).

    The first call is generate's prefill: it runs the pruned prefill on the (possibly beam-expanded) prompt and
    fills the cache generate was given. Every later call is a decode step: the model's own forward on the
    pruned cache, with an attention mask sized to that cache and position ids that continue from the unpruned
    prompt length. Everything else (logits processors, sampling, beams, stopping, outputs) is generate's.
    """

    def __init__(self, lm: torch.nn.Module, visual_mask: torch.Tensor, group_sizes: list[list[int]],
                 selected_layer: int, alpha: float) -> None:
        self.lm, self.visual_mask, self.group_sizes = lm, visual_mask, group_sizes
        self.selected_layer, self.alpha = selected_layer, alpha
        self.__wrapped__ = lm.forward  # generate inspects the forward's signature
        self.prefill: _Prefill | None = None
        self.expand = 1

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **kwargs):
        cache = kwargs.pop(CACHE_ARG, None)
        if not isinstance(cache, DynamicCache):
            raise RuntimeError(
                f"PruneVid stage 2: generate did not pass the pruned DynamicCache to the model as `{CACHE_ARG}`"
            )
        if self.prefill is None:
            return self._prefill(inputs_embeds, attention_mask, cache)
        return self._decode(input_ids, inputs_embeds, cache, kwargs)

    def _prefill(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None, cache: DynamicCache):
        if embeds is None or cache.get_seq_length() != 0:
            raise RuntimeError("PruneVid stage 2: generate's first model call is not a prefill from inputs_embeds")
        rows, batch = embeds.shape[0], self.visual_mask.shape[0]
        self.expand = rows // batch  # generate repeats every row num_beams / num_return_sequences times
        if attention_mask is None:  # generate drops an all-ones mask
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        visual = self.visual_mask.to(embeds.device).repeat_interleave(self.expand, dim=0)
        groups = [g for g in self.group_sizes for _ in range(self.expand)]
        self.prefill = _pruned_prefill(
            self.lm, embeds, attention_mask.to(embeds.device), visual, groups, self.selected_layer, self.alpha, cache
        )
        return CausalLMOutputWithPast(logits=self.prefill.logits[:, None], **{CACHE_ARG: cache})

    def _decode(self, input_ids, inputs_embeds, cache: DynamicCache, kwargs: dict):
        new = input_ids if input_ids is not None else inputs_embeds
        cached, steps = cache.get_seq_length(), new.shape[1]
        prefill = self.prefill
        grown = cached + steps - prefill.pruned_mask.shape[1]  # tokens decoded so far, the new ones included
        mask = torch.cat([prefill.pruned_mask, prefill.pruned_mask.new_ones(new.shape[0], grown)], dim=-1)
        first = prefill.full_len[:, None] + (grown - steps)  # [B, 1] position of the first new token
        positions = first + torch.arange(steps, device=first.device)[None]
        _check_sliding_window(self.lm.config, int(positions.max()) + 1)
        if "cache_position" in kwargs:  # transformers 4.x: slots in the (pruned) cache, not positions
            kwargs["cache_position"] = torch.arange(cached, cached + steps, device=new.device)
        return self.__wrapped__(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions,
            **{CACHE_ARG: cache}, **kwargs,
        )


# Options that would make generate call the model in ways a pruned cache cannot serve.
_REFUSED_GENERATE_KWARGS = ("cache", "past_key_values", "assistant_model", "custom_generate", "prefill_chunk_size")
# Generation settings that select a decoding mode other than greedy / sampling / beams.
_MODE_OPTIONS = (
    "prompt_lookup_num_tokens", "assistant_early_exit", "penalty_alpha", "dola_layers", "num_beam_groups",
    "constraints", "force_words_ids",
)


def _merged_generation_options(lm: torch.nn.Module, generation_config, kwargs: dict) -> tuple[GenerationConfig, dict]:
    """One `GenerationConfig` for the call (`generation_config` or the model's, updated with the generation
    settings among `kwargs`) and the other keyword arguments (`streamer`, `logits_processor`, ...), so that
    `generate` gets each setting once. Raises `ValueError` naming any option that stage 2 cannot honour."""
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise ValueError(
            f"generation_config must be a transformers.GenerationConfig or None, got {type(generation_config).__name__}"
        )
    for name in _REFUSED_GENERATE_KWARGS:
        if kwargs.get(name) is not None:
            raise ValueError(f"PruneVid stage 2 does not support the generation option {name}; leave it unset")
    config = copy.deepcopy(generation_config if generation_config is not None else lm.generation_config)
    others = config.update(**kwargs)
    _check_generation_mode(config)
    return config, others


def _check_generation_mode(config: GenerationConfig) -> None:
    """Raise `ValueError` naming a setting of `config` that selects a mode stage 2 cannot run."""
    checks = (
        ("use_cache", config.use_cache is False, "True (stage 2 decodes from its pruned cache)"),
        ("cache_implementation", config.cache_implementation is not None, "None (stage 2 uses a dynamic cache)"),
        ("prefill_chunk_size", getattr(config, "prefill_chunk_size", None) is not None, "None"),
        ("output_attentions", bool(config.output_attentions), "False"),
        ("output_hidden_states", bool(config.output_hidden_states), "False"),
    )
    for name, bad, allowed in checks:
        if bad:
            raise ValueError(
                f"PruneVid stage 2 does not support the generation option {name}={getattr(config, name)!r}; "
                f"use {allowed}, or switch PruneVid off for this call"
            )
    mode = config.get_generation_mode()
    if mode not in _STAGE2_GENERATION_MODES:
        named = [name for name in _MODE_OPTIONS if getattr(config, name, None) not in (None, False, 1, [])]
        raise ValueError(
            f"PruneVid stage 2 supports greedy search, sampling and beam search, but the generation options "
            f"{named or list(_MODE_OPTIONS)} select {mode.value}; leave them unset or switch PruneVid off for this call"
        )


def _check_stage2_inputs(lm, inputs_embeds, attention_mask, visual_mask, group_sizes, selected_layer, alpha) -> None:
    config = lm.config
    num_layers = config.num_hidden_layers
    batch, seq_len = inputs_embeds.shape[:2]
    if attention_mask.shape != (batch, seq_len) or visual_mask.shape != (batch, seq_len):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} and visual_mask {tuple(visual_mask.shape)} must be "
            f"{(batch, seq_len)}"
        )
    if len(group_sizes) != batch:
        raise ValueError(f"group_sizes has {len(group_sizes)} rows for a batch of {batch}")
    if not 0 <= selected_layer < num_layers:
        raise ValueError(f"selected_layer must lie in [0, {num_layers - 1}], got {selected_layer}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    visual_mask = visual_mask.bool() & attention_mask.bool()
    for b in range(batch):
        n_visual = int(visual_mask[b].sum())
        if sum(group_sizes[b]) != n_visual:
            raise ValueError(f"row {b}: group sizes sum to {sum(group_sizes[b])} but it has {n_visual} visual tokens")
    attn = lm.model.layers[selected_layer].self_attn
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    _check_backbone(config, attn, head_dim)
    _check_sliding_window(config, int(attention_mask.sum(-1).max()))


def _stage2_stats(config, prefill: _Prefill, expand: int, visual_mask: torch.Tensor, selected_layer: int,
                  alpha: float) -> dict:
    """Per-row token and FLOPs accounting of the pruned prefill (one entry per input row)."""
    num_layers, hidden, inter = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    n_full = [int(n) for n in prefill.full_len[::expand].tolist()]
    n_pruned = [int(ix.numel()) for ix in prefill.index_lists[::expand]]
    n_visual = [int(v) for v in visual_mask.sum(-1).tolist()]
    return {
        "visual_tokens_in": n_visual,
        "visual_tokens_kept": [v - (f - p) for v, f, p in zip(n_visual, n_full, n_pruned)],
        "prefill_len_full": n_full,
        "prefill_len_pruned": n_pruned,
        "prefill_flops": [
            llm_prefill_flops([f] * (selected_layer + 1) + [p] * (num_layers - selected_layer - 1), hidden, inter)
            for f, p in zip(n_full, n_pruned)
        ],
        "prefill_flops_unpruned": [llm_prefill_flops([f] * num_layers, hidden, inter) for f in n_full],
        "selected_layer": selected_layer,
        "alpha": alpha,
    }


@torch.no_grad()
def pruned_generate(
    language_model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    group_sizes: list[list[int]],
    selected_layer: int,
    alpha: float,
    generation_config: GenerationConfig | None = None,
    return_stats: bool = True,
    **kwargs,
) -> tuple[torch.LongTensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput, dict]:
    """`language_model.generate(inputs_embeds=..., ...)` with PruneVid Stage 2 (Llama / Mistral / Qwen2 / Qwen3 / Phi3).

    Layers 0..selected_layer run on the full prompt; the visual tokens are then scored (pre-RoPE,
    unmasked attention of the text after the last visual token) and, per row, the top int(n * alpha)
    of every group are kept. Hidden states, position ids (original, with gaps) and the KV cache of
    layers 0..selected_layer are gathered to [text + kept visual]; the remaining layers run on the
    pruned sequence. Decoding is transformers' own `generate` on that pruned cache, at positions that
    continue from the unpruned prompt length (`S_full_row + i`).

    Args:
        language_model: `*ForCausalLM` with `.model.layers`, `.model.rotary_emb`, `.model.norm`, `.lm_head`.
        inputs_embeds: `[B, S, D]` prompt embeddings in the model dtype.
        attention_mask: `[B, S]` 1 for real tokens, 0 for (left) padding.
        visual_mask: `[B, S]` bool, visual token positions.
        group_sizes: per row, Stage-1 group sizes in visual-position order, summing to the row's visual
            count (empty for a row without visual tokens).
        selected_layer: 0-based layer after which tokens are pruned.
        alpha: kept fraction per group, in (0, 1].
        generation_config: passed to `language_model.generate` unchanged (None: the model's own).
        return_stats: fill the returned dict with per-row accounting.
        **kwargs: passed to `language_model.generate` unchanged: generation settings (`max_new_tokens`,
            `eos_token_id`, `do_sample`, `num_beams`, `output_scores`, `return_dict_in_generate`, ...) and
            `streamer`, `stopping_criteria`, `logits_processor`. Options that cannot run on a pruned cache
            (`use_cache=False`, `cache_implementation`, `past_key_values`, assisted / contrastive / DoLa
            decoding, `output_attentions`, `output_hidden_states`, `prefill_chunk_size`) raise `ValueError`.

    Returns:
        `(output, stats)`: `output` is exactly what `language_model.generate(inputs_embeds=inputs_embeds,
        attention_mask=attention_mask, generation_config=generation_config, **kwargs)` returns for these
        options (new token ids `[B * num_return_sequences, n_new]`, or a `GenerateDecoderOnlyOutput` /
        `GenerateBeamDecoderOnlyOutput` with `return_dict_in_generate=True`; its `past_key_values` is the
        pruned cache, whose slots are not positions, so do not continue generation from it); `stats` (empty unless
        `return_stats`) has lists per input row: `visual_tokens_in`, `visual_tokens_kept`, `prefill_len_full`,
        `prefill_len_pruned`, `prefill_flops`, `prefill_flops_unpruned`, plus `selected_layer` and `alpha`.
    """
    _check_stage2_inputs(language_model, inputs_embeds, attention_mask, visual_mask, group_sizes, selected_layer, alpha)
    generation_config, others = _merged_generation_options(language_model, generation_config, kwargs)
    visual_mask = visual_mask.bool() & attention_mask.bool()
    stage2 = _PrunedForward(language_model, visual_mask, group_sizes, selected_layer, alpha)
    model = copy.copy(language_model)  # shares every module and parameter; only `forward` differs
    model.forward = stage2
    output = model.generate(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, generation_config=generation_config,
        **{CACHE_ARG: DynamicCache()}, **others,
    )
    stats: dict = {}
    if return_stats:
        stats = _stage2_stats(language_model.config, stage2.prefill, stage2.expand, visual_mask, selected_layer, alpha)
    return output, stats
