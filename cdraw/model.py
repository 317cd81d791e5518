"""The DRAW recurrent VAE (Gregor et al. 2015, section 2), read top to bottom.

One step t = 1..T, in the paper's order (equation numbers in the comments):

    x_hat_t = x - sigmoid(c_{t-1})                      (3)
    r_t     = read(x_t, x_hat_t, h_dec_{t-1})           (4)
    h_enc_t = RNN_enc(h_enc_{t-1}, [r_t, h_dec_{t-1}])  (5)
    z_t     ~ Q(Z_t | h_enc_t)                          (6)
    h_dec_t = RNN_dec(h_dec_{t-1}, z_t)                 (7)
    c_t     = c_{t-1} + write(h_dec_t)                  (8)

and the loss L = L^x + L^z in nats per image: L^x = -log D(x | c_T) (9) and L^z the KL of each
step's posterior from its prior, summed over steps and latent dimensions (10)-(11).

Conditioning (:mod:`cdraw.conditioning`): an encoder turns labels or captions into a
:class:`~cdraw.conditioning.Context`. Its fixed vector is given to the encoder and the decoder at
every step next to their usual inputs. Its per-word states h_lang_k are read by alignDRAW's
alignment (Mansimov et al. 2016, section 3.2), with the decoder's previous state:

    alpha_t = softmax_k(v^T tanh(U h_lang_k + W h_dec_{t-1} + b))   (alignDRAW, masked over padding)
    s_t     = sum_k alpha_tk h_lang_k
    h_dec_t = RNN_dec(h_dec_{t-1}, [z_t, s_t])                     (replaces (7))

and the prior over z_t may be learned from h_dec_{t-1}, N(mu(h_dec_{t-1}), sigma(h_dec_{t-1})), in
which case the KL of (10) is between two diagonal Gaussians; alignDRAW bounds it (``bounded_prior``):

    mu_t = tanh(W_mu h_dec_{t-1}),  sigma_t = exp(tanh(W_sigma h_dec_{t-1}))

:meth:`DRAW.step` is that step as written, one line per equation, each calling a named part
(reader, encoder, posterior, prior, alignment, decoder, writer). Training and sampling run
:mod:`cdraw.fused` by default, the same step with its matrix products fused (tested equal, loss
and gradients in float64); ``model.use_fused_step(False)`` runs :meth:`DRAW.step` itself.

Shapes: B batch, T steps, C channels, H/W image, N patch, Z latent, D context vector, L caption
tokens, K word state, A alignment size, E/F enc/dec sizes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from huggingface_hub import ModelHubMixin
from torch import Tensor, nn

from cdraw import attention, fused
from cdraw.attention import WINDOW_PARAMS, Window, WindowParams
from cdraw.conditioning.base import ConditionConfig, Context
from cdraw.conditioning.encoders import make_encoder
from cdraw.errors import CDrawError, CDrawWarning
from cdraw.gaussian import GaussianLayer, kl_divergence, log_ratio
from cdraw.hub import LIBRARY, TAGS, resolve_checkpoint
from cdraw.io import (  # noqa: F401 (CONFIG_NAME, TRAINING_RECORD: re-exported for callers of the model)
    CONFIG_NAME,
    EVAL_RECORD,
    TRAINING_RECORD,
    WEIGHTS_NAME,
    atomic_write,
    load_weights,
    read_config,
    read_record,
    save_folder,
    typed_fields,
)
from cdraw.likelihoods import LIKELIHOODS, make_likelihood

MODEL_TYPE = "draw"


#: The largest sizes a DRAWConfig may name (far beyond any DRAW; they catch typos and damaged files).
SIZE_LIMITS = {
    "image_size": 4096, "channels": 64, "glimpses": 10_000, "read_size": 1024, "write_size": 1024,
    "enc_size": 65_536, "dec_size": 65_536, "z_size": 65_536, "align_size": 65_536, "context_size": 65_536,
}  # fmt: skip
#: ... and the most parameters (about 4 GB of float32 weights).
MAX_PARAMETERS = 1_000_000_000


def _positive_int(n: object) -> bool:
    """What DRAWConfig takes as a size or count: an int of at least 1."""
    return isinstance(n, int) and n >= 1


@dataclass
class DRAWConfig:
    """A DRAW model's shape. Defaults are the paper's MNIST model (Table 3)."""

    image_size: tuple[int, int] = (28, 28)  # (H, W)
    channels: int = 1
    glimpses: int = field(
        default=64, metadata={"help": "T, the number of glimpses (steps of drawing)", "aliases": ["--steps"]}
    )
    read_size: int = 2  # N of the read window
    write_size: int = 5  # N of the write window
    enc_size: int = 256
    dec_size: int = 256
    z_size: int = 100
    attention: bool = True  # False: read the whole image, write the whole canvas
    likelihood: str = "bernoulli"  # one of cdraw.likelihoods.LIKELIHOODS
    context_size: int = 0  # D of a raw Context(vector) passed in by the caller (no encoder)
    learned_prior: bool = False  # prior N(mu(h_dec_{t-1}), sigma(h_dec_{t-1})) instead of N(0, I)
    # alignDRAW's form of the learned prior: mu = tanh(W h_dec_{t-1}), sigma = exp(tanh(W' h_dec_{t-1}))
    bounded_prior: bool = False
    condition: ConditionConfig | None = None  # a label or caption encoder, saved with the model
    align_size: int = 256  # A, the hidden size of alignDRAW's alignment (caption encoders only)

    def __post_init__(self) -> None:
        size = self.image_size
        if not isinstance(size, list | tuple) or len(size) != 2 or not all(map(_positive_int, size)):
            raise CDrawError(f"DRAWConfig.image_size must be (H, W), got {size!r}")
        self.image_size = tuple(size)
        if isinstance(self.condition, dict):
            self.condition = ConditionConfig.from_dict(self.condition)
        if self.condition is not None and not isinstance(self.condition, ConditionConfig):
            raise CDrawError(f"DRAWConfig.condition must be a mapping of ConditionConfig fields: {self.condition!r}")
        if self.condition is not None and self.context_size:
            raise CDrawError("DRAWConfig: give either a condition encoder or a raw context_size, not both")
        positive = ("channels", "glimpses", "read_size", "write_size", "enc_size", "dec_size", "z_size", "align_size")
        for name in positive:
            if not _positive_int(value := getattr(self, name)):
                raise CDrawError(f"DRAWConfig.{name} must be a positive integer, got {value!r}")
        if self.likelihood not in LIKELIHOODS:
            raise CDrawError(f"DRAWConfig.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.context_size < 0:
            raise CDrawError(f"DRAWConfig.context_size must be >= 0, got {self.context_size}")
        if self.bounded_prior and not self.learned_prior:
            raise CDrawError("DRAWConfig.bounded_prior bounds a learned prior: set learned_prior too")
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if (max(value) if isinstance(value, tuple) else value) > limit:
                raise CDrawError(f"DRAWConfig.{name} must be at most {limit:,}, got {value}")
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise CDrawError(
                f"DRAWConfig describes a model of about {self.parameter_estimate():,} parameters, more than "
                f"{MAX_PARAMETERS:,}: check its sizes"
            )

    def parameter_estimate(self) -> int:
        """About how many parameters the model has (the DRAW core: LSTMs, read, write, latents),
        computed from the sizes alone, so an absurd config is refused before anything is allocated."""
        c, (h, w), e, f, z = self.channels, self.image_size, self.enc_size, self.dec_size, self.z_size
        d, k = self.context_size, 0
        if self.condition is not None:
            d, k = self.condition.vector_size, self.condition.words_size
        read = 2 * c * (self.read_size**2 if self.attention else h * w)
        write = c * self.write_size**2 + WINDOW_PARAMS if self.attention else c * h * w
        lstms = 4 * e * (read + f + d + e + 2) + 4 * f * (z + k + d + f + 2)
        heads = (f + 1) * write + (e + 1) * 2 * z + (f + 1) * 2 * z * self.learned_prior
        encoder = self.condition.parameter_estimate() if self.condition is not None else 0
        return lstms + heads + (k + f + 2) * self.align_size * (k > 0) + c * h * w + encoder

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @property
    def vector_size(self) -> int:
        """D: the context vector's size (from the encoder, or the raw ``context_size``)."""
        return self.condition.vector_size if self.condition is not None else self.context_size

    @property
    def words_size(self) -> int:
        """K: the per-word state size the decoder aligns over (0: no alignment)."""
        return self.condition.words_size if self.condition is not None else 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DRAWConfig:
        """From a mapping of its fields; ``steps``, T's earlier name, still reads as ``glimpses``."""
        if "steps" in d and "glimpses" not in d:
            d = {("glimpses" if k == "steps" else k): v for k, v in d.items()}
        return cls(**typed_fields(cls, d))


@dataclass
class DRAWOutput:
    """The result of a forward pass; losses in nats per image."""

    loss: Tensor  # (B,) recon + kl summed over steps: the negative variational bound
    recon: Tensor  # (B,) -log p(x | c_T)
    kl: Tensor  # (B, T) KL(Q(z_t | ...) || P(z_t | ...)) per step, summed over Z
    canvases: Tensor | None = None  # (T, B, C, H, W) sigmoid(c_t), on request
    log_ratio: Tensor | None = None  # (B,) sum_t log q(z_t) - log p(z_t) at the sampled z, on request
    alignments: Tensor | None = None  # (B, T, L) alignDRAW's alpha per step, for caption models
    read_windows: Window | None = None  # (T, B) fields, on request (attention models)
    write_windows: Window | None = None  # (T, B) fields, on request (attention models)


@dataclass
class Trace:
    """What :meth:`DRAW.sample_trace` returns: the drawing process step by step."""

    images: Tensor  # (B, C, H, W) the final means
    canvases: Tensor  # (T, B, C, H, W) sigmoid(c_t) after each step
    read_windows: Window | None  # (T, B) fields: where the read window sits at each step
    write_windows: Window | None  # (T, B) fields: where each step wrote
    alignments: Tensor | None = None  # (B, T, L) the alignment over the caption at each step


class AttentionReader(nn.Module):
    """read with attention, eq. (27): two N x N glimpses per channel at a window set by h_dec_{t-1}."""

    def __init__(self, cfg: DRAWConfig):
        super().__init__()
        self.n = cfg.read_size
        self.window = WindowParams(cfg.dec_size, cfg.read_size, cfg.image_size)  # eq. (21)
        self.out_size = 2 * cfg.channels * cfg.read_size**2

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        """(B, C, H, W) image and error image, (B, F) h_dec_{t-1} -> (B, 2 C N N)."""
        return attention.read(x, x_hat, self.window(h_dec), self.n)


class PlainReader(nn.Module):
    """read without attention, eq. (17): [x, x_hat], the whole image and error image."""

    def __init__(self, cfg: DRAWConfig):
        super().__init__()
        self.out_size = 2 * cfg.channels * cfg.image_size[0] * cfg.image_size[1]

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor | None = None) -> Tensor:
        return torch.cat([x.flatten(1), x_hat.flatten(1)], dim=1)  # (B, 2 C H W)


class AttentionWriter(nn.Module):
    """write with attention, eq. (28)-(29): an N x N patch per channel, placed by h_dec_t."""

    def __init__(self, cfg: DRAWConfig):
        super().__init__()
        self.n, self.c, self.size = cfg.write_size, cfg.channels, cfg.image_size
        self.patch = nn.Linear(cfg.dec_size, cfg.channels * cfg.write_size**2)  # eq. (28)
        self.window = WindowParams(cfg.dec_size, cfg.write_size, cfg.image_size)

    def forward(self, h_dec: Tensor) -> Tensor:
        """(B, F) h_dec_t -> (B, C, H, W), what eq. (8) adds to the canvas."""
        w = self.patch(h_dec).reshape(-1, self.c, self.n, self.n)  # (B, C, N, N), eq. (28)
        return attention.write(w, self.window(h_dec), self.size)  # eq. (29)


class PlainWriter(nn.Module):
    """write without attention, eq. (18): a linear map of h_dec_t to the whole canvas."""

    def __init__(self, cfg: DRAWConfig):
        super().__init__()
        self.shape = (cfg.channels, *cfg.image_size)
        self.linear = nn.Linear(cfg.dec_size, math.prod(self.shape))

    def forward(self, h_dec: Tensor) -> Tensor:
        return self.linear(h_dec).reshape(-1, *self.shape)  # (B, C, H, W)


class Alignment(nn.Module):
    """alignDRAW's alignment over the caption's words, driven by the decoder's previous state.

    alpha_tk = exp(v^T tanh(U h_lang_k + W h_dec_{t-1} + b)) / sum_j exp(...), over real tokens only;
    s_t = sum_k alpha_tk h_lang_k.
    """

    def __init__(self, word_size: int, dec_size: int, align_size: int):
        super().__init__()
        self.U = nn.Linear(word_size, align_size, bias=False)
        self.W = nn.Linear(dec_size, align_size)  # its bias is b
        self.v = nn.Linear(align_size, 1, bias=False)

    def keys(self, words: Tensor) -> Tensor:
        """U h_lang_k for every word, once per caption: (B, L, K) -> (B, L, A)."""
        return self.U(words)

    def forward(self, cond: Conditions, h_dec: Tensor) -> tuple[Tensor, Tensor]:
        """The caption's words (``cond``) and h_dec_{t-1} (B, F) -> s_t (B, K), alpha_t (B, L)."""
        return self.attend(cond.keys, cond.words, cond.mask, self.W(h_dec))

    def attend(self, keys: Tensor, words: Tensor, mask: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """keys (B, L, A), words (B, L, K), mask (B, L) True at real tokens (as Context.mask), query (B, A) the
        product W h_dec_{t-1} + b -> s_t (B, K), alpha_t (B, L)."""
        scores = self.v(torch.tanh(keys + query[:, None])).squeeze(-1)  # (B, L)
        alpha = torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)  # (B, L), 0 on padding
        return torch.einsum("bl,blk->bk", alpha, words), alpha


class Conditions(NamedTuple):
    """A batch's context, checked and ready for the step loop."""

    vector: Tensor | None  # (B, D)
    words: Tensor | None  # (B, L, K)
    mask: Tensor | None  # (B, L) True at real tokens, False at padding (as Context.mask)
    keys: Tensor | None  # (B, L, A) U h_lang, computed once


class State(NamedTuple):
    """What step t-1 hands step t (None where a pass does not use it: no encoder when sampling)."""

    h_enc: Tensor | None  # (B, E)
    c_enc: Tensor | None  # (B, E)
    h_dec: Tensor  # (B, F)
    c_dec: Tensor  # (B, F)
    canvas: Tensor  # (B, C, H, W) c_{t-1}, logits


class Wanted(NamedTuple):
    """What a forward pass was asked to return beyond the loss (constants to ``torch.compile``)."""

    log_ratio: bool = False
    canvases: bool = False
    windows: bool = False


NOTHING_MORE = Wanted()


class StepOut(NamedTuple):
    """What a step reports beside its state."""

    kl: Tensor | None  # (B,) KL(Q(z_t) || P(z_t)); None when sampling
    log_ratio: Tensor | None  # (B,) log q(z_t) - log p(z_t), on request
    alpha: Tensor | None  # (B, L) the alignment, for caption models
    canvas: Tensor | None  # (B, C, H, W) sigmoid(c_t), on request
    read: Window | None  # where step t read (from h_dec_{t-1}), on request
    write: Window | None  # where it wrote (from h_dec_t), on request


def cat(parts: list[Tensor | None]) -> Tensor:
    """The inputs that are there, side by side: (B, *) each -> (B, sum)."""
    return torch.cat([p for p in parts if p is not None], dim=-1)


class _FirstCallFallback:
    """Calls a compiled function; if its first call fails (no C++ compiler, a backend that cannot
    handle this machine), warns once and calls the eager function from then on."""

    def __init__(self, compiled: Any, eager: Any):
        self.compiled, self.eager, self.tried = compiled, eager, False

    def __call__(self, *args: Any) -> Any:
        if self.tried:
            return self.compiled(*args)
        try:
            out = self.compiled(*args)
        except Exception as e:  # compilation errors come in many types; eager re-raises real ones
            for _ in range(10):  # the backend's own error, not the wrappers around it
                inner = e.__cause__ or getattr(e, "inner_exception", None)
                if not isinstance(inner, Exception):
                    break
                e = inner
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            warnings.warn(
                f"torch.compile could not compile the DRAW step ({type(e).__name__}: {reason}); "
                "training without it, which is slower (pass --no-compile to skip the attempt)",
                CDrawWarning,
                stacklevel=3,
            )
            self.compiled = self.eager
            out = self.eager(*args)
        self.tried = True
        return out


class DRAW(nn.Module, ModelHubMixin, library_name=LIBRARY, tags=list(TAGS)):
    """The DRAW network: ``out = model(x)`` for training, ``model.sample(n)`` to generate.

    A conditional model takes its conditions as the second argument: labels or captions as a user
    writes them (``model.sample(4, ["the digit 3 is at the top left of the image ."])``), the tensor
    its tokenizer made (``model.encode_condition(captions)``, what training uses), or a
    :class:`~cdraw.conditioning.Context`.

    Example:
        >>> cfg = DRAWConfig(glimpses=8, enc_size=32, dec_size=32, z_size=4)
        >>> model = DRAW(cfg)
        >>> out = model(torch.rand(2, 1, 28, 28).round())
        >>> out.loss.shape, out.kl.shape
        (torch.Size([2]), torch.Size([2, 8]))
    """

    def __init__(self, config: DRAWConfig, *, root: str | os.PathLike | None = None):
        """``root``: the checkpoint folder that relative paths of the encoder's files are in."""
        super().__init__()
        self.config = cfg = config
        d, k = cfg.vector_size, cfg.words_size
        self.condition = None
        if cfg.condition is not None:
            self.condition = make_encoder(cfg.condition, root)
        self.reader = AttentionReader(cfg) if cfg.attention else PlainReader(cfg)
        self.writer = AttentionWriter(cfg) if cfg.attention else PlainWriter(cfg)
        self.encoder = nn.LSTMCell(self.reader.out_size + cfg.dec_size + d, cfg.enc_size)
        self.decoder = nn.LSTMCell(cfg.z_size + k + d, cfg.dec_size)
        self.alignment = Alignment(k, cfg.dec_size, cfg.align_size) if k else None
        self.posterior = GaussianLayer(cfg.enc_size, cfg.z_size)  # Q(Z_t | h_enc_t)
        self.prior = GaussianLayer(cfg.dec_size, cfg.z_size, cfg.bounded_prior) if cfg.learned_prior else None
        self.likelihood = make_likelihood(cfg.likelihood, cfg.channels)
        # Learned initial states: h and cell of both LSTMs, and the canvas c_0.
        self.h_enc0 = nn.Parameter(torch.zeros(cfg.enc_size))
        self.c_enc0 = nn.Parameter(torch.zeros(cfg.enc_size))
        self.h_dec0 = nn.Parameter(torch.zeros(cfg.dec_size))
        self.c_dec0 = nn.Parameter(torch.zeros(cfg.dec_size))
        self.canvas0 = nn.Parameter(torch.zeros(cfg.channels, *cfg.image_size))
        self._compiled_steps, self._steps_per_call = None, self.config.glimpses  # see compile_step()
        self.fused = True  # see use_fused_step()

    # -- conditions -------------------------------------------------------------------------

    def init_from_data(self, mean_image: Tensor, write_gain: bool = True) -> DRAW:
        """Data-dependent initialisation for training (the paper gives none; the maths is unchanged).

        - The canvas c_0 starts at the training set's mean image, logit(mean) (smoothed away from 0
          and 1), so the first step already draws the mean image instead of grey 0.5 everywhere.
        - ``write_gain``: the write window's intensity gamma starts at 1 / delta_0^2 instead of 1, so
          that a unit value in the write patch moves the canvas's logits by about 0.6 where it
          lands. With gamma = 1 a 5x5 patch spread over a 28x28 canvas moves them by about 0.014,
          and Adam needs thousands of steps at lr 1e-3 to grow the writer's weights that much. The
          patch's initial weights are divided by as much, so the first writes are as small as before.

        ``mean_image``: (C, H, W) in [0, 1].
        """
        if tuple(mean_image.shape) != tuple(self.canvas0.shape):
            raise CDrawError(f"mean image must be {tuple(self.canvas0.shape)}, got {tuple(mean_image.shape)}")
        with torch.no_grad():
            p = mean_image.to(self.canvas0).clamp(1e-3, 1 - 1e-3)
            self.canvas0.copy_(torch.log(p) - torch.log1p(-p))  # logit: the likelihoods' mean is sigmoid(c)
            if write_gain and self.config.attention:
                window = self.writer.window
                stride = (max(window.height, window.width) - 1) / max(window.n - 1, 1)
                window.linear.bias[4] = -2 * math.log(stride)  # log gamma_0
                self.writer.patch.weight.div_(stride**2)  # the first writes as small as before
                self.writer.patch.bias.div_(stride**2)
        return self

    def encode_condition(self, values: Any) -> Tensor:
        """Labels or captions as a user writes them -> the tensor the encoder reads (on CPU).

        Bad input (a caption for a label model, an out-of-range label, an empty caption) is a
        :class:`CDrawError`; truncated captions and unknown words are a ``CDrawWarning``.
        """
        if self.condition is None:
            raise CDrawError("this model is unconditional: it takes no condition (no --caption or --label)")
        return self.condition.tokenizer.encode(values)

    def _conditions(self, condition: Any, batch: int, check: bool = False) -> Conditions:
        """The batch's context from what the caller gave; ``check``: validate a tensor of ids too
        (generation does; training skips it, as it would cost a host sync per step)."""
        if condition is None and (self.config.vector_size or self.config.words_size):
            raise CDrawError(f"this model is conditional: {self._wants()}")
        if condition is None or isinstance(condition, Context):
            ctx = condition if condition is not None else Context()
        else:
            if self.condition is None:
                what = "a Context" if self.config.context_size else "no condition"
                raise CDrawError(f"this model has no condition encoder: it takes {what}, not {condition!r:.40}")
            if isinstance(condition, Tensor):
                ids = self.condition.tokenizer.check(condition) if check else condition
            else:
                ids = self.encode_condition(condition)
            ids = ids.to(self.h_dec0.device)
            if len(ids) == 1 and batch > 1:  # one condition for the whole batch
                ids = ids.expand(batch, *ids.shape[1:])
            if len(ids) != batch:
                raise CDrawError(
                    f"got {len(ids)} conditions for {batch} images: give one for all of them, or one per image"
                )
            ctx = self.condition(ids)
        d, k = self.config.vector_size, self.config.words_size
        vector = _checked(ctx.vector, (batch, d), "context vector") if d else _absent(ctx.vector, "context vector")
        if not k:
            _absent(ctx.words, "per-word states")
            return Conditions(vector, None, None, None)
        if ctx.words is None or ctx.mask is None:
            raise CDrawError(f"this is a caption model: {self._wants()}")
        words = _checked(ctx.words, (batch, ctx.words.shape[1], k), "word states")  # (B, L, K)
        mask = _checked(ctx.mask, words.shape[:2], "word mask").bool()  # (B, L)
        if check and not mask.any(1).all():  # tokenizers never make an empty caption: checked when generating
            raise CDrawError("every caption needs at least one token")
        return Conditions(vector, words, mask, self.alignment.keys(words))

    def _wants(self) -> str:
        kind = self.config.condition.kind if self.config.condition is not None else None
        if kind == "label":
            return "give it class labels, condition=[3, 7] (--label K in cdraw generate)"
        if kind is not None:
            return "give it captions, condition=['a caption'] (--caption TEXT in cdraw generate)"
        return "pass a Context(vector) of size context_size"

    # -- one step: the paper's equations --------------------------------------------------

    def initial_state(self, batch: int, encoding: bool = True) -> State:
        """t = 0: the learned initial states and canvas, for every example of the batch."""

        def expand(p: Tensor) -> Tensor:  # (...) -> (B, ...), laid out in memory as a step's own states
            return p.expand(batch, *p.shape).contiguous()  # (a compiled step then needs one graph, not two)

        h_enc, c_enc = (expand(self.h_enc0), expand(self.c_enc0)) if encoding else (None, None)
        return State(h_enc, c_enc, expand(self.h_dec0), expand(self.c_dec0), expand(self.canvas0))

    def step(
        self, x: Tensor, s: State, eps: Tensor, cond: Conditions, want: Wanted = NOTHING_MORE
    ) -> tuple[State, StepOut]:
        """One glimpse of training or reconstruction, eq. (3)-(8): step t from the state of t-1.

        x (B, C, H, W) in [0, 1]; eps (B, Z) or (1, Z) standard normal noise for z_t. The fused step
        (:mod:`cdraw.fused`, used unless :meth:`use_fused_step` says otherwise) computes the same.
        """
        v = cond.vector  # (B, D) context vector, or None
        x_hat = x - self.likelihood.mean(s.canvas)  # (3)
        r = self.reader(x, x_hat, s.h_dec)  # (4)
        h_enc, c_enc = self.encoder(cat([r, s.h_dec, v]), (s.h_enc, s.c_enc))  # (5)
        q = self.posterior(h_enc)  # Q(Z_t | h_enc_t), (1)-(2)
        z = q.sample(eps)  # (6)
        p = self.prior(s.h_dec) if self.prior is not None else None  # P(Z_t | h_dec_{t-1}); None: N(0, I)
        sentence, alpha = self.alignment(cond, s.h_dec) if cond.words is not None else (None, None)  # alignDRAW
        h_dec, c_dec = self.decoder(cat([z, sentence, v]), (s.h_dec, s.c_dec))  # (7)
        canvas = s.canvas + self.writer(h_dec)  # (8)
        windows = want.windows and self.config.attention
        return State(h_enc, c_enc, h_dec, c_dec, canvas), StepOut(
            kl_divergence(q, p),  # (10)
            log_ratio(q, p, z) if want.log_ratio else None,
            alpha,
            self.likelihood.mean(canvas) if want.canvases else None,
            self.reader.window(s.h_dec) if windows else None,
            self.writer.window(h_dec) if windows else None,
        )

    def sample_step(self, s: State, eps: Tensor, cond: Conditions, windows: bool = False) -> tuple[State, StepOut]:
        """One step of generation: z_t from the prior, then eq. (7)-(8); the report's canvas is sigmoid(c_t)."""
        p = self.prior(s.h_dec) if self.prior is not None else None
        z = eps if p is None else p.sample(eps)
        sentence, alpha = self.alignment(cond, s.h_dec) if cond.words is not None else (None, None)
        h_dec, c_dec = self.decoder(cat([z, sentence, cond.vector]), (s.h_dec, s.c_dec))  # (7)
        canvas = s.canvas + self.writer(h_dec)  # (8)
        windows = windows and self.config.attention
        return State(None, None, h_dec, c_dec, canvas), StepOut(
            None,
            None,
            alpha,
            self.likelihood.mean(canvas),
            self.reader.window(s.h_dec) if windows else None,
            self.writer.window(h_dec) if windows else None,
        )

    # -- running the steps -------------------------------------------------------------------

    def use_fused_step(self, enabled: bool = True) -> DRAW:
        """Which step forward passes and sampling run: the fused one (:mod:`cdraw.fused`, the default,
        faster) or :meth:`step` as written (``enabled=False``). Both compute the same (tested)."""
        self.fused = enabled
        return self

    def _steps(
        self, x: Tensor, s: Any, eps: Tensor, w: fused.Weights | None, cond: Conditions, want: Wanted
    ) -> tuple[Any, list[StepOut]]:
        """len(eps) steps in a row (eps: (k, B, Z)), fused with the weights ``w`` or as written when
        ``w`` is None: the unit that :meth:`compile_step` compiles."""
        outs = []
        for eps_t in eps:
            if w is None:
                s, out = self.step(x, s, eps_t, cond, want)
            else:
                s, report = fused.step(self, x, s, eps_t, w, cond, *want)
                out = StepOut(*report)
            outs.append(out)
        return s, outs

    def compile_step(self, enabled: bool = True, steps_per_call: int = 8, **options: Any) -> DRAW:
        """Run training steps through ``torch.compile`` (``options`` are passed on), which fuses
        their element-wise work into a few kernels; ``enabled=False`` goes back to eager.

        ``steps_per_call`` glimpses are compiled as one graph (a divisor of T is used, at most this
        many): fewer calls, less overhead per step, a longer first compilation. Each new batch
        size is compiled anew (training keeps one: it drops the incomplete last batch). Only passes
        that record gradients are compiled; evaluation and sampling stay eager. The first compiled step
        takes a while (about a minute on a 2-core CPU, which needs a C++ compiler); if it cannot be
        compiled, a warning says why and the model trains eagerly. The maths is the same (tested).
        """
        if not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise CDrawError(f"steps_per_call must be a positive integer, got {steps_per_call!r}")
        t = self.config.glimpses
        self._steps_per_call = max(k for k in range(1, min(t, steps_per_call) + 1) if t % k == 0)
        compiled = torch.compile(self._steps, **{"dynamic": False, **options}) if enabled else None
        self._compiled_steps = _FirstCallFallback(compiled, self._steps) if enabled else None
        return self

    def _noise(self, steps: int, batch: int, generator: torch.Generator | None, shared: bool = False) -> Tensor:
        """Standard normal noise for every step's z_t: (T, B, Z), or (T, 1, Z) shared by the batch."""
        p = self.h_dec0
        shape = (steps, 1 if shared else batch, self.config.z_size)
        return torch.randn(shape, generator=generator, dtype=p.dtype, device=p.device)

    def _checked_images(self, x: Tensor) -> Tensor:
        """``x`` as the model reads it: (B, C, H, W) floats of the model's dtype (a NumPy array becomes a
        tensor on the model's device); 0/1 images given as bool or integers are converted (their range
        checked, a host sync only on that path), grey levels 0..255 refused."""
        dtype = self.h_dec0.dtype
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x, device=self.h_dec0.device)
            except (TypeError, ValueError, RuntimeError):
                raise CDrawError(f"images must be a tensor or an array, got {type(x).__name__}") from None
        expected = (self.config.channels, *self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise CDrawError(f"images must be (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if x.is_floating_point():
            return x if x.dtype == dtype else x.to(dtype)  # float64 from NumPy; no host sync
        low, high = map(int, torch.aminmax(x)) if x.numel() else (0, 0)  # one pass over x, not min then max
        if low < 0 or high > 1:
            raise CDrawError(f"images must be in [0, 1], got {x.dtype} values {low}..{high}: divide grey levels by 255")
        return x.to(dtype)

    # -- training ---------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        condition: Any = None,
        *,
        return_canvases: bool = False,
        return_log_ratio: bool = False,
        return_windows: bool = False,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
    ) -> DRAWOutput:
        """Encode and reconstruct ``x`` (B, C, H, W) in [0, 1] (floats, or 0/1 as bool or integers; a tensor
        or a NumPy array); the loss is -ELBO in nats per image.

        ``condition``: for a conditional model, see the class docstring; one condition for a
        whole batch is broadcast. ``shared_noise``: every example gets the same latent noise (to
        compare one image under several conditions on common random numbers).
        """
        x = self._checked_images(x)  # (B, C, H, W)
        b = x.shape[0]
        cond = self._conditions(condition, b)
        w = fused.gather(self, cond) if self.fused else None
        state = fused.initial_state(self, w, b) if w is not None else self.initial_state(b)
        eps = self._noise(self.config.glimpses, b, generator, shared_noise)  # (T, B or 1, Z)
        compiled = self._compiled_steps is not None and torch.is_grad_enabled()
        run = self._compiled_steps if compiled else self._steps
        want = Wanted(return_log_ratio, return_canvases, return_windows)
        outs: list[StepOut] = []
        for chunk in eps.split(self._steps_per_call):  # (k, B or 1, Z)
            state, chunk_outs = run(x, state, chunk, w, cond, want)
            outs += chunk_outs
        recon = self.likelihood.nll(state.canvas, x)  # eq. (9), (B,)
        kl = torch.stack([o.kl for o in outs], dim=1)  # (B, T)
        return DRAWOutput(
            loss=recon + kl.sum(1),  # eq. (12)
            recon=recon,
            kl=kl,
            canvases=torch.stack([o.canvas for o in outs]) if return_canvases else None,
            log_ratio=torch.stack([o.log_ratio for o in outs]).sum(0) if return_log_ratio else None,
            alignments=torch.stack([o.alpha for o in outs], dim=1) if outs[0].alpha is not None else None,
            read_windows=Window.stack([o.read for o in outs]) if outs[0].read is not None else None,
            write_windows=Window.stack([o.write for o in outs]) if outs[0].write is not None else None,
        )

    # -- generation -------------------------------------------------------------------------

    @torch.no_grad()
    def sample_trace(
        self,
        n: int,
        condition: Any = None,
        *,
        generator: torch.Generator | None = None,
        glimpses: int | None = None,
    ) -> Trace:
        """Draw ``n`` images from the prior, keeping every canvas, attention window and alignment.

        ``glimpses``: how many steps to draw (default: the T the model was trained with; fewer
        leave the picture unfinished, more let the decoder go on drawing past its training).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise CDrawError(f"the number of images must be a positive integer, got {n!r}")
        cfg = self.config
        steps = cfg.glimpses if glimpses is None else glimpses
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise CDrawError(f"the number of glimpses to draw must be a positive integer, got {steps!r}")
        cond = self._conditions(condition, n, check=True)
        w = fused.gather(self, cond, encoding=False) if self.fused else None
        state = fused.initial_state(self, w, n) if w is not None else self.initial_state(n, encoding=False)
        outs = []
        for eps_t in self._noise(steps, n, generator):
            if w is None:
                state, out = self.sample_step(state, eps_t, cond, windows=cfg.attention)
            else:
                state, report = fused.sample_step(self, state, eps_t, w, cond, cfg.attention)
                out = StepOut(*report)
            outs.append(out)
        return Trace(
            images=outs[-1].canvas,
            canvases=torch.stack([o.canvas for o in outs]),
            read_windows=Window.stack([o.read for o in outs]) if cfg.attention else None,
            write_windows=Window.stack([o.write for o in outs]) if cfg.attention else None,
            alignments=torch.stack([o.alpha for o in outs], dim=1) if outs[0].alpha is not None else None,
        )

    @torch.no_grad()
    def sample(self, n: int, condition: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from the prior: (n, C, H, W) means (sigmoid(c_T)), not pixel samples."""
        return self.sample_trace(n, condition, generator=generator).images

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Tensor]:
        """The parameters ``model.safetensors`` holds: all but a pretrained text encoder's, which
        are saved in its own folder."""
        apart = self._saved_apart()
        return {k: v for k, v in self.state_dict().items() if apart is None or not k.startswith(apart)}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """Load what :meth:`checkpoint_state` gave (checked by :func:`load_weights`)."""
        self.load_state_dict(state, strict=self._saved_apart() is None)

    def _saved_apart(self) -> str | None:
        apart = getattr(self.condition, "saved_apart", None)
        return f"condition.{apart}" if apart else None

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        config: Any = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        card: bool = True,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``config.json`` and ``model.safetensors`` (and an encoder's files) into ``save_directory``,
        and a model card (``README.md``, with the Hub's YAML metadata) unless one is there or ``card=False``.

        Each file is written to a temporary name and renamed, so a crash leaves the old file whole.
        ``push_to_hub=True`` then uploads the folder to ``repo_id`` (:meth:`push_to_hub`; ``config``
        and ``model_card_kwargs`` are accepted as ``huggingface_hub`` passes them, and not needed).
        """
        path = Path(save_directory)
        if path.exists() and not path.is_dir():
            raise CDrawError(f"{path} is a file: save_pretrained writes a folder (config.json, model.safetensors ...)")
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        if self.condition is not None:  # the tokenizer (and text model) go beside; paths become relative
            cfg = dataclasses.replace(cfg, condition=self.condition.save_assets(path, cfg.condition))
        save_folder(path, MODEL_TYPE, cfg.to_dict(), self.checkpoint_state())
        if card and not (path / "README.md").is_file():
            self._write_card(path)
        if push_to_hub:
            return self.push_to_hub(repo_id or path.name, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)
        return None

    def _write_card(self, path: Path) -> None:
        from cdraw import hub

        kind = self.config.condition.kind if self.config.condition is not None else None
        data = hub.card_data(read_record(path), read_record(path, EVAL_RECORD), kind)
        body = f"# cdraw model\n\n{hub.describe(self.config, sum(p.numel() for p in self.parameters()))}\n"
        text = hub.card_text(data, body)
        atomic_write(path / "README.md", lambda tmp: Path(tmp).write_text(text))

    def _save_pretrained(self, save_directory: Path) -> None:  # huggingface_hub's hook
        self.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **unused: Any,
    ) -> DRAW:
        """Load a folder written by :meth:`save_pretrained` (or a training run's, see
        :func:`cdraw.hub.resolve_checkpoint`), a model that ships with cdraw by its name
        (``"mnist_captions"``), or a Hugging Face Hub repository (``"owner/name"``, at
        ``revision``; served from the local cache when offline), onto
        ``device`` (CPU by default), in eval mode (as Hugging Face models load: training-only
        behaviour such as state noise is off; ``.train()`` before training it further)."""
        folder = resolve_checkpoint(
            pretrained_model_name_or_path,
            stacklevel=3,  # a warning names the caller's line
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        config = load_config(folder)
        model = cls(config, root=folder)
        model.load_checkpoint_state(load_weights(folder, model))
        model.folder = folder  # where it came from (a Hub id: its cached copy), with its records beside it
        return model.to(device).eval()

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs: Any) -> DRAW:  # huggingface_hub's hook
        return cls.from_pretrained(model_id, **{k: v for k, v in kwargs.items() if k != "config"})


def _checked(t: Tensor | None, shape: tuple[int, ...], what: str) -> Tensor:
    if t is None or tuple(t.shape) != tuple(shape):
        got = "nothing" if t is None else tuple(t.shape)
        raise CDrawError(f"{what} must be {tuple(shape)}, got {got}")
    return t


def _absent(t: Tensor | None, what: str) -> None:
    if t is not None:
        raise CDrawError(f"this model takes no {what} (it is unconditional, or conditioned otherwise)")


def load_config(path: str | os.PathLike) -> DRAWConfig:
    """Read ``config.json`` of a checkpoint folder, with a clear error for each way it can be wrong."""
    raw = read_config(path, MODEL_TYPE, "cdraw checkpoint")
    try:
        return DRAWConfig.from_dict(raw)
    except (TypeError, CDrawError) as e:
        raise CDrawError(f"{Path(path) / CONFIG_NAME} has an invalid DRAW config: {e}") from None
