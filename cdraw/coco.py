"""MS COCO captions at alignDRAW's resolution, built from files the user already has.

alignDRAW (Mansimov et al. 2016, section 5) trains on MS COCO with every image resized to 32 x 32,
no crop, and pairs each image with each of its (about five) captions. :func:`prepare_coco` turns
the standard COCO layout (``annotations/captions_train2014.json`` plus ``train2014/*.jpg``) into one
parquet file per split, built with HF ``datasets`` so the decode-and-resize pass runs in parallel
with a progress bar and the output loads anywhere (``datasets.load_dataset("parquet", ...)``,
pandas, pyarrow). :func:`cdraw.datasets.coco.load_coco` reads a split back into a uint8 tensor that fits in memory
(83k train images x 3 KB = 250 MB), the same in-memory design as :mod:`cdraw.data`.

Layout written by :func:`prepare_coco` (default folder ``default_data_dir() / "coco32"``)::

    coco32/train.parquet   columns: image (S*S*3 uint8 bytes, HWC), captions (list of str),
                                    image_id (int64), file_name (str)
    coco32/metadata.json   size, per-split counts (written, skipped and why), source file names
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cdraw.data import default_data_dir
from cdraw.errors import CDrawError
from cdraw.io import atomic_write, read_record

IMAGE_SIZE = 32  # alignDRAW's MS COCO setting
SUBDIR = "coco32"
METADATA = "metadata.json"
FORMAT = "cdraw-coco-captions"
CHANNELS = 3
RESAMPLE = "BICUBIC"  # PIL filter name; see prepare_coco's docstring for why
MAP_BATCH = 64  # images per call of the resize function: amortises Arrow overhead, keeps workers balanced
WARN_NAMES = 3  # how many skipped file names a warning lists
CHECKED_NAMES = 10  # first images looked for before the pass, to catch a wrong --images folder early
SPLIT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
COMMAND = "cdraw prepare coco"  # what makes a split (cdraw.prepare)
COLUMNS = ("image", "captions", "image_id", "file_name")  # parquet column order


@dataclass
class CocoCaptions:
    """One split of COCO captions in memory.

    Attributes:
        images: (N, 3, S, S) uint8 RGB.
        captions: ``captions[i]`` is the list of captions of ``images[i]`` (COCO has about five).
        image_ids: COCO image ids, ``image_ids[i]`` for ``images[i]``.
    """

    images: torch.Tensor
    captions: list[list[str]]
    image_ids: list[int]

    def __len__(self) -> int:
        return len(self.images)


def caption_pairs(captions: list[list[str]]) -> tuple[torch.Tensor, list[str]]:
    """Flatten per-image captions into (image index, caption) pairs, one per caption.

    A trainer indexes ``images[index[k]]`` for ``texts[k]``, so the images are never copied.

    Returns:
        index: (M,) int64, M = total number of captions, nondecreasing.
        texts: the M captions in the same order.
    """
    counts = torch.tensor([len(c) for c in captions], dtype=torch.int64)  # (N,)
    index = torch.repeat_interleave(torch.arange(len(captions), dtype=torch.int64), counts)  # (M,)
    return index, [text for per_image in captions for text in per_image]


def read_coco_captions(captions_json: str | os.PathLike) -> tuple[list[dict], dict[int, list[str]]]:
    """The ``images`` records and the stripped, non-empty captions grouped by image id, validated.

    Annotations that point at no listed image are ignored; captions keep the file's order.
    """
    path = Path(captions_json).expanduser()
    if not path.is_file():
        raise CDrawError(f"captions file {path} not found: pass COCO's annotations/captions_{{train,val}}2014.json")
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CDrawError(f"{path} is not valid JSON ({e}); the file may be truncated: fetch it again") from None
    except OSError as e:
        raise CDrawError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(coco, dict):
        raise CDrawError(f"{path} is not a COCO captions file: expected a JSON object, got {type(coco).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            found = ", ".join(sorted(coco)) or "nothing"
            raise CDrawError(f"{path} is not a COCO captions file: no {key!r} list (found: {found})")
    images, annotations = coco["images"], coco["annotations"]
    for what, records, keys in (("images", images, ("id", "file_name")), ("annotations", annotations, ("image_id",))):
        for i, record in enumerate(records):
            missing = [k for k in keys if not isinstance(record, dict) or k not in record]
            if missing:
                raise CDrawError(f"{path} is not a COCO captions file: {what}[{i}] has no {missing[0]!r} key")
    captions: dict[int, list[str]] = {}
    for i, a in enumerate(annotations):
        if "caption" not in a:
            hint = " (is this instances_*.json? use captions_*.json)" if "segmentation" in a or "bbox" in a else ""
            raise CDrawError(f"{path} is not a COCO captions file: annotations[{i}] has no 'caption' key{hint}")
        text = str(a["caption"] or "").strip()  # a null caption is no caption, not the text "None"
        if text:
            captions.setdefault(a["image_id"], []).append(text)
    return images, captions


def _load_batch(batch: dict[str, list], *, image_dir: str, size: int) -> dict[str, list]:
    """datasets.map function: read, convert to RGB and resize a batch of images; never raises on bad files."""
    from PIL import Image

    resample = getattr(Image.Resampling, RESAMPLE)
    pixels, problems = [], []
    for name in batch["file_name"]:
        path = os.path.join(image_dir, name)
        try:
            with Image.open(path) as img:
                img.draft("RGB", (2 * size, 2 * size))  # JPEG only: decode at 1/2..1/8 scale, still >= 2x target
                rgb = img.convert("RGB")  # L, P, CMYK -> RGB; RGBA drops alpha (no compositing)
            small = rgb.resize((size, size), resample)  # whole image, aspect ratio not kept: alignDRAW's setting
            pixels.append(small.tobytes())  # (S, S, 3) HWC uint8
            problems.append("")
        except FileNotFoundError:
            pixels.append(None)
            problems.append("missing")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            pixels.append(None)
            problems.append(f"{type(e).__name__}: {e}".replace(path, name))  # PIL repeats the path
    return {"image": pixels, "problem": problems}


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise CDrawError("COCO preparation needs HF datasets: pip install datasets") from None
    return datasets


def coco_folder(folder: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """Where a COCO data set is (made, read): ``folder``, else ``data_dir/coco32``, else the default
    data folder's ``coco32``."""
    if folder is None:
        folder = Path(data_dir if data_dir is not None else default_data_dir()) / SUBDIR
    return Path(folder).expanduser()


def prepare_coco(
    captions_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    size: int = IMAGE_SIZE,
    split_name: str = "train",
    num_proc: int = 1,
    limit: int | None = None,
    skip: int = 0,
    overwrite: bool = False,
) -> Path:
    """Resize COCO images to ``size`` x ``size`` and write ``out_dir/{split_name}.parquet`` with their captions.

    Every image is resized whole to a square (no crop, aspect ratio not kept), as alignDRAW did.
    The filter is PIL's BICUBIC: when shrinking, PIL widens the kernel to the reduction factor, so
    it antialiases properly (no moire from a 640 -> 32 reduction), and unlike LANCZOS it has small
    negative lobes, so at 32 x 32, where one pixel is 3% of the picture, edges get no visible halos.
    JPEGs are first decoded at a reduced scale (DCT scaling, itself an area average) that still
    leaves at least twice the target size, which makes decoding several times faster. Greyscale
    and CMYK images become RGB; an alpha channel is dropped. EXIF orientation is not applied,
    matching COCO's own ``width``/``height`` and annotations.

    Images listed in the JSON but missing on disk or unreadable, and images without captions, are
    skipped, counted in ``metadata.json``, and reported in one warning.

    Args:
        captions_json: COCO ``captions_{train,val}{2014,2017}.json``.
        image_dir: folder holding the images' ``file_name`` s (e.g. ``train2014/``).
        out_dir: output folder; default ``default_data_dir() / "coco32"``.
        size: output side in pixels (32 in alignDRAW).
        split_name: output file stem, e.g. ``train`` or ``val``.
        num_proc: worker processes for decoding and resizing.
        limit: use only the first ``limit`` images the JSON lists (after ``skip``): a quick trial, or
            with ``skip``, disjoint splits of one file (``limit=N`` for one, ``skip=N`` for the other).
        skip: leave out the first ``skip`` images the JSON lists.
        overwrite: replace an existing ``{split_name}.parquet``; otherwise refuse.

    Returns:
        The path of the parquet file written.
    """
    if size < 1 or num_proc < 1 or (limit is not None and limit < 1) or skip < 0:
        raise CDrawError(
            f"size, num_proc and limit must be at least 1 and skip at least 0, got {size}, {num_proc}, {limit}, {skip}"
        )
    if not SPLIT_NAME.fullmatch(split_name):
        raise CDrawError(f"split name {split_name!r} must be letters, digits, '_', '-' or '.' (it names a file)")
    captions_json = Path(captions_json).expanduser()
    image_dir = Path(image_dir).expanduser()
    out_dir = coco_folder(out_dir)
    images, captions = read_coco_captions(captions_json)
    if not image_dir.is_dir():
        raise CDrawError(f"image folder {image_dir} not found: pass the folder of COCO images, e.g. coco/train2014")
    _check_writable(out_dir)  # before the long resize pass, not after it
    target = out_dir / f"{split_name}.parquet"
    if target.exists() and not overwrite:
        raise CDrawError(f"{target} already exists: pass --overwrite (overwrite=True) to replace it")
    metadata = _read_metadata(out_dir)
    others = {k: v for k, v in metadata.get("splits", {}).items() if k != split_name}
    if others and metadata.get("size") != size:
        raise CDrawError(
            f"{out_dir} holds {metadata.get('size')}x{metadata.get('size')} splits ({', '.join(others)}); "
            f"write {size}x{size} images to another folder"
        )

    listed = images[skip:][:limit]
    records = [r for r in listed if captions.get(r["id"])]
    no_captions = len(listed) - len(records)
    if not records:
        raise CDrawError(f"none of the {len(listed)} images {captions_json.name} lists has a caption: no usable images")
    _check_image_folder(image_dir, [str(r["file_name"]) for r in records[:CHECKED_NAMES]])

    ds = _resize_all(records, captions, image_dir, size, num_proc)
    problems = ds["problem"][:]  # one column, read once
    names = ds["file_name"][:]
    missing = [n for n, p in zip(names, problems, strict=True) if p == "missing"]
    unreadable = [f"{n}: {p}" for n, p in zip(names, problems, strict=True) if p and p != "missing"]
    if missing or unreadable or no_captions:
        parts = [f"{len(missing)} missing from {image_dir}{_few(missing)}"] if missing else []
        parts += [f"{len(unreadable)} unreadable{_few(unreadable)}"] if unreadable else []
        parts += [f"{no_captions} without captions"] if no_captions else []
        skipped = len(missing) + len(unreadable) + no_captions
        warnings.warn(f"skipped {skipped} images of {captions_json.name}: {'; '.join(parts)}", stacklevel=2)
    ok = [i for i, p in enumerate(problems) if not p]
    if not ok:
        raise CDrawError(f"no usable images: none of the {len(ds)} captioned images could be read from {image_dir}")
    ds = ds.select(ok).select_columns(list(COLUMNS))

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: ds.to_parquet(tmp))  # a hidden name until complete
    except OSError as e:  # a full disk: the resized images are lost, the folder keeps what it had
        raise CDrawError(f"cannot write {target}: {e.strerror or e}") from None

    split = {
        "file": target.name,
        "images": len(ok),
        "captions": sum(len(captions[records[i]["id"]]) for i in ok),
        "skipped_missing": len(missing),
        "skipped_unreadable": len(unreadable),
        "skipped_no_captions": no_captions,
        "listed_images": len(images),
        "limit": limit,
        "skip": skip,
        "source_captions": captions_json.name,
        "source_images": image_dir.name,
    }
    metadata = {"format": FORMAT, "size": size, "resample": RESAMPLE, "splits": {**others, split_name: split}}
    atomic_write(out_dir / METADATA, lambda tmp: Path(tmp).write_text(json.dumps(metadata, indent=2) + "\n"))
    return target


def _resize_all(records: list[dict], captions: dict[int, list[str]], image_dir: Path, size: int, num_proc: int):
    """A datasets.Dataset of the records with their captions, resized images and a ``problem`` column."""
    datasets = _import_datasets()
    features = datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "file_name": datasets.Value("string"),
            "captions": datasets.List(datasets.Value("string")),
        }
    )
    columns = {
        "image_id": [int(r["id"]) for r in records],
        "file_name": [str(r["file_name"]) for r in records],
        "captions": [captions[r["id"]] for r in records],
    }
    return datasets.Dataset.from_dict(columns, features=features).map(
        functools.partial(_load_batch, image_dir=str(image_dir), size=size),
        batched=True,
        batch_size=MAP_BATCH,
        num_proc=min(num_proc, len(records)) if num_proc > 1 else None,
        features=datasets.Features(
            {**features, "image": datasets.Value("binary"), "problem": datasets.Value("string")}
        ),
        desc=f"resizing to {size}x{size}",
    )


def _check_writable(folder: Path) -> None:
    """A clear error now if ``folder`` (made later, if it does not exist) could not be written."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CDrawError(f"cannot write into {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CDrawError(f"cannot write into {folder}: {existing} is not writable")


def _check_image_folder(image_dir: Path, names: list[str]) -> None:
    """When none of the first images is in ``image_dir`` but some are in one of its folders (the COCO root
    given instead of ``train2014/``), say which, before a pass that would find none of them."""
    if any((image_dir / n).is_file() for n in names):
        return
    for sub in sorted(p for p in image_dir.iterdir() if p.is_dir()):
        if any((sub / n).is_file() for n in names):
            raise CDrawError(f"the images are not in {image_dir} but in {sub}: pass that folder (--images {sub})")


def _few(names: list[str]) -> str:
    more = ", ..." if len(names) > WARN_NAMES else ""
    return f" ({', '.join(names[:WARN_NAMES])}{more})"


def _read_metadata(out_dir: Path) -> dict:
    path = out_dir / METADATA
    metadata = read_record(out_dir, METADATA)  # {} when absent; a clear error when corrupt
    if metadata and metadata.get("format") != FORMAT:
        raise CDrawError(f"{path} was not written by cdraw's prepare_coco: choose another output folder")
    return metadata
