"""The ``cdraw`` command line.

User mistakes (a missing checkpoint, a bad number, missing data) are printed on one line and exit
with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cdraw.errors import CDrawError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_main(main: Callable[[], object]) -> None:
    """Run ``main``; a :class:`CDrawError` becomes one line on stderr and exit status 2."""
    try:
        main()
    except CDrawError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint (if any) is intact", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A model folder from what a user points at: the folder itself, or a training run's ``model/``."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    if not path.exists():
        raise CDrawError(f"checkpoint {path} does not exist")
    raise CDrawError(f"{path} is not a cdraw checkpoint (no config.json in it or in {path / 'model'})")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)  # argparse types
non_negative_int = _int_at_least(0)


def pick_device(name: str | None):
    """The torch device a user asked for (default: CUDA when available), checked."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CDrawError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise CDrawError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise CDrawError(
            f"--device {name}: no such CUDA GPU here ({torch.cuda.device_count()} found); use --device cpu"
        )
    return device


def cmd_eval(args: argparse.Namespace) -> None:
    import torch
    from tqdm.auto import tqdm

    from cdraw.evaluate import EVAL_DATASETS, bound_sums, default_dataset, evaluation_data, iwae_sum
    from cdraw.model import DRAW

    folder = resolve_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model = DRAW.from_pretrained(folder, device=device).eval()
    dataset = args.data or default_dataset(model)
    split = args.split or EVAL_DATASETS.get(dataset, "test")
    if (args.fidelity or args.retrieval) and model.config.condition is None:
        raise CDrawError("--fidelity and --retrieval measure conditional models; this one is unconditional")
    if args.retrieval and model.config.condition.kind == "label":
        raise CDrawError("--retrieval ranks captions; this is a label model")
    data = evaluation_data(model, dataset, split, args.data_dir)
    if args.limit:
        data = data.select(slice(0, args.limit))
    torch.manual_seed(args.seed)
    gen = torch.Generator(device).manual_seed(args.seed)

    start = time.perf_counter()
    with tqdm(total=len(data), desc="bound", unit="img", disable=args.quiet) as bar:
        result = bound_sums(model, data, args.batch_size, gen, progress=bar).means()
    result.update(dataset=dataset, split=split, checkpoint=str(folder), seed=args.seed)
    print(f"{dataset} {split} ({result['images']} images), model {folder}")
    print(
        f"variational bound: {result['bound']:.2f} nats  (reconstruction {result['recon']:.2f} + KL {result['kl']:.2f})"
    )
    if args.iw_samples:
        with tqdm(total=len(data), desc=f"IWAE k={args.iw_samples}", unit="img", disable=args.quiet) as bar:
            total = iwae_sum(model, data, args.iw_samples, max(1, args.batch_size // 10), gen, progress=bar)
        result.update(iwae=total / len(data), iw_samples=args.iw_samples)
        print(f"IWAE estimate of -log p(x), k={args.iw_samples}: {result['iwae']:.2f} nats")
    if args.fidelity:
        result.update(_fidelity(model, dataset, args, gen, device))
    if args.retrieval:
        result.update(_retrieval(model, dataset, split, args, gen))
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(json.dumps(result, indent=2))
            os.replace(tmp, out)
        except OSError as e:
            raise CDrawError(f"cannot write {out}: {e.strerror}") from None
        print(f"wrote {out}")


def _fidelity(model, dataset: str, args: argparse.Namespace, gen, device) -> dict:
    """Label fidelity (images generated per class) or caption fidelity (seen and held-out captions)."""
    from cdraw.evaluate import caption_fidelity_of, label_fidelity_of
    from cdraw.fidelity import shipped_classifier

    if model.config.condition.kind == "label":
        if dataset not in ("mnist", "fashion-mnist"):
            raise CDrawError(f"label fidelity needs --data mnist or fashion-mnist, got {dataset}")
        found = label_fidelity_of(model, shipped_classifier(dataset, device), args.fidelity_samples, generator=gen)
        n, share = found["fidelity_images"], found["label_fidelity"]
        print(f"label fidelity: {share:.1%} of {n} generated images show their class")
        return found
    if dataset != "mnist-captions":
        raise CDrawError("caption fidelity is defined for MNIST with captions (--data mnist-captions)")
    from cdraw.mnist_captions import load_mnist_captions

    folder = Path(args.data_dir) / "mnist_captions" if args.data_dir else None
    classifier, found = shipped_classifier("mnist", device), {}
    for split in ("test_seen", "test_heldout"):
        captions = load_mnist_captions(split, folder).captions[: args.fidelity_samples]
        found[f"fidelity_{split}"] = caption_fidelity_of(model, classifier, captions, generator=gen)
        print(f"caption fidelity, {split}: {found[f'fidelity_{split}']:.1%} of {len(captions)} generated images")
    return found


def _retrieval(model, dataset: str, split: str, args: argparse.Namespace, gen) -> dict:
    """alignDRAW's retrieval: rank each image's caption among N distinct captions by the bound."""
    import torch
    from tqdm.auto import tqdm

    from cdraw.evaluate import caption_ranks, evaluation_data, retrieval_summary

    data = evaluation_data(model, dataset, split, args.data_dir)
    first = {}  # one example per distinct caption, in order
    for i, row in enumerate(data.conditions.tolist()):
        first.setdefault(tuple(row), i)
        if len(first) == args.retrieval:
            break
    chosen = data.select(torch.tensor(list(first.values())))
    with tqdm(total=len(chosen), desc="retrieval", unit="img", disable=args.quiet) as bar:
        ranks = caption_ranks(model, chosen.batch(slice(None)), chosen.condition(slice(None)), gen, progress=bar)
    found = {f"retrieval_{k}": v for k, v in retrieval_summary(ranks).items()}
    print(
        f"retrieval among {len(ranks)} captions ({split}): R@1 {found['retrieval_r_at_1']:.1%}, "
        f"R@5 {found['retrieval_r_at_5']:.1%}, median rank {found['retrieval_median_rank']:.0f}"
    )
    return found


def build_parser() -> argparse.ArgumentParser:
    from cdraw.evaluate import EVAL_DATASETS

    parser = argparse.ArgumentParser(
        prog="cdraw",
        description="DRAW and alignDRAW image generation. `cdraw COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ev = sub.add_parser(
        "eval",
        help="test-set bound, IWAE estimate, fidelity and retrieval of a model",
        description="Measure a model on its data set: the variational bound in nats (exact mean over the "
        "split) and an importance-weighted (IWAE) estimate with K samples; for conditional models also "
        "--fidelity (do generated images show the label or caption asked for?) and --retrieval "
        "(alignDRAW's caption ranking).",
        epilog="examples:\n"
        "  cdraw eval --checkpoint runs/mnist --split test\n"
        "  cdraw eval --checkpoint runs/mnist/best --iw-samples 1000 --json test.json\n"
        "  cdraw eval --checkpoint runs/mnist_labels --iw-samples 0 --fidelity\n"
        "  cdraw eval --checkpoint runs/mnist_captions --iw-samples 0 --fidelity --retrieval 100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument(
        "--checkpoint", required=True, help="model folder (config.json + model.safetensors) or a run folder"
    )
    ev.add_argument(
        "--data",
        choices=list(EVAL_DATASETS),
        help="data set (default: from the model: binarized-mnist, mnist for labels, mnist-captions, coco)",
    )
    ev.add_argument(
        "--split", help="which split (default: test; test_seen for mnist-captions, val for coco); see --data"
    )
    ev.add_argument(
        "--iw-samples",
        type=non_negative_int,
        default=10,
        help="K for the IWAE estimate; 0 skips it; use 1000+ for paper-grade figures, slow on a CPU (default: 10)",
    )
    ev.add_argument(
        "--fidelity",
        action="store_true",
        help="labels: share of images generated per class that a shipped classifier reads as that class; "
        "MNIST captions: share whose digits and positions fit the caption, on seen and held-out captions",
    )
    ev.add_argument(
        "--fidelity-samples",
        type=positive_int,
        default=100,
        help="images per class (labels) or captions per test split (captions) for --fidelity (default: 100)",
    )
    ev.add_argument(
        "--retrieval",
        type=positive_int,
        metavar="N",
        help="rank each of N images' caption among N distinct captions by the bound: R@1, R@5, median rank",
    )
    ev.add_argument("--json", help="also write the figures to this JSON file")
    ev.add_argument("--data-dir", help="folder with the data (default: $CDRAW_DATA_DIR or ~/.cache/cdraw/data)")
    ev.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass (default: 1000)")
    ev.add_argument("--limit", type=positive_int, help="only the first N images of the split (a quick look)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the latent samples (default: 0)")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cdraw`` console script."""
    args = build_parser().parse_args(argv)
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
