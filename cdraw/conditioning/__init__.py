"""Conditioning: class labels, captions through a BiLSTM or a pretrained text encoder.

An encoder turns a batch's conditions (encoded by its tokenizer) into a :class:`Context`: a fixed
vector, and/or per-word states with a padding mask that the decoder aligns over (alignDRAW).
"""

from cdraw.conditioning.base import (
    DEFAULT_TEXT_ENCODER,
    KINDS,
    BiLSTMConfig,
    ConditionConfig,
    Context,
    LabelConfig,
    PretrainedConfig,
)
from cdraw.conditioning.encoders import (
    BiLSTMEncoder,
    LabelEncoder,
    PretrainedTextEncoder,
    make_encoder,
    make_tokenizer,
    resolve_text_encoder,
)
from cdraw.conditioning.tokenizers import PAD, HFTokenizer, LabelTokenizer, SentencePieceTokenizer

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "KINDS",
    "PAD",
    "BiLSTMConfig",
    "BiLSTMEncoder",
    "ConditionConfig",
    "Context",
    "HFTokenizer",
    "LabelConfig",
    "LabelEncoder",
    "LabelTokenizer",
    "PretrainedConfig",
    "PretrainedTextEncoder",
    "SentencePieceTokenizer",
    "make_encoder",
    "make_tokenizer",
    "resolve_text_encoder",
]
