"""Processor for PVC-InternVL (InternVL2 + Progressive Visual Token Compression).

`PVCInternVLProcessor` owns the prompt: it renders the conversation template, expands every `<image>`
into `<img>` + `<IMG_CONTEXT>` x n + `</img>`, tokenizes, pads and returns the model inputs. Pixel
loading (tiling, transforms, video frame sampling) lives in `media.py`; its public functions are
re-exported here.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Sequence

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .configuration_pvc_internvl import DataFlag, PVCInternVLConfig
from .conversation import (
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    VIDEO_PLACEHOLDER,
    ConversationTemplate,
    get_template,
)
from .layout import SampleLayout, left_pad, sample_layouts
from .media import (  # noqa: F401  (re-exported: `from processing import load_image, load_video`)
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageInput,
    build_target_ratios,
    dynamic_preprocess,
    get_index,
    image_to_tensor,
    load_image,
    load_video,
    load_video_frames,
    tile_grid,
)

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------
# Prompt pieces
# ----------------------------------------------------------------------------------------------------


def build_video_prompt(num_frames: int) -> str:
    """'Frame1: <image>\\nFrame2: <image>\\n...' (the PVC README video prompt)."""
    return "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_frames))


def is_video_prompt(text: str) -> bool:
    """Whether ``text`` holds the video prompt lines of ``build_video_prompt`` (``Frame1: <image>``)."""
    return re.search(re.escape(build_video_prompt(1)).replace("1", r"\d+"), text) is not None


def build_multi_image_prompt(num_images: int) -> str:
    """'Image-1: <image>\\nImage-2: <image>\\n...' (the InternVL2 multi-image prompt)."""
    return "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images))


def _default_placeholders(layout: SampleLayout) -> str:
    """What the official code prepends to a question without ``<image>``: one line per image / frame."""
    if layout.flag == DataFlag.VIDEO:
        return build_video_prompt(layout.size)
    if len(layout.image_tiles) == 1:
        return f"{IMAGE_PLACEHOLDER}\n"
    return build_multi_image_prompt(len(layout.image_tiles))


def _as_list(value: Any) -> list:
    """None -> [], a single item -> [item], a list/tuple -> list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


# ----------------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------------


class PVCInternVLProcessor(ProcessorMixin):
    """Turns conversations, prompts and media into the inputs of ``PVCInternVLChatModel.generate``.

    It owns the prompt: the conversation template (also as a Jinja chat template for
    ``apply_chat_template``), the expansion of every ``<image>`` into ``<img>`` + ``<IMG_CONTEXT>`` x n +
    ``</img>`` (n = ``num_image_token`` x ``image_repeat_time`` per image tile, x ``video_repeat_time`` per
    video frame), tokenization and left padding.

    Args:
        tokenizer: the checkpoint's tokenizer (it must know ``<img>``, ``</img>`` and ``<IMG_CONTEXT>``).
        image_size: tile size S in pixels.
        min_dynamic_patch, max_dynamic_patch: tiles per image (thumbnail not counted).
        use_thumbnail: append a whole-image thumbnail tile when an image has more than one tile.
        num_segments: frames sampled from a video by default.
        template: conversation template name (``internlm2-chat``, ``Hermes-2``, ``phi3-chat``).
        num_image_token: LLM tokens per encoded frame (64 for PVC, 256 for InternVL2 at 448 px).
        image_repeat_time, video_repeat_time: encoded frames per image tile / per video frame.
        chat_template: Jinja template; defaults to the one generated from ``template``.
    """

    # transformers 4.x reads the sub-processors from these (5.x from the __init__ signature).
    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer: Any = None,
        image_size: int = 448,
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        use_thumbnail: bool = True,
        num_segments: int = 32,
        template: str = "internlm2-chat",
        num_image_token: int = 64,
        image_repeat_time: int = 4,
        video_repeat_time: int = 1,
        chat_template: str | None = None,
        **kwargs: Any,
    ):
        if tokenizer is None:
            raise ValueError("PVCInternVLProcessor needs a tokenizer, got None")
        build_target_ratios(min_dynamic_patch, max_dynamic_patch)  # validates the range
        for name, value in (("image_size", image_size), ("num_segments", num_segments), ("num_image_token", num_image_token),
                            ("image_repeat_time", image_repeat_time), ("video_repeat_time", video_repeat_time)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PVCInternVLProcessor {name} must be a positive integer, got {value!r}")
        get_template(template)  # validates the name
        self.image_size = image_size
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail
        self.num_segments = num_segments
        self.template = template
        self.num_image_token = num_image_token
        self.image_repeat_time = image_repeat_time
        self.video_repeat_time = video_repeat_time
        super().__init__(tokenizer, chat_template=chat_template or get_template(template).jinja, **kwargs)
        self._check_image_tokens()

    @classmethod
    def from_model_config(cls, tokenizer: Any, config: PVCInternVLConfig, **overrides: Any) -> "PVCInternVLProcessor":
        """The processor matching a model configuration (tile size, tiling, template, tokens per frame)."""
        settings = dict(
            image_size=config.image_size,
            min_dynamic_patch=config.min_dynamic_patch,
            max_dynamic_patch=config.max_dynamic_patch,
            use_thumbnail=bool(config.use_thumbnail),
            template=config.template or "internlm2-chat",
            num_image_token=config.num_image_token,
            image_repeat_time=config.image_repeat_time,
            video_repeat_time=config.video_repeat_time,
        )
        settings.update(overrides)
        return cls(tokenizer, **settings)

    # ------------------------------------------------------------------------------------------ facts
    @property
    def conversation(self) -> ConversationTemplate:
        return get_template(self.template)

    def _check_image_tokens(self) -> None:
        vocab = self.tokenizer.get_vocab()
        missing = [token for token in (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN) if token not in vocab]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(missing)} token; use the checkpoint's InternVL2 tokenizer")

    def stop_token_ids(self) -> list[int]:
        """Ids that end an answer: the template's separator (``<|im_end|>``, ``<|end|>``)."""
        sep = self.conversation.sep
        token_id = self.tokenizer.convert_tokens_to_ids(sep)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not know the template separator {sep!r} (template {self.template!r})")
        return [int(token_id)]

    def tokens_per_tile(self, flag: DataFlag) -> int:
        """``<IMG_CONTEXT>`` tokens one image tile (flags 1, 2) or one video frame (flag 3) costs."""
        repeat = self.video_repeat_time if flag == DataFlag.VIDEO else self.image_repeat_time
        return self.num_image_token * repeat

    def _protected_tokens(self) -> list[str]:
        """Token strings user text must not contain: the image tokens, the template's control tokens (added
        tokens that occur in the template) and bos / eos / pad / unk. Grounding tokens (``<ref>``, ``<box>``)
        and the ``<image>`` / ``<video>`` placeholders stay allowed."""
        template = self.conversation
        template_text = template.system_template + template.user_role + template.assistant_role + template.sep
        protected = {IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN}
        protected.update(token for token in self.tokenizer.get_added_vocab() if token.strip() and token in template_text)
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            token = getattr(self.tokenizer, name, None)
            if isinstance(token, str) and token.strip():
                protected.add(token)
        return sorted(protected - {IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER})

    def check_user_text(self, text: str, what: str) -> None:
        """Refuse control / image tokens typed inside user text, so text cannot forge turns or image slots."""
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a string, got {type(text).__name__}")
        found = [token for token in self._protected_tokens() if token in text]
        if found:
            raise ValueError(
                f"{what} contains the special token(s) {', '.join(repr(t) for t in found)}; user text may not contain "
                "control or image tokens (use <image> / <video> placeholders for media)"
            )

    # ------------------------------------------------------------------------------------------ prompts
    def expand_placeholders(self, text: str, layout: SampleLayout | None) -> str:
        """Replace every ``<image>`` of a prompt, in order, by ``<img>`` + ``<IMG_CONTEXT>`` x n + ``</img>``."""
        found = text.count(IMAGE_PLACEHOLDER)
        expected = len(layout.image_tiles) if layout is not None else 0
        if found != expected:
            raise ValueError(f"the prompt has {found} {IMAGE_PLACEHOLDER} placeholders but there are {expected} images/frames")
        if layout is None:
            return text
        per_tile = self.tokens_per_tile(layout.flag)
        pieces = text.split(IMAGE_PLACEHOLDER)
        out = [pieces[0]]
        for tiles, piece in zip(layout.image_tiles, pieces[1:]):
            out.append(IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (per_tile * tiles) + IMG_END_TOKEN + piece)
        return "".join(out)

    def chat_prompt(
        self,
        question: str,
        layout: SampleLayout | None,
        history: Sequence[tuple[str, str]] | None = None,
        system_message: str | None = None,
    ) -> tuple[str, str]:
        """The official ``chat()`` prompt: the template around ``history`` and ``question``, placeholders expanded.

        A first question about media without ``<image>`` gets the official prefix (``<image>\\n``, one
        ``Image-k: <image>`` line per image, or one ``Frame{i}: <image>`` line per frame). Returns the prompt and
        the question as stored in the history.
        """
        self.check_user_text(question, "the question")
        history = _check_history(history)
        for turn, (old_question, old_answer) in enumerate(history):
            self.check_user_text(old_question, f"history[{turn}] question")
            self.check_user_text(old_answer, f"history[{turn}] answer")
            _refuse_placeholders(old_answer, f"history[{turn}] answer")
        if system_message is not None:
            self.check_user_text(system_message, "the system message")
            _refuse_placeholders(system_message, "the system message")
        places = {f"history[{turn}] question": q for turn, (q, _) in enumerate(history)}
        places["the question"] = question
        counts = {place: text.count(IMAGE_PLACEHOLDER) for place, text in places.items() if IMAGE_PLACEHOLDER in text}
        written = sum(counts.values())
        where = ", ".join(f"{place} has {count}" for place, count in counts.items())
        if layout is None and written:
            raise ValueError(f"no pixel_values were given, but {where} {IMAGE_PLACEHOLDER} placeholder(s)")
        if layout is not None:
            expected = len(layout.image_tiles)
            if written == 0 and not history:
                question = _default_placeholders(layout) + question
            elif written != expected:
                raise ValueError(
                    f"the sample has {expected} images/frames (num_patches_list has {expected} entries), but "
                    f"{where or 'no question has any'} {IMAGE_PLACEHOLDER} placeholder(s)"
                )
        prompt = self.conversation.render(list(history), question, system_message)
        return self.expand_placeholders(prompt, layout), question

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize expanded prompts (special tokens parsed) and left-pad them: ``(B, T)`` ids and mask."""
        rows = [torch.tensor(self.tokenizer(prompt)["input_ids"], dtype=torch.long) for prompt in prompts]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return left_pad(rows, pad if pad is not None else 0)

    def chat_inputs(
        self,
        questions: Sequence[str],
        pixel_values: torch.Tensor | None,
        histories: Sequence[Sequence[tuple[str, str]] | None] | None = None,
        data_flag: Any = None,
        split_sizes: Any = None,
        num_patches_list: Any = None,
        system_message: str | None = None,
    ) -> tuple[BatchFeature, list[str]]:
        """Model inputs for the official ``chat`` / ``batch_chat`` arguments (one question per sample).

        Returns the inputs of ``generate`` and the questions as stored in the history.
        """
        layouts: list[SampleLayout | None] = [None] * len(questions)
        if pixel_values is not None:
            layouts = sample_layouts(pixel_values.shape[0], data_flag, split_sizes, num_patches_list)
            if len(layouts) != len(questions):
                raise ValueError(f"there are {len(questions)} questions but the layout describes {len(layouts)} samples")
        histories = list(histories) if histories is not None else [None] * len(questions)
        rendered = [self.chat_prompt(q, lay, h, system_message) for q, lay, h in zip(questions, layouts, histories)]
        input_ids, attention_mask = self.tokenize_prompts([prompt for prompt, _ in rendered])
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pixel_values is not None:
            data.update(_layout_fields(pixel_values, layouts))
        return BatchFeature(data=data), [question for _, question in rendered]

    # ------------------------------------------------------------------------------------------ __call__
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        videos: Any = None,
        num_segments: int | Sequence[int | None] | None = None,
        bound: Sequence[float] | None = None,
        max_num: int | None = None,
        return_tensors: str | None = "pt",
        backend: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Prompts (+ media) -> ``input_ids``, ``attention_mask`` and, with media, ``pixel_values``, ``data_flag``,
        ``split_sizes``, ``num_patches_list``.

        ``text`` is one prompt or a batch (left padded). Each prompt holds one ``<image>`` per image, or one
        ``<video>`` (expanded into ``Frame{i}: <image>`` lines) or one ``<image>`` per frame for its video; a
        prompt without placeholders gets the official prefix. ``images``: for one prompt, an image or a list of
        images; for a batch, one image / list of images / None per prompt. ``videos``: one video path per
        prompt (or None); ``num_segments``: frames per video (one number, or one per prompt). ``max_num``
        overrides ``max_dynamic_patch`` for images; video frames are one tile each.
        """
        _check_call_options(text, kwargs)
        if return_tensors not in ("pt", None):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        texts, images, videos = _per_sample(text, images, videos)
        segments = list(num_segments) if isinstance(num_segments, (list, tuple)) else [num_segments] * len(texts)
        if len(segments) != len(texts):
            raise ValueError(f"num_segments has {len(segments)} entries for {len(texts)} prompts; give one per prompt")
        samples = [
            self._load_sample(index, prompt, sample_images, video, frames, bound, max_num, backend)
            for index, (prompt, sample_images, video, frames) in enumerate(zip(texts, images, videos, segments))
        ]
        with_media = [sample for sample in samples if sample[1] is not None]  # text-only prompts have no layout
        layouts: list[SampleLayout | None] = [None] * len(samples)
        pixel_values = None
        if with_media:
            pixel_values = torch.cat([sample[1] for sample in with_media])
            media_layouts = iter(sample_layouts(
                pixel_values.shape[0],
                [int(sample[3]) for sample in with_media],
                [sample[1].shape[0] for sample in with_media],
                [sample[2] for sample in with_media],
            ))
            layouts = [next(media_layouts) if sample[1] is not None else None for sample in samples]
        prompts = [self.expand_placeholders(sample[0], layout) for sample, layout in zip(samples, layouts)]
        input_ids, attention_mask = self.tokenize_prompts(prompts)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pixel_values is not None:
            data.update(_layout_fields(pixel_values, [layout for layout in layouts if layout is not None]))
        return BatchFeature(data=data)

    def _load_sample(self, index, prompt, images, video, num_segments, bound, max_num, backend):
        """(prompt with placeholders, pixel_values or None, tiles per <image>, flag) of one prompt."""
        for token in (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN):
            if token in prompt:
                raise ValueError(f"prompt {index} contains {token!r}; write {IMAGE_PLACEHOLDER} where an image goes")
        if isinstance(video, (list, tuple)):
            if len(video) != 1:
                raise ValueError(f"prompt {index}: one video per prompt is supported, got {len(video)}")
            video = video[0]
        if images and video is not None:
            raise ValueError(f"prompt {index}: give images or a video, not both")
        if video is not None:
            return self._load_video_sample(index, prompt, video, num_segments, bound, max_num, backend)
        if VIDEO_PLACEHOLDER in prompt:
            raise ValueError(f"prompt {index} has a {VIDEO_PLACEHOLDER} placeholder but no video was given")
        if not images:
            if IMAGE_PLACEHOLDER in prompt:
                raise ValueError(f"prompt {index} has {prompt.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholders but no images")
            return prompt, None, [], None
        limit = self.max_dynamic_patch if max_num is None else max_num
        tiles = [load_image(image, self.image_size, limit, self.min_dynamic_patch, self.use_thumbnail) for image in images]
        flag = DataFlag.IMAGE if len(images) == 1 else DataFlag.MULTI_IMAGE
        layout_prefix = f"{IMAGE_PLACEHOLDER}\n" if len(images) == 1 else build_multi_image_prompt(len(images))
        prompt = _with_placeholders(index, prompt, len(images), layout_prefix, "images")
        return prompt, torch.cat(tiles), [t.shape[0] for t in tiles], flag

    def _load_video_sample(self, index, prompt, video, num_segments, bound, max_num, backend):
        if max_num not in (None, 1):
            raise ValueError(f"video frames are one tile each; got max_num={max_num}")
        num_segments = self.num_segments if num_segments is None else num_segments
        pixel_values, tiles = load_video(
            video, bound=bound, input_size=self.image_size, max_num=1, num_segments=num_segments, backend=backend
        )
        frames = build_video_prompt(len(tiles))
        if VIDEO_PLACEHOLDER in prompt:
            if prompt.count(VIDEO_PLACEHOLDER) != 1 or IMAGE_PLACEHOLDER in prompt:
                raise ValueError(
                    f"prompt {index} has {prompt.count(VIDEO_PLACEHOLDER)} {VIDEO_PLACEHOLDER} and "
                    f"{prompt.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholders; a video takes one {VIDEO_PLACEHOLDER}"
                )
            prompt = prompt.replace(VIDEO_PLACEHOLDER, frames)
        prompt = _with_placeholders(index, prompt, len(tiles), frames, "frames")
        return prompt, pixel_values, tiles, DataFlag.VIDEO

    # ------------------------------------------------------------------------------------------ chat template
    def apply_chat_template(
        self,
        conversation: list[dict] | list[list[dict]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        continue_final_message: bool = False,
        processor_kwargs: dict | None = None,
        num_frames: int | None = None,
        **kwargs: Any,
    ):
        """Render conversations in transformers' message format; with ``tokenize=True`` also load their media
        (official preprocessing) and return the model inputs.

        Content items: ``{"type": "text", "text": ...}``, ``{"type": "image", "image" | "path" | "url": ...}``,
        ``{"type": "video", "path" | "video": ..., "num_frames": n}`` (n defaults to ``num_frames`` or
        ``num_segments``). Text typed by the user may not contain control or image tokens.
        """
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise ValueError("apply_chat_template needs a non-empty list of messages (or a list of such lists)")
        batched = isinstance(conversation[0], (list, tuple))
        conversations = [list(c) for c in conversation] if batched else [list(conversation)]
        media = [_conversation_media(c, self.check_user_text) for c in conversations]
        rendered = [
            self.tokenizer.apply_chat_template(
                c,
                chat_template=chat_template or self.chat_template,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tokenize=False,
            )
            for c in conversations
        ]
        if not tokenize:
            return rendered if batched else rendered[0]
        if not return_dict:
            raise ValueError("apply_chat_template(tokenize=True) needs return_dict=True (the inputs include pixel_values)")
        options = {**(processor_kwargs or {}), **kwargs}
        default_frames = options.pop("num_segments", num_frames)
        segments = [m["num_frames"] if m["num_frames"] is not None else default_frames for m in media]
        videos = [m["video"] for m in media]
        return self(
            text=rendered if batched else rendered[0],
            images=[m["images"] or None for m in media] if batched else media[0]["images"] or None,
            videos=videos if batched else videos[0],
            num_segments=segments if batched else segments[0],
            return_tensors=return_tensors or "pt",
            **options,
        )

    # ------------------------------------------------------------------------------------------ decoding
    def decode_answers(self, generated_ids: torch.Tensor) -> list[str]:
        """New-token ids ``(B, T)`` -> answers: each row cut at its first stop id (the template separator),
        special tokens dropped, surrounding white space stripped."""
        stop = set(self.stop_token_ids())
        rows = []
        for row in torch.as_tensor(generated_ids).tolist():
            end = next((i for i, token in enumerate(row) if token in stop), len(row))
            rows.append(row[:end])
        return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decoding used by the ``image-text-to-text`` pipeline: prompt + answer ids -> text (the pipeline removes
        the decoded prompt itself)."""
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """`ProcessorMixin.save_pretrained` (writes processing.py, processor_config.json with `auto_map` and the
        tokenizer files), then restores the tokenizer's in-memory `auto_map`, which the base class deletes."""
        tokenizer_auto_map = copy.deepcopy(self.tokenizer.init_kwargs.get("auto_map"))
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if tokenizer_auto_map is not None:
                self.tokenizer.init_kwargs["auto_map"] = tokenizer_auto_map


def _check_call_options(text: Any, options: dict) -> None:
    """The tokenizer / feature-extractor options that clients pass (transformers' processor convention): left
    padding to the longest prompt, no audio. ``ValueError`` for anything else."""
    if options.pop("padding", True) not in (True, "longest"):
        raise ValueError("the processor always pads a batch to its longest prompt (left padding)")
    side = options.pop("padding_side", None)
    one_prompt = not isinstance(text, (list, tuple)) or len(text) == 1
    if side not in (None, "left") and not (side == "right" and one_prompt):  # one prompt has nothing to pad
        raise ValueError(f"the processor pads batches on the left (decoder-only generation), got padding_side={side!r}")
    audios = options.pop("audios", None) or options.pop("audio", None)
    if audios is not None and len(_as_list(audios)):
        raise ValueError("this model takes images and videos, not audio; leave audios empty")
    if options:
        raise ValueError(f"unsupported processor arguments: {', '.join(sorted(options))}")


def _per_sample(text: Any, images: Any, videos: Any) -> tuple[list[str], list[list], list]:
    """Normalise (text, images, videos) to one entry per prompt.

    For a batch, ``images`` / ``videos`` are either one entry (an item, a list or None) per prompt, or one flat
    list of items across the batch, given to the prompts in the order of their placeholders (``<image>`` /
    ``<video>``), as transformers' processors do. An empty list is no media.
    """
    if text is None:
        text = ""
    batched = isinstance(text, (list, tuple))
    texts = list(text) if batched else [text]
    for index, prompt in enumerate(texts):
        if not isinstance(prompt, str):
            raise ValueError(f"text[{index}] must be a string, got {type(prompt).__name__}")
    if not texts:
        raise ValueError("text is an empty list; give at least one prompt")
    images, videos = _as_list(images) or None, _as_list(videos) or None
    if not batched:
        return texts, [_as_list(images)], [videos]
    images = _per_prompt("images", images, [t.count(IMAGE_PLACEHOLDER) for t in texts])
    videos = _per_prompt("videos", videos, [t.count(VIDEO_PLACEHOLDER) for t in texts])
    return texts, [_as_list(item) for item in images], [_as_list(item) or None for item in videos]


def _per_prompt(name: str, values: list | None, placeholders: list[int]) -> list:
    """One entry per prompt from ``values``: None -> nothing anywhere; a flat list of items whose length is the
    batch's placeholder count -> split in placeholder order; otherwise one entry per prompt."""
    if values is None:
        return [None] * len(placeholders)
    flat = not any(value is None or isinstance(value, (list, tuple)) for value in values)
    if flat and sum(placeholders) == len(values):
        items = iter(values)
        return [[next(items) for _ in range(count)] for count in placeholders]
    if len(values) != len(placeholders):
        raise ValueError(
            f"{name} has {len(values)} entries for {len(placeholders)} prompts with {sum(placeholders)} placeholders; "
            "give one entry (or None) per prompt, or one item per placeholder in prompt order"
        )
    return values


def _with_placeholders(index: int, prompt: str, count: int, prefix: str, kind: str) -> str:
    """``prefix + prompt`` if the prompt has no ``<image>``; the prompt if it has exactly ``count``."""
    found = prompt.count(IMAGE_PLACEHOLDER)
    if found == 0:
        return prefix + prompt
    if found != count:
        raise ValueError(f"prompt {index} has {found} {IMAGE_PLACEHOLDER} placeholders but {count} {kind} were given")
    return prompt


def _conversation_media(conversation: list[dict], check_text: Any) -> dict:
    """Images, the video and its frame count of one conversation; user text checked for control tokens."""
    images, videos, num_frames = [], [], None
    for turn, message in enumerate(conversation):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {turn} must be a dict with 'role' and 'content', got {message!r}")
        content = message["content"]
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"message {turn} content must be a string or a list of items, got {type(content).__name__}")
        for item in items:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                check_text(item.get("text"), f"message {turn} text")
                if VIDEO_PLACEHOLDER in item["text"]:
                    raise ValueError(f"message {turn} text contains {VIDEO_PLACEHOLDER}; add the video as a content item")
            elif kind == "image":
                images.append(_message_image(item, turn))
            elif kind == "video":
                videos.append(_message_video(item, turn))
                num_frames = item.get("num_frames", num_frames)
            else:
                raise ValueError(f"message {turn} has a content item of type {kind!r}; known: text, image, video")
    if len(videos) > 1 or (videos and images):
        raise ValueError(
            f"a conversation holds {len(images)} images and {len(videos)} videos; "
            "one sample is images or one video"
        )
    return {"images": images, "video": videos[0] if videos else None, "num_frames": num_frames}


def _refuse_placeholders(text: str, what: str) -> None:
    """Media placeholders belong in questions; ``ValueError`` naming where else one was typed."""
    for placeholder in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER):
        if placeholder in text:
            raise ValueError(f"{what} contains {placeholder}; media placeholders go in the questions only")


def _check_history(history: Any) -> list[tuple[str, str]]:
    """``history`` as a list of (question, answer) string pairs; ``ValueError`` naming a malformed turn."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise ValueError(f"history must be a list of (question, answer) pairs, got {type(history).__name__}")
    turns = []
    for turn, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise ValueError(f"history[{turn}] must be a (question, answer) pair of strings, got {pair!r}")
        turns.append((pair[0], pair[1]))
    return turns


def _message_image(item: dict, turn: int) -> Any:
    """The image of a content item: a PIL image, a local path, or a URL / base64 string (loaded by transformers)."""
    for key in ("image", "path", "url"):
        if item.get(key) is not None:
            value = item[key]
            if isinstance(value, str) and (value.startswith(("http://", "https://", "data:")) or key == "url"):
                from transformers.image_utils import load_image as load_remote_image

                return load_remote_image(value)
            return value
    raise ValueError(f"message {turn} has an image item without 'image', 'path' or 'url'")


def _message_video(item: dict, turn: int) -> Any:
    for key in ("video", "path"):
        if item.get(key) is not None:
            return item[key]
    raise ValueError(f"message {turn} has a video item without 'path' or 'video' (a local file)")


def _layout_fields(pixel_values: torch.Tensor, layouts: Sequence[SampleLayout]) -> dict[str, Any]:
    """The official layout fields of a batch, as ``generate`` takes them."""
    return {
        "pixel_values": pixel_values,
        "data_flag": torch.tensor([int(layout.flag) for layout in layouts], dtype=torch.long),
        "split_sizes": torch.tensor([layout.size for layout in layouts], dtype=torch.long),
        "num_patches_list": [list(layout.image_tiles) for layout in layouts],
    }


PVCInternVLProcessor.register_for_auto_class("AutoProcessor")
