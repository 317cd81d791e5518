"""COCO captions from local files: a tiny COCO-format fixture -> parquet -> tensors and caption pairs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdraw import CDrawError
from cdraw.coco import caption_pairs, prepare_coco
from cdraw.datasets.coco import load_coco

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
GREEN = (10, 200, 30)
RED, BLUE = (255, 0, 0), (0, 0, 255)
JPEG_TOLERANCE = 3  # a solid colour survives JPEG coding to within a few levels


def name(i: int, ext: str) -> str:
    return f"COCO_train2014_{i:012d}.{ext}"


def write_coco(root: Path) -> tuple[Path, Path, dict[int, list[str]]]:
    """Images of several sizes and modes, a captions JSON in COCO's format, and the expected captions."""
    images = root / "train2014"
    images.mkdir(parents=True)
    halves = np.zeros((48, 64, 3), np.uint8)  # (H, W, C), wider than high: resizing squashes it
    halves[:, :32], halves[:, 32:] = RED, BLUE
    ramp = np.zeros((64, 96, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 96).round()[None, :]  # red grows left to right
    ramp[..., 1] = np.linspace(0, 255, 64).round()[:, None]  # green grows top to bottom
    files = {
        1: (name(1, "png"), lambda p: Image.fromarray(halves).save(p)),
        2: (name(2, "jpg"), lambda p: Image.new("RGB", (640, 480), GREEN).save(p, quality=95)),
        3: (name(3, "jpg"), lambda p: Image.new("L", (40, 60), 77).save(p)),
        4: (name(4, "png"), lambda p: Image.new("RGBA", (33, 20), (200, 50, 100, 128)).save(p)),
        5: (name(5, "png"), lambda p: Image.fromarray(ramp).save(p)),
        6: (name(6, "jpg"), None),  # listed, not on disk
        7: (name(7, "png"), lambda p: Image.new("RGB", (8, 8)).save(p)),  # on disk, no captions
        8: (name(8, "jpg"), lambda p: p.write_bytes(b"not a jpeg")),  # unreadable
    }
    for file_name, write in files.values():
        if write is not None:
            write(images / file_name)
    captions = {i: [f"image {i} caption {k}" for k in range(2 + i % 2)] for i in (1, 2, 3, 4, 5, 6, 8)}
    annotations = [  # interleaved across images, as in COCO, with padding the loader strips
        {"id": 1000 + 10 * k + i, "image_id": i, "caption": f"  {c[k]}\n"}
        for k in range(3)
        for i, c in captions.items()
        if k < len(c)
    ]
    annotations += [
        {"id": 1, "image_id": 1, "caption": "   "},  # blank: dropped
        {"id": 3, "image_id": 2, "caption": None},  # null: dropped
        {"id": 2, "image_id": 999, "caption": "an image nobody listed"},  # ignored
    ]
    coco = {
        "info": {"description": "tiny"},
        "images": [{"id": i, "file_name": f, "width": 1, "height": 1} for i, (f, _) in files.items()],
        "annotations": annotations,
    }
    captions_json = root / "annotations" / "captions_train2014.json"
    captions_json.parent.mkdir()
    captions_json.write_text(json.dumps(coco))
    return captions_json, images, captions


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    captions_json, images, captions = write_coco(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = prepare_coco(captions_json, images, root / "coco32")
    return {"path": path, "json": captions_json, "images": images, "captions": captions, "warnings": caught}


def test_prepare_writes_one_row_per_usable_image_with_its_captions_grouped(coco):
    data = load_coco("train", coco["path"].parent)
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (5, 3, SIZE, SIZE)
    assert data.image_ids == [1, 2, 3, 4, 5]  # JSON order; 6 missing, 7 uncaptioned, 8 unreadable
    assert data.captions == [coco["captions"][i] for i in data.image_ids]
    meta = json.loads((coco["path"].parent / "metadata.json").read_text())
    assert meta["size"] == SIZE
    assert {k: v for k, v in meta["splits"]["train"].items() if k.startswith(("skipped", "images", "captions"))} == {
        "images": 5,
        "captions": 3 + 2 + 3 + 2 + 3,
        "skipped_missing": 1,
        "skipped_unreadable": 1,
        "skipped_no_captions": 1,
    }
    assert meta["splits"]["train"]["source_captions"] == "captions_train2014.json"
    assert sorted(p.name for p in coco["path"].parent.iterdir()) == ["metadata.json", "train.parquet"]  # no temp files


def test_whole_image_is_resized_keeping_colours_and_layout(coco):
    images = load_coco("train", coco["path"].parent).images.int()  # (5, 3, S, S)
    halves, green, grey, rgba, ramp = images
    # left half red, right half blue; only the columns next to the edge mix (bicubic's support)
    assert (halves[:, :, :14] == torch.tensor(RED)[:, None, None]).all()
    assert (halves[:, :, 18:] == torch.tensor(BLUE)[:, None, None]).all()
    assert (halves[0, :, :16].float().mean() > 200) and (halves[2, :, 16:].float().mean() > 200)
    assert (green - torch.tensor(GREEN)[:, None, None]).abs().max() <= JPEG_TOLERANCE  # 640x480 JPEG
    assert (grey - 77).abs().max() <= JPEG_TOLERANCE  # greyscale -> equal RGB channels
    assert (rgba == torch.tensor([200, 50, 100])[:, None, None]).all()  # alpha dropped, colour kept
    # whole image, no crop: a linear ramp over the full width/height lands on the output block centres
    x = (torch.arange(SIZE) + 0.5) * 96 / SIZE - 0.5  # source column at each output column's centre
    y = (torch.arange(SIZE) + 0.5) * 64 / SIZE - 0.5
    inner = slice(2, SIZE - 2)  # the border is pulled in by the clamped kernel
    assert (ramp[0, :, inner] - (x[inner] * 255 / 95)[None, :]).abs().max() <= 2
    assert (ramp[1, inner, :] - (y[inner] * 255 / 63)[:, None]).abs().max() <= 2
    assert (ramp[2] == 0).all()


def test_missing_uncaptioned_and_unreadable_images_give_one_warning(coco):
    assert len(coco["warnings"]) == 1
    msg = str(coco["warnings"][0].message)
    assert "skipped 3 images" in msg and "1 missing" in msg and name(6, "jpg") in msg
    assert "1 unreadable" in msg and name(8, "jpg") in msg and "1 without captions" in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_parquet_loads_with_datasets_load_dataset(coco, tmp_path):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(coco["path"]), split="train", cache_dir=str(tmp_path))
    assert ds.column_names == ["image", "captions", "image_id", "file_name"]
    assert ds.features["image"] == datasets.Value("binary")
    row = ds[1]
    assert row["image_id"] == 2 and row["file_name"] == name(2, "jpg") and row["captions"] == coco["captions"][2]
    hwc = np.frombuffer(row["image"], np.uint8).reshape(SIZE, SIZE, 3)  # stored HWC
    assert torch.equal(torch.from_numpy(hwc.copy()).permute(2, 0, 1), load_coco("train", coco["path"].parent).images[1])


def test_caption_pairs_pair_every_caption_with_its_image():
    index, texts = caption_pairs([["a0", "a1"], [], ["c0"], ["d0", "d1", "d2"]])
    assert index.dtype == torch.int64 and index.tolist() == [0, 0, 2, 3, 3, 3]
    assert texts == ["a0", "a1", "c0", "d0", "d1", "d2"]
    index, texts = caption_pairs([])
    assert index.shape == (0,) and texts == []


def test_cdraw_prepare_coco_runs_end_to_end_and_reports_user_errors_in_one_line(coco, tmp_path):
    """`cdraw prepare coco` (an install has no data_scripts/), and the checkout's script, which calls it."""
    command = [sys.executable, "-m", "cdraw.cli", "prepare", "coco"]
    script = [sys.executable, str(REPO / "data_scripts" / "prepare_coco.py")]
    args = ["--captions", str(coco["json"]), "--images", str(coco["images"]), "--out", str(tmp_path)]
    run = {"capture_output": True, "text": True, "timeout": 60, "cwd": tmp_path}
    ok = subprocess.run([*command, *args, "--split", "val", "--limit", "6", "--size", "16", "--num-proc", "2"], **run)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"wrote {tmp_path / 'val.parquet'}: 5 images (16x16), 13 captions; skipped 1 (1 missing)\n"
    assert "warning: skipped 1 images" in ok.stderr and "Traceback" not in ok.stderr
    assert tuple(load_coco("val", tmp_path).images.shape) == (5, 3, 16, 16)
    bad = subprocess.run([*script, "--captions", str(tmp_path / "nope.json"), "--images", str(tmp_path)], **run)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: captions file") and "nope.json" in bad.stderr
    assert bad.stderr.count("\n") == 1
    into = subprocess.run(
        [*command, *args[:4], "--data-dir", str(tmp_path / "d"), "--split", "t", "--limit", "2"], **run
    )
    assert into.returncode == 0 and (tmp_path / "d" / "coco32" / "t.parquet").is_file(), (
        into.stderr
    )  # where train looks
    missing = subprocess.run([*command, "--images", str(tmp_path)], **run)
    assert missing.returncode == 2 and missing.stderr == (
        "error: the following arguments are required: --captions (see `cdraw prepare coco --help`)\n"
    )


def test_existing_split_is_kept_unless_overwrite_and_a_failed_write_leaves_nothing(coco, tmp_path, monkeypatch):
    import datasets

    with pytest.raises(CDrawError, match="already exists.*--overwrite"):
        prepare_coco(coco["json"], coco["images"], coco["path"].parent)

    def crash(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets.Dataset, "to_parquet", crash)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="disk full"):
        warnings.simplefilter("ignore")
        prepare_coco(coco["json"], coco["images"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "absent.json", "captions file .*absent.json not found"),
        (lambda d: write_text(d / "cut.json", '{"images": ['), "not valid JSON"),
        (lambda d: write_json(d / "list.json", [1, 2]), "expected a JSON object"),
        (
            lambda d: write_json(d / "a.json", {"images": [], "info": {}}),
            "no 'annotations' list \\(found: images, info",
        ),
        (
            lambda d: write_json(d / "b.json", {"images": [{"id": 1}], "annotations": []}),
            "images\\[0\\] has no 'file_name'",
        ),
        (
            lambda d: write_json(
                d / "inst.json", {"images": [], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}
            ),
            "no 'caption' key \\(is this instances_",
        ),
        (
            lambda d: write_json(d / "captions.json", {"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []}),
            "none of the 1 images captions.json lists has a caption",
        ),
    ],
)
def test_bad_captions_files_are_clear_errors(tmp_path, make, match):
    with pytest.raises(CDrawError, match=match):
        prepare_coco(make(tmp_path), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unreadable_captions_file_is_one_line(tmp_path, monkeypatch):
    import errno

    import cdraw.coco

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(cdraw.coco, "open", denied, raising=False)  # chmod does not stop root, who runs CI
    with pytest.raises(CDrawError, match="cannot read .*captions.json: Permission denied"):
        prepare_coco(write_json(tmp_path / "captions.json", {}), tmp_path, tmp_path / "out")


def test_missing_image_folder_or_no_readable_images_are_clear_errors(coco, tmp_path):
    with pytest.raises(CDrawError, match="image folder .*nowhere not found"):
        prepare_coco(coco["json"], tmp_path / "nowhere", tmp_path / "out")
    with pytest.warns(UserWarning, match="skipped 8 images"), pytest.raises(CDrawError, match="no usable images"):
        prepare_coco(coco["json"], tmp_path, tmp_path / "out")  # a folder without the images
    assert not (tmp_path / "out").exists()


def test_load_coco_names_the_script_when_the_split_is_missing(tmp_path):
    # a validation or test split is made from val2014, never from the training images
    val = "'val' not found.*cdraw prepare coco --captions COCO/annotations/captions_val2014.json "
    with pytest.raises(CDrawError, match=val + "--images COCO/val2014 .*--split val"):
        load_coco("val", tmp_path)
    with pytest.raises(CDrawError, match="captions_train2014.json --images COCO/train2014 .*--split train"):
        load_coco("train", tmp_path)


def test_limit_and_skip_cut_one_file_into_disjoint_splits_that_cover_it(coco, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's skipped images
        prepare_coco(coco["json"], coco["images"], tmp_path, split_name="dev", limit=3)
        prepare_coco(coco["json"], coco["images"], tmp_path, split_name="test", skip=3)
    dev, test = load_coco("dev", tmp_path), load_coco("test", tmp_path)
    assert dev.image_ids == [1, 2, 3] and test.image_ids == [4, 5]  # 6 missing, 7 uncaptioned, 8 unreadable
    whole = load_coco("train", coco["path"].parent)
    assert torch.equal(torch.cat([dev.images, test.images]), whole.images)
    meta = json.loads((tmp_path / "metadata.json").read_text())["splits"]
    assert (meta["dev"]["limit"], meta["dev"]["skip"], meta["test"]["limit"], meta["test"]["skip"]) == (3, 0, None, 3)
    with pytest.raises(CDrawError, match="skip at least 0"):
        prepare_coco(coco["json"], coco["images"], tmp_path, split_name="x", skip=-1)


def test_an_output_path_that_is_a_file_fails_before_the_resize_pass(coco, tmp_path, monkeypatch):
    import cdraw.coco

    monkeypatch.setattr(cdraw.coco, "_resize_all", lambda *a, **k: pytest.fail("resized before checking --out"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CDrawError, match="cannot write into .*a_file/coco32: .*a_file is a file, not a folder"):
        prepare_coco(coco["json"], coco["images"], tmp_path / "a_file" / "coco32")


def test_the_coco_root_given_for_the_image_folder_names_the_right_one(coco, tmp_path, monkeypatch):
    import cdraw.coco

    monkeypatch.setattr(cdraw.coco, "_resize_all", lambda *a, **k: pytest.fail("a pass over the wrong folder"))
    root = coco["images"].parent  # holds annotations/ and train2014/, as COCO's download does
    with pytest.raises(CDrawError, match=f"not in {root} but in {coco['images']}: pass that folder"):
        prepare_coco(coco["json"], root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_leaves_the_folder_as_it_was(coco, tmp_path, monkeypatch):
    import errno

    import datasets

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "to_parquet", full)
    with warnings.catch_warnings(), pytest.raises(CDrawError, match="cannot write .*train.parquet: No space left"):
        warnings.simplefilter("ignore")
        prepare_coco(coco["json"], coco["images"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_jpegs_decoded_at_reduced_scale_keep_the_layout_and_cmyk_becomes_rgb(tmp_path):
    """The draft (DCT-scaled) decode path of a large JPEG: the same geometry as the ramp test above."""
    images = tmp_path / "train2014"
    images.mkdir()
    ramp = np.zeros((480, 640, 3), np.uint8)  # (H, W, C): decoded at 1/4 scale (160x120 >= 2 x 32)
    ramp[..., 0] = np.linspace(0, 255, 640).round()[None, :]
    ramp[..., 1] = np.linspace(0, 255, 480).round()[:, None]
    Image.fromarray(ramp).save(images / name(1, "jpg"), quality=95)
    Image.new("CMYK", (320, 240), (0, 255, 255, 0)).save(images / name(2, "jpg"), quality=95)  # red in CMYK
    coco = {
        "images": [{"id": i, "file_name": name(i, "jpg")} for i in (1, 2)],
        "annotations": [{"image_id": i, "caption": f"image {i}"} for i in (1, 2)],
    }
    captions_json = write_json(tmp_path / "captions.json", coco)
    got, cmyk = load_coco("train", prepare_coco(captions_json, images, tmp_path / "out").parent).images.int()
    x = (torch.arange(SIZE) + 0.5) * 640 / SIZE - 0.5  # source column at each output column's centre
    y = (torch.arange(SIZE) + 0.5) * 480 / SIZE - 0.5
    inner = slice(2, SIZE - 2)
    assert (got[0, :, inner] - (x[inner] * 255 / 639)[None, :]).abs().max() <= JPEG_TOLERANCE
    assert (got[1, inner, :] - (y[inner] * 255 / 479)[:, None]).abs().max() <= JPEG_TOLERANCE
    assert (cmyk - torch.tensor(RED)[:, None, None]).abs().max() <= JPEG_TOLERANCE
