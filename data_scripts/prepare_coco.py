"""Resize MS COCO images you already have to 32x32 (alignDRAW's setting) and store them with their captions.

Writes OUT/SPLIT.parquet (columns image, captions, image_id, file_name) and OUT/metadata.json;
load it with cdraw.datasets.coco.load_coco(SPLIT, OUT). Nothing is downloaded.

Examples:
  python data_scripts/prepare_coco.py --captions ~/coco/annotations/captions_train2014.json \\
      --images ~/coco/train2014 --out ~/.cache/cdraw/data/coco32 --split train --num-proc 8
  python data_scripts/prepare_coco.py --captions ~/coco/annotations/captions_val2014.json \\
      --images ~/coco/val2014 --split trial --limit 1000 --out /tmp/coco32   # a quick trial, apart
  python data_scripts/prepare_coco.py --captions ~/coco/annotations/captions_val2014.json \\
      --images ~/coco/val2014 --split dev --limit 20252      # val2014's first half; then the second:
  python data_scripts/prepare_coco.py --captions ~/coco/annotations/captions_val2014.json \\
      --images ~/coco/val2014 --split test --skip 20252
"""

from __future__ import annotations

import argparse
import json

from cdraw.cli import non_negative_int, positive_int, run_main
from cdraw.coco import IMAGE_SIZE, METADATA, SUBDIR, prepare_coco
from cdraw.data import default_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", required=True, help="COCO captions_{train,val}{2014,2017}.json")
    parser.add_argument("--images", required=True, help="folder of that split's images, e.g. ~/coco/train2014")
    parser.add_argument("--out", help=f"output folder (default: {default_data_dir() / SUBDIR})")
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
    args = parser.parse_args()

    path = prepare_coco(
        args.captions,
        args.images,
        args.out,
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


if __name__ == "__main__":
    run_main(main)
