"""The fast DRAW step: the same equations as :meth:`cdraw.model.DRAW.step`, with the matrix products fused.

Every step of DRAW multiplies h_dec_t by up to six matrices (the write patch and window, the next
read window, the prior, the alignment's query, the encoder's and the decoder's gates) and h_enc_t
by two (the posterior, the encoder's recurrence). Here each hidden state goes through one matrix
product with those weights stacked (:class:`FusedLinear`), and a step hands the next one h_dec and
h_enc already multiplied (:class:`State`), so each product happens once per step, in one kernel,
with one weight gradient. The stacked weights are gathered from the modules' own parameters once
per forward pass (a differentiable ``torch.cat``), so checkpoints and optimisers see the modules
unchanged. ``tests/test_model.py`` pins this step to the readable one: the loss and every gradient,
in float64, for every kind of model.

Shapes: B batch, C channels, H/W image, N patch, Z latent, D context vector, L caption tokens,
K word state, A alignment size, E/F enc/dec sizes, R read size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from cdraw import attention
from cdraw.attention import WINDOW_PARAMS, Window
from cdraw.gaussian import kl_divergence, log_ratio

# ``model`` below is a cdraw.model.DRAW and ``cond`` its Conditions (not imported: the model imports this module).


class FusedLinear(NamedTuple):
    """Several linear maps of one input as a single matrix product, ``h -> {name: h W_k^T + b_k}``."""

    weight: Tensor  # (P, I), the maps' weights stacked, P = sum of their output sizes
    bias: Tensor  # (P,)
    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, maps: dict[str, tuple[Tensor, Tensor | None]]) -> FusedLinear:
        """``maps``: name -> (weight (P_k, I), bias (P_k,) or None), in the order of the output."""
        weights = [w for w, _ in maps.values()]
        biases = [b if b is not None else w.new_zeros(len(w)) for w, b in maps.values()]
        return cls(torch.cat(weights), torch.cat(biases), tuple(maps), tuple(len(w) for w in weights))

    def __call__(self, h: Tensor) -> dict[str, Tensor]:
        """(B, I) -> {name: (B, P_k)}."""
        out = torch.addmm(self.bias, h, self.weight.t())  # (B, P)
        return dict(zip(self.names, out.split(self.sizes, dim=-1), strict=True))


def lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """An LSTM's update from its gate pre-activations, as :class:`torch.nn.LSTMCell` computes it.

    gates (B, 4H) = W_ih input + W_hh h + b in PyTorch's order (input, forget, cell, output);
    c (B, H) the previous cell -> (h, c) the new hidden state and cell.
    """
    i, f, g, o = gates.chunk(4, dim=-1)  # (B, H) each
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class Weights(NamedTuple):
    """What every step multiplies by, gathered once per forward (:func:`gather`)."""

    dec: FusedLinear  # h_dec_t -> write, [read, prior, align,] [enc,] dec: every map that reads it
    enc: FusedLinear | None  # h_enc_t -> posterior, rec (W_hh of the encoder); None when sampling
    read_in: Tensor | None  # (4E, R) the encoder's weight of r_t
    dec_in: Tensor  # (4F, Z + K) the decoder's weight of [z_t, s_t]
    enc_const: Tensor | None  # (B, 4E) the context vector's term in the encoder's gates
    dec_const: Tensor | None  # (B, 4F) and in the decoder's


class State(NamedTuple):
    """What step t-1 hands step t: the cells, the canvas, and h_enc_{t-1}, h_dec_{t-1} already
    multiplied by every matrix that reads them (the hidden states themselves are needed no more)."""

    c_enc: Tensor | None  # (B, E); None when sampling
    enc_rec: Tensor | None  # (B, 4E) W_hh h_enc_{t-1}
    c_dec: Tensor  # (B, F)
    dec: dict[str, Tensor]  # the heads of h_dec_{t-1}, :attr:`Weights.dec`
    canvas: Tensor  # (B, C, H, W) c_{t-1}, logits


def _linear(layer: torch.nn.Linear) -> tuple[Tensor, Tensor | None]:
    return layer.weight, layer.bias


def _write_map(model: Any) -> tuple[Tensor, Tensor]:
    """The writer's linear map of h_dec: the patch w_t (eq. 28) and the window's 5, or the canvas."""
    writer = model.writer
    if not model.config.attention:
        return _linear(writer.linear)
    weight = torch.cat([writer.patch.weight, writer.window.linear.weight])
    return weight, torch.cat([writer.patch.bias, writer.window.linear.bias])


def gather(model: Any, cond: Any, encoding: bool = True) -> Weights:
    """What every step multiplies by, from the modules' parameters; ``encoding=False``: sampling."""
    cfg = model.config
    r, f, zk = model.reader.out_size, cfg.dec_size, cfg.z_size + cfg.words_size
    enc, dec = model.encoder, model.decoder  # LSTMCell inputs: encoder [r, h_dec, v], decoder [z, s, v]
    heads = {"write": _write_map(model)}
    if cfg.attention:
        heads["read"] = _linear(model.reader.window.linear)
    if model.prior is not None:
        heads["prior"] = _linear(model.prior.linear)
    if model.alignment is not None:
        heads["align"] = _linear(model.alignment.W)
    if encoding:
        heads["enc"] = (enc.weight_ih[:, r : r + f], enc.bias_ih + enc.bias_hh)
    heads["dec"] = (dec.weight_hh, dec.bias_ih + dec.bias_hh)
    v = cond.vector  # (B, D): its terms in the gates are the same at every step
    return Weights(
        dec=FusedLinear.of(heads),
        enc=FusedLinear.of({"posterior": _linear(model.posterior.linear), "rec": (enc.weight_hh, None)})
        if encoding
        else None,
        read_in=enc.weight_ih[:, :r] if encoding else None,
        dec_in=dec.weight_ih[:, :zk],
        enc_const=v @ enc.weight_ih[:, r + f :].t() if encoding and v is not None else None,
        dec_const=v @ dec.weight_ih[:, zk:].t() if v is not None else None,
    )


def initial_state(model: Any, w: Weights, batch: int) -> State:
    """t = 0: the learned initial states and canvas, for every example of the batch."""

    def expand(t: Tensor) -> Tensor:  # (B, ...) contiguous, as a step's cells and canvas are
        return t.expand(batch, *t.shape[1:]).contiguous()

    # The heads of h_0 are computed the way a step computes them (slices of one product for the
    # whole batch), so every compiled group of steps sees its inputs in the same memory layout:
    # one compiled graph instead of one for the first group and another for the rest.
    encoding = w.enc is not None
    return State(
        c_enc=expand(model.c_enc0[None]) if encoding else None,
        enc_rec=w.enc(model.h_enc0.expand(batch, -1))["rec"] if encoding else None,
        c_dec=expand(model.c_dec0[None]),
        dec=w.dec(model.h_dec0.expand(batch, -1)),
        canvas=expand(model.canvas0[None]),
    )


def _read(model: Any, x: Tensor, x_hat: Tensor, raw: Tensor | None) -> Tensor:
    """Eq. (4) from the read window's map of h_dec_{t-1} (B, 5) -> (B, R)."""
    if not model.config.attention:
        return torch.cat([x.flatten(1), x_hat.flatten(1)], dim=1)  # (B, 2 C H W), eq. (17)
    return attention.read(x, x_hat, model.reader.window.from_raw(raw), model.config.read_size)  # eq. (27)


def _write_window(model: Any, raw: Tensor) -> Window:
    return model.writer.window.from_raw(raw[:, -WINDOW_PARAMS:])


def _write(model: Any, raw: Tensor) -> Tensor:
    """Eq. (8)'s write(h_dec_t) from the writer's map of h_dec_t -> (B, C, H, W)."""
    cfg = model.config
    if not cfg.attention:
        return raw.reshape(-1, cfg.channels, *cfg.image_size)  # eq. (18)
    n = cfg.write_size
    patch = raw[:, :-WINDOW_PARAMS].reshape(-1, cfg.channels, n, n)  # (B, C, N, N), eq. (28)
    return attention.write(patch, _write_window(model, raw), cfg.image_size)  # eq. (29)


def _decode(model: Any, z: Tensor, s: State, w: Weights, cond: Any):
    """Eq. (7), h_dec_t = RNN_dec(h_dec_{t-1}, [z_t, s_t, v]) -> (c_dec_t, the heads of h_dec_t, alpha_t)."""
    inputs, alpha = z, None
    if cond.words is not None:  # alignDRAW's s_t, from h_dec_{t-1}
        sentence, alpha = model.alignment.attend(cond.keys, cond.words, cond.mask, s.dec["align"])
        inputs = torch.cat([z, sentence], dim=-1)
    gates = torch.addmm(s.dec["dec"], inputs, w.dec_in.t())  # (B, 4F)
    if w.dec_const is not None:
        gates = gates + w.dec_const
    h_dec, c_dec = lstm_cell(gates, s.c_dec)
    return c_dec, w.dec(h_dec), alpha


#: What a step reports (:class:`cdraw.model.StepOut` takes these in this order).
Report = tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Window | None, Window | None]


def step(
    model: Any, x: Tensor, s: State, eps: Tensor, w: Weights, cond: Any, ratio: bool, canvases: bool, windows: bool
) -> tuple[State, Report]:
    """One glimpse of training or reconstruction, eq. (3)-(8), as :meth:`cdraw.model.DRAW.step`:
    the next state and (kl, log ratio, alpha, canvas, read window, write window), the last four on request."""
    x_hat = x - model.likelihood.mean(s.canvas)  # eq. (3)
    r = _read(model, x, x_hat, s.dec.get("read"))  # eq. (4), window from h_dec_{t-1}
    gates = torch.addmm(s.dec["enc"] + s.enc_rec, r, w.read_in.t())  # W [r_t, h_dec_{t-1}] + W_hh h_enc + b
    if w.enc_const is not None:
        gates = gates + w.enc_const
    h_enc, c_enc = lstm_cell(gates, s.c_enc)  # eq. (5)
    enc = w.enc(h_enc)
    q = model.posterior.from_raw(enc["posterior"])  # Q(Z_t | h_enc_t), eq. (1)-(2)
    z = q.sample(eps)  # eq. (6)
    p = model.prior.from_raw(s.dec["prior"]) if model.prior is not None else None  # P(Z_t | h_dec_{t-1})
    c_dec, dec, alpha = _decode(model, z, s, w, cond)  # eq. (7)
    canvas = s.canvas + _write(model, dec["write"])  # eq. (8)
    windows = windows and model.config.attention
    return State(c_enc, enc["rec"], c_dec, dec, canvas), (
        kl_divergence(q, p),  # eq. (10)
        log_ratio(q, p, z) if ratio else None,
        alpha,
        model.likelihood.mean(canvas) if canvases else None,
        model.reader.window.from_raw(s.dec["read"]) if windows else None,
        _write_window(model, dec["write"]) if windows else None,
    )


def sample_step(model: Any, s: State, eps: Tensor, w: Weights, cond: Any, windows: bool) -> tuple[State, Report]:
    """One step of generation, as :meth:`cdraw.model.DRAW.sample_step`: z_t from the prior, eq. (7)-(8)."""
    p = model.prior.from_raw(s.dec["prior"]) if model.prior is not None else None
    z = eps if p is None else p.sample(eps)
    c_dec, dec, alpha = _decode(model, z, s, w, cond)  # eq. (7)
    canvas = s.canvas + _write(model, dec["write"])  # eq. (8)
    windows = windows and model.config.attention
    return State(None, None, c_dec, dec, canvas), (
        None,
        None,
        alpha,
        model.likelihood.mean(canvas),
        model.reader.window.from_raw(s.dec["read"]) if windows else None,
        _write_window(model, dec["write"]) if windows else None,
    )
