"""Training configuration: a dataclass, YAML files, and command-line flags generated from both.

Precedence, lowest first: the dataclass defaults (the paper's settings), a YAML file
(``--config``), then flags. Every field of :class:`TrainConfig` and of its nested
:class:`~cdraw.DRAWConfig` is a flag: ``--lr 3e-4``, ``--glimpses 16``, ``--no-attention``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cdraw.conditioning import ConditionConfig
from cdraw.conditioning.base import CONFIG_CLASSES
from cdraw.datasets.base import conditioned_on
from cdraw.errors import DATA_DIR, CDrawError, CDrawWarning, OneLineParser
from cdraw.io import typed_fields
from cdraw.model import DRAWConfig

#: torch.compile's modes that training offers ("max-autotune" fails on the CPU stack we test on).
COMPILE_MODES = ("default", "reduce-overhead")
#: The largest seed (2**32 - 1): seeds derived from it (training's seed * 1000 + step) stay in a
#: 64-bit generator's range, and numpy's take it.
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """How to train a DRAW model. Defaults: the paper's MNIST setting (Adam, batch 100)."""

    model: DRAWConfig = field(default_factory=DRAWConfig)
    output_dir: str = field(default="runs/draw", metadata={"help": "where checkpoints, logs and samples go"})
    data_dir: str | None = field(default=None, metadata={"help": f"folder with the data set (default: {DATA_DIR})"})
    epochs: int = field(default=100, metadata={"help": "passes over the training set (or --max-steps, if sooner)"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimiser steps (or at --epochs, if sooner)"}
    )
    batch_size: int = field(default=100, metadata={"help": "images per step on each process"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_schedule: str = field(default="constant", metadata={"help": "constant, or cosine decay to 0 at the end"})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = field(default=10.0, metadata={"help": "clip the global gradient norm to this"})
    init_from_data: bool = field(
        default=True,
        metadata={"help": "start the canvas at the training mean image and the write window at unit gain"},
    )
    warmup_steps: int = field(default=0, metadata={"help": "raise the learning rate linearly over this many steps"})
    init_weights: str | None = field(
        default=None,
        metadata={
            "help": "start from a trained model (a model folder, a shipped model by name or a Hub id): each weight "
            "whose name and shape match is copied, the text encoder's only when both use the same encoder and "
            "tokenizer"
        },
    )
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "stop after this much training time (wall-clock), then validate and save; a cosine "
            "schedule then decays to 0 at this time (its length re-estimated from the speed at every log) "
            "and training stops where it ends"
        },
    )
    seed: int = 0
    eval_batch_size: int = 1000
    valid_images: int = field(
        default=0, metadata={"help": "validate on the first this many validation images (0: all of them)"}
    )
    log_every: int = field(default=50, metadata={"help": "steps between log lines (and finite-loss checks)"})
    checkpoint_every: int = field(default=1000, metadata={"help": "steps between checkpoints (also each epoch)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many recent checkpoints to keep"})
    num_samples: int = field(default=64, metadata={"help": "images in each epoch's sample grid"})
    compile: bool = field(
        default=True,
        metadata={"help": "compile the training step with torch.compile (faster; the first step takes a while)"},
    )
    compile_mode: str = field(
        default="default",
        metadata={"help": "torch.compile mode: default, or reduce-overhead (CUDA graphs, for a GPU)"},
    )
    tf32: bool = field(default=False, metadata={"help": "allow TF32 matrix products on a CUDA GPU (faster)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, or bf16 (autocast through accelerate)"})
    deterministic: bool = field(default=False, metadata={"help": "deterministic kernels (slower; exact resume)"})
    record_batches: bool = field(default=False, metadata={"help": "write each process's batch indices (audit)"})
    log_with: str = field(
        default="tensorboard",
        metadata={"help": "trackers besides log.csv: tensorboard, wandb (pip install wandb), all, or none"},
    )

    def __post_init__(self) -> None:
        self.output_dir = str(Path(self.output_dir).expanduser())  # `--output-dir=~/runs/x`: no shell expands it
        if isinstance(self.model, dict):
            self.model = DRAWConfig.from_dict(self.model)
        if not isinstance(self.model, DRAWConfig):
            raise CDrawError(f"model must be a mapping of DRAWConfig fields, got {self.model!r}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise CDrawError(f"lr and grad_clip must be positive, got {self.lr} and {self.grad_clip}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise CDrawError(f"adam betas must be in [0, 1), got {self.adam_beta1}, {self.adam_beta2}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise CDrawError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        at_least_one = ("epochs", "batch_size", "eval_batch_size", "log_every", "checkpoint_every")
        for name in (*at_least_one, "keep_checkpoints", "num_samples"):
            if getattr(self, name) < 1:
                raise CDrawError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.valid_images < 0:
            raise CDrawError(f"valid_images must be >= 0, got {self.valid_images}")
        if self.compile_mode not in COMPILE_MODES:
            raise CDrawError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise CDrawError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.log_with not in ("tensorboard", "wandb", "all", "none"):
            raise CDrawError(f"log_with must be tensorboard, wandb, all or none, got {self.log_with!r}")
        if self.warmup_steps < 0:
            raise CDrawError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise CDrawError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise CDrawError(f"max_steps must be at least 1, got {self.max_steps}")
        if not 0 <= self.seed <= MAX_SEED:  # training derives seeds from it (seed * 1000 + step ...)
            raise CDrawError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**typed_fields(cls, d))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of settings: a path, or the name of a config that ships with the recipes
        (``mnist``, ``mnist_captions_paper``, ...: ``cdraw/recipes/configs/NAME.yaml``)."""
        return cls.from_dict(_read_yaml(path))


def _read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file of settings as written (a path, or the name of a shipped config)."""
    shipped = SHIPPED_CONFIGS / f"{path}.yaml"
    if not Path(path).exists() and "/" not in str(path) and shipped.is_file():
        path = shipped
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
        raise CDrawError(f"cannot read config file {path}: {e.strerror} (shipped configs: {names})") from None
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CDrawError(f"config file {path} is not valid YAML{where}: {' '.join(problem.split())}") from None
    if not isinstance(raw, dict):
        raise CDrawError(f"config file {path} must hold a mapping of field: value")
    return raw


def _flag_type(tp: Any) -> tuple[Any, dict[str, Any]]:
    """argparse settings for a field's type annotation (resolved)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _flag_type(inner)
    if origin is tuple:
        args = typing.get_args(tp)
        return args[0], {"nargs": len(args)}
    if tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return tp, {}


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, dest_prefix: str = "", shown: dict[str, Any] | None = None
) -> None:
    """One flag per field of ``cls`` (:class:`ConditionConfig`: of every kind, once); only the flags a
    user passes land in the namespace. ``shown``: the values --help gives as defaults where they are not
    the field's own (a recipe's config file)."""
    if cls is ConditionConfig:
        fields = [(f, typing.get_type_hints(c)) for c in CONFIG_CLASSES.values() for f in dataclasses.fields(c)]
        fields = list({f.name: (f, hints) for f, hints in fields}.values())
    else:
        hints = typing.get_type_hints(cls)
        fields = [(f, hints) for f in dataclasses.fields(cls)]
    for f, hints in fields:
        tp, kwargs = _flag_type(hints[f.name])
        if dataclasses.is_dataclass(tp):  # nested configs get their own group
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = (shown or {}).get(f.name, default)
        help_text = f.metadata.get("help", f.name.replace("_", " "))
        if tp is not None:
            kwargs["type"] = tp
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            *f.metadata.get("aliases", []),  # earlier names keep working
            dest=dest_prefix + f.name,
            default=argparse.SUPPRESS,
            help=help_text if "(default:" in help_text else f"{help_text} (default: {default})",
            **kwargs,
        )


def train_arg_parser(
    default_config: str | Path | None = None, description: str | None = None, conditional: bool = False
) -> argparse.ArgumentParser:
    """The recipes' parser: --config, --resume, a flag per training and model field (and, for
    conditional recipes, per :class:`~cdraw.ConditionConfig` field). Recipes may add their own."""
    script = Path(sys.argv[0])  # a recipe of the package (as `cdraw train NAME` runs it) is called so
    prog = f"cdraw train {script.stem}" if script.resolve().parent == SHIPPED_CONFIGS.parent else None
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        default=default_config,
        action=_NoteGiven,
        help=f"YAML file of settings, or the name of a shipped one such as mnist_captions_paper (default: "
        f"{Path(default_config).stem if default_config else None}; the defaults below are its settings)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN",
        help="continue from the latest checkpoint in the run folder RUN (default: --output-dir) with the run's "
        "own settings (its train_config.yaml; --config is not read, a warning names where it differs): flags "
        "given with it change them, each change said",
    )
    shown = _settings(default_config)
    train_group = parser.add_argument_group("training")
    add_dataclass_flags(train_group, TrainConfig, shown=shown)
    model_group = parser.add_argument_group("model (DRAWConfig)")
    add_dataclass_flags(model_group, DRAWConfig, dest_prefix="model.", shown=shown["model"])
    if conditional:
        group = parser.add_argument_group("conditioning (ConditionConfig)")
        add_dataclass_flags(group, ConditionConfig, COND, shown=shown["model"]["condition"])
    return parser


def _settings(config_file: str | Path | None) -> dict[str, Any]:
    """What a run with no flags uses: ``config_file``'s settings over the dataclass defaults (those
    alone when there is no such file; parsing then says why)."""
    try:
        return (TrainConfig.from_yaml(config_file) if config_file else TrainConfig()).to_dict()
    except CDrawError:
        return TrainConfig().to_dict()


COND = "model.condition."
#: the YAML configs that ship with the recipes; --config NAME reads NAME.yaml from here
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "recipes" / "configs"


def parse_train_args(
    argv: list[str] | None,
    default_config: str | Path | None = None,
    description: str | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[TrainConfig, bool]:
    """Parse a recipe's command line into a :class:`TrainConfig` and the ``--resume`` flag.

    ``parser``: a :func:`train_arg_parser` to which a recipe added flags of its own; those stay out
    of the config (the recipe reads them with ``parser.parse_args``).
    """
    parser = parser or train_arg_parser(default_config, description)
    args = vars(parser.parse_args(argv))
    config_given = args.pop(_GIVEN, False)
    known = {f.name for f in dataclasses.fields(TrainConfig)} | {"config", "resume"}
    args = {k: v for k, v in args.items() if k in known or k.startswith("model.")}
    config_file = args.pop("config")
    cfg = TrainConfig.from_yaml(config_file) if config_file else TrainConfig()
    resume = args.pop("resume")
    if isinstance(resume, str):  # --resume RUN: the run folder, as --output-dir names it
        folder = lambda name: Path(name).expanduser().resolve()  # noqa: E731
        if "output_dir" in args and folder(args["output_dir"]) != folder(resume):
            raise CDrawError(f"--resume {resume} and --output-dir {args['output_dir']} name two runs: give one")
        args["output_dir"], resume = resume, True
    d = _with_flags(cfg.to_dict(), args)
    saved = Path(d["output_dir"]).expanduser() / RUN_CONFIG
    if resume and saved.is_file():  # the run's own settings, then the flags given now (Trainer says what changed)
        run = TrainConfig.from_yaml(saved)
        was, now = _trains(run), _trains(cfg)
        if config_file and was != now:  # another recipe's run: its data would not fit
            raise CDrawError(
                f"--resume: {saved.parent} trained {was}, and {parser.prog} trains {now}: "
                "resume it with the recipe that started it"
            )
        d = _with_flags(run.to_dict(), args)
        unread = _differences(config_file, d, args) if config_given else []
        if unread and int(os.environ.get("RANK", "0")) == 0:  # once, not by every process of a launch
            warnings.warn(
                f"--config {config_file} is not read with --resume (the run's own settings are: {saved}); where it "
                f"differs from them: {', '.join(unread)}; give a flag to change a setting",
                CDrawWarning,
                stacklevel=2,
            )
    return TrainConfig.from_dict(d), resume


def _trains(cfg: TrainConfig) -> str:
    """What kind of model ``cfg`` trains, as a resume mismatch says it."""
    kinds = {None: "an unconditional model", "label": "a class-label model", "caption": "a caption model"}
    return kinds[conditioned_on(cfg.model)]


class _NoteGiven(argparse.Action):
    """Stores the value and notes that the flag was given on the command line (a default is not)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, _GIVEN, True)


_GIVEN = "config_given"


def _differences(config_file: str | Path, run: dict[str, Any], flags: dict[str, Any]) -> list[str]:
    """The settings ``config_file`` itself names (its keys, not the defaults it leaves) whose values
    differ from a resumed run's (``run``, the flags given now applied), flags aside."""
    own = flat_settings(TrainConfig.from_yaml(config_file).to_dict())
    run = flat_settings(run)
    named = flat_settings(_read_yaml(config_file))
    return [
        f"{k} {own[k]} (the run's {run.get(k)})" for k in named if k in own and k not in flags and own[k] != run.get(k)
    ]


def flat_settings(d: dict[str, Any]) -> dict[str, Any]:
    """Nested settings (a TrainConfig as a dict) as flat ``key: value`` pairs, keys as the flags'
    destinations name them (``model.read_size``, ``model.condition.kind``)."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in flat_settings(v).items()})
        else:
            flat[k] = v
    return flat


#: A run folder's settings, written when it starts (and resumes); ``--resume`` starts from them.
RUN_CONFIG = "train_config.yaml"


def _with_flags(d: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """``d`` (a TrainConfig as a dict) with the flags a user passed (``args``, by dest) applied."""
    for key, value in args.items():
        if key.startswith(COND):
            if d["model"]["condition"] is None:
                raise CDrawError(f"--{key.removeprefix(COND).replace('_', '-')} needs a conditional config")
            d["model"]["condition"][key.removeprefix(COND)] = value
            if key == COND + "text_encoder" and COND + "kind" not in args:  # naming one means using it,
                d["model"]["condition"]["kind"] = "pretrained"
                if "output_dir" not in args and not d["output_dir"].endswith("_pretrained"):  # a folder of its
                    d["output_dir"] = d["output_dir"] + "_pretrained"  # own: never resumed as the BiLSTM's run
        elif key.startswith("model."):
            d["model"][key.removeprefix("model.")] = value
        else:
            d[key] = value
    condition = d["model"]["condition"]
    if condition is not None:  # a flag of another kind of encoder is a mistake (YAML keys of one are dropped)
        own = {f.name for f in dataclasses.fields(CONFIG_CLASSES.get(condition.get("kind", "label"), ConditionConfig))}
        wrong = [k.removeprefix(COND) for k in args if k.startswith(COND) and k.removeprefix(COND) not in own]
        if wrong:
            flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
            raise CDrawError(f"{flags}: not a setting of a {condition.get('kind', 'label')} condition encoder")
    return d
