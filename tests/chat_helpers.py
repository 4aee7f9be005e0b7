"""Tiny InternVL-Chat models for the chat tests (the writers live in ``internvl.datakit.checkpoints``)."""
from __future__ import annotations

from internvl.models.chat_model import InternVLChatModel
from internvl.datakit.checkpoints import (CHAT_SPECIAL_TOKENS, CHAT_VOCAB_SIZE, randomize_weights, tiny_chat_config,
                                          write_chat_tokenizer, write_tiny_internvl_chat)

SPECIAL_TOKENS = CHAT_SPECIAL_TOKENS
VOCAB_SIZE = CHAT_VOCAB_SIZE
LLMS = ("internlm2", "qwen2", "llama")  # phi3 is covered by the forward parity test: its template needs <|end|>

__all__ = ["SPECIAL_TOKENS", "VOCAB_SIZE", "LLMS", "tiny_chat_config", "randomized", "tiny_model", "write_tokenizer",
           "write_checkpoint"]

randomized = randomize_weights
write_tokenizer = write_chat_tokenizer
write_checkpoint = write_tiny_internvl_chat


def tiny_model(llm: str = "internlm2", **overrides) -> InternVLChatModel:
    return randomize_weights(InternVLChatModel(tiny_chat_config(llm, **overrides)))
