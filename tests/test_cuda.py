"""DRAW on a CUDA GPU: the same maths as on the CPU, compiled and CUDA-graph steps, sampling,
evaluation, save/load and a training run through the loop. Marked ``cuda``; skipped without a GPU
(``pytest -m cuda`` runs only these; benchmarks/gpu_run.py runs them first on a GPU machine)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from cdraw import DRAW, DRAWConfig
from cdraw.config import TrainConfig
from cdraw.data import ImageData
from cdraw.errors import CDrawWarning
from cdraw.evaluate import bound_sums, iwae_sum
from cdraw.training import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda") if torch.cuda.is_available() else None


@pytest.fixture
def cfg() -> DRAWConfig:
    return DRAWConfig(glimpses=8, enc_size=32, dec_size=32, z_size=5, write_size=3)


def fixed_noise(model: DRAW, eps: torch.Tensor) -> None:
    """Every forward pass of ``model`` draws this noise (T, B, Z), on the model's device."""
    model._noise = lambda *args, **kwargs: eps.to(model.h_dec0.device)


def test_a_step_on_the_gpu_equals_the_step_on_the_cpu(cfg):
    """Loss and every gradient, float64, the same noise on both devices."""
    torch.manual_seed(0)
    cpu = DRAW(cfg).double()
    gpu = DRAW(cfg).double().to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    x = (torch.rand(6, 1, 28, 28) > 0.7).double()
    eps = torch.randn(cfg.glimpses, 6, cfg.z_size, dtype=torch.float64)
    losses = []
    for model in (cpu, gpu):
        fixed_noise(model, eps)
        loss = model(x.to(model.h_dec0.device)).loss
        loss.sum().backward()
        losses.append(loss.cpu())
    torch.testing.assert_close(losses[1], losses[0])
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(b.grad.cpu(), a.grad, msg=lambda m, name=name: f"{name}: {m}")


def test_sampling_on_the_gpu(cfg):
    torch.manual_seed(0)
    model = DRAW(cfg).to(CUDA)
    images = model.sample(5, generator=torch.Generator(CUDA).manual_seed(0))
    assert images.device.type == "cuda" and images.shape == (5, 1, 28, 28)
    assert ((images >= 0) & (images <= 1)).all()
    trace = model.sample_trace(3)
    assert trace.canvases.shape == (cfg.glimpses, 3, 1, 28, 28) and trace.read_windows.gx.is_cuda


def test_evaluation_on_the_gpu_matches_the_cpu(mnist):
    """The bound and IWAE of the shipped default model agree across devices within their sampling
    noise. A trained model (its KL is about 28 nats), so that noise drawn wrongly on the GPU would
    show: an untrained model's bound hardly depends on its noise (0.05 nats over seeds). Over seeds
    on the CPU the trained one's moved by at most 0.8 nats (bound, 200 images) and 0.6 (IWAE with
    k = 10, 50 images)."""
    from cdraw.generate import DEFAULT_MODELS

    data = ImageData(mnist["test"][:200])
    few = data.select(slice(0, 50))
    figures = []  # (images, bound, IWAE): on the CPU, then on the GPU
    for device in (torch.device("cpu"), CUDA):
        model = DRAW.from_pretrained(DEFAULT_MODELS["none"], device=device)
        bound = bound_sums(model, data, 100, torch.Generator(device).manual_seed(0)).means()
        iwae = iwae_sum(model, few, 10, 25, torch.Generator(device).manual_seed(0)) / len(few)
        figures.append((bound["images"], bound["bound"], iwae))
    (n_cpu, bound_cpu, iwae_cpu), (n_gpu, bound_gpu, iwae_gpu) = figures
    assert n_cpu == n_gpu == 200
    assert abs(bound_gpu - bound_cpu) < 2.0 and abs(iwae_gpu - iwae_cpu) < 2.0, figures


def test_save_on_the_gpu_load_anywhere(cfg, tmp_path):
    torch.manual_seed(0)
    model = DRAW(cfg).to(CUDA)
    model.save_pretrained(tmp_path / "m")
    for device in ("cpu", "cuda"):
        back = DRAW.from_pretrained(tmp_path / "m", device=device)
        assert back.h_dec0.device.type == device
        for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
            assert torch.equal(a.cpu(), b.cpu()), name


def loop_config(tmp_path, model: DRAWConfig, max_steps: int) -> TrainConfig:
    """A few eager steps of the training loop, 50 images each, into tmp_path/run."""
    return TrainConfig(
        model=model, output_dir=str(tmp_path / "run"), max_steps=max_steps, batch_size=50, num_samples=4, compile=False
    )


def test_training_through_the_loop_runs_on_the_gpu(mnist, tmp_path):
    """Two optimiser steps of the training loop on the GPU (eager: the compiled step has its own
    tests above), TF32 on: a model folder that says cuda."""
    cfg = loop_config(tmp_path, DRAWConfig(glimpses=8, enc_size=32, dec_size=32, z_size=5, write_size=3), max_steps=2)
    cfg.log_every, cfg.tf32 = 1, True
    train(cfg, ImageData(mnist["train"][:500]), ImageData(mnist["valid"][:100]), dataset="binarized-mnist")
    record = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert record["device"].startswith("cuda") and record["step"] == 2


CAPTIONS = [f"the digit {d} is at the {p}" for d in range(10) for p in ("top left", "bottom right", "left")] + [
    f"the digit {a} is on the left of the digit {b}" for a in range(10) for b in range(10)
]


@pytest.mark.parametrize("kind", ["unconditional", "label", "bilstm"])
def test_training_steps_never_wait_for_the_gpu(mnist, tmp_path, monkeypatch, kind):
    """Between log lines a training step makes no host sync (no .item(), no copy to the host, no
    wait): torch's sync debug mode turns any into an error. The first step (Adam's state, cuBLAS's
    handles) and the logging are outside the check. A caption model's BiLSTM runs unpacked on a GPU
    for this (packing reads the lengths on the host); a frozen pretrained encoder skips its cache there
    (keyed on the host), not tested here: the text extra is not on the GPU machine."""
    from cdraw.conditioning import ConditionConfig, SentencePieceTokenizer
    from cdraw.conditioning.encoders import make_tokenizer
    from cdraw.training import Trainer

    checked = []
    original = Trainer._train_step

    def step_without_syncs(self, idx):
        if self.state.step == 0:
            return original(self, idx)
        torch.cuda.set_sync_debug_mode("error")
        try:
            original(self, idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        checked.append(self.state.step)

    monkeypatch.setattr(Trainer, "_train_step", step_without_syncs)
    condition, prior = None, {}
    if kind == "label":
        condition = ConditionConfig(kind="label", num_classes=10, embed_size=4)
    elif kind == "bilstm":
        pytest.importorskip("sentencepiece")
        SentencePieceTokenizer.train(CAPTIONS, vocab_size=200, max_length=16).save(tmp_path / "tokenizer")
        condition = ConditionConfig(
            kind="bilstm", embed_size=8, hidden_size=6, max_length=16, tokenizer=str(tmp_path / "tokenizer")
        )
        prior = {"learned_prior": True, "bounded_prior": True}  # alignDRAW's, as mnist_captions trains it
    model = DRAWConfig(glimpses=8, enc_size=32, dec_size=32, z_size=5, write_size=3, condition=condition, **prior)
    cfg = loop_config(tmp_path, model, max_steps=6)
    cfg.log_every = 6

    def data(images: torch.Tensor) -> ImageData:  # labels 0..9, or captions of every length, in turn
        if kind == "unconditional":
            return ImageData(images)
        turn = torch.arange(len(images))
        if kind == "label":
            return ImageData(images, conditions=turn % 10)
        return ImageData(images, conditions=make_tokenizer(condition).encode([CAPTIONS[i % 37] for i in turn]))

    train(cfg, data(mnist["train"][:500]), data(mnist["valid"][:100]), dataset="x")
    assert checked == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_step_on_the_gpu_equals_the_eager_step(cfg, mode):
    """torch.compile (and CUDA graphs) on the GPU: the eager step's loss and gradients, over three
    optimiser steps (CUDA graphs: the first is a warm-up, the second records, the third replays the
    recorded graph on inputs copied in, as every later training step does), with two compiled calls
    per forward as in training (8 glimpses, 4 per call). It must really compile: a fallback to the
    eager step (a warning) or CUDA graphs skipped by inductor fail it. Last in this file: the compiles
    are its slowest tests, and a timeout there leaves the others' results."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    eager = DRAW(cfg).to(CUDA)
    options = {} if mode == "default" else {"mode": mode}
    compiled = DRAW(cfg).to(CUDA).compile_step(steps_per_call=4, **options)
    skips = counters["inductor"]["cudagraph_skips"]
    compiled.load_state_dict(eager.state_dict())
    x = (torch.rand(16, 1, 28, 28, device=CUDA) > 0.7).float()
    eps = torch.randn(cfg.glimpses, 16, cfg.z_size)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (eager, compiled)]
    warnings.simplefilter("error", CDrawWarning)  # the compiled step falling back to eager warns
    for _ in range(3):
        losses = []
        for model in (eager, compiled):
            fixed_noise(model, eps)
            loss = model(x).loss
            loss.mean().backward()
            losses.append(loss.detach().clone())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-3)
        for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert counters["inductor"]["cudagraph_skips"] == skips  # inductor ran every graph it was asked to
