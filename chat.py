"""The official InternVL2 / PVC ``chat`` / ``batch_chat`` of :class:`PVCInternVLChatModel`: the bridge between the
processor (which owns the prompt) and ``generate``; the modeling code itself does not know the processor."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig
from transformers.utils import logging

from .configuration_pvc_internvl import DataFlag
from .conversation import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, is_video_prompt
from .generation import _id_list, generation_settings
from .processing import PVCInternVLProcessor, pad_token_id

logger = logging.get_logger(__name__)


class PVCInternVLChatMixin:
    """``chat`` / ``batch_chat``: processor -> ``generate`` -> decode; prompt text lives in the processor."""

    def _chat_processor(self, tokenizer: Any, image_tokens: tuple[str, str, str]) -> PVCInternVLProcessor:
        if image_tokens != (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN):
            raise ValueError(
                f"IMG_START_TOKEN / IMG_END_TOKEN / IMG_CONTEXT_TOKEN must be {IMG_START_TOKEN!r}, {IMG_END_TOKEN!r}, "
                f"{IMG_CONTEXT_TOKEN!r} (the tokens this model was trained with), got {image_tokens}"
            )
        processor = PVCInternVLProcessor.from_model_config(tokenizer, self.config)
        token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        if token_id != self.model.require_context_id():
            raise ValueError(
                f"the tokenizer maps {IMG_CONTEXT_TOKEN} to id {token_id}, but config.img_context_token_id is "
                f"{self.config.img_context_token_id}"
            )
        return processor

    def chat(
        self, tokenizer: Any, pixel_values: torch.Tensor | None, question: str,
        generation_config: GenerationConfig | dict | None = None, history: list | None = None,
        return_history: bool = False, num_patches_list: Any = None, IMG_START_TOKEN: str = IMG_START_TOKEN,
        IMG_END_TOKEN: str = IMG_END_TOKEN, IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN, verbose: bool = False,
        data_flag: Any = None, split_sizes: Any = None, prunevid: dict | None = None, return_stats: bool = False,
    ):
        """Answer ``question`` about one sample (an image, several images, a video, or text only). ``data_flag``:
        ``[1]`` one image, ``[2]`` several images (``num_patches_list`` = tiles per ``<image>``), ``[3]`` a video
        (``conversation.build_video_prompt``). Returns the answer, plus the updated history with ``return_history``
        and the :class:`CallStats` with ``return_stats``."""
        processor = self._chat_processor(tokenizer, (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN))
        if not isinstance(question, str):
            raise ValueError(f"question must be a string, got {type(question).__name__} (use batch_chat for several)")
        if pixel_values is not None:
            self.model.check_pixels(pixel_values)
            if data_flag is None and is_video_prompt(question):
                logger.warning(
                    "chat() got a video prompt (build_video_prompt) without data_flag, so it answers it as an image "
                    f"sample; pass data_flag=[{int(DataFlag.VIDEO)}] for a video, as the official evaluation scripts do"
                )
            if num_patches_list is not None and data_flag is None and split_sizes is None:
                split_sizes = [pixel_values.shape[0]]
        inputs, stored = processor.chat_inputs(
            [question], pixel_values, [history], data_flag, split_sizes, num_patches_list, self.system_message
        )
        response, stats = self._answer(processor, inputs, generation_config, prunevid, verbose)
        history = list(history or []) + [(stored[0], response[0])]
        result = (response[0], history) if return_history else (response[0],)
        result += (stats,) if return_stats else ()
        return result if len(result) > 1 else result[0]

    def batch_chat(
        self, tokenizer: Any, pixel_values: torch.Tensor | None, questions: list[str],
        generation_config: GenerationConfig | dict | None = None, num_patches_list: Any = None,
        history: list | None = None, return_history: bool = False, IMG_START_TOKEN: str = IMG_START_TOKEN,
        IMG_END_TOKEN: str = IMG_END_TOKEN, IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN, verbose: bool = False,
        image_counts: Any = None, data_flag: Any = None, split_sizes: Any = None, prunevid: dict | None = None,
        return_stats: bool = False,
    ):
        """Answer one question per sample, all samples in one left-padded batch. ``split_sizes``: tiles / frames per
        sample (default: ``num_patches_list``, one image per question); ``num_patches_list``: flat (one entry per
        ``<image>``) or one list per sample; ``data_flag``: one entry per sample (default: all images)."""
        if history is not None or return_history:
            raise ValueError("batch_chat does not support multi-turn history; use chat for each sample")
        if image_counts is not None:
            raise ValueError("image_counts is not supported; give split_sizes and one num_patches_list per sample")
        if not isinstance(questions, (list, tuple)) or not all(isinstance(q, str) for q in questions) or not questions:
            raise ValueError(f"questions must be a non-empty list of strings, got {type(questions).__name__}")
        processor = self._chat_processor(tokenizer, (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN))
        if pixel_values is not None:
            if split_sizes is None and num_patches_list is None:
                raise ValueError("batch_chat needs num_patches_list or split_sizes to split pixel_values per question")
            if split_sizes is None:
                patches = num_patches_list.tolist() if torch.is_tensor(num_patches_list) else num_patches_list
                split_sizes = [sum(p) if isinstance(p, (list, tuple)) else p for p in patches]
            if data_flag is None:  # one image sample per entry of split_sizes
                data_flag = [int(DataFlag.IMAGE)] * len(split_sizes)
            self.model.check_pixels(pixel_values)
        inputs, _ = processor.chat_inputs(
            list(questions), pixel_values, None, data_flag, split_sizes, num_patches_list, self.system_message
        )
        responses, stats = self._answer(processor, inputs, generation_config, prunevid, verbose)
        return (responses, stats) if return_stats else responses

    def _answer(self, processor, inputs, generation_config, prunevid, verbose) -> tuple[list[str], Any]:
        """generate -> decode; the answer stops at the template separator, as in the official ``chat``."""
        if verbose:
            for row in processor.tokenizer.batch_decode(inputs["input_ids"], skip_special_tokens=False):
                logger.info(row.replace(IMG_CONTEXT_TOKEN * max(self.num_image_token, 1), "<IMG_CONTEXT*L>"))
        settings = generation_settings(generation_config)
        stop = processor.stop_token_ids()
        settings["eos_token_id"] = _id_list(settings.get("eos_token_id")) + stop
        if settings.get("pad_token_id") is None and self.generation_config.pad_token_id is None:
            settings["pad_token_id"] = pad_token_id(processor.tokenizer, stop[0])
        device = self.get_input_embeddings().weight.device
        ids, stats = self.generate(**inputs.to(device), generation_config=settings, prunevid=prunevid, return_stats=True)
        sequences = ids.sequences if hasattr(ids, "sequences") else ids
        return processor.decode_answers(sequences[:, inputs["input_ids"].shape[1] :]), stats
