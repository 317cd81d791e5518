"""Pictures of the drawing process: window boxes against eq. (19)-(20), GIF frames, boxes, heat maps, KL plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from cdraw import DRAW, CDrawError, DRAWConfig
from cdraw.attention import Window, WindowParams, filterbank
from cdraw.images import GRID_PADDING
from cdraw.pictures import (
    MARGIN,
    READ_COLOUR,
    WRITE_COLOUR,
    alignment_heatmap,
    canvas_frames,
    kl_plot,
    save_animation,
    to_uint8_rgb,
    window_boxes,
)


def window(gx, gy, delta, sigma2=1.0, gamma=1.0) -> Window:
    """A window with (B,) fields from numbers or lists."""
    fields = [torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (gx, gy, delta, sigma2, gamma)]
    return Window(*torch.broadcast_tensors(*fields))


def paper_box(gx: float, gy: float, delta: float, n: int) -> list[float]:
    """Eq. (19)-(20) written out: mu^i = g + (i - N/2 - 0.5) delta for i = 1..N, 1-based; the span, 0-based."""
    mx = [gx + (i - n / 2 - 0.5) * delta for i in range(1, n + 1)]
    my = [gy + (i - n / 2 - 0.5) * delta for i in range(1, n + 1)]
    return [min(mx) - 1, min(my) - 1, max(mx) - 1, max(my) - 1]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_window_boxes_match_the_filter_centres_of_eq_19_20(n):
    gen = torch.Generator().manual_seed(n)
    t, b = 3, 4
    w = Window(*(torch.rand(t, b, generator=gen, dtype=torch.float64) * s for s in (30, 30, 3, 2, 1)))
    got = window_boxes(w, n)
    assert got.shape == (t, b, 4)
    for i in range(t):
        for k in range(b):
            want = paper_box(w.gx[i, k].item(), w.gy[i, k].item(), w.delta[i, k].item(), n)
            torch.testing.assert_close(got[i, k], torch.tensor(want, dtype=torch.float64))
    if n == 1:  # a single filter sits on g: the box is a point
        torch.testing.assert_close(got[..., 0], w.gx - 1)
        torch.testing.assert_close(got[..., 2], w.gx - 1)


def test_window_boxes_agree_with_where_filterbank_puts_its_filters():
    """With a tiny variance each filter of ``filterbank`` peaks on the pixel of its centre."""
    n, size = 4, 20
    w = window([6.0, 11.0], [9.0, 14.0], [2.0, 4.0], sigma2=0.01)  # even strides: centres on pixels
    boxes = window_boxes(w, n)  # (2, 4)
    fx = filterbank(w.gx, w.delta, w.sigma2, n, size)  # (2, N, size)
    fy = filterbank(w.gy, w.delta, w.sigma2, n, size)
    for k in range(2):
        px, py = fx[k].argmax(-1), fy[k].argmax(-1)  # 0-based pixel of each filter
        assert boxes[k].tolist() == [px[0].item(), py[0].item(), px[-1].item(), py[-1].item()]


def test_centred_window_of_an_image_wide_filterbank_spans_the_whole_image():
    """Eq. (22)-(24) at g~ = 0, delta~ = 1 with N = H: filters on pixels 1..W, the box is the whole image."""
    h = w = 28
    params = WindowParams(hidden_size=3, n=h, size=(h, w))
    torch.nn.init.zeros_(params.linear.weight)
    torch.nn.init.zeros_(params.linear.bias)
    box = window_boxes(params(torch.zeros(1, 3)), h)[0]
    torch.testing.assert_close(box, torch.tensor([0.0, 0.0, w - 1.0, h - 1.0]), atol=1e-5, rtol=0)


def test_read_box_is_red_at_its_edges_on_a_blank_canvas(tmp_path):
    scale, h, w = 4, 12, 10
    canvases = torch.zeros(1, 1, 1, h, w)  # (T, B, C, H, W), black
    # N = 3, delta = 2, centre pixel (1-based) x = 5, y = 6: centres x 3..7, y 4..8 -> 0-based x 2..6, y 3..7
    reads = Window(*(v.reshape(1, 1) for v in window(5.0, 6.0, 2.0)))
    (frame,) = canvas_frames(canvases, read_windows=reads, read_size=3, scale=scale)
    a = torch.from_numpy(np.array(frame))  # (rows, cols, 3)
    p = GRID_PADDING  # between the upscaled images
    assert tuple(a.shape) == (2 * p + h * scale, 2 * p + w * scale, 3)
    tile = a[p : p + h * scale, p : p + w * scale]  # the one image, upscaled
    left, top, right, bottom = 2 * scale, 3 * scale, 7 * scale - 1, 8 * scale - 1  # around pixels x 2..6, y 3..7
    red = torch.tensor(READ_COLOUR, dtype=torch.uint8)
    for y, x in [(top, left), (top, right), (bottom, left), (bottom, right), (top, 20), (bottom, 20), (20, left)]:
        assert tile[y, x].tolist() == red.tolist(), (y, x)
    for y, x in [(top + 1, left + 1), (top - 1, left), (top, left - 1), (bottom + 1, right), (0, 0), (25, 15)]:
        assert tile[y, x].tolist() == [0, 0, 0], (y, x)  # just inside, just outside, far away: untouched
    assert (tile == red).all(-1).sum() == 2 * (right - left + 1) + 2 * (bottom - top - 1)  # one pixel wide
    with Image.open(save_animation([frame], tmp_path / "one.gif")) as gif:  # few colours: the GIF is exact
        assert np.array_equal(np.array(gif.convert("RGB")), np.array(frame))


def test_box_partly_outside_the_image_is_clipped_and_write_is_green_over_read():
    h = w = 8
    canvases = torch.full((2, 2, 1, h, w), 0.5)
    win = Window(*(v.reshape(1, 2).expand(2, 2) for v in window([1.0, 4.5], [1.0, 4.5], [3.0, 1.0])))
    frames = canvas_frames(canvases, read_windows=win, write_windows=win, read_size=2, write_size=2, scale=2)
    a = torch.from_numpy(np.array(frames[1]))
    p = GRID_PADDING
    first = a[p : p + 2 * h, p : p + 2 * w]  # box centres at 0-based -1.5 and 1.5: only right and bottom sides show
    second = a[p : p + 2 * h, 2 * p + 2 * w : 2 * p + 4 * w]
    green = list(WRITE_COLOUR)
    assert first[0, 4].tolist() == green and first[4, 0].tolist() == green  # (1.5 + 1) * 2 - 1
    assert not (first == torch.tensor(READ_COLOUR, dtype=torch.uint8)).all(-1).any()  # write drawn over read
    assert (first[0, :4] == 128).all() and (first[:4, 0] == 128).all()  # the sides outside the image: not drawn
    assert second[2 * 3, 2 * 3].tolist() == green  # centre 4.5, N=2, delta 1: pixels 4, 5 (1-based)


def test_colour_canvases_stay_colour_and_grey_becomes_rgb():
    colour = torch.zeros(2, 3, 3, 4, 4)
    colour[:, :, 0] = 1.0  # pure red images
    frame = canvas_frames(colour, scale=1)[0].convert("RGB")
    p = GRID_PADDING
    assert frame.getpixel((p, p)) == (255, 0, 0)
    grey = to_uint8_rgb(torch.full((1, 1, 2, 2), 0.25))
    assert grey.shape == (1, 2, 2, 3) and grey.dtype == torch.uint8 and (grey == 64).all()


def test_animation_has_one_frame_per_step_with_durations_even_when_frames_repeat(tmp_path):
    canvases = torch.zeros(5, 3, 1, 6, 6)
    canvases[1:3] = 1.0  # steps 2 and 3 identical, 4 and 5 identical: Pillow alone would merge them
    frames = canvas_frames(canvases, scale=2, nrow=3)
    path = save_animation(frames, tmp_path / "sub" / "drawing.gif", ms_per_frame=50, hold_last_ms=1000)
    assert path == tmp_path / "sub" / "drawing.gif" and not [f for f in path.parent.iterdir() if f != path]
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == frames[0].size
        assert gif.info.get("loop") == 0
        durations, pixels = [], []
        for f in ImageSequence.Iterator(gif):
            durations.append(f.info["duration"])
            pixels.append(f.convert("RGB").getpixel((10, 10)))
    assert durations == [50, 50, 50, 50, 1000]
    assert pixels == [(0, 0, 0), (255, 255, 255), (255, 255, 255), (0, 0, 0), (0, 0, 0)]


def test_a_tiny_model_draws_a_gif_of_its_steps(tmp_path):
    torch.manual_seed(0)
    model = DRAW(DRAWConfig(glimpses=3, enc_size=8, dec_size=8, z_size=2))
    trace = model.sample_trace(4)
    frames = canvas_frames(trace.canvases, write_windows=trace.write_windows, write_size=5, scale=2)
    path = save_animation(frames, tmp_path / "drawing.gif")
    side = 2 * (2 * 28 + GRID_PADDING) + GRID_PADDING  # a 2 x 2 grid of 28 x 28 images, upscaled twice
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (side, side)
    boxes = window_boxes(trace.write_windows, 5)
    assert boxes.shape == (3, 4, 4) and torch.isfinite(boxes).all()


def test_alignment_heatmap_is_a_png_with_darker_cells_for_more_weight(tmp_path):
    t, tokens = 6, ["\u2581a", "\u2581digit", "\u2581is", "\u2581at", "\u2581the", "\u2581bottom", "\u2581right"]
    alpha = torch.softmax(torch.randn(t, len(tokens), generator=torch.Generator().manual_seed(0)), -1)
    alpha[0] = torch.nn.functional.one_hot(torch.tensor(2), len(tokens)).float()  # step 1: all on "is"
    path = alignment_heatmap(alpha, tokens, tmp_path / "a" / "alignment.png", cell=10)
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        assert 7 * 10 <= w < 7 * 10 + 200 and 6 * 10 <= h < 6 * 10 + 200
        grey = img.convert("L")
        x0, y0 = w - MARGIN - 7 * 10, h - MARGIN - 6 * 10  # the heat map's top-left corner
        row = [grey.getpixel((x0 + 10 * k + 5, y0 + 5)) for k in range(7)]
    assert row[2] == 0 and all(v == 255 for i, v in enumerate(row) if i != 2)
    with pytest.raises(CDrawError, match="one column per token"):
        alignment_heatmap(alpha, tokens[:3], tmp_path / "bad.png")


def test_kl_plot_writes_pngs_also_for_all_zero_kl(tmp_path):
    for name, kl in [("kl.png", torch.rand(64) * 3), ("zeros.png", torch.zeros(4)), ("one.png", torch.ones(1))]:
        path = kl_plot(kl, tmp_path / name)
        with Image.open(path) as img:
            assert img.format == "PNG" and 320 <= img.size[0] < 600 and 160 <= img.size[1] < 400
    with pytest.raises(CDrawError, match="NaN"):
        kl_plot(torch.tensor([1.0, math.nan]), tmp_path / "nan.png")


def test_unwritable_paths_raise_cdraw_error_and_leave_no_temporary_file(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(CDrawError, match="cannot write"):
        kl_plot(torch.ones(3), tmp_path / "a_file" / "kl.png")  # its folder would be a file
    (tmp_path / "a_folder").mkdir()
    frames = canvas_frames(torch.zeros(2, 1, 1, 4, 4), scale=1)
    with pytest.raises(CDrawError, match="cannot write") as err:
        save_animation(frames, tmp_path / "a_folder")  # the temporary file is written, the rename fails
    assert "\n" not in str(err.value)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert not list((tmp_path / "a_folder").iterdir())


def test_a_long_row_text_keeps_its_start_inside_the_picture_and_ends_in_dots(tmp_path, monkeypatch):
    """A caption too long for the height of its row of tiles: its first lines, the last of them ending
    in "...", all inside the picture (it was centred on the row, its start drawn above the picture)."""
    from PIL import ImageDraw

    from cdraw.pictures import labelled_grid

    drawn, real_text = [], ImageDraw.ImageDraw.text
    monkeypatch.setattr(
        ImageDraw.ImageDraw,
        "text",
        lambda self, xy, text, *a, **k: (drawn.append((xy[1], text)), real_text(self, xy, text, *a, **k)),
    )
    caption = "le chiffre 7 est en haut " + "word " * 120
    path = labelled_grid(torch.rand(2, 1, 28, 28), tmp_path / "g.png", nrow=2, row_labels=[caption])
    height = Image.open(path).size[1]
    assert drawn[0][1].startswith("le chiffre 7") and drawn[-1][1].endswith(" ...")
    assert all(0 <= y < height - 8 for y, _ in drawn) and len(drawn) > 3
    drawn.clear()
    labelled_grid(torch.rand(2, 1, 28, 28), tmp_path / "s.png", nrow=2, row_labels=["the digit 1"])
    assert [t for _, t in drawn] == ["the digit 1"]  # a short one whole, without dots
