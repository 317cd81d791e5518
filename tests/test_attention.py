"""The attention of section 3, pinned against slow float64 transcriptions of the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from cdraw.attention import FILTER_EPS, Window, WindowParams, filterbank, read, read_patch, write, write_patch


def paper_filterbank(g: float, delta: float, sigma2: float, n: int, size: int) -> torch.Tensor:
    """Eq. (19)-(20) and (25)-(26) written out with loops: pixels a = 1..size, filters i = 1..N."""
    f = torch.zeros(n, size, dtype=torch.float64)
    for i in range(1, n + 1):
        mu = g + (i - n / 2 - 0.5) * delta
        for a in range(1, size + 1):
            f[i - 1, a - 1] = math.exp(-((a - mu) ** 2) / (2 * sigma2))
        f[i - 1] /= f[i - 1].sum() + FILTER_EPS  # "normalised to sum 1 (with a small epsilon)"
    return f


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
@pytest.mark.parametrize("size", [28, 17])
def test_filterbank_matches_paper_equations(n, size):
    gen = torch.Generator().manual_seed(n * 100 + size)
    b = 6
    center = torch.rand(b, generator=gen, dtype=torch.float64) * (size + 4) - 2  # some windows off the edge
    stride = torch.rand(b, generator=gen, dtype=torch.float64) * 3 + 0.1
    sigma2 = torch.rand(b, generator=gen, dtype=torch.float64) * 4 + 0.3
    got = filterbank(center, stride, sigma2, n, size)
    assert got.shape == (b, n, size)
    for k in range(b):
        want = paper_filterbank(center[k].item(), stride[k].item(), sigma2[k].item(), n, size)
        torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-9)


def test_filter_rows_sum_to_one_and_far_windows_give_zero_not_nan():
    f = filterbank(torch.tensor([14.5, 1e4]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.01]), 3, 28)
    torch.testing.assert_close(f[0].sum(-1), torch.ones(3))
    assert torch.isfinite(f).all() and f[1].abs().max() == 0


def test_centred_grid_with_full_stride_spans_the_image_exactly():
    """N = size filters, centre (size+1)/2, stride (size-1)/(N-1) = 1: filter i sits on pixel i.

    A grid indexed i = 0..N-1 would put every filter one stride to the left and fail here.
    """
    size = 9
    f = filterbank(torch.tensor([(size + 1) / 2]), torch.tensor([1.0]), torch.tensor([0.01]), size, size)[0]
    torch.testing.assert_close(f, torch.eye(size), atol=1e-6, rtol=0)


def test_window_params_map_zero_to_the_image_centre_and_full_stride():
    """Eq. (22)-(24): g~ = 0 is the centre (A+1)/2, delta~ = 1 spans (max(A,B)-1)/(N-1)."""
    wp = WindowParams(hidden_size=3, n=5, size=(20, 28))  # H = B = 20 rows, W = A = 28 columns
    torch.nn.init.zeros_(wp.linear.weight)
    with torch.no_grad():
        wp.linear.bias.copy_(torch.tensor([0.0, 0.0, math.log(2.0), 0.0, math.log(3.0)]))
    w = wp(torch.randn(4, 3))
    torch.testing.assert_close(w.gx, torch.full((4,), 29 / 2))
    torch.testing.assert_close(w.gy, torch.full((4,), 21 / 2))
    torch.testing.assert_close(w.delta, torch.full((4,), 27 / 4))
    torch.testing.assert_close(w.sigma2, torch.full((4,), 2.0))
    torch.testing.assert_close(w.gamma, torch.full((4,), 3.0))


def test_single_bright_pixel_is_read_by_a_small_window_on_it():
    """N = 1 and a small sigma at pixel (row 5, column 11), 1-based: the glimpse is that pixel."""
    x = torch.zeros(1, 1, 12, 16)
    x[0, 0, 4, 10] = 1.0  # 0-based index of pixel (5, 11)
    on = Window(gx=torch.tensor([11.0]), gy=torch.tensor([5.0]), delta=torch.ones(1), sigma2=torch.tensor([0.02]),
                gamma=torch.ones(1))  # fmt: skip
    glimpse = read(x, torch.zeros_like(x), on, n=1)  # (1, 2): x glimpse, x_hat glimpse
    torch.testing.assert_close(glimpse, torch.tensor([[1.0, 0.0]]), atol=1e-4, rtol=0)
    off = on._replace(gx=torch.tensor([12.0]))  # one pixel to the right: sees nothing
    assert read(x, torch.zeros_like(x), off, n=1)[0, 0] < 1e-4


def test_full_window_read_covers_the_image_and_gamma_scales_it():
    """A window centred on the image with full stride and N = size reads the image back (x gamma)."""
    x = torch.rand(2, 3, 7, 7)
    w = Window(gx=torch.full((2,), 4.0), gy=torch.full((2,), 4.0), delta=torch.ones(2), sigma2=torch.full((2,), 0.01),
               gamma=torch.tensor([1.0, 2.5]))  # fmt: skip
    glimpse = read(x, 1 - x, w, n=7).view(2, 6, 7, 7)
    torch.testing.assert_close(glimpse[0, :3], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(glimpse[1, 3:], 2.5 * (1 - x[1]), atol=1e-5, rtol=0)


def test_read_and_write_patches_are_adjoint():
    """<F_Y x F_X^T, w> == <x, F_Y^T w F_X> for every channel."""
    gen = torch.Generator().manual_seed(0)
    b, c, h, w_, n = 3, 2, 13, 19, 4
    rand = lambda scale, shift: torch.rand(b, generator=gen) * scale + shift  # noqa: E731
    fy = filterbank(rand(h, 0), rand(1, 0.5), rand(1, 0.5), n, h)
    fx = filterbank(rand(w_, 0), rand(1, 0.5), rand(1, 0.5), n, w_)
    x = torch.randn(b, c, h, w_, generator=gen, dtype=torch.float64)
    patch = torch.randn(b, c, n, n, generator=gen, dtype=torch.float64)
    fy, fx = fy.double(), fx.double()
    lhs = (read_patch(x, fy, fx) * patch).sum()
    rhs = (x * write_patch(patch, fy, fx)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_compiled_form_of_the_patches_equals_the_einsum():
    """Under torch.compile the patches are written as products and sums; traced by dynamo (its
    eager backend: that form, run by PyTorch) they give the einsum's values and gradients."""
    gen = torch.Generator().manual_seed(1)
    b, c, h, w_ = 3, 2, 11, 9
    for n in (1, 2, 5):
        fy = torch.rand(b, n, h, generator=gen, dtype=torch.float64).requires_grad_()
        fx = torch.rand(b, n, w_, generator=gen, dtype=torch.float64).requires_grad_()
        x = torch.randn(b, c, h, w_, generator=gen, dtype=torch.float64).requires_grad_()
        w = torch.randn(b, c, n, n, generator=gen, dtype=torch.float64).requires_grad_()
        for fn, args in ((read_patch, (x, fy, fx)), (write_patch, (w, fy, fx))):
            traced = torch.compile(fn, backend="eager", fullgraph=True)
            want, got = fn(*args), traced(*args)
            torch.testing.assert_close(got, want)
            probe = torch.randn(want.shape, generator=gen, dtype=torch.float64)
            for a, e in zip(
                torch.autograd.grad((got * probe).sum(), args),
                torch.autograd.grad((want * probe).sum(), args),
                strict=True,
            ):
                torch.testing.assert_close(a, e)


def test_write_divides_by_gamma_and_matches_the_transcription():
    """Eq. (29): write = (1/gamma) F_Y^T w F_X, checked with explicit matrix products."""
    gen = torch.Generator().manual_seed(1)
    win = Window(gx=torch.tensor([6.0, 3.0]), gy=torch.tensor([4.0, 8.0]), delta=torch.tensor([1.5, 0.7]),
                 sigma2=torch.tensor([0.8, 1.2]), gamma=torch.tensor([0.5, 4.0]))  # fmt: skip
    patch = torch.randn(2, 1, 3, 3, generator=gen)
    got = write(patch, win, (9, 11))
    for k in range(2):
        fy = paper_filterbank(win.gy[k].item(), win.delta[k].item(), win.sigma2[k].item(), 3, 9).float()
        fx = paper_filterbank(win.gx[k].item(), win.delta[k].item(), win.sigma2[k].item(), 3, 11).float()
        want = fy.T @ patch[k, 0] @ fx / win.gamma[k]
        torch.testing.assert_close(got[k, 0], want, atol=1e-5, rtol=1e-5)


def test_gradcheck_read_and_write():
    gen = torch.Generator().manual_seed(2)
    dd = dict(dtype=torch.float64)

    def params():
        return [
            (torch.rand(2, generator=gen, **dd) * 5 + 1).requires_grad_(),  # gx
            (torch.rand(2, generator=gen, **dd) * 4 + 1).requires_grad_(),  # gy
            (torch.rand(2, generator=gen, **dd) + 0.5).requires_grad_(),  # delta
            (torch.rand(2, generator=gen, **dd) + 0.5).requires_grad_(),  # sigma2
            (torch.rand(2, generator=gen, **dd) + 0.5).requires_grad_(),  # gamma
        ]

    x = torch.rand(2, 1, 5, 6, generator=gen, **dd).requires_grad_()
    x_hat = torch.rand(2, 1, 5, 6, generator=gen, **dd).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, xh, *p: read(x, xh, Window(*p), 3), (x, x_hat, *params()))
    patch = torch.randn(2, 1, 3, 3, generator=gen, **dd).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, *p: write(w, Window(*p), (5, 6)), (patch, *params()))
