"""Processor for PVC-InternVL (InternVL2 + Progressive Visual Token Compression).

`PVCInternVLProcessor` owns the prompt: it renders the conversation template, expands every `<image>`
into `<img>` + `<IMG_CONTEXT>` x n + `</img>`, tokenizes, pads and returns the model inputs. Pixel
loading (tiling, transforms, video frame sampling) lives in `media.py`; its public functions are
re-exported here.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .configuration_pvc_internvl import DataFlag
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

IMAGE_PLACEHOLDER = "<image>"


# ----------------------------------------------------------------------------------------------------
# Prompts and processor
# ----------------------------------------------------------------------------------------------------


def build_video_prompt(num_frames: int) -> str:
    """'Frame1: <image>\\nFrame2: <image>\\n...' (the PVC README video prompt)."""
    return "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_frames))


def build_multi_image_prompt(num_images: int) -> str:
    """'Image-1: <image>\\nImage-2: <image>\\n...' (the InternVL2 multi-image prompt)."""
    return "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images))


def _with_placeholders(text: str, num_media: int, prefix: str, kind: str) -> str:
    """`prefix + text` if `text` has no <image>; `text` if it has exactly `num_media`; else ValueError."""
    found = text.count(IMAGE_PLACEHOLDER)
    if found == 0:
        return prefix + text
    if found != num_media:
        raise ValueError(f"text has {found} {IMAGE_PLACEHOLDER} placeholders but {num_media} {kind} were given")
    return text


def collate_features(features_list: Sequence[dict[str, Any]]) -> BatchFeature:
    """Merge single-sample processor outputs into one `batch_chat` batch.

    Returns pixel_values [sum N_b, 3, S, S], data_flag [B], split_sizes [B], num_patches_list (list of
    per-sample lists) and questions (list of B strings).
    """
    if len(features_list) == 0:
        raise ValueError("collate needs at least 1 sample, got 0")
    for index, features in enumerate(features_list):
        if features.get("pixel_values") is None:
            raise ValueError(
                f"sample {index} of {len(features_list)} has no images or video; "
                "batch_chat needs pixel_values for every sample"
            )
    return BatchFeature(
        data={
            "pixel_values": torch.cat([f["pixel_values"] for f in features_list]),
            "data_flag": torch.cat([f["data_flag"] for f in features_list]),
            "split_sizes": torch.cat([f["split_sizes"] for f in features_list]),
            "num_patches_list": [list(f["num_patches_list"]) for f in features_list],
            "questions": [f["question"] for f in features_list],
        }
    )


class PVCInternVLProcessor(ProcessorMixin):
    """Prepares one sample (text + images or one video) for `PVCInternVLChatModel.chat`.

    Args:
        tokenizer: the checkpoint's tokenizer (kept for `chat`; the question is returned untokenised).
        image_size: tile size S in pixels.
        min_dynamic_patch: minimum number of tiles per image.
        max_dynamic_patch: maximum number of tiles per image (thumbnail not counted).
        use_thumbnail: append a whole-image thumbnail tile when an image has more than one tile.
        num_segments: frames sampled from a video by default.
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
        chat_template: str | None = None,
    ):
        if tokenizer is None:
            raise ValueError("PVCInternVLProcessor needs a tokenizer, got None")
        build_target_ratios(min_dynamic_patch, max_dynamic_patch)  # validates the range
        if image_size <= 0 or num_segments < 1:
            raise ValueError(f"need image_size > 0 and num_segments >= 1, got {image_size} and {num_segments}")
        self.image_size = image_size
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail
        self.num_segments = num_segments
        super().__init__(tokenizer, chat_template=chat_template)

    def __call__(
        self,
        text: str = "",
        images: ImageInput | Sequence[ImageInput] | None = None,
        videos: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        num_segments: int | None = None,
        bound: Sequence[float] | None = None,
        max_num: int | None = None,
        return_tensors: str = "pt",
        backend: str | None = None,
    ) -> BatchFeature:
        """One sample -> pixel_values [N, 3, S, S] (None for text only), num_patches_list, data_flag [1],
        split_sizes [1] (= N) and question (prompt with <image> placeholders, not tokenised).

        `max_num` overrides max_dynamic_patch for images; video frames are always one tile each.
        """
        if not isinstance(text, str):
            raise ValueError(
                f"text must be one string (one sample), got {type(text).__name__}; use collate() for batches"
            )
        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        images = _as_list(images)
        videos = _as_list(videos)
        if images and videos:
            raise ValueError(f"pass images or a video, not both: got {len(images)} images and {len(videos)} videos")
        if videos:
            return self._process_video(text, videos, num_segments, bound, max_num, backend)
        if images:
            return self._process_images(text, images, max_num)
        if text.count(IMAGE_PLACEHOLDER):
            raise ValueError(f"text has {text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholders but 0 images")
        data = {"pixel_values": None, "num_patches_list": [], "data_flag": None, "split_sizes": None}
        return BatchFeature(data={**data, "question": text})

    def _process_images(self, text: str, images: list, max_num: int | None) -> BatchFeature:
        """Tiles of every image; flag 1 for one image, 2 for several."""
        max_num = self.max_dynamic_patch if max_num is None else max_num
        tiles = [
            load_image(image, self.image_size, max_num, self.min_dynamic_patch, self.use_thumbnail) for image in images
        ]
        if len(images) == 1:
            question = _with_placeholders(text, 1, f"{IMAGE_PLACEHOLDER}\n", "images")
            flag = DataFlag.IMAGE
        else:
            question = _with_placeholders(text, len(images), build_multi_image_prompt(len(images)), "images")
            flag = DataFlag.MULTI_IMAGE
        return _features(torch.cat(tiles), [t.shape[0] for t in tiles], flag, question)

    def _process_video(self, text, videos, num_segments, bound, max_num, backend) -> BatchFeature:
        """One video: `num_segments` frames, one tile each; flag 3."""
        if len(videos) != 1:
            raise ValueError(f"one video per sample is supported, got {len(videos)}")
        if max_num not in (None, 1):
            raise ValueError(f"video frames are one tile each; got max_num={max_num}")
        num_segments = self.num_segments if num_segments is None else num_segments
        pixel_values, num_patches_list = load_video(
            videos[0], bound=bound, input_size=self.image_size, max_num=1, num_segments=num_segments, backend=backend
        )
        question = _with_placeholders(text, len(num_patches_list), build_video_prompt(len(num_patches_list)), "frames")
        return _features(pixel_values, num_patches_list, DataFlag.VIDEO, question)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """`ProcessorMixin.save_pretrained` (writes processing.py, processor_config.json with `auto_map` and the
        tokenizer files), then restores the tokenizer's in-memory `auto_map`, which the base class deletes."""
        tokenizer_auto_map = copy.deepcopy(self.tokenizer.init_kwargs.get("auto_map"))
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if tokenizer_auto_map is not None:
                self.tokenizer.init_kwargs["auto_map"] = tokenizer_auto_map

    @staticmethod
    def collate(features_list: Sequence[dict[str, Any]]) -> BatchFeature:
        """See `collate_features`."""
        return collate_features(features_list)


def _as_list(value: Any) -> list:
    """None -> [], a single item -> [item], a list/tuple -> list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _features(pixel_values: torch.Tensor, num_patches_list: list[int], flag: int, question: str) -> BatchFeature:
    """Single-sample output dict."""
    return BatchFeature(
        data={
            "pixel_values": pixel_values,
            "num_patches_list": list(num_patches_list),
            "data_flag": torch.tensor([flag], dtype=torch.long),
            "split_sizes": torch.tensor([pixel_values.shape[0]], dtype=torch.long),
            "question": question,
        }
    )


PVCInternVLProcessor.register_for_auto_class("AutoProcessor")
