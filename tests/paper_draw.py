"""DRAW's forward pass written the slow, plain way: one line per equation of the paper, with the
model's own layers used as PyTorch gives them (``nn.LSTMCell``, ``nn.Linear``) and the losses
taken from ``torch.distributions``. The model's fused (and compiled) step must equal it.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from cdraw import attention


def paper_loss(model, x, eps, vector=None, words=None, mask=None):
    """-ELBO per image (B,) for images ``x``, step noise ``eps`` (T, B, Z), an optional context
    vector (B, D) and caption word states (B, L, K) with their mask (B, L), True at real tokens."""
    cfg = model.config
    b = x.shape[0]
    h_enc, c_enc = model.h_enc0.expand(b, -1), model.c_enc0.expand(b, -1)
    h_dec, c_dec = model.h_dec0.expand(b, -1), model.c_dec0.expand(b, -1)
    canvas = model.canvas0.expand(b, *model.canvas0.shape)
    keys = model.alignment.U(words) if words is not None else None
    kl = 0
    for t in range(cfg.glimpses):
        x_hat = x - torch.sigmoid(canvas)  # (3)
        if cfg.attention:  # (4), with the window from h_dec_{t-1}
            r = attention.read(x, x_hat, model.reader.window(h_dec), cfg.read_size)
        else:
            r = torch.cat([x.flatten(1), x_hat.flatten(1)], 1)
        enc_in = [r, h_dec] + ([vector] if vector is not None else [])
        h_enc, c_enc = model.encoder(torch.cat(enc_in, 1), (h_enc, c_enc))  # (5)
        mu, log_sigma = model.posterior.linear(h_enc).chunk(2, -1)  # (1)-(2)
        z = mu + log_sigma.exp() * eps[t]  # (6)
        if model.prior is not None:
            p_mu, p_log_sigma = model.prior.linear(h_dec).chunk(2, -1)
            if cfg.bounded_prior:  # alignDRAW: mu = tanh(W h), sigma = exp(tanh(W' h))
                p_mu, p_log_sigma = torch.tanh(p_mu), torch.tanh(p_log_sigma)
            prior = Normal(p_mu, p_log_sigma.exp())
        else:
            prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
        kl = kl + kl_divergence(Normal(mu, log_sigma.exp()), prior).sum(-1)  # (10)
        dec_in = [z]
        if words is not None:  # alignDRAW: s_t from h_dec_{t-1}
            s, _ = model.alignment.attend(keys, words, mask, model.alignment.W(h_dec))
            dec_in.append(s)
        if vector is not None:
            dec_in.append(vector)
        h_dec, c_dec = model.decoder(torch.cat(dec_in, 1), (h_dec, c_dec))  # (7)
        if cfg.attention:  # (8) with (28)-(29)
            w = model.writer.patch(h_dec).view(b, cfg.channels, cfg.write_size, cfg.write_size)
            canvas = canvas + attention.write(w, model.writer.window(h_dec), cfg.image_size)
        else:
            canvas = canvas + model.writer.linear(h_dec).view(b, cfg.channels, *cfg.image_size)
    recon = -Bernoulli(logits=canvas).log_prob(x).flatten(1).sum(1)  # (9)
    return recon + kl  # (12)
