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

    from cdraw.data import ImageData, load_binarized_mnist
    from cdraw.evaluate import bound_sums, iwae_sum
    from cdraw.model import DRAW

    folder = resolve_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model = DRAW.from_pretrained(folder, device=device).eval()
    cfg = model.config
    if (cfg.channels, *cfg.image_size) != (1, 28, 28) or cfg.context_size:
        raise CDrawError(f"{folder} is not an unconditional 28x28 model; `cdraw eval` measures binarized MNIST")
    data = ImageData(load_binarized_mnist(args.split, args.data_dir))
    if args.limit:
        data = ImageData(data.images[: args.limit], data.levels)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device).manual_seed(args.seed)

    start = time.perf_counter()
    with tqdm(total=len(data), desc="bound", unit="img", disable=args.quiet) as bar:
        result = bound_sums(model, data, args.batch_size, gen, progress=bar).means()
    result.update(split=args.split, checkpoint=str(folder), seed=args.seed)
    print(f"binarized MNIST {args.split} ({result['images']} images), model {folder}")
    print(
        f"variational bound: {result['bound']:.2f} nats  (reconstruction {result['recon']:.2f} + KL {result['kl']:.2f})"
    )
    if args.iw_samples:
        with tqdm(total=len(data), desc=f"IWAE k={args.iw_samples}", unit="img", disable=args.quiet) as bar:
            total = iwae_sum(model, data, args.iw_samples, max(1, args.batch_size // 10), gen, progress=bar)
        result.update(iwae=total / len(data), iw_samples=args.iw_samples)
        print(f"IWAE estimate of -log p(x), k={args.iw_samples}: {result['iwae']:.2f} nats")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdraw",
        description="DRAW and alignDRAW image generation. `cdraw COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ev = sub.add_parser(
        "eval",
        help="test-set variational bound and IWAE estimate of a model, in nats",
        description="Measure a model's negative log-likelihood on binarized MNIST: the variational bound "
        "(exact mean over the split) and an importance-weighted (IWAE) estimate with K samples.",
        epilog="examples:\n"
        "  cdraw eval --checkpoint runs/mnist --split test\n"
        "  cdraw eval --checkpoint runs/mnist/best --iw-samples 1000 --json test.json\n"
        "  cdraw eval --checkpoint runs/mnist --split valid --iw-samples 0   # the bound only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument(
        "--checkpoint", required=True, help="model folder (config.json + model.safetensors) or a run folder"
    )
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"], help="which split (default: test)")
    ev.add_argument(
        "--iw-samples",
        type=non_negative_int,
        default=10,
        help="K for the IWAE estimate; 0 skips it; use 1000+ for paper-grade figures, slow on a CPU (default: 10)",
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
