"""``pvc_internvl``: PVC-InternVL as an lmms-eval chat model.

The model runs the package's own path -- ``processor.apply_chat_template(..., tokenize=True)`` ->
``model.generate(..., return_stats=True)`` -> ``processor.decode_answers`` -- with the official PVC settings:
images are tiled with the checkpoint's ``max_dynamic_patch`` / ``use_thumbnail`` (one image, or several in one
prompt), videos are sampled with ``num_frames`` frames (64, the PVC card's setting).

Requests about the same video (same path and ``num_frames``; Video-MME asks three questions per video) share its
work: the video is decoded and encoded once (``model.encode_media``, PruneVid stage 1 included), and the prompt
prefix before the questions (system prompt + video) is prefilled once (``model.prefill``) and copied for each
question, unless PruneVid stage 2 is on (it prunes by the question). Answers equal separate calls.

Model arguments (``--model_args key=value,...``):

=====================  =====================================================================================
``pretrained``         checkpoint folder or Hub id (required)
``num_frames``         frames sampled per video (default 64)
``prunevid``           ``True`` / ``False``: PruneVid on or off for every call (default ``False``)
``max_num``            tiles per image (default: the checkpoint's ``max_dynamic_patch``)
``max_new_tokens``     used when the task's ``generation_kwargs`` / ``--gen_kwargs`` give none (default 1024)
``batch_size``         samples per ``generate`` call (also ``--batch_size``; default 1)
``device``             ``cuda``, ``cuda:1``, ``cpu`` (default: ``cuda`` when available, else ``cpu``)
``device_map``         single process only: e.g. ``auto`` to split one model over the visible GPUs
``dtype``              ``bfloat16`` / ``float16`` / ``float32`` / ``auto`` (default bf16 on GPU, fp32 on CPU)
``attn_implementation`` ``sdpa`` (default) / ``eager`` / ``flash_attention_2``
``system_prompt``      replaces the template's system message (text, or a file holding it)
``cache_each_batch``   with ``--use_cache``, store every batch's answers as soon as it finishes (default True)
``reuse_video``        ``True`` / ``False``: share a video's decoding, encoding and prefill between its questions
                       (default True; questions about a video are then answered one at a time)
=====================  =====================================================================================

Per-sample statistics go to lmms-eval's sample log (``--log_samples``): every sample's ``token_counts`` entry
holds, besides ``input_tokens`` / ``output_tokens``, the ``return_stats`` of its ``generate`` call --
``visual_tokens``, ``visual_tokens_after_stage1``, ``visual_tokens_after_stage2``, ``prefill_flops``,
``data_flag``, ``frames``, ``tiles``, ``stage1_applied`` (``PVCTokenCounts``).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from accelerate import Accelerator
from loguru import logger as eval_logger
from tqdm import tqdm
from transformers import AutoModel, AutoProcessor

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages

DEFAULT_NUM_FRAMES = 64  # the official PVC model card samples 64 frames per video
DEFAULT_MAX_NEW_TOKENS = 1024
STAT_KEYS = (
    "visual_tokens",
    "visual_tokens_after_stage1",
    "visual_tokens_after_stage2",
    "prefill_flops",
    "data_flag",
    "frames",
    "tiles",
    "stage1_applied",
)
# generation_kwargs that lmms-eval tasks use and that this model reads itself
_HANDLED_GEN_KWARGS = {"until", "max_new_tokens", "max_gen_toks", "temperature", "top_p", "top_k", "num_beams", "do_sample"}
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32, "auto": "auto"}


@dataclass
class PVCTokenCounts(TokenCounts):
    """lmms-eval's per-sample token counts plus PVC's ``return_stats`` for the sample (written by the evaluator
    into the sample log as ``token_counts``)."""

    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = dict(super().to_dict())
        out.update(self.stats)
        return out


class PVCInternVL(lmms):
    """PVC-InternVL for lmms-eval (chat-message tasks; images, several images, one video, or text only)."""

    is_simple = False

    def __init__(
        self,
        pretrained: str,
        num_frames: int = DEFAULT_NUM_FRAMES,
        prunevid: bool = False,
        max_num: Optional[int] = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int | str = 1,
        device: Optional[str] = None,
        device_map: Optional[str] = None,
        dtype: Optional[str] = None,
        attn_implementation: Optional[str] = None,
        system_prompt: Optional[str] = None,
        cache_each_batch: bool = True,
        reuse_video: bool = True,
        trust_remote_code: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"pvc_internvl: unknown model_args {sorted(kwargs)}; see lmms_eval_pvc.model's docstring")
        self.num_frames = _positive_int("num_frames", num_frames)
        self.max_num = None if max_num in (None, "", "None") else _positive_int("max_num", max_num)
        self.default_max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.batch_size_per_gpu = _positive_int("batch_size", batch_size)
        self.prunevid = _as_bool("prunevid", prunevid)
        self.cache_each_batch = _as_bool("cache_each_batch", cache_each_batch)
        self.reuse_video = _as_bool("reuse_video", reuse_video)
        self._said: set[str] = set()  # reasons already logged by _say_once
        self.system_prompt = self._resolve_system_prompt(str(system_prompt).replace("\\n", "\n")) if system_prompt else None

        accelerator = Accelerator()
        self.accelerator = accelerator
        # torchrun / accelerate set WORLD_SIZE and LOCAL_RANK; on CPU-only machines Accelerator may see one process
        world_size = max(accelerator.num_processes, int(os.environ.get("WORLD_SIZE", "1")))
        local_rank = int(os.environ.get("LOCAL_RANK", accelerator.local_process_index))
        if world_size > 1:
            # data parallel: every process holds its own copy of the model on its own device
            if device_map not in (None, "", "None"):
                raise ValueError("pvc_internvl: device_map is for a single process; with several processes each one "
                                 "loads the whole model on its own device (cuda:<local rank>, or cpu)")
            if torch.cuda.is_available() and device != "cpu":
                self._device = torch.device(f"cuda:{local_rank}")
            else:
                self._device = torch.device("cpu")
            device_map = str(self._device)
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            device_map = device_map if device_map not in (None, "", "None") else str(self._device)
        self._rank = int(os.environ.get("RANK", accelerator.process_index)) if world_size > 1 else 0
        self._world_size = world_size

        if dtype in (None, "", "None"):
            torch_dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        elif str(dtype) in _DTYPES:
            torch_dtype = _DTYPES[str(dtype)]
        else:
            raise ValueError(f"pvc_internvl: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        load_kwargs: dict = {"trust_remote_code": trust_remote_code, "dtype": torch_dtype, "device_map": device_map}
        if attn_implementation not in (None, "", "None"):
            load_kwargs["attn_implementation"] = attn_implementation
        self._model = AutoModel.from_pretrained(pretrained, **load_kwargs).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        self._tokenizer = self.processor.tokenizer
        self._config = self._model.config
        # the remote code's modules hold the prompt vocabulary (image tokens, video placeholder) and the name
        # generate gives the KV cache in this transformers version (`cache` or `past_key_values`)
        self._prompt_module = sys.modules[type(self.processor).__module__]
        self._cache_arg = sys.modules[type(self._model).__module__].CACHE_ARG
        self._context_id = self._tokenizer.convert_tokens_to_ids(self._prompt_module.IMG_CONTEXT_TOKEN)
        self._stop_ids = set(self.processor.stop_token_ids())
        if self.rank == 0:
            eval_logger.info(
                f"pvc_internvl: {pretrained} on {self._device} ({torch_dtype}), {self.world_size} process(es), "
                f"num_frames={self.num_frames}, tiles per image <= {self.max_num or self.processor.max_dynamic_patch}, "
                f"prunevid={self.prunevid}, batch_size={self.batch_size_per_gpu}, reuse_video={self.reuse_video}"
            )
            self._log_reuse_settings()

    # ------------------------------------------------------------------------------ lmms-eval properties
    @property
    def config(self):
        return self._config

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def model(self):
        return self._model

    @property
    def eot_token_id(self):
        return self._tokenizer.eos_token_id

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self._world_size

    def loglikelihood(self, requests):
        raise NotImplementedError("pvc_internvl answers generate_until tasks only (no loglikelihood)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("pvc_internvl answers single-round generate_until tasks only")

    # ------------------------------------------------------------------------------ generation
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer every request. Requests about one video form a group (with ``reuse_video``) whose video is decoded,
        encoded and prefilled once; the other requests go in batches of equal generation settings and the same kind
        of media (images / video / text). Groups follow the order of their first request."""
        sink = _CacheSink.find(self) if self.cache_each_batch else None
        eval_logger.info(f"pvc_internvl: rank {self.rank} answers {len(requests)} request(s)"
                         + (" (each batch cached as it finishes)" if sink is not None else ""))
        groups: dict[tuple, list[int]] = {}
        prepared = []
        for index, request in enumerate(requests):
            messages, kind, video = self._messages(request)
            gen_kwargs = dict(request.args[2] or {})
            prepared.append((messages, gen_kwargs))
            if video is not None and self.reuse_video:
                key: tuple = ("video", *video)
            else:
                key = ("batch", json.dumps(gen_kwargs, sort_keys=True, default=str), kind)
            groups.setdefault(key, []).append(index)
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="pvc_internvl")

        def finished(indices: list[int], outputs: list[GenerationResult]) -> None:
            for i, output in zip(indices, outputs):
                results[i] = output
            if sink is not None:
                sink.store([requests[i] for i in indices], outputs)
            progress.update(len(indices))

        for key, indices in groups.items():
            if key[0] == "video":
                self._answer_video_group([prepared[i] for i in indices], indices, finished)
                continue
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                finished(batch, self._generate_batch([prepared[i][0] for i in batch], prepared[batch[0]][1], key[2]))
        progress.close()
        return results

    def _messages(self, request: Instance) -> tuple[list[dict], str, Optional[tuple[str, int]]]:
        """The request's conversation in the processor's message format, its kind (image / video / text) and, for a
        video, what identifies its frames: (path, frames sampled)."""
        doc_to_messages, doc_id, task, split = request.args[1], request.args[3], request.args[4], request.args[5]
        raw = doc_to_messages(self.task_dict[task][split][doc_id])
        if self.system_prompt:
            raw = self._apply_system_prompt(raw, self.system_prompt)
        chat = ChatMessages(messages=raw)
        messages, images, videos = [], 0, []
        for message in chat.messages:
            content = []
            for item in message.content:
                if item.type == "text":
                    content.append({"type": "text", "text": item.text})
                elif item.type == "image":
                    content.append({"type": "image", "image": item.url})
                    images += 1
                elif item.type == "video":
                    if item.start_time is not None or item.end_time is not None or isinstance(item.url, dict):
                        raise ValueError(f"pvc_internvl: doc {doc_id} of {task} gives a video segment (start/end times); "
                                         "only whole videos are supported")
                    content.append({"type": "video", "path": item.url, "num_frames": self.num_frames})
                    videos.append((str(item.url), self.num_frames))
                else:
                    raise ValueError(f"pvc_internvl: doc {doc_id} of {task} has {item.type} content; this model takes "
                                     "text, images and videos")
            messages.append({"role": message.role, "content": content})
        kind = "video" if videos else "image" if images else "text"
        return messages, kind, videos[0] if len(videos) == 1 and not images else None

    def _generation_settings(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        """(keyword arguments for ``generate``, stop strings) from a task's generation_kwargs."""
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = gen_kwargs.get("max_new_tokens", gen_kwargs.get("max_gen_toks")) or self.default_max_new_tokens
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sample = bool(gen_kwargs.get("do_sample", False)) or temperature > 0
        settings: dict = {"max_new_tokens": int(max_new), "do_sample": sample, "num_beams": int(gen_kwargs.get("num_beams") or 1)}
        if sample:
            settings["temperature"] = temperature if temperature > 0 else 1.0
            if gen_kwargs.get("top_p") is not None:
                settings["top_p"] = float(gen_kwargs["top_p"])
            if gen_kwargs.get("top_k") is not None:
                settings["top_k"] = int(gen_kwargs["top_k"])
        ignored = sorted(set(gen_kwargs) - _HANDLED_GEN_KWARGS)
        if ignored:
            eval_logger.warning(f"pvc_internvl: ignoring generation_kwargs {ignored}")
        return settings, [stop for stop in until if stop]

    def _model_inputs(self, conversations: list[list[dict]], **options: Any) -> Any:
        """``processor.apply_chat_template(..., tokenize=True)`` of the conversations, on the model's device."""
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, **options
        )
        inputs = inputs.to(self.model.get_input_embeddings().weight.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    @torch.no_grad()
    def _generate_batch(self, conversations: list[list[dict]], gen_kwargs: dict, kind: str) -> list[GenerationResult]:
        settings, until = self._generation_settings(gen_kwargs)
        options = {"max_num": self.max_num} if self.max_num is not None and kind == "image" else {}
        inputs = self._model_inputs(conversations, **options)
        start = time.time()
        ids, stats = self.model.generate(
            **inputs, prunevid={"enabled": self.prunevid}, return_stats=True, **settings
        )
        eval_logger.debug(f"pvc_internvl: batch of {len(conversations)} {kind} sample(s) in {time.time() - start:.2f} s")
        return self._results(inputs["input_ids"], inputs["attention_mask"], ids, stats, until)

    def _results(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: torch.Tensor, stats: Any,
                 until: list[str]) -> list[GenerationResult]:
        """One ``GenerationResult`` per prompt row of a ``generate`` call: the answer cut at the stop strings, with
        its token counts and the row's share of ``stats``."""
        new_ids = ids[:, input_ids.shape[1]:]
        rows = per_row_stats(stats, input_ids, self._context_id)
        outputs = []
        for row, answer in enumerate(self.processor.decode_answers(new_ids)):
            for stop in until:
                answer = answer.split(stop)[0]
            counts = PVCTokenCounts(input_tokens=int(attention_mask[row].sum()),
                                    output_tokens=self._answer_length(new_ids[row]), stats=rows[row])
            outputs.append(GenerationResult(text=answer, token_counts=counts))
        return outputs

    # ------------------------------------------------------------------------------ several questions, one video
    @torch.no_grad()
    def _answer_video_group(self, requests: list[tuple[list[dict], dict]], indices: list[int], finished) -> None:
        """Answer the requests about one video, one at a time, calling ``finished([index], outputs)`` after each.

        The video is decoded once (the processor, for the first request) and encoded once (``encode_media``); with
        two or more questions the shared prompt prefix is prefilled once (``prefill``) and each question continues
        from a copy of that cache. Every prompt equals the processor's prompt for its request, so the answers are
        those of separate calls.
        """
        start = time.time()
        first = self._model_inputs([requests[0][0]])
        prompts = video_prompts(self.processor, [messages for messages, _ in requests], first)
        media = self.model.encode_media(
            first["pixel_values"], data_flag=first["data_flag"], split_sizes=first["split_sizes"],
            num_patches_list=first["num_patches_list"], prunevid={"enabled": self.prunevid},
        )
        plans = [self._generation_settings(gen_kwargs) for _, gen_kwargs in requests]
        cache = self._shared_prefill(prompts, media, [settings for settings, _ in plans])
        for index, ids, (settings, until) in zip(indices, prompts, plans):
            mask = torch.ones_like(ids)
            past = {self._cache_arg: copy.deepcopy(cache)} if cache is not None else {}
            out, stats = self.model.generate(input_ids=ids, attention_mask=mask, visual_features=media,
                                             return_stats=True, **past, **settings)
            finished([index], self._results(ids, mask, out, stats, until))
        eval_logger.debug(f"pvc_internvl: {len(indices)} question(s) about one video in {time.time() - start:.2f} s "
                          f"(prefix {'shared' if cache is not None else 'not shared'})")

    def _shared_prefill(self, prompts: list[torch.Tensor], media: Any, plans: list[dict]) -> Any:
        """The KV cache of the prompts' common prefix (``model.prefill``), or None: for one question, and (said once
        in the log) when PruneVid stage 2 is on, beam search is asked for, or the common prefix ends before the
        video does (the question comes before the video)."""
        if len(prompts) < 2:
            return None
        if media.pruned and media.prunevid.enable_stage2:
            self._say_once("stage2", "PruneVid stage 2 prunes the video by the question, so questions about one video "
                                     "share its decoding and encoding (stage 1 included) but not the prefill")
            return None
        if any(plan["num_beams"] > 1 for plan in plans):
            self._say_once("beams", "num_beams > 1: questions about one video share its decoding and encoding but not "
                                    "the prefill (a prefix cache serves one sequence per question)")
            return None
        length = common_prefix_length(prompts)
        slots = int((prompts[0] == self._context_id).sum())
        if int((prompts[0][0, :length] == self._context_id).sum()) != slots:
            self._say_once("prefix", "the questions about a video differ before the video ends in the prompt, so "
                                     "they share its decoding and encoding but not the prefill")
            return None
        return self.model.prefill(prompts[0][:, :length], visual_features=media)

    def _say_once(self, reason: str, message: str) -> None:
        if reason not in self._said:
            self._said.add(reason)
            eval_logger.info(f"pvc_internvl: {message}")

    def _log_reuse_settings(self) -> None:
        """Say at start-up how the settings limit sharing work between the questions about one video."""
        if not self.reuse_video:
            eval_logger.info("pvc_internvl: reuse_video=False: every video request decodes, encodes and prefills its "
                             "video itself")
        elif self.batch_size_per_gpu > 1:
            eval_logger.info("pvc_internvl: questions about one video are answered one at a time from its shared "
                             "encoding; batch_size applies to image and text requests (reuse_video=False batches "
                             "video requests too)")

    def _answer_length(self, row: torch.Tensor) -> int:
        """New tokens up to and including the first stop id (padding after it is not counted)."""
        for position, token in enumerate(row.tolist()):
            if token in self._stop_ids:
                return position + 1
        return int(row.shape[0])


def video_prompts(processor: Any, conversations: list[list[dict]], first: Any) -> list[torch.Tensor]:
    """The ``(1, T)`` prompt ids of every conversation about the video whose processor inputs are ``first``, built
    without decoding the video again: the chat template's text, its video placeholder replaced by the frame lines
    of the processor's module, the image placeholders expanded for the video's layout, tokenized. The first must
    equal the processor's own ids (``ValueError`` otherwise)."""
    module = sys.modules[type(processor).__module__]
    layout = module.sample_layouts(first["pixel_values"].shape[0], first["data_flag"], first["split_sizes"],
                                   first["num_patches_list"])[0]
    frames = module.build_video_prompt(layout.size)
    prompts = []
    for messages in conversations:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        text = processor.expand_placeholders(text.replace(module.VIDEO_PLACEHOLDER, frames), layout)
        prompts.append(processor.tokenize_prompts([text])[0].to(first["input_ids"].device))
    if not torch.equal(prompts[0], first["input_ids"]):
        raise ValueError(
            "pvc_internvl: the prompt built for a shared video differs from the processor's "
            f"({prompts[0].shape[1]} vs {first['input_ids'].shape[1]} tokens); the processor's prompt format has "
            "changed: run with reuse_video=False and report it"
        )
    return prompts


def common_prefix_length(prompts: list[torch.Tensor]) -> int:
    """Tokens at the start of every ``(1, T)`` prompt that all prompts share, leaving each at least one of its own
    (the step that gives its first answer token)."""
    shortest = min(ids.shape[1] for ids in prompts)
    same = torch.stack([ids[0, :shortest] == prompts[0][0, :shortest] for ids in prompts]).all(dim=0)
    return min(int(same.long().cumprod(dim=0).sum()), shortest - 1)


def per_row_stats(stats: Any, input_ids: torch.Tensor, context_id: int) -> list[dict]:
    """Split ``generate(..., return_stats=True)``'s lists into one dict per prompt row.

    Lists with one entry per row (``prefill_flops``) are indexed by row; lists with one entry per media sample
    (``visual_tokens``, ``data_flag``, ...) belong to the rows that hold image-context tokens, in order. A
    text-only row has 0 visual tokens and ``data_flag`` 0.
    """
    batch = int(input_ids.shape[0])
    media_rows = [row for row in range(batch) if bool((input_ids[row] == context_id).any())]
    rows: list[dict] = [{} for _ in range(batch)]
    for key in STAT_KEYS:
        values = stats[key] if key in stats.keys() else None  # a dict or the model's CallStats
        if values is None:
            continue
        values = list(values)
        if len(values) == batch and (len(media_rows) != len(values) or key == "prefill_flops"):
            by_row = dict(enumerate(values))
        elif len(values) == len(media_rows):
            by_row = dict(zip(media_rows, values))
        else:
            raise ValueError(f"pvc_internvl: stats[{key!r}] has {len(values)} entries for {batch} rows "
                             f"({len(media_rows)} with media)")
        for row in range(batch):
            value = by_row.get(row, False if key == "stage1_applied" else 0)
            rows[row][key] = _plain(value)
    return rows


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (ints for enums and tensors)."""
    if torch.is_tensor(value):
        value = value.tolist()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # IntEnum (DataFlag) -> int
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1 or isinstance(value, bool) or (isinstance(value, float) and value != number):
        raise ValueError(f"pvc_internvl: {name} must be a positive integer, got {value!r}")
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    if value in (0, 1):
        return bool(value)
    raise ValueError(f"pvc_internvl: {name} must be True or False, got {value!r}")


class _CacheSink:
    """Stores each finished batch in lmms-eval's response cache (``--use_cache``) right away.

    lmms-eval 0.7.3's ``ResponseCache.execute`` calls ``generate_until`` once with every uncached request and
    writes the answers only after it returns, so a run killed half-way would have cached nothing. When this
    model is called from that method, the sink writes every batch with the cache's own key, audit log and
    database (exactly what ``execute`` writes afterwards, which then overwrites the same rows), so a killed
    run resumes from its last finished batch. Found nothing (no ``--use_cache``, another lmms-eval version):
    no-op.
    """

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.broken = False
        from lmms_eval.caching import response_cache as module

        self.module = module

    @classmethod
    def find(cls, model: Any) -> Optional["_CacheSink"]:
        try:
            from lmms_eval.caching.response_cache import ResponseCache
        except ImportError:
            return None
        frame = inspect.currentframe()
        try:
            for _ in range(8):
                frame = frame.f_back if frame is not None else None
                if frame is None:
                    return None
                owner = frame.f_locals.get("self")
                if frame.f_code.co_name == "execute" and isinstance(owner, ResponseCache) and frame.f_locals.get("lm") is model:
                    needed = ("_store", "_log_to_audit", "_task_fingerprints", "_model_fingerprint_hash", "_eval_version", "db")
                    if all(hasattr(owner, name) for name in needed) and owner.db is not None:
                        return cls(owner)
                    return None
        finally:
            del frame
        return None

    def store(self, requests: list[Instance], outputs: list[GenerationResult]) -> None:
        if self.broken:
            return
        module, cache = self.module, self.cache
        try:
            for request, output in zip(requests, outputs):
                gen_kwargs = module.extract_gen_kwargs(request)
                if not module.is_deterministic("generate_until", gen_kwargs) or not (output.text and output.text.strip()):
                    continue
                content_hash = module._extract_content_hash(request)
                task_fp = cache._task_fingerprints.get(request.task_name, "")
                key = module.compute_cache_key(
                    request_type="generate_until", task_name=request.task_name, doc_id=request.doc_id,
                    gen_kwargs=gen_kwargs, idx=request.idx, content_hash=content_hash, task_fingerprint=task_fp,
                    model_fingerprint_hash=cache._model_fingerprint_hash, eval_version=cache._eval_version,
                )
                cache._log_to_audit(
                    "generate_until", request.task_name, request.doc_id, request.idx, gen_kwargs, output.text,
                    cache_key=key, deterministic=True, task_fingerprint=task_fp, content_hash=content_hash,
                    model_fingerprint_hash=cache._model_fingerprint_hash,
                )
                cache._store(key, "generate_until", request.task_name, request.doc_id, request.idx, gen_kwargs, output.text)
        except Exception as exc:  # the cache is an optimisation: never fail an evaluation because of it
            eval_logger.warning(f"pvc_internvl: could not store a batch in the response cache early ({exc}); "
                                "lmms-eval stores it at the end of the run")
            self.broken = True
            return
        eval_logger.debug(f"pvc_internvl: cached {len(requests)} answer(s) early")
