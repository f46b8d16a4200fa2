"""Generation for PVC-InternVL: media encoded once per call (or once for many prompts), PruneVid around the
language model, and ``GenerationMixin``'s contract (every row is its prompt followed by its new ids)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.utils import logging

from .configuration_pvc_internvl import PruneVidConfig
from .conversation import IMG_CONTEXT_TOKEN
from .layout import SampleLayout, left_pad, sample_layouts
from .prunevid import CACHE_ARG, STAGE2_SETTINGS, llm_prefill_flops, merge_sample, pruned_generate

logger = logging.get_logger(__name__)
# transformers 5 tells prepare_inputs_for_generation which step is the first (is_first_iteration); 4.x does not
_MARKS_FIRST_ITERATION = "is_first_iteration" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters


@dataclass
class CallStats:
    """Token and FLOPs accounting of one call, one entry per sample (``stats["name"]`` reads a field too)."""

    data_flag: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # video frames (0 for images)
    tiles: list[int] = field(default_factory=list)  # image tiles (0 for videos)
    visual_tokens: list[int] = field(default_factory=list)  # from the vision encoder
    visual_tokens_after_stage1: list[int] = field(default_factory=list)
    stage1_applied: list[bool] = field(default_factory=list)
    visual_tokens_after_stage2: list[int] = field(default_factory=list)
    prefill_flops: list[float] = field(default_factory=list)  # one entry per prompt row

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]


@dataclass
class EncodedMedia:
    """The visual tokens of a call's samples (:meth:`~PVCInternVLGenerationMixin.encode_media`): pass it as
    ``visual_features`` to ``generate`` / ``prefill`` with prompts built for the same media."""

    layouts: list[SampleLayout] | None  # None: a bare (blocks, L, D) tensor given as visual_features
    samples: list[torch.Tensor]  # per sample, in slot order: (blocks, L, D), or (n, 1, D) after PruneVid stage 1
    frame_counts: list[list[int] | None]  # tokens per frame after stage 1 (None where not merged)
    groups: list[list[int]]  # stage-2 token groups (empty where PruneVid does not prune)
    prunevid: PruneVidConfig
    stats: CallStats

    @property
    def pruned(self) -> bool:
        return self.prunevid.enabled and any(layout.is_video for layout in self.layouts or [])

    def tokens(self) -> torch.Tensor:
        """All visual tokens in slot order, ``(n, D)``."""
        return torch.cat([s.reshape(-1, s.shape[-1]) for s in self.samples])


class PVCInternVLGenerationMixin:
    """``encode_media``, ``prefill`` and ``generate`` of :class:`PVCInternVLChatModel`."""

    def _prunevid_settings(self, overrides: dict | None, base: PruneVidConfig | None = None) -> PruneVidConfig:
        return (base or self.config.prunevid).merged(overrides, self.config.llm_config.num_hidden_layers)

    @torch.no_grad()
    def encode_media(
        self, pixel_values: torch.Tensor, data_flag: Any = None, split_sizes: Any = None, num_patches_list: Any = None,
        prunevid: dict | None = None, input_ids: torch.LongTensor | None = None, attention_mask: Any = None,
    ) -> EncodedMedia:
        """Encode media once for several prompts (vision encoder, then PruneVid stage 1 on the videos when it is on);
        ``model.encode_media(**processor(videos=path))`` works, the prompt checked against the media."""
        self.model.check_pixels(pixel_values)
        layouts = sample_layouts(pixel_values.shape[0], data_flag, split_sizes, num_patches_list)
        if input_ids is not None:
            _checked_prompt(input_ids, attention_mask)
            check_slots(self.config, input_ids, layouts, self.model.require_context_id())
        return self._encode(pixel_values, layouts, self._prunevid_settings(prunevid))

    def _encode(self, pixel_values: torch.Tensor, layouts: list[SampleLayout], settings: PruneVidConfig) -> EncodedMedia:
        """The vision encoder, then PruneVid stage 1 on each video sample when PruneVid is on."""
        samples = self.model.encode_samples(pixel_values, layouts)
        tokens = [int(s.shape[0] * s.shape[1]) for s in samples]
        stats = CallStats(
            data_flag=[int(layout.flag) for layout in layouts],
            frames=[layout.size if layout.is_video else 0 for layout in layouts],
            tiles=[0 if layout.is_video else layout.size for layout in layouts],
            visual_tokens=tokens, visual_tokens_after_stage1=list(tokens), stage1_applied=[False] * len(layouts),
        )
        media = EncodedMedia(layouts, samples, [None] * len(layouts), [[] for _ in layouts], settings, stats)
        for index, layout in enumerate(layouts if media.pruned else []):
            if not layout.is_video:
                continue
            frames = samples[index].reshape(layout.size, -1, samples[index].shape[-1])  # (T, video_repeat_time * L, D)
            merged = merge_sample(frames, settings) if settings.enable_stage1 else None
            if merged is None:  # one stage-2 group per frame
                if settings.enable_stage1:
                    logger.warning(
                        f"PruneVid stage 1 skipped for sample {index}: it has {layout.size} frames, fewer than the "
                        f"{settings.k} it needs (k={settings.k}, "
                        f"temporal_segment_ratio={settings.temporal_segment_ratio})"
                    )
                media.groups[index] = [frames.shape[1]] * layout.size
                continue
            samples[index] = merged.features.unsqueeze(1)
            media.frame_counts[index] = merged.frame_token_counts
            media.groups[index] = merged.group_sizes
            stats.visual_tokens_after_stage1[index] = int(merged.features.shape[0])
            stats.stage1_applied[index] = True
        return media

    def _call_media(self, input_ids, pixel_values, visual_features, layout, prunevid, gen_config) -> EncodedMedia | None:
        """The encoded media of a call, checked against the prompt: encoded now from ``pixel_values``, or given."""
        if pixel_values is not None and visual_features is not None:
            raise ValueError("give pixel_values or precomputed visual_features, not both")
        if pixel_values is not None:
            self.model.check_pixels(pixel_values)
            layouts = sample_layouts(pixel_values.shape[0], *layout)
            check_slots(self.config, input_ids, layouts, self.model.require_context_id())
        elif any(value is not None for value in layout):
            raise ValueError("data_flag / split_sizes / num_patches_list were given without pixel_values")
        if isinstance(visual_features, EncodedMedia):
            base = visual_features.prunevid
            settings = self._prunevid_settings(prunevid, base)
            changed = [k for k, v in settings.settings().items() if v != base.settings()[k] and k not in STAGE2_SETTINGS]
            if changed:
                raise ValueError(
                    f"the media were encoded with PruneVid {base.settings()}; prunevid={prunevid} changes {changed}, "
                    f"which stage 1 used: pass them to encode_media (per call, only {list(STAGE2_SETTINGS)} may change)"
                )
            check_slots(self.config, input_ids, visual_features.layouts, self.model.require_context_id())
            return dataclasses.replace(visual_features, prunevid=settings, stats=copy.deepcopy(visual_features.stats))
        settings = self._prunevid_settings(prunevid)
        if visual_features is not None:  # (blocks, L, D) for the prompt's slots, without a layout: no PruneVid
            if not torch.is_tensor(visual_features) or visual_features.ndim not in (2, 3):
                raise ValueError(
                    "visual_features must be the EncodedMedia of encode_media or a (blocks, L, D) tensor, got "
                    f"{tuple(visual_features.shape) if torch.is_tensor(visual_features) else type(visual_features).__name__}"
                )
            tokens = visual_features.shape[:-1].numel()  # blocks * L
            stats = CallStats(visual_tokens=[tokens], visual_tokens_after_stage1=[tokens])
            return EncodedMedia(None, [visual_features], [None], [[]], settings, stats)
        if pixel_values is None:
            return None
        if not (settings.enabled and settings.enable_stage1 and any(layout.is_video for layout in layouts)):
            check_budget(self.config, input_ids.shape[1], gen_config)  # the prompt keeps its length: before the encoder
        return self._encode(pixel_values, layouts, settings)

    def _llm_prompt(self, input_ids, attention_mask, media: EncodedMedia | None):
        """The ids and mask the language model sees (the video runs re-laid to the stage-1 token counts) and the
        stage-2 token groups of every row (empty for rows PruneVid does not prune)."""
        if media is None or not media.pruned:
            return input_ids, attention_mask, [[] for _ in range(input_ids.shape[0])]
        context_id = self.model.require_context_id()
        rows_with_media = media_rows(input_ids == context_id)
        if len(media.layouts) != len(rows_with_media):
            raise ValueError(f"PruneVid needs one sample per prompt row with media: {len(media.layouts)} samples for "
                             f"{len(rows_with_media)} rows")
        rows = [input_ids[row][attention_mask[row].bool()] for row in range(input_ids.shape[0])]
        groups = [[] for _ in rows]
        for index, row in enumerate(rows_with_media):
            if media.frame_counts[index] is not None:
                rows[row] = relayout_row(rows[row], context_id, media.frame_counts[index])
            groups[row] = media.groups[index]
        padding = input_ids[~attention_mask.bool()]  # any row's padding: row 0 may be the longest prompt
        new_ids, new_mask = left_pad(rows, int(padding[0]) if padding.numel() else 0)
        return new_ids.to(input_ids.device), new_mask.to(attention_mask.device), groups

    @torch.no_grad()
    def prefill(self, input_ids: torch.LongTensor, visual_features: EncodedMedia, attention_mask: torch.Tensor | None = None):
        """The KV cache of a prompt prefix that holds all of ``visual_features``' slots (e.g. the system prompt and
        the video before the question), as the language model sees it; pass a copy of it as ``past_key_values``
        to ``generate`` with each full prompt and the same ``visual_features``."""
        if not isinstance(visual_features, EncodedMedia):
            raise ValueError(f"prefill needs the EncodedMedia of encode_media, got {type(visual_features).__name__}")
        if visual_features.pruned and visual_features.prunevid.enable_stage2:
            raise ValueError("PruneVid stage 2 keeps the visual tokens each question attends to, so a prefix cache "
                             "cannot be shared; reuse the EncodedMedia alone (stage 1 and the vision encoder), or "
                             "encode with prunevid={'enable_stage2': False}")
        attention_mask = _checked_prompt(input_ids, attention_mask)
        check_slots(self.config, input_ids, visual_features.layouts, self.model.require_context_id())
        ids, mask, _ = self._llm_prompt(input_ids, attention_mask, visual_features)
        self.model.reset_dynamic_rope()
        out = self(input_ids=ids, attention_mask=mask, visual_embeds=self._row_visual(ids, visual_features.tokens()),
                   use_cache=True, logits_to_keep=1)  # only the cache is wanted
        return getattr(out, CACHE_ARG)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
        attention_mask: torch.LongTensor | None = None, visual_features: EncodedMedia | torch.Tensor | None = None,
        generation_config: GenerationConfig | dict | None = None, data_flag: Any = None, split_sizes: Any = None,
        num_patches_list: Any = None, prunevid: dict | None = None, return_stats: bool = False, **kwargs,
    ):
        """``GenerationMixin.generate`` with the visual tokens in the prompt's ``IMG_CONTEXT_TOKEN`` slots: each row is
        its prompt followed by its new ids (also after PruneVid stage 1 shortened the prompt the LLM sees; with
        ``inputs_embeds`` alone, the new ids only). PruneVid stage 2 decodes with ``prunevid.pruned_generate``.
        Settings: ``self.generation_config`` < ``generation_config`` (a ``GenerationConfig`` or a dict) < keyword
        arguments; ``eos_token_id`` adds to the checkpoint's stop ids. Args:
            input_ids, attention_mask: ``(B, T)``, left padded (``PVCInternVLProcessor`` output).
            pixel_values: ``(num_tiles, 3, S, S)``; or ``visual_features``: the :class:`EncodedMedia` of
                :meth:`encode_media` (its stage-1 settings are kept) or a ``(blocks, L, D)`` tensor.
            data_flag, split_sizes, num_patches_list: the layout of the samples (``layout.sample_layouts``).
            prunevid: per-call overrides of ``config.prunevid``; return_stats: also return the :class:`CallStats`.
        """
        gen_config, model_kwargs = self._generation_config(generation_config, kwargs)
        embeds = model_kwargs.pop("inputs_embeds", None)  # the caller's prompt embeddings, if any
        if input_ids is None and (embeds is None or (pixel_values is None and visual_features is None)):
            if pixel_values is not None or visual_features is not None:
                raise ValueError("give input_ids (or inputs_embeds) with pixel_values / visual_features: they mark the slots")
            output = GenerationMixin.generate(self, inputs_embeds=embeds, attention_mask=attention_mask,
                                              generation_config=gen_config, **model_kwargs)
            return (output, CallStats()) if return_stats else output
        slots_only = input_ids is None  # media with embeddings alone: the slots hold the IMG_CONTEXT_TOKEN embedding
        input_ids = self.model.slot_ids(embeds) if slots_only else input_ids
        attention_mask = _checked_prompt(input_ids, attention_mask)
        media = self._call_media(input_ids, pixel_values, visual_features, (data_flag, split_sizes, num_patches_list),
                                 prunevid, gen_config)
        pruned = media is not None and media.pruned
        if pruned and embeds is not None:
            raise ValueError("PruneVid re-lays and prunes the prompt, so it needs input_ids without inputs_embeds")
        ids, mask, groups = self._llm_prompt(input_ids, attention_mask, media)
        if pruned and media.prunevid.enable_stage1:
            check_budget(self.config, ids.shape[1], gen_config)
        stats = media.stats if media is not None else CallStats()
        visual = media.tokens() if media is not None else None
        self.model.reset_dynamic_rope()
        if pruned and media.prunevid.enable_stage2 and any(groups):
            embeds = self.model.merge_visual_tokens(ids, self.get_input_embeddings()(ids), visual)
            output = self._generate_stage2(embeds, mask, ids == self.model.require_context_id(), groups, media.prunevid,
                                           gen_config, model_kwargs, stats)
            output = _after_prompt(output, input_ids)
        else:
            output = self._generate_dense(ids, mask, visual, embeds, slots_only, gen_config, model_kwargs, stats)
            output = output if slots_only else _after_prompt(output, input_ids, seen_length=ids.shape[1])
        return (output, stats) if return_stats else output

    def _generate_dense(self, ids, mask, visual, embeds, slots_only, gen_config, model_kwargs, stats):
        """``GenerationMixin.generate`` on the prompt the LLM sees (``slots_only``: embeddings, ``ids`` mark slots)."""
        stats.visual_tokens_after_stage2 = list(stats.visual_tokens_after_stage1)
        llm = self.config.llm_config
        stats.prefill_flops = [llm_prefill_flops([int(n)] * llm.num_hidden_layers, llm.hidden_size,
                                                 llm.intermediate_size) for n in mask.sum(dim=1).tolist()]
        if slots_only:  # media always come with it; GenerationMixin then returns the new ids only
            embeds, ids = self.model.merge_visual_tokens(ids, embeds, visual), None
        elif visual is not None:
            model_kwargs.update(visual_embeds=self._row_visual(ids, visual), visual_prompt_length=ids.shape[1])
        if embeds is not None:
            model_kwargs["inputs_embeds"] = embeds
        return GenerationMixin.generate(self, input_ids=ids, attention_mask=mask, generation_config=gen_config,
                                        **model_kwargs)

    def _generate_stage2(self, embeds, mask, visual_mask, groups, settings, gen_config, model_kwargs, stats):
        """PruneVid stage 2 for the rows with groups (image rows are not pruned); fills the stage-2 accounting."""
        pruned_rows = torch.tensor([bool(g) for g in groups], device=visual_mask.device)
        output, stage2 = pruned_generate(
            self, embeds, mask, visual_mask=visual_mask & pruned_rows[:, None], group_sizes=groups,
            selected_layer=settings.selected_layer, alpha=settings.alpha, generation_config=gen_config, **model_kwargs,
        )
        rows, kept = media_rows(visual_mask), stage2["visual_tokens_kept"]
        stats.visual_tokens_after_stage2 = [int(kept[row]) if groups[row] else before
                                            for row, before in zip(rows, stats.visual_tokens_after_stage1)]
        stats.prefill_flops = [float(f) for f in stage2["prefill_flops"]]
        return output

    def prepare_inputs_for_generation(self, input_ids, *args, inputs_embeds=None, visual_embeds=None,
                                      visual_prompt_length=None, **kwargs):
        """``GenerationMixin``'s inputs, plus ``visual_embeds`` on steps that see the prompt (all without a cache)."""
        inputs = super().prepare_inputs_for_generation(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)
        if _MARKS_FIRST_ITERATION:
            first = bool(kwargs.get("is_first_iteration"))
        else:  # transformers 4.x: the first step starts at position 0 or after a prefix cache (> 1 id)
            position = kwargs.get("cache_position")
            first = position is None or int(position[0]) == 0 or position.shape[0] > 1
        if visual_embeds is not None and (first or not kwargs.get("use_cache", True)):
            inputs["visual_embeds"] = visual_embeds
            ids = inputs.get("input_ids")
            if ids is not None and visual_prompt_length is not None and ids.shape[1] > visual_prompt_length:
                # no cache: the prompt again plus the new ids, which are not slots (not even an image-context id)
                after_prompt = torch.arange(ids.shape[1], device=ids.device) >= visual_prompt_length
                inputs.update(inputs_embeds=self.get_input_embeddings()(ids), input_ids=ids.masked_fill(after_prompt, -1))
        return inputs

    def _row_visual(self, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``(n, D)`` in slot order -> ``(B, V, D)``, row ``b`` holding its slots' tokens last (zero
        padded in front): ``GenerationMixin`` repeats rows for beams, and a step after a prefix cache takes the last."""
        counts = (input_ids == self.model.require_context_id()).sum(dim=1).tolist()
        if sum(counts) != visual.shape[0]:
            raise ValueError(
                f"the prompt has {sum(counts)} {IMG_CONTEXT_TOKEN} tokens but the visual features give {visual.shape[0]} "
                "visual tokens; build the prompt with the processor for the same media"
            )
        rows = visual.new_zeros(len(counts), max(counts), visual.shape[-1])
        for row, piece in enumerate(visual.split(counts)):
            rows[row, rows.shape[1] - piece.shape[0] :] = piece
        return rows

    def _generation_config(self, generation_config: Any, kwargs: dict) -> tuple[GenerationConfig, dict]:
        """The call's ``GenerationConfig`` (model defaults < ``generation_config`` < keyword arguments) and the
        remaining keyword arguments (``streamer``, ``stopping_criteria``, ...), which are not generation settings."""
        settings = {**generation_settings(generation_config), **kwargs}
        for name in ("max_new_tokens", "max_length"):  # before GenerationConfig.update, which compares them with ints
            value = settings.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        merged = copy.deepcopy(self.generation_config)
        model_kwargs = merged.update(**settings)
        model_kwargs.pop("transformers_version", None)
        if merged.eos_token_id is not None:  # a caller's stop ids add to the checkpoint's
            stops = _id_list(self.generation_config.eos_token_id)
            merged.eos_token_id = stops + [i for i in _id_list(merged.eos_token_id) if i not in stops]
        merged.validate()
        return merged, model_kwargs


def check_slots(config, input_ids: torch.Tensor, layouts: list[SampleLayout], context_id: int) -> None:
    """The prompt's ``IMG_CONTEXT_TOKEN`` count must equal the visual tokens the layouts give (checked before encoding)."""
    expected = sum(config.tokens_per_tile(layout.flag) * layout.size for layout in layouts)
    found = int((input_ids == context_id).sum())
    if found != expected:
        raise ValueError(
            f"the prompt has {found} {IMG_CONTEXT_TOKEN} tokens but pixel_values give {expected} visual tokens "
            f"({sum(layout.size for layout in layouts)} tiles/frames, {config.num_image_token} tokens per encoded "
            "frame); build the prompt with PVCInternVLProcessor"
        )


def check_budget(config, prompt_length: int, gen_config: GenerationConfig) -> None:
    """The prompt plus the requested new tokens must fit the language model's positions."""
    limit = config.max_context_length
    if not limit:
        return
    if prompt_length > limit:
        raise ValueError(
            f"the prompt has {prompt_length} tokens but the language model accepts at most {limit} "
            f"(max_position_embeddings {config.llm_config.max_position_embeddings}); use fewer frames or tiles"
        )
    if gen_config.max_new_tokens is not None:
        total, asked = prompt_length + gen_config.max_new_tokens, f"max_new_tokens={gen_config.max_new_tokens}"
    else:  # with inputs_embeds, max_length counts the new tokens only when it is below the prompt length
        max_length = gen_config.max_length if gen_config.max_length is not None else GenerationConfig().max_length
        total, asked = max(max_length or 0, prompt_length), f"max_length={max_length}"
    if total > limit:
        raise ValueError(
            f"{asked} with a prompt of {prompt_length} tokens needs {total} positions, but the language model "
            f"accepts at most {limit}; at most max_new_tokens={limit - prompt_length} fit"
        )


def generation_settings(generation_config: GenerationConfig | dict | None) -> dict:
    """A caller's ``generation_config`` as a dict of settings (a ``GenerationConfig``'s public, non-default ones)."""
    if isinstance(generation_config, GenerationConfig):  # not generate's private tensors
        return {k: v for k, v in generation_config.to_diff_dict().items() if not k.startswith("_")}
    if generation_config is None or isinstance(generation_config, dict):
        return dict(generation_config or {})
    raise ValueError(f"generation_config must be a GenerationConfig or a dict, got {type(generation_config).__name__}")


def media_rows(visual_mask: torch.Tensor) -> list[int]:
    """The batch rows whose ``(B, T)`` mask marks ``IMG_CONTEXT_TOKEN`` positions, in order: the rows of the samples."""
    return [int(row) for row in visual_mask.any(dim=1).nonzero().flatten()]


def relayout_row(ids: torch.Tensor, context_id: int, counts: list[int]) -> torch.Tensor:
    """Give the ``IMG_CONTEXT_TOKEN`` runs of one prompt row new lengths ``counts``: one run per frame (video
    prompts) takes ``counts[i]`` each; a single run takes their sum."""
    is_ctx = ids == context_id
    edges = torch.diff(is_ctx.long(), prepend=is_ctx.new_zeros(1).long(), append=is_ctx.new_zeros(1).long())
    starts, ends = (edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()
    if len(starts) == len(counts):
        lengths = counts
    elif len(starts) == 1:
        lengths = [sum(counts)]
    else:
        raise ValueError(f"the video prompt has {len(starts)} {IMG_CONTEXT_TOKEN} runs for {len(counts)} frames")
    pieces, last = [], 0
    for start, end, length in zip(starts, ends, lengths):
        pieces += [ids[last:start], ids.new_full((int(length),), context_id)]
        last = end
    return torch.cat(pieces + [ids[last:]])


def _checked_prompt(input_ids: Any, attention_mask: Any) -> torch.Tensor:
    """``input_ids`` must be an integer ``(B, T)`` tensor; returns the attention mask (all ones when None)."""
    if not torch.is_tensor(input_ids) or input_ids.ndim != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor (batch, length), got {shape}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if not torch.is_tensor(attention_mask) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if torch.is_tensor(attention_mask) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a tensor of the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    return attention_mask


def _after_prompt(output: Any, prompt_ids: torch.Tensor, seen_length: int = 0) -> Any:
    """Ids ``(R, seen_length + N)`` (or an output's ``.sequences``), the first ``seen_length`` being the prompt the LLM
    saw, -> the caller's prompt + the new ids, as ``GenerationMixin`` returns them for ``input_ids``."""
    sequences = output.sequences if hasattr(output, "sequences") else output
    prompt = prompt_ids.to(sequences.device).repeat_interleave(sequences.shape[0] // prompt_ids.shape[0], dim=0)
    full = torch.cat([prompt, sequences[:, seen_length:]], dim=1)
    if hasattr(output, "sequences"):
        output.sequences = full
        return output
    return full


def _id_list(ids: Any) -> list[int]:
    """``eos_token_id`` (None, an id, or a list or tensor of ids) as a list."""
    return [] if ids is None else [int(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]

