"""``cdraw prepare DATASET``: make a data set ready before training on it, from an install as from
a checkout (the scripts in ``data_scripts/`` call these).

- ``binarized-mnist``: fetch (or check) binarized MNIST and cache its parsed form;
- ``mnist-captions``: make alignDRAW's MNIST with captions (``cdraw train mnist_captions`` also
  makes it with default settings when it is missing);
- ``coco``: resize MS COCO images you already have to 32x32 and store them with their captions.

Each has its own parser (``cdraw prepare DATASET --help``), built when it runs, so that ``cdraw
--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from cdraw.errors import DATA_DIR, OneLineParser, non_negative_int, positive_int


def _parser(name: str, description: str, examples: str) -> argparse.ArgumentParser:
    return OneLineParser(
        prog=f"cdraw prepare {name}",
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def binarized_mnist_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "binarized-mnist",
        "Fetch (or check) binarized MNIST, the data set of DRAW's likelihood table, and cache its parsed form.",
        "  cdraw prepare binarized-mnist                       # into ~/.cache/cdraw/data\n"
        "  cdraw prepare binarized-mnist --data-dir data/      # into a folder of yours\n"
        "  CDRAW_DATA_DIR=/datasets cdraw prepare binarized-mnist --no-download   # check only",
    )
    parser.add_argument("--data-dir", help=f"folder for the files (default: {DATA_DIR})")
    parser.add_argument("--no-download", action="store_true", help="only check and cache files already there")
    return parser


def binarized_mnist(args: argparse.Namespace) -> None:
    from cdraw.data import SPLITS, load_binarized_mnist

    for split in SPLITS:
        download = False if args.no_download else None  # None: unless CDRAW_OFFLINE / HF_HUB_OFFLINE
        images = load_binarized_mnist(split, args.data_dir, download=download)
        print(f"{split}: {len(images)} images, mean pixel {images.float().mean():.4f}")


def mnist_captions_parser() -> argparse.ArgumentParser:
    from cdraw.mnist_captions import DEFAULT_SIZES, SOURCES, SPLITS

    parser = _parser(
        "mnist-captions",
        'Make alignDRAW\'s "MNIST with captions" in its official form: 60x60 composites of real digits with '
        "template captions, the held-out roles (bans) drawn from the seed. Writes "
        "OUT/{valid,test_seen,test_heldout,test_paraphrase}.parquet and OUT/metadata.json (the bans, the "
        "source digits, the size of a training epoch); training composites are made afresh every epoch by "
        "the recipe.",
        "  cdraw prepare mnist-captions --out data/mnist_captions\n"
        "  cdraw prepare mnist-captions --data-dir ../shared/data --out /tmp/mc --test-seen 500 --seed 3",
    )
    parser.add_argument(
        "--data-dir",
        help=f"folder with mnist/ idx files, and where the data set goes without --out (default: {DATA_DIR})",
    )
    parser.add_argument(
        "--out",
        help="output folder (default: mnist_captions in the data folder, where cdraw train mnist_captions looks)",
    )
    for split in SPLITS:
        flag = "--" + split.replace("_", "-")
        what = "composites per training epoch" if split == "train" else f"{split} examples"
        at_least = positive_int if split in ("train", "valid") else non_negative_int  # the recipe needs both
        parser.add_argument(flag, type=at_least, default=DEFAULT_SIZES[split], help=f"{what} (default: %(default)s)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds the bans (held-out roles) and every split (default: 0)"
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="source digits: MNIST train for train/valid and t10k for tests, or t10k split 8,000/2,000; "
        "auto: the former when its files are there or may be downloaded (default: auto)",
    )
    parser.add_argument("--no-download", action="store_true", help="never download MNIST files")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    return parser


def mnist_captions(args: argparse.Namespace) -> None:
    from cdraw.datasets.mnist_captions import captions_folder
    from cdraw.mnist_captions import EVAL_SPLITS, SPLITS, make_mnist_captions

    out = captions_folder(args.out, args.data_dir)
    meta = make_mnist_captions(
        out,
        args.data_dir,
        sizes={split: getattr(args, split) for split in SPLITS},
        seed=args.seed,
        source=args.source,
        download=False if args.no_download else None,
        overwrite=args.overwrite,
    )
    for split in EVAL_SPLITS:
        print(f"{out}/{split}.parquet: {meta['sizes'][split]} examples from {meta['source'][split]}")
    print(
        f"{out}/metadata.json: seed {meta['seed']}, {len(meta['heldout_captions'])} held-out combos; training "
        f"composes {meta['sizes']['train']} new images per epoch from {meta['source']['train']}"
    )


def coco_parser() -> argparse.ArgumentParser:
    from cdraw.coco import IMAGE_SIZE, SUBDIR

    parser = _parser(
        "coco",
        "Resize MS COCO images you already have to 32x32 (alignDRAW's setting) and store them with their "
        "captions: OUT/SPLIT.parquet (columns image, captions, image_id, file_name) and OUT/metadata.json, "
        "which cdraw train coco and cdraw eval --data coco read. Nothing is downloaded.",
        "  cdraw prepare coco --captions ~/coco/annotations/captions_train2014.json \\\n"
        "      --images ~/coco/train2014 --split train --num-proc 8\n"
        "  cdraw prepare coco --captions ~/coco/annotations/captions_val2014.json \\\n"
        "      --images ~/coco/val2014 --split trial --limit 1000 --out /tmp/coco32   # a quick trial, apart\n"
        "  cdraw prepare coco --captions ~/coco/annotations/captions_val2014.json \\\n"
        "      --images ~/coco/val2014 --split dev --limit 20252      # val2014's first half; then the second:\n"
        "  cdraw prepare coco --captions ~/coco/annotations/captions_val2014.json \\\n"
        "      --images ~/coco/val2014 --split test --skip 20252",
    )
    parser.add_argument("--captions", required=True, help="COCO captions_{train,val}{2014,2017}.json")
    parser.add_argument("--images", required=True, help="folder of that split's images, e.g. ~/coco/train2014")
    parser.add_argument("--data-dir", help=f"data folder: the data set goes into its {SUBDIR}/ (default: {DATA_DIR})")
    parser.add_argument("--out", help=f"output folder (default: {SUBDIR} in --data-dir, where cdraw train coco looks)")
    parser.add_argument("--split", default="train", help="name of the split file to write (default: train)")
    parser.add_argument("--size", type=positive_int, default=IMAGE_SIZE, help="output side in pixels (default: 32)")
    parser.add_argument("--num-proc", type=positive_int, default=1, help="worker processes (default: 1)")
    parser.add_argument(
        "--limit", type=positive_int, help="only the first N images the JSON lists (after --skip), for a quick trial"
    )
    parser.add_argument(
        "--skip",
        type=non_negative_int,
        default=0,
        help="leave out the first N images the JSON lists (default: 0); "
        "--limit N and --skip N make two disjoint splits of one file",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing split file")
    return parser


def coco(args: argparse.Namespace) -> None:
    from cdraw.coco import METADATA, coco_folder, prepare_coco

    path = prepare_coco(
        args.captions,
        args.images,
        coco_folder(args.out, args.data_dir),
        size=args.size,
        split_name=args.split,
        num_proc=args.num_proc,
        limit=args.limit,
        skip=args.skip,
        overwrite=args.overwrite,
    )
    info = json.loads((path.parent / METADATA).read_text())["splits"][args.split]
    reasons = {"skipped_missing": "missing", "skipped_unreadable": "unreadable", "skipped_no_captions": "no captions"}
    skipped = [f"{info[key]} {why}" for key, why in reasons.items() if info[key]]
    print(
        f"wrote {path}: {info['images']} images ({args.size}x{args.size}), {info['captions']} captions; "
        f"skipped {sum(info[key] for key in reasons)}" + (f" ({', '.join(skipped)})" if skipped else "")
    )


#: What ``cdraw prepare`` makes, by the names ``cdraw eval --data`` uses: its parser, and what runs.
DATASETS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], None]]] = {
    "binarized-mnist": (binarized_mnist_parser, binarized_mnist),
    "mnist-captions": (mnist_captions_parser, mnist_captions),
    "coco": (coco_parser, coco),
}


def prepare(dataset: str, argv: list[str]) -> None:
    """``cdraw prepare DATASET ARGV...``: parse ``argv`` with the data set's parser, then make it."""
    parser, run = DATASETS[dataset]
    run(parser().parse_args(argv))
