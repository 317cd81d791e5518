"""Which paraphrases does a caption model read? Caption fidelity on the test_paraphrase split of
MNIST with captions, by layout and by wording (each layout has three wordings,
:data:`cdraw.mnist_captions.PARAPHRASES`, drawn uniformly when the split is made).

`cdraw eval --fidelity` gives the split's share and its layouts; this splits each layout further,
to tell a wording the model reads from one it does not (for example "a 3 to the left of a 5"
against "3 first , then 5", which has no word of place). The images are drawn with their own seed,
so the total differs from `cdraw eval`'s by sampling noise (a standard error of about 1.6 points at
1,000 captions).

    python benchmarks/paraphrase_wordings.py --checkpoint RUN/model --data-dir /work/data \\
        --samples 1000 --out docs/figures/paraphrase-wordings.json       # ~2 min on one thread
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from cdraw.cli import run_main
from cdraw.datasets.mnist_captions import load_mnist_captions
from cdraw.errors import CDrawError, CDrawWarning, positive_int
from cdraw.evaluate import caption_matches_of
from cdraw.fidelity import shipped_classifier
from cdraw.hub import resolve_checkpoint
from cdraw.mnist_captions import PARAPHRASES, TEMPLATE_NAMES, Caption
from cdraw.model import DRAW


def wording_of(caption: str, layout: Caption) -> int:
    """Which of its layout's :data:`PARAPHRASES` ``caption`` is (its index)."""
    for w, wording in enumerate(PARAPHRASES[layout.template]):
        if wording.format(*layout.digits) == caption:
            return w
    raise CDrawError(f"not a paraphrase of its layout {TEMPLATE_NAMES[layout.template]!r}: {caption!r}")


def by_wording(matches: torch.Tensor, captions: list[str], layouts: list[Caption]) -> list[dict]:
    """One row per (layout, wording) present: how many captions, and the share whose image fits."""
    keys = [(c.template, wording_of(text, c)) for text, c in zip(captions, layouts, strict=True)]
    rows = []
    for t, w in sorted(set(keys)):
        hit = matches[torch.tensor([k == (t, w) for k in keys])]
        rows.append(
            {
                "layout": TEMPLATE_NAMES[t],
                "wording": PARAPHRASES[t][w],
                "captions": len(hit),
                "share": hit.float().mean().item(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="caption model folder or training run folder")
    parser.add_argument("--data-dir", help="folder holding mnist_captions/ (default: $CDRAW_DATA_DIR)")
    parser.add_argument("--samples", type=positive_int, default=1000, help="first N captions (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn images (default: 0)")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    folder = resolve_checkpoint(args.checkpoint)
    model = DRAW.from_pretrained(folder).eval()
    if model.config.condition is None or model.config.condition.kind not in ("bilstm", "pretrained"):
        raise CDrawError(f"{folder} is not a caption model")
    data = load_mnist_captions("test_paraphrase", data_dir=args.data_dir)
    captions, layouts = list(data.captions[: args.samples]), data.layouts()[: args.samples]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CDrawWarning)  # unknown words are the point of this split
        matches = caption_matches_of(
            model,
            shipped_classifier("mnist", "cpu"),
            captions,
            layouts,
            generator=torch.Generator().manual_seed(args.seed),
        )
    rows, share = by_wording(matches, captions, layouts), matches.float().mean().item()
    print(f"{folder}: {share:.1%} of {len(captions)} paraphrases")
    for row in rows:
        print(f"  {row['layout']:<13} {row['share']:6.1%} of {row['captions']:3d}  {row['wording']}")
    if args.out:
        record = {"checkpoint": str(folder), "captions": len(captions), "seed": args.seed, "share": share, "rows": rows}
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    run_main(main)
