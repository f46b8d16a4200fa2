"""The InternVL2-era conversation templates (``internlm2-chat``, ``Hermes-2``, ``phi3-chat``).

All three use the MPT separator style: every message is ``role + text + sep``, there is no newline
after the separator, and the prompt ends with the assistant role so the model writes the answer.

Each template is one :class:`ConversationTemplate`; its Jinja chat template (for ``apply_chat_template``)
is generated from the same fields, so both render byte-identical prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN = "<img>", "</img>", "<IMG_CONTEXT>"
VIDEO_PLACEHOLDER = "<video>"  # expanded by the processor into one "Frame{i}: <image>\n" line per frame

INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)


@dataclass(frozen=True)
class ConversationTemplate:
    """One chat template: ``system_template.format(system_message=...) + sep``, then ``role + text + sep``."""

    name: str
    system_template: str
    user_role: str
    assistant_role: str
    sep: str
    system_message: str = INTERNVL_SYSTEM_MESSAGE

    def render(self, history: list[tuple[str, str]], question: str, system_message: str | None = None) -> str:
        """The prompt for ``question`` after the ``(question, answer)`` pairs of ``history``."""
        system = self.system_message if system_message is None else system_message
        parts = [self.system_template.format(system_message=system) + self.sep]
        for old_question, old_answer in history:
            parts.append(self.user_role + old_question + self.sep)
            parts.append(self.assistant_role + old_answer + self.sep)
        parts.append(self.user_role + question + self.sep)
        parts.append(self.assistant_role)
        return "".join(parts)

    @property
    def jinja(self) -> str:
        """The Jinja chat template rendering what :meth:`render` renders, for transformers' message format.

        A leading ``system`` message replaces the default system message. Message content is a string or
        a list of ``{"type": "text" | "image" | "video", ...}`` items: an image becomes ``<image>\n``
        (``Image-k: <image>\n`` when the message has several), a video ``<video>`` and text its text.
        """
        system_prefix, system_suffix = self.system_template.split("{system_message}")
        lit = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731 - a Jinja string literal
        return (
            "{%- set system = " + lit(self.system_message) + " -%}"
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
            "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
            " | map(attribute='text') | join('') -%}{%- endif -%}"
            "{%- set messages = messages[1:] -%}"
            "{%- endif -%}"
            "{{- " + lit(system_prefix) + " + system + " + lit(system_suffix + self.sep) + " -}}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}{{- " + lit(self.user_role) + " -}}"
            "{%- elif message['role'] == 'assistant' -%}{{- " + lit(self.assistant_role) + " -}}"
            "{%- else -%}{{- raise_exception('roles must be user or assistant after an optional first system "
            "message, got ' + message['role']) -}}{%- endif -%}"
            "{%- if message['content'] is string -%}{{- message['content'] -}}"
            "{%- else -%}"
            "{%- set num_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
            "{%- set seen = namespace(images=0) -%}"
            "{%- for item in message['content'] -%}"
            "{%- if item['type'] == 'image' -%}{%- set seen.images = seen.images + 1 -%}"
            "{%- if num_images > 1 -%}{{- 'Image-' ~ seen.images ~ ': ' -}}{%- endif -%}"
            "{{- " + lit(IMAGE_PLACEHOLDER + "\n") + " -}}"
            "{%- elif item['type'] == 'video' -%}{{- " + lit(VIDEO_PLACEHOLDER) + " -}}"
            "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- endif -%}"
            "{{- " + lit(self.sep) + " -}}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- " + lit(self.assistant_role) + " -}}{%- endif -%}"
        )


TEMPLATES = {
    "internlm2-chat": ConversationTemplate(
        name="internlm2-chat",
        system_template="<|im_start|>system\n{system_message}",
        user_role="<|im_start|>user\n",
        assistant_role="<|im_start|>assistant\n",
        sep="<|im_end|>",
    ),
    "Hermes-2": ConversationTemplate(
        name="Hermes-2",
        system_template="<|im_start|>system\n{system_message}",
        user_role="<|im_start|>user\n",
        assistant_role="<|im_start|>assistant\n",
        sep="<|im_end|>",
    ),
    "phi3-chat": ConversationTemplate(
        name="phi3-chat",
        system_template="<|system|>\n{system_message}",
        user_role="<|user|>\n",
        assistant_role="<|assistant|>\n",
        sep="<|end|>",
    ),
}


def get_template(name: str) -> ConversationTemplate:
    """The template called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
