"""The ``README.md`` model card of a written checkpoint, built with ``huggingface_hub``'s ``ModelCard`` /
``ModelCardData`` (license, base_model, pipeline_tag, tags). It never holds a local path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from conversion.package import remote_module

TAGS = ["pvc_internvl", "internvl", "custom_code", "multimodal", "video", "video-text-to-text", "image-text-to-text"]
PLACEHOLDER_REF = "path/to/checkpoint-or-repo-id"


@dataclass
class CardInfo:
    """What the card says about where the checkpoint comes from.

    Args:
        origin: one Markdown sentence on where the weights come from (no local path).
        model_ref: what the snippets pass to ``from_pretrained`` (a Hub repo id, or a placeholder).
        license: SPDX-like license id of the weights (``None``: "other", with a note to set it).
        base_model: Hub repo id of the source checkpoint, when known.
        random_weights: the weights are random (demo checkpoint).
    """

    origin: str
    model_ref: str = PLACEHOLDER_REF
    license: str | None = None
    base_model: str | None = None
    random_weights: bool = False


def card_data(info: CardInfo) -> ModelCardData:
    tags = TAGS + (["random-weights", "demo"] if info.random_weights else [])
    return ModelCardData(
        license=info.license or "other",
        base_model=info.base_model,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=tags,
    )


def _budget_lines(config: Any) -> list[str]:
    per_frame = config.num_image_token
    flags = remote_module("configuration_pvc_internvl").DataFlag
    tile = config.tokens_per_tile(flags.IMAGE)
    frame = config.tokens_per_tile(flags.VIDEO)
    max_tiles = config.max_dynamic_patch + (1 if config.use_thumbnail and config.max_dynamic_patch > 1 else 0)
    if not config.dynamic_image_size:
        max_tiles = 1
    return [
        f"| LLM tokens per encoded frame (`num_image_token`) | {per_frame} |",
        f"| image tile (repeated `image_repeat_time` = {config.image_repeat_time} times) | {tile} |",
        f"| video frame (repeated `video_repeat_time` = {config.video_repeat_time} times) | {frame} |",
        f"| largest single image ({max_tiles} tiles incl. thumbnail) | {tile * max_tiles} |",
        f"| 64-frame video | {frame * 64} |",
        f"| context length of the language model | {config.max_context_length} |",
    ]


def quick_start(config: Any, ref: str) -> list[str]:
    """The snippets: the native path (AutoProcessor + apply_chat_template + generate) first, then ``chat()``."""
    return [
        "## Quick start",
        "",
        "Native transformers path (`AutoProcessor` + chat template + `generate`):",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoProcessor, AutoTokenizer",
        "",
        f'path = "{ref}"',
        "model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16).eval()",
        "processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)",
        "",
        "messages = [{\"role\": \"user\", \"content\": [",
        "    {\"type\": \"image\", \"path\": \"examples/image1.jpg\"},",
        "    {\"type\": \"text\", \"text\": \"Describe the image.\"},",
        "]}]",
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,",
        "                                       return_dict=True, return_tensors=\"pt\")",
        "inputs = inputs.to(model.device, dtype=torch.bfloat16)",
        "output_ids = model.generate(**inputs, max_new_tokens=64, do_sample=False)  # only the new tokens",
        "print(processor.batch_decode(output_ids, skip_special_tokens=True)[0])",
        "",
        "# a video: 8 frames, one tile each",
        "messages = [{\"role\": \"user\", \"content\": [",
        "    {\"type\": \"video\", \"path\": \"examples/red-panda.mp4\", \"num_frames\": 8},",
        "    {\"type\": \"text\", \"text\": \"What happens in the video?\"},",
        "]}]",
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,",
        "                                       return_dict=True, return_tensors=\"pt\")",
        "output_ids = model.generate(**inputs.to(model.device, dtype=torch.bfloat16), max_new_tokens=64)",
        "print(processor.batch_decode(output_ids, skip_special_tokens=True)[0])",
        "```",
        "",
        "The InternVL2 `chat()` interface (same answers):",
        "",
        "```python",
        "from transformers.dynamic_module_utils import get_class_from_dynamic_module",
        "",
        "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)",
        "load_image = get_class_from_dynamic_module(\"processing.load_image\", path)",
        f"pixel_values = load_image(\"examples/image1.jpg\", input_size={config.image_size}, "
        f"max_num={config.max_dynamic_patch}).to(torch.bfloat16)",
        "generation_config = dict(max_new_tokens=64, do_sample=False)",
        "print(model.chat(tokenizer, pixel_values, \"<image>\\nDescribe the image.\", generation_config))",
        "```",
    ]


def build_card(config: Any, info: CardInfo, notes: list[str], has_tokenizer: bool) -> ModelCard:
    """The model card of a checkpoint with ``config`` (a ``PVCInternVLConfig``)."""
    llm_name = type(config.llm_config).__name__.replace("Config", "")
    title = "PVC-InternVL demo checkpoint (RANDOM WEIGHTS)" if info.random_weights else "PVC-InternVL checkpoint"
    lines = [f"# {title}", ""]
    if info.random_weights:
        lines += ["> **The weights of this checkpoint are random.** It exists to try the code (loading, processor,",
                  "> chat template, generation) in seconds on a CPU; its answers are meaningless.", ""]
    lines += [
        info.origin,
        "InternViT" + (" with PVC progressive temporal encoding" if config.use_temporal else "")
        + f" -> pixel shuffle -> `mlp1` -> native `{llm_name}` language model;",
        "loads with transformers 5.x and 4.57 through remote code (`trust_remote_code=True`).",
        "",
        *quick_start(config, info.model_ref),
        "",
        "## Token budget",
        "",
        "| what | LLM tokens |",
        "|---|---|",
        *_budget_lines(config),
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in notes],
    ]
    if info.license is None:
        lines.append("- The license of the weights was not given (`--license`); the card says `other`.")
    if not has_tokenizer:
        lines.append("- No tokenizer was written (the source had none); load the tokenizer of the original model.")
    if config.img_context_token_id is None:
        context_token = remote_module("conversation").IMG_CONTEXT_TOKEN
        lines.append(f"- `img_context_token_id` is not set: set `model.img_context_token_id = <id of {context_token}>` "
                     "before calling the model.")
    body = "\n".join(lines) + "\n"
    return ModelCard(f"---\n{card_data(info).to_yaml()}\n---\n\n{body}")
