"""From what a user asks for (class ids, caption strings) to the integer tensors an encoder reads.

Every tokenizer's ``encode`` checks its input and returns a tensor: labels (B,) int64, or token
ids (B, L) int64 padded with :data:`PAD` (never a real id, so the mask is simply ``ids != PAD``).
Bad input is a :class:`~cdraw.errors.CDrawError`; a caption truncated to ``max_length`` or words
the model never saw are a :class:`~cdraw.errors.CDrawWarning` naming them.
"""

from __future__ import annotations

import io
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from cdraw.errors import CDrawError, CDrawWarning

PAD = -1
#: Words are what a person would call words: runs of letters, digits and apostrophes.
WORD = re.compile(r"[\w']+")
#: How many known words the unknown-words warning lists.
KNOWN_NAMED = 30
#: How many unknown words a warning names before it says "and N more".
MAX_NAMED = 10


def normalise(caption: str) -> str:
    """Captions are compared and tokenized lowercased, with runs of spaces collapsed."""
    return " ".join(caption.lower().split())


def words_of(caption: str) -> list[str]:
    return WORD.findall(normalise(caption))


def check_captions(captions: Sequence[str] | str) -> list[str]:
    """A list of non-empty caption strings, or a clear error for anything else."""
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    if not captions:
        raise CDrawError("no captions given")
    for c in captions:
        if not isinstance(c, str):
            raise CDrawError(f"this model is conditioned on captions (text), got {c!r}: pass --caption TEXT")
        if not words_of(c):
            raise CDrawError(f"empty caption {c!r}: write a few words, e.g. 'the digit 7 is at the top left'")
    return [normalise(c) for c in captions]


def pad(rows: list[list[int]], max_length: int) -> Tensor:
    """Lists of ids -> (B, L) int64 padded with PAD, L the longest row (each cut to ``max_length``)."""
    rows = [r[:max_length] for r in rows]
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def warn_truncated(lengths: Iterable[int], max_length: int) -> None:
    long = [n for n in lengths if n > max_length]
    if long:
        warnings.warn(
            f"{len(long)} caption(s) longer than {max_length} tokens (up to {max(long)}) were truncated "
            f"to {max_length}",
            CDrawWarning,
            stacklevel=3,
        )


def warn_unknown(words: Iterable[str], known: Iterable[str] | None = None) -> None:
    """One warning naming the words a model never saw, what it does know, and the way to a model
    that would know them."""
    unknown = sorted(set(words))
    if unknown:
        more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
        vocabulary = sorted(known) if known is not None else []
        knows = (
            f"; it knows {len(vocabulary)} words: {' '.join(vocabulary[:KNOWN_NAMED])}"
            + (" ..." if len(vocabulary) > KNOWN_NAMED else "")
            if vocabulary
            else ""
        )
        warnings.warn(
            f"words the model never saw in training: {', '.join(unknown[:MAX_NAMED])}{more} "
            f"(it still draws, but these words carry little meaning for it){knows}. "
            "For other subjects train a model on captions that use them, e.g. COCO: "
            "cdraw prepare coco --help, then cdraw train coco",
            CDrawWarning,
            stacklevel=3,
        )


def check_ids(ids: Tensor, size: int, what: str) -> Tensor:
    """A tensor of ids that a caller made itself: int64, each in 0..size-1 (or PAD for tokens)."""
    if ids.dtype != torch.long:
        raise CDrawError(f"{what} must be an int64 tensor, got {ids.dtype}")
    low = PAD if ids.dim() == 2 else 0
    if ids.numel() and (ids.min() < low or ids.max() >= size):
        raise CDrawError(f"{what} out of range: this model knows 0..{size - 1}")
    return ids


class LabelTokenizer:
    """Class ids 0..num_classes-1 -> (B,) int64."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def check(self, ids: Tensor) -> Tensor:
        if ids.dim() != 1:
            raise CDrawError(f"labels must be a (B,) tensor, got shape {tuple(ids.shape)}")
        return check_ids(ids, self.num_classes, "labels")

    def pieces(self, ids: Tensor) -> list[str]:
        return [str(int(k)) for k in ids.reshape(-1)]

    def encode(self, labels: Sequence[int] | Tensor | int) -> Tensor:
        if isinstance(labels, Tensor):
            labels = labels.tolist()
        if isinstance(labels, int | str):
            labels = [labels]
        labels = list(labels)
        if not labels:
            raise CDrawError("no labels given")
        labels = [int(k) if isinstance(k, numbers.Integral) and not isinstance(k, bool) else k for k in labels]
        last = self.num_classes - 1
        for k in labels:
            if not isinstance(k, int) or isinstance(k, bool):
                raise CDrawError(f"this model is conditioned on class labels, got {k!r}: give whole numbers 0..{last}")
            if not 0 <= k <= last:
                raise CDrawError(f"label {k} is out of range: this model knows labels 0..{last}")
        return torch.tensor(labels, dtype=torch.long)


class SentencePieceTokenizer:
    """A SentencePiece model trained on the training captions, plus the words it saw there.

    Saved as two files in a folder: ``tokenizer.model`` (SentencePiece's own format, readable by
    ``sentencepiece.SentencePieceProcessor``) and ``tokenizer_words.txt`` (one training word per
    line, to warn about words the model never saw: SentencePiece itself would quietly spell them
    out in pieces).
    """

    MODEL_FILE = "tokenizer.model"
    WORDS_FILE = "tokenizer_words.txt"

    def __init__(self, model_proto: bytes, known_words: Iterable[str], max_length: int):
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.known_words = frozenset(known_words)
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def check(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2:
            raise CDrawError(f"token ids must be a (B, L) tensor, got shape {tuple(ids.shape)}")
        return check_ids(ids, self.vocab_size, "token ids")

    @classmethod
    def train(cls, captions: Sequence[str], vocab_size: int, max_length: int) -> SentencePieceTokenizer:
        """Train BPE pieces on ``captions`` (a small corpus like MNIST's captions gets whole words).

        ``vocab_size`` is an upper bound: a corpus with fewer distinct pieces gets fewer.
        """
        import sentencepiece as spm

        captions = check_captions(captions)
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(captions),
            model_writer=buf,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type="bpe",  # unigram on a tiny vocabulary falls back to single letters
            character_coverage=1.0,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=1,  # the same pieces on every process and every run
            minloglevel=2,
        )
        words = {w for c in captions for w in words_of(c)}
        return cls(buf.getvalue(), words, max_length)

    @classmethod
    def load(cls, folder: str | os.PathLike, max_length: int) -> SentencePieceTokenizer:
        folder = Path(folder)
        model, words = folder / cls.MODEL_FILE, folder / cls.WORDS_FILE
        if not model.is_file() or not words.is_file():
            raise CDrawError(f"no SentencePiece tokenizer in {folder} (expected {cls.MODEL_FILE} and {cls.WORDS_FILE})")
        try:
            return cls(model.read_bytes(), words.read_text().split(), max_length)
        except RuntimeError as e:  # sentencepiece's error for a damaged model
            raise CDrawError(f"{model} is not a SentencePiece model ({e})") from None

    def save(self, folder: str | os.PathLike) -> None:
        from cdraw.io import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        words = "\n".join(sorted(self.known_words)) + "\n"
        atomic_write(folder / self.WORDS_FILE, lambda tmp: Path(tmp).write_text(words))
        atomic_write(folder / self.MODEL_FILE, lambda tmp: Path(tmp).write_bytes(self.proto))

    def pieces(self, ids: Tensor) -> list[str]:
        """The text of each real token of one caption's (L,) ids, for plots."""
        return [self.sp.id_to_piece(int(k)) for k in ids if k != PAD]

    def encode(self, captions: Sequence[str] | str) -> Tensor:
        captions = check_captions(captions)
        warn_unknown((w for c in captions for w in words_of(c) if w not in self.known_words), self.known_words)
        rows = self.sp.encode(captions)
        warn_truncated(map(len, rows), self.max_length)
        return pad(rows, self.max_length)  # (B, L)


class HFTokenizer:
    """A ``transformers`` tokenizer (with its special tokens), cut to ``max_length`` tokens."""

    def __init__(self, tokenizer, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length

    def check(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2:
            raise CDrawError(f"token ids must be a (B, L) tensor, got shape {tuple(ids.shape)}")
        return check_ids(ids, len(self.tok), "token ids")

    def pieces(self, ids: Tensor) -> list[str]:
        """The text of each real token of one caption's (L,) ids, for plots."""
        return self.tok.convert_ids_to_tokens([int(k) for k in ids if k != PAD])

    def encode(self, captions: Sequence[str] | str) -> Tensor:
        captions = check_captions(captions)
        rows = self.tok(captions, add_special_tokens=True)["input_ids"]
        warn_truncated(map(len, rows), self.max_length)
        unk = self.tok.unk_token_id
        if unk is not None and any(unk in r for r in rows):
            warn_unknown(
                w for c in captions for w in words_of(c) if unk in self.tok(w, add_special_tokens=False)["input_ids"]
            )
        if any(len(r) > self.max_length for r in rows):  # cut, keeping the closing special token
            rows = self.tok(captions, add_special_tokens=True, truncation=True, max_length=self.max_length)["input_ids"]
        return pad(rows, self.max_length)  # (B, L)
