"""The ``README.md`` model card written into every converted checkpoint."""

from __future__ import annotations

from typing import Any


def _budget_lines(config: Any) -> list[str]:
    per_frame = config.num_image_token
    tile = config.tokens_per_tile(1)
    frame = config.tokens_per_tile(3)
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


def model_card(config: Any, *, source: str, kind: str, notes: list[str], has_tokenizer: bool) -> str:
    """Markdown text of the model card."""
    use_temporal = bool(config.use_temporal)
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags:",
        "- pvc_internvl",
        "- custom_code",
        "---",
        "",
        "# PVC-InternVL checkpoint",
        "",
        f"Converted from `{source}` (source `model_type`: `{kind}`) by `conversion/convert_checkpoint.py`.",
        "InternViT" + (" with PVC progressive temporal encoding" if use_temporal else "")
        + f" -> pixel shuffle -> `mlp1` -> native `{type(config.llm_config).__name__.replace('Config', '')}` language model;",
        "loads with transformers 5.x (and 4.57) through remote code (`trust_remote_code=True`).",
        "",
        "## Quick start",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'path = "PATH_OR_REPO_ID"',
        "model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16).eval()",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "",
        "from transformers.dynamic_module_utils import get_class_from_dynamic_module",
        "load_image = get_class_from_dynamic_module('processing.load_image', path)  # processing.load_image",
        "load_video = get_class_from_dynamic_module('processing.load_video', path)  # processing.load_video",
        "",
        "# one image (dynamic tiles + thumbnail)",
        f"pixel_values = load_image('image.jpg', input_size={config.image_size}, "
        f"max_num={config.max_dynamic_patch}).to(torch.bfloat16)",
        "generation_config = dict(max_new_tokens=512, do_sample=False)",
        "response = model.chat(tokenizer, pixel_values, '<image>\\nDescribe the image.', generation_config,",
        "                      data_flag=torch.tensor([1]))",
        "",
        "# one video (one tile per frame)",
        f"pixel_values, num_patches_list = load_video('video.mp4', num_segments=16, input_size={config.image_size})",
        "question = ''.join(f'Frame{i + 1}: <image>\\n' for i in range(len(num_patches_list))) + 'What happens?'",
        "response = model.chat(tokenizer, pixel_values.to(torch.bfloat16), question, generation_config,",
        "                      num_patches_list=num_patches_list, data_flag=torch.tensor([3]),",
        "                      split_sizes=[pixel_values.shape[0]])",
        "```",
        "",
        "`data_flag` per sample: 1 = single image, 2 = several images, 3 = video. `AutoProcessor.from_pretrained(path,",
        "trust_remote_code=True)` prepares `pixel_values`, `num_patches_list`, `data_flag` and `split_sizes` in one call.",
        "",
        "## Token budget",
        "",
        "| what | LLM tokens |",
        "|---|---|",
        *_budget_lines(config),
        "",
        "## Conversion notes",
        "",
        *[f"- {note}" for note in notes],
    ]
    if not has_tokenizer:
        lines.append("- No tokenizer was written (the source had none); load the tokenizer of the original model.")
    if config.img_context_token_id is None:
        lines.append("- `img_context_token_id` is not set: set `model.img_context_token_id = <id of <IMG_CONTEXT>>` "
                     "before calling the model.")
    lines.append("")
    return "\n".join(lines)
