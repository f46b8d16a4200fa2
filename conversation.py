"""The one home of every fixed prompt text: templates (MPT separator style, each also as a Jinja chat template that
renders byte-identical prompts), media placeholders, image tokens, media prefixes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER = "<image>", "<video>"  # a video expands into build_video_prompt lines
IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN = "<img>", "</img>", "<IMG_CONTEXT>"
FRAME_PREFIX, IMAGE_PREFIX = "Frame{}: ", "Image-{}: "  # before the i-th (from 1) frame's / image's <image>

INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)


def frame_prefix(i: int) -> str:
    return FRAME_PREFIX.format(i)


def image_prefix(i: int) -> str:
    return IMAGE_PREFIX.format(i)


def build_video_prompt(num_frames: int) -> str:
    """One ``frame_prefix(i) + <image>`` line per frame, i from 1 (the PVC README video prompt)."""
    return "".join(frame_prefix(i + 1) + IMAGE_PLACEHOLDER + "\n" for i in range(num_frames))


def build_multi_image_prompt(num_images: int) -> str:
    """One ``image_prefix(k) + <image>`` line per image, k from 1 (the InternVL2 multi-image prompt)."""
    return "".join(image_prefix(k + 1) + IMAGE_PLACEHOLDER + "\n" for k in range(num_images))


def media_prefix(count: int, video: bool = False) -> str:
    """Official prefix of a question about media without ``<image>``: a line per frame / image, bare for one image."""
    if video:
        return build_video_prompt(count)
    return build_multi_image_prompt(count) if count > 1 else IMAGE_PLACEHOLDER + "\n"


def is_video_prompt(text: str) -> bool:
    """Whether ``text`` holds a line of :func:`build_video_prompt`, whatever its frame number."""
    line = re.escape(FRAME_PREFIX).replace(re.escape("{}"), r"\d+") + re.escape(IMAGE_PLACEHOLDER + "\n")
    return re.search(line, text) is not None


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
            parts += [self.user_role + old_question + self.sep, self.assistant_role + old_answer + self.sep]
        return "".join(parts) + self.user_role + question + self.sep + self.assistant_role

    @property
    def jinja(self) -> str:
        """:meth:`render` as Jinja for transformers' messages: a leading ``system`` message replaces the default one;
        an ``image`` item becomes ``<image>\n`` (after ``image_prefix(k)`` if several), a ``video`` item ``<video>``."""
        system_prefix, system_suffix = self.system_template.split("{system_message}")
        image_before, image_after = IMAGE_PREFIX.split("{}")
        lit = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731 - a Jinja string literal
        return (
            "{%- set system = " + lit(self.system_message) + " -%}"
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
            "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
            " | map(attribute='text') | join('') -%}{%- endif -%}"
            "{%- set messages = messages[1:] -%}{%- endif -%}"
            "{{- " + lit(system_prefix) + " + system + " + lit(system_suffix + self.sep) + " -}}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}{{- " + lit(self.user_role) + " -}}"
            "{%- elif message['role'] == 'assistant' -%}{{- " + lit(self.assistant_role) + " -}}"
            "{%- else -%}{{- raise_exception('roles must be user or assistant after an optional first system "
            "message, got ' + message['role']) -}}{%- endif -%}"
            "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
            "{%- set num_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
            "{%- set seen = namespace(images=0) -%}{%- for item in message['content'] -%}"
            "{%- if item['type'] == 'image' -%}{%- set seen.images = seen.images + 1 -%}"
            "{%- if num_images > 1 -%}{{- '" + image_before + "' ~ seen.images ~ '" + image_after + "' -}}{%- endif -%}"
            "{{- " + lit(IMAGE_PLACEHOLDER + "\n") + " -}}"
            "{%- elif item['type'] == 'video' -%}{{- " + lit(VIDEO_PLACEHOLDER) + " -}}"
            "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}{%- endfor -%}{%- endif -%}"
            "{{- " + lit(self.sep) + " -}}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- " + lit(self.assistant_role) + " -}}{%- endif -%}"
        )


_CHATML = ConversationTemplate(name="internlm2-chat", system_template="<|im_start|>system\n{system_message}",
                               user_role="<|im_start|>user\n", assistant_role="<|im_start|>assistant\n",
                               sep="<|im_end|>")
_PHI3 = ConversationTemplate(name="phi3-chat", system_template="<|system|>\n{system_message}", user_role="<|user|>\n",
                             assistant_role="<|assistant|>\n", sep="<|end|>")
TEMPLATES = {template.name: template for template in (_CHATML, replace(_CHATML, name="Hermes-2"), _PHI3)}
DEFAULT_TEMPLATE = _CHATML.name  # InternVL2's and PVC's template


def get_template(name: str) -> ConversationTemplate:
    """The template called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
