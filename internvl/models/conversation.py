"""Conversation templates of the published InternVL-Chat models.

The prompt a model sees must be byte-identical to the one it was trained on, so each template
keeps the reference's system message, role markers and separators exactly::

    from internvl.models.conversation import get_conv_template

    conv = get_conv_template("internlm2-chat")        # InternVL2-2B / 8B / 26B
    conv.append_message(conv.roles[0], "<image>\\nWhat is in the picture?")
    conv.append_message(conv.roles[1], None)          # None: the model answers next
    prompt = conv.get_prompt()

Which template a checkpoint uses is ``config.template`` of its ``config.json``:

============== ================================================= ============================
template       models                                            turn separator
============== ================================================= ============================
internlm2-chat InternVL2-2B/8B/26B, InternVL-Chat-V1-5 (InternLM2) ``<|im_end|>``
Hermes-2       InternVL2-1B/40B/76B, Mini-InternVL-Chat-V1-5      ``<|im_end|>``
phi3-chat      InternVL2-4B, Mini-InternVL-Chat-4B-V1-5 (Phi-3)   ``<|end|>``
internvl2_5    InternVL2.5 and InternVL3                          ``<|im_end|>\\n``
plain          LLaVA-style stage-1 (projector) pre-training       ``\\n``
============== ================================================= ============================

The first four are ChatML-like ("MPT" separator style: system, then ``role + message + sep``
per turn, the open assistant turn ends with the bare role marker). ``plain`` has no system
message and no role markers: it is LLaVA's ``plain`` template, which InternVL's LLaVA-based
InternVL-Chat-V1-x used for pre-training the projector on image-caption pairs.
"""
from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Dict, List, Optional, Tuple

__all__ = ["SeparatorStyle", "Conversation", "register_conv_template", "get_conv_template", "conv_templates",
           "image_prefix", "video_prefix"]


class SeparatorStyle(Enum):
    """How turns are joined (the reference's names)."""

    MPT = "mpt"      # system_prompt + sep, then role + message + sep per turn; open turn: role
    PLAIN = "plain"  # system_prompt, then message + (sep after a user turn, sep2 after an assistant turn)


@dataclasses.dataclass
class Conversation:
    """A prompt template and the messages of one conversation."""

    name: str
    system_template: str = "{system_message}"
    system_message: str = ""
    roles: Tuple[str, str] = ("USER", "ASSISTANT")
    messages: List[List[Optional[str]]] = dataclasses.field(default_factory=list)
    sep_style: SeparatorStyle = SeparatorStyle.MPT
    sep: str = "\n"
    sep2: Optional[str] = None
    # Stop criteria beyond the turn separator, as the reference records them (serving code reads them).
    stop_str: Optional[str] = None
    stop_token_ids: Optional[List[int]] = None

    def get_prompt(self) -> str:
        """The prompt text: every message so far; a trailing ``None`` message leaves that role's turn open."""
        system_prompt = self.system_template.format(system_message=self.system_message)
        if self.sep_style is SeparatorStyle.MPT:
            prompt = system_prompt + self.sep
            for role, message in self.messages:
                # the reference tests truthiness, so an empty answer also leaves the turn open
                prompt += role + message + self.sep if message else role
            return prompt
        if self.sep_style is SeparatorStyle.PLAIN:
            # LLaVA leaves sep2 None (and fails on a finished assistant turn); here it falls back to sep.
            seps = (self.sep, self.sep if self.sep2 is None else self.sep2)
            prompt = system_prompt
            for i, (_, message) in enumerate(self.messages):
                if message:
                    prompt += message + seps[i % 2]
            return prompt
        raise ValueError(f"template {self.name!r} has an unknown separator style {self.sep_style!r}")

    @property
    def stop_token(self) -> str:
        """The token that ends an assistant turn (``sep`` without surrounding whitespace); empty for ``plain``,
        whose turns end with a newline, so generation stops at the tokenizer's end-of-sequence token."""
        return self.sep.strip()

    def set_system_message(self, system_message: str) -> None:
        self.system_message = system_message

    def append_message(self, role: str, message: Optional[str]) -> None:
        self.messages.append([role, message])

    def update_last_message(self, message: str) -> None:
        """Fill in the open (``None``) last message, typically with the model's answer."""
        self.messages[-1][1] = message

    def copy(self) -> "Conversation":
        return dataclasses.replace(self, messages=[[role, message] for role, message in self.messages],
                                   stop_token_ids=None if self.stop_token_ids is None else list(self.stop_token_ids))

    def to_openai_api_messages(self) -> List[dict]:
        """The conversation as OpenAI chat-completion messages (system first)."""
        out = [{"role": "system", "content": self.system_message}]
        for i, (_, message) in enumerate(self.messages):
            if i % 2 == 0:
                out.append({"role": "user", "content": message})
            elif message is not None:
                out.append({"role": "assistant", "content": message})
        return out


conv_templates: Dict[str, Conversation] = {}


def register_conv_template(template: Conversation, override: bool = False) -> None:
    """Add a template to the registry (``override=True`` to replace one of the same name)."""
    if template.name in conv_templates and not override:
        raise ValueError(f"conversation template {template.name!r} is already registered; pass override=True")
    conv_templates[template.name] = template


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the registered template ``name`` (``config.template`` of a checkpoint)."""
    if name not in conv_templates:
        raise KeyError(f"unknown conversation template {name!r}; registered templates: {sorted(conv_templates)} "
                       "(config.template of the checkpoint names one of them)")
    return conv_templates[name].copy()


def image_prefix(num_images: int) -> str:
    """``Image-1: <image>\\nImage-2: <image>\\n...``: how a multi-image question names its images."""
    return "".join(f"Image-{i}: <image>\n" for i in range(1, num_images + 1))


def video_prefix(num_frames: int) -> str:
    """``Frame1: <image>\\nFrame2: <image>\\n...``: how a video question names its frames."""
    return "".join(f"Frame{i}: <image>\n" for i in range(1, num_frames + 1))


# The system message that InternVL2 (and InternVL-Chat-V1-5) was trained with. The reference keeps it
# for these three templates, on purpose, so benchmark results do not shift.
_INTERNVL2_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

# Hermes-2 and internlm2-chat give the same prompt; they differ only in training, where internlm2-chat
# sequences start with the tokenizer's <s>.
register_conv_template(Conversation(
    name="Hermes-2", system_template="<|im_start|>system\n{system_message}", system_message=_INTERNVL2_SYSTEM,
    roles=_CHATML_ROLES, sep_style=SeparatorStyle.MPT, sep="<|im_end|>", stop_str="<|endoftext|>"))

register_conv_template(Conversation(
    name="internlm2-chat", system_template="<|im_start|>system\n{system_message}", system_message=_INTERNVL2_SYSTEM,
    roles=_CHATML_ROLES, sep_style=SeparatorStyle.MPT, sep="<|im_end|>"))

register_conv_template(Conversation(
    name="phi3-chat", system_template="<|system|>\n{system_message}", system_message=_INTERNVL2_SYSTEM,
    roles=("<|user|>\n", "<|assistant|>\n"), sep_style=SeparatorStyle.MPT, sep="<|end|>"))

register_conv_template(Conversation(
    name="internvl2_5", system_template="<|im_start|>system\n{system_message}",
    system_message="你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
    roles=_CHATML_ROLES, sep_style=SeparatorStyle.MPT, sep="<|im_end|>\n"))

register_conv_template(Conversation(
    name="plain", system_template="{system_message}", system_message="", roles=("", ""),
    sep_style=SeparatorStyle.PLAIN, sep="\n"))

