"""Processor for PVC-InternVL: prompts, chat template, tokenization and the model inputs (pixels from `media.py`,
whose `load_image` / `load_video` are re-exported here; prompt text from `conversation.py`)."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from typing import Any, Sequence

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import load_image as load_remote_image
from transformers.processing_utils import ProcessorMixin

from .configuration_pvc_internvl import DataFlag, PVCInternVLConfig, tokens_per_tile
from .conversation import IMAGE_PLACEHOLDER, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, VIDEO_PLACEHOLDER
from .conversation import ConversationTemplate, build_video_prompt, get_template, media_prefix
from .layout import SampleLayout, left_pad, sample_layouts
from .media import build_target_ratios, load_image, load_video

# The checkpoint's settings: `from_model_config` copies them from the model's config, `save_pretrained` writes them.
MODEL_SETTINGS = ("image_size", "min_dynamic_patch", "max_dynamic_patch", "use_thumbnail", "template",
                  "num_image_token", "image_repeat_time", "video_repeat_time")
_IMAGE_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN)
# The keys a message's content item of each kind may hold its media under, in order of preference, and how to say so.
_MEDIA_KEYS = {"image": (("image", "path", "url"), "an image item without 'image', 'path' or 'url'"),
               "video": (("video", "path"), "a video item without 'path' or 'video' (a local file)")}
_REMOTE = ("http://", "https://", "data:")  # image strings transformers' load_image fetches or decodes


def pad_token_id(tokenizer: Any, *fallbacks: int | None) -> int:
    """The first of ``tokenizer.pad_token_id, *fallbacks`` that is not None (e.g. ``eos_token_id`` as fallback)."""
    for token_id in (getattr(tokenizer, "pad_token_id", None), *fallbacks):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"the tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '')!r}) has no "
                     "pad token and no fallback id was given; set tokenizer.pad_token (for instance to its eos token)")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class PVCInternVLProcessor(ProcessorMixin):
    """Turns conversations, prompts and media into the inputs of ``PVCInternVLChatModel.generate``: the template
    (also as Jinja for ``apply_chat_template``), ``<image>`` expanded into image tokens, tokenization, left padding.
    Build it with ``AutoProcessor.from_pretrained(checkpoint)`` or ``from_model_config(tokenizer, config)``.

    Args:
        tokenizer: the checkpoint's tokenizer (it must know the image tokens).
        image_size ... video_repeat_time: the ``MODEL_SETTINGS``, documented in ``PVCInternVLConfig``.
        num_segments: frames sampled from a video when a call does not say (the processor's own setting).
        chat_template: Jinja template; defaults to the one generated from ``template``.
    """

    # transformers 4.x reads the sub-processors from these (5.x from the __init__ signature).
    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self, tokenizer: Any = None, image_size: int | None = None, min_dynamic_patch: int | None = None,
        max_dynamic_patch: int | None = None, use_thumbnail: bool | None = None, num_segments: int = 32,
        template: str | None = None, num_image_token: int | None = None, image_repeat_time: int | None = None,
        video_repeat_time: int | None = None, chat_template: str | None = None, **kwargs: Any,
    ):
        if tokenizer is None:
            raise ValueError("PVCInternVLProcessor needs a tokenizer, got None")
        settings = dict(image_size=image_size, min_dynamic_patch=min_dynamic_patch, max_dynamic_patch=max_dynamic_patch,
                        use_thumbnail=use_thumbnail, template=template, num_image_token=num_image_token,
                        image_repeat_time=image_repeat_time, video_repeat_time=video_repeat_time, num_segments=num_segments)
        missing = [name for name in MODEL_SETTINGS if settings[name] is None]
        if missing:
            raise ValueError(
                f"PVCInternVLProcessor got no {', '.join(missing)}: these settings are the checkpoint's and have no "
                "defaults; build the processor with AutoProcessor.from_pretrained(checkpoint) or "
                "PVCInternVLProcessor.from_model_config(tokenizer, config)"
            )
        build_target_ratios(min_dynamic_patch, max_dynamic_patch)  # validates the range
        for name in ("image_size", "num_image_token", "image_repeat_time", "video_repeat_time", "num_segments"):
            value = settings[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PVCInternVLProcessor {name} must be a positive integer, got {value!r}")
        if not isinstance(use_thumbnail, bool):
            raise ValueError(f"PVCInternVLProcessor use_thumbnail must be True or False, got {use_thumbnail!r}")
        default_chat_template = get_template(template).jinja  # validates the name
        for name, value in settings.items():
            setattr(self, name, value)
        super().__init__(tokenizer, chat_template=chat_template or default_chat_template, **kwargs)
        missing = [token for token in _IMAGE_TOKENS if token not in self.tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(missing)} token; use the checkpoint's InternVL2 tokenizer")

    @classmethod
    def from_model_config(cls, tokenizer: Any, config: PVCInternVLConfig, **overrides: Any) -> "PVCInternVLProcessor":
        """The processor of ``config``'s ``MODEL_SETTINGS``; ``overrides`` replace any, or set ``num_segments``."""
        settings = {name: getattr(config, name) for name in MODEL_SETTINGS}
        return cls(tokenizer, **{**settings, **overrides})

    @property
    def conversation(self) -> ConversationTemplate:
        return get_template(self.template)

    def stop_token_ids(self) -> list[int]:
        """Ids that end an answer: the template's separator."""
        sep = self.conversation.sep
        token_id = self.tokenizer.convert_tokens_to_ids(sep)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not know the template separator {sep!r} (template {self.template!r})")
        return [int(token_id)]

    def tokens_per_tile(self, flag: DataFlag) -> int:
        """Context tokens one image tile (flags 1, 2) or one video frame (flag 3) costs."""
        return tokens_per_tile(flag, self.num_image_token, self.image_repeat_time, self.video_repeat_time)

    def check_user_text(self, text: str, what: str) -> None:
        """Refuse, so that user text cannot forge turns or image slots, the image tokens, the template's control
        tokens (added tokens that occur in it) and bos / eos / pad / unk; ``<ref>``, ``<box>``, ``<image>`` pass."""
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a string, got {type(text).__name__}")
        template = self.conversation
        template_text = template.system_template + template.user_role + template.assistant_role + template.sep
        specials = [getattr(self.tokenizer, name, None) for name in ("bos_token", "eos_token", "pad_token", "unk_token")]
        protected = {*_IMAGE_TOKENS, *(t for t in self.tokenizer.get_added_vocab() if t in template_text), *specials}
        allowed = (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)
        found = sorted(t for t in protected if isinstance(t, str) and t.strip() and t in text and t not in allowed)
        if found:
            raise ValueError(f"{what} contains the special token(s) {', '.join(repr(t) for t in found)}; user text may "
                             "not contain control or image tokens (use <image> / <video> placeholders for media)")

    def expand_placeholders(self, text: str, layout: SampleLayout | None, what: str = "the prompt") -> str:
        """Replace every ``<image>`` of ``text``, in order, by the image tokens of its tiles; ``ValueError``
        naming ``what`` when the placeholders and the layout's images / frames differ in number."""
        tiles = layout.image_tiles if layout is not None else ()
        pieces = text.split(IMAGE_PLACEHOLDER)
        if len(pieces) - 1 != len(tiles):
            given = f"{len(tiles)} {'frames' if layout.is_video else 'images'}" if tiles else "no images"
            raise ValueError(f"{what} has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders but {given} were given")
        per_tile = self.tokens_per_tile(layout.flag) if tiles else 0
        slots = [IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (per_tile * count) + IMG_END_TOKEN for count in tiles]
        return pieces[0] + "".join(slot + piece for slot, piece in zip(slots, pieces[1:]))

    def chat_prompt(
        self, question: str, layout: SampleLayout | None, history: Sequence[tuple[str, str]] | None = None,
        system_message: str | None = None,
    ) -> tuple[str, str]:
        """The official ``chat()`` prompt (a first question about media without ``<image>`` gets the official
        prefix), placeholders expanded, and the question as stored in the history."""
        history = [] if history is None else history
        if not isinstance(history, (list, tuple)):
            raise ValueError(f"history must be a list of (question, answer) pairs, got {type(history).__name__}")
        for turn, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise ValueError(f"history[{turn}] must be a (question, answer) pair of strings, got {pair!r}")
        questions = {f"history[{turn}] question": old_question for turn, (old_question, _) in enumerate(history)}
        questions["the question"] = question
        elsewhere = {f"history[{turn}] answer": old_answer for turn, (_, old_answer) in enumerate(history)}
        if system_message is not None:
            elsewhere["the system message"] = system_message
        for what, text in {**questions, **elsewhere}.items():  # no control tokens anywhere, media in questions only
            self.check_user_text(text, what)
        for what, text in elsewhere.items():
            for placeholder in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER):
                if placeholder in text:
                    raise ValueError(f"{what} contains {placeholder}; media placeholders go in the questions only")
        counts = {what: text.count(IMAGE_PLACEHOLDER) for what, text in questions.items() if IMAGE_PLACEHOLDER in text}
        expected = len(layout.image_tiles) if layout is not None else 0
        if layout is not None and not counts and not history:
            question = media_prefix(expected, layout.is_video) + question
        elif sum(counts.values()) != expected:
            given = "no pixel_values were given" if layout is None else (
                f"the sample has {expected} images/frames (num_patches_list has {expected} entries)")
            where = ", ".join(f"{what} has {count}" for what, count in counts.items()) or "no question has any"
            raise ValueError(f"{given}, but {where} {IMAGE_PLACEHOLDER} placeholder(s)")
        prompt = self.conversation.render(history, question, system_message)
        return self.expand_placeholders(prompt, layout), question

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize expanded prompts (special tokens parsed) and left-pad them: ``(B, T)`` ids and mask."""
        rows = [torch.tensor(self.tokenizer(prompt)["input_ids"], dtype=torch.long) for prompt in prompts]
        return left_pad(rows, pad_token_id(self.tokenizer, self.tokenizer.eos_token_id))

    def chat_inputs(
        self, questions: Sequence[str], pixel_values: torch.Tensor | None,
        histories: Sequence[Sequence[tuple[str, str]] | None] | None = None, data_flag: Any = None,
        split_sizes: Any = None, num_patches_list: Any = None, system_message: str | None = None,
    ) -> tuple[BatchFeature, list[str]]:
        """Model inputs for the official ``chat`` / ``batch_chat`` arguments, and the questions as stored in history."""
        layouts: list[SampleLayout | None] = [None] * len(questions)
        if pixel_values is not None:
            layouts = sample_layouts(pixel_values.shape[0], data_flag, split_sizes, num_patches_list)
            if len(layouts) != len(questions):
                raise ValueError(f"there are {len(questions)} questions but the layout describes {len(layouts)} samples")
        histories = list(histories) if histories is not None else [None] * len(questions)
        rendered = [self.chat_prompt(q, lay, h, system_message) for q, lay, h in zip(questions, layouts, histories)]
        inputs = _model_inputs(*self.tokenize_prompts([prompt for prompt, _ in rendered]), pixel_values, layouts)
        return inputs, [question for _, question in rendered]

    def __call__(
        self, text: str | Sequence[str] | None = None, images: Any = None, videos: Any = None,
        num_segments: int | Sequence[int | None] | None = None, bound: Sequence[float] | None = None,
        max_num: int | None = None, return_tensors: str | None = "pt", backend: str | None = None, **kwargs: Any,
    ) -> BatchFeature:
        """Prompts (one or a batch) + media -> ``input_ids``, ``attention_mask`` and, with media, the layout fields.

        A prompt holds one ``<image>`` per image, or one ``<video>`` or one ``<image>`` per frame for its video;
        without placeholders it gets the official prefix. ``images`` / ``videos``: see :func:`_per_sample`;
        ``num_segments``: frames per video (one, or one per prompt); ``max_num`` overrides ``max_dynamic_patch``.
        """
        # transformers' processor options: left padding to the longest prompt, no audio, nothing else
        if kwargs.pop("padding", True) not in (True, "longest"):
            raise ValueError("the processor always pads a batch to its longest prompt (left padding)")
        side = kwargs.pop("padding_side", None)
        one_prompt = not isinstance(text, (list, tuple)) or len(text) == 1
        if side not in (None, "left") and not (side == "right" and one_prompt):  # one prompt has nothing to pad
            raise ValueError(f"the processor pads batches on the left (decoder-only generation), got padding_side={side!r}")
        if _as_list(kwargs.pop("audios", None) or kwargs.pop("audio", None)):
            raise ValueError("this model takes images and videos, not audio; leave audios empty")
        if kwargs:
            raise ValueError(f"unsupported processor arguments: {', '.join(sorted(kwargs))}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        texts, images, videos = _per_sample(text, images, videos)
        segments = list(num_segments) if isinstance(num_segments, (list, tuple)) else [num_segments] * len(texts)
        if len(segments) != len(texts):
            raise ValueError(f"num_segments has {len(segments)} entries for {len(texts)} prompts; give one per prompt")
        prompts, pixel_values, layouts, start = [], [], [], 0
        for index, sample in enumerate(zip(texts, images, videos, segments)):
            prompt, pixels, layout = self._load_sample(index, *sample, bound, max_num, backend)
            if layout is not None:  # text-only prompts have no layout
                layout = replace(layout, start=start)
                start += layout.size
                pixel_values.append(pixels)
            layouts.append(layout)
            prompts.append(self.expand_placeholders(prompt, layout, f"prompt {index}"))
        pixel_values = torch.cat(pixel_values) if pixel_values else None
        return _model_inputs(*self.tokenize_prompts(prompts), pixel_values, layouts)

    def _load_sample(self, index: int, prompt: str, images: list, video: Any, num_segments: int | None, bound: Any,
                     max_num: int | None, backend: str | None) -> tuple[str, torch.Tensor | None, SampleLayout | None]:
        """One prompt (a prompt without ``<image>`` gets the official prefix), its pixels and its layout (start 0)."""
        for token in _IMAGE_TOKENS:
            if token in prompt:
                raise ValueError(f"prompt {index} contains {token!r}; write {IMAGE_PLACEHOLDER} where an image goes")
        if images and video is not None:
            raise ValueError(f"prompt {index}: give images or a video, not both")
        if video is None and VIDEO_PLACEHOLDER in prompt:
            raise ValueError(f"prompt {index} has a {VIDEO_PLACEHOLDER} placeholder but no video was given")
        if video is not None:
            if max_num not in (None, 1):
                raise ValueError(f"video frames are one tile each; got max_num={max_num}")
            pixel_values, tiles = load_video(video, bound=bound, input_size=self.image_size, max_num=1, backend=backend,
                                             num_segments=self.num_segments if num_segments is None else num_segments)
            flag = DataFlag.VIDEO
            if VIDEO_PLACEHOLDER in prompt:
                if prompt.count(VIDEO_PLACEHOLDER) != 1 or IMAGE_PLACEHOLDER in prompt:
                    raise ValueError(f"prompt {index} has {prompt.count(VIDEO_PLACEHOLDER)} {VIDEO_PLACEHOLDER} and "
                                     f"{prompt.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholders; a video "
                                     f"takes one {VIDEO_PLACEHOLDER}")
                prompt = prompt.replace(VIDEO_PLACEHOLDER, build_video_prompt(len(tiles)))
        elif images:
            limit = self.max_dynamic_patch if max_num is None else max_num
            loaded = [load_image(image, self.image_size, limit, self.min_dynamic_patch, self.use_thumbnail)
                      for image in images]
            pixel_values, tiles = torch.cat(loaded), [t.shape[0] for t in loaded]
            flag = DataFlag.IMAGE if len(images) == 1 else DataFlag.MULTI_IMAGE
        else:
            return prompt, None, None
        prompt = prompt if IMAGE_PLACEHOLDER in prompt else media_prefix(len(tiles), flag == DataFlag.VIDEO) + prompt
        return prompt, pixel_values, SampleLayout(flag, 0, pixel_values.shape[0], tuple(tiles))

    def apply_chat_template(
        self, conversation: list[dict] | list[list[dict]], chat_template: str | None = None,
        add_generation_prompt: bool = False, tokenize: bool = False, return_dict: bool = False,
        return_tensors: str | None = None, continue_final_message: bool = False,
        processor_kwargs: dict | None = None, num_frames: int | None = None, **kwargs: Any,
    ):
        """Render conversations in transformers' message format; with ``tokenize=True`` also load their media and
        return the model inputs. Items: ``text``, ``image`` (``image`` / ``path`` / ``url``), ``video`` (``path`` /
        ``video``, optional ``num_frames``, default ``num_frames`` or ``num_segments``)."""
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise ValueError("apply_chat_template needs a non-empty list of messages (or a list of such lists)")
        batched = isinstance(conversation[0], (list, tuple))
        conversations = [list(c) for c in conversation] if batched else [list(conversation)]
        media = [_conversation_media(c, self.check_user_text) for c in conversations]
        render = {"chat_template": chat_template or self.chat_template, "tokenize": False,
                  "add_generation_prompt": add_generation_prompt, "continue_final_message": continue_final_message}
        rendered = [self.tokenizer.apply_chat_template(c, **render) for c in conversations]
        if not tokenize:
            return rendered if batched else rendered[0]
        if not return_dict:
            raise ValueError("apply_chat_template(tokenize=True) needs return_dict=True (the inputs include pixel_values)")
        options = {**(processor_kwargs or {}), **kwargs}
        default_frames = options.pop("num_segments", num_frames)
        return self(  # one conversation is a batch of one: the same inputs
            text=rendered, images=[m["images"] or None for m in media], videos=[m["video"] for m in media],
            num_segments=[default_frames if m["num_frames"] is None else m["num_frames"] for m in media],
            return_tensors=return_tensors or "pt", **options,
        )

    def decode_answers(self, generated_ids: torch.Tensor) -> list[str]:
        """New-token ids ``(B, T)`` -> answers: each row cut at its first stop id (the template separator),
        special tokens dropped, surrounding white space stripped."""
        (stop,) = self.stop_token_ids()
        rows = [row[:row.index(stop)] if stop in row else row for row in torch.as_tensor(generated_ids).tolist()]
        return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """For the ``image-text-to-text`` pipeline: prompt + answer ids -> text (the pipeline cuts the prompt)."""
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


def _model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None,
                  layouts: Sequence[SampleLayout | None]) -> BatchFeature:
    """``(B, T)`` ids and mask, plus the official layout fields of the samples that have media."""
    data = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixel_values is not None:
        layouts = [layout for layout in layouts if layout is not None]
        data.update(
            pixel_values=pixel_values,
            data_flag=torch.tensor([int(layout.flag) for layout in layouts], dtype=torch.long),
            split_sizes=torch.tensor([layout.size for layout in layouts], dtype=torch.long),
            num_patches_list=[list(layout.image_tiles) for layout in layouts],
        )
    return BatchFeature(data=data)


def _per_sample(text: Any, images: Any, videos: Any) -> tuple[list[str], list[list], list]:
    """The prompts, and the list of images and the video (or None) of each (shared out by :func:`_per_prompt`)."""
    batched = isinstance(text, (list, tuple))
    texts = list(text) if batched else ["" if text is None else text]
    for index, prompt in enumerate(texts):
        if not isinstance(prompt, str):
            raise ValueError(f"text[{index}] must be a string, got {type(prompt).__name__}")
    if not texts:
        raise ValueError("text is an empty list; give at least one prompt")
    if not batched:  # one prompt: its media are the one entry of a batch of one
        images, videos = [images], [videos]
    images = _per_prompt("images", _as_list(images), [t.count(IMAGE_PLACEHOLDER) for t in texts])
    videos = _per_prompt("videos", _as_list(videos), [t.count(VIDEO_PLACEHOLDER) for t in texts])
    for index, video in enumerate(videos):
        if len(video) > 1:
            raise ValueError(f"prompt {index}: one video per prompt is supported, got {len(video)}")
    return texts, images, [video[0] if video else None for video in videos]


def _per_prompt(name: str, values: list, placeholders: list[int]) -> list[list]:
    """The items of each prompt: a flat list as long as the batch's placeholder count is split in placeholder
    order (as transformers' processors do); otherwise ``values`` has one entry (an item, a list or None) per prompt."""
    if not values:
        return [[] for _ in placeholders]
    if sum(placeholders) == len(values) and not any(value is None or isinstance(value, (list, tuple)) for value in values):
        items = iter(values)
        return [[next(items) for _ in range(count)] for count in placeholders]
    if len(values) != len(placeholders):
        raise ValueError(f"{name} has {len(values)} entries for {len(placeholders)} prompts with {sum(placeholders)} "
                         "placeholders; give one entry (or None) per prompt, or one item per placeholder in "
                         "prompt order")
    return [_as_list(value) for value in values]


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
            elif kind in _MEDIA_KEYS:  # a PIL image or a local path; an image URL / base64 string is loaded here
                keys, missing = _MEDIA_KEYS[kind]
                key = next((key for key in keys if item.get(key) is not None), None)
                if key is None:
                    raise ValueError(f"message {turn} has {missing}")
                value = item[key]
                if kind == "image" and isinstance(value, str) and (key == "url" or value.startswith(_REMOTE)):
                    value = load_remote_image(value)
                (images if kind == "image" else videos).append(value)
                num_frames = item.get("num_frames", num_frames) if kind == "video" else num_frames
            else:
                raise ValueError(f"message {turn} has a content item of type {kind!r}; known: text, image, video")
    if len(videos) > 1 or (videos and images):
        raise ValueError(f"a conversation holds {len(images)} images and {len(videos)} videos; one sample is images "
                         "or one video")
    return {"images": images, "video": videos[0] if videos else None, "num_frames": num_frames}


PVCInternVLProcessor.register_for_auto_class("AutoProcessor")
