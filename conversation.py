"""The InternVL2-era conversation templates (``internlm2-chat``, ``Hermes-2``, ``phi3-chat``).

All three use the MPT separator style: every message is ``role + text + sep``, there is no newline
after the separator, and the prompt ends with the assistant role so the model writes the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

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
