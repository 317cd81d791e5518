"""Model folders and records on disk: one place for every file cdraw writes beside a model.

A model folder holds ``config.json`` (the config's fields and a ``model_type``) and
``model.safetensors``; training adds ``training.json`` and ``cdraw eval --json`` an ``eval.json``.
Every file is written by :func:`atomic_write`: to a temporary name beside it, then renamed, so a
crash or a full disk never leaves half a file. Configs read from JSON, YAML or a command line are
checked field by field against their dataclass (:func:`typed_fields`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cdraw.errors import CDrawError, CDrawWarning, nearest

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Written beside a model by training: the data set, training length and time, the validation bound.
TRAINING_RECORD = "training.json"
EVAL_RECORD = "eval.json"  # what `cdraw eval --json` wrote into the model folder


def typed_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """Check a mapping of ``cls``'s dataclass fields against their annotations, for configs read
    from JSON, YAML or a command line. Numbers written as strings (YAML reads ``1e-3`` as one)
    become numbers; anything else of the wrong type is a :class:`CDrawError`.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        near = {k: nearest(k.replace("-", "_"), known) for k in unknown}
        meant = ", ".join(f"{m} for {k}" if len(unknown) > 1 else m for k, m in near.items() if m)
        meant = f" (did you mean {meant}?)" if meant else ""
        raise CDrawError(f"unknown {cls.__name__} fields {unknown}{meant}; known fields: {sorted(known)}")
    return {k: _typed(f"{cls.__name__}.{k}", hints[k], v) for k, v in d.items()}


def _typed(name: str, tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _typed(name, tp, value)
    if dataclasses.is_dataclass(tp):
        return value  # a nested config checks itself
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise CDrawError(f"{name} must be a list of {len(args)} values, got {value!r}")
        return tuple(_typed(name, a, v) for a, v in zip(args, value, strict=True))
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(tp)
    if ok is not None and (not isinstance(value, ok) or (tp is not bool and isinstance(value, bool))):
        raise CDrawError(f"{name} must be of type {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def unwritable_folder(folder: Path, error: OSError, flag: str, default: bool = False) -> CDrawError:
    """The one-line error for an output folder (``flag``: the option that names it; ``default``: the
    folder is the option's default, not given) that cannot be made or written: a file of that name (or a
    file on its path) is said as such."""
    on_path = [p for p in (folder, *folder.parents) if p.exists()][:1]
    if on_path and not on_path[0].is_dir():
        where = "" if on_path[0] == folder else f": {on_path[0]}"
        if default:
            return CDrawError(f"the default output folder {folder}{where} is a file; choose a folder with {flag}")
        return CDrawError(f"{flag} {folder}{where} is a file, not a folder; choose a folder")
    return CDrawError(f"cannot write to the output folder {folder}: {error.strerror}")


def atomic_write(target: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``target``, then rename it into place; the
    temporary file never outlives a failure. The file gets the usual mode (0644 under umask 022),
    whatever the writer created it with."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_record(folder: str | os.PathLike, name: str = TRAINING_RECORD) -> dict[str, Any]:
    """A JSON record kept beside a model (``training.json``, ``eval.json``); {} when there is none."""
    file = Path(folder) / name
    if not file.is_file():
        return {}
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CDrawError(f"{file} is corrupt ({e}); delete it or write it again") from None
    if not isinstance(record, dict):
        raise CDrawError(f"{file} is not a record (a JSON object); delete it or write it again")
    return record


#: the folder of the installed cdraw package; its parent is where its paths are shown from
PACKAGE = Path(__file__).resolve().parent
#: the models that ship inside the package, a folder each, named after it (``mnist_captions``)
SHIPPED = PACKAGE / "assets" / "models"


def shipped_model(name: str) -> Path | None:
    """The folder of a model that ships inside the package, from its name (``mnist_captions``) or
    from the name records give it (``cdraw/assets/models/mnist_captions``, :func:`model_source`),
    so that either works from any folder and any install; None for any other name (``./mnist`` is
    a path)."""
    parts = Path(name).parts
    if parts[:1] == (PACKAGE.name,) and len(parts) > 1:
        folder = PACKAGE.joinpath(*parts[1:])
    elif re.fullmatch(r"[\w-]+", name):
        folder = SHIPPED / name
    else:
        return None
    folder = folder.resolve()
    return folder if folder.parent == SHIPPED and (folder / CONFIG_NAME).is_file() else None


def local_model(name: str | os.PathLike, stacklevel: int = 2) -> Path | None:
    """The model folder ``name`` points at on this machine: a model folder, a training run's
    ``model/`` (before the run has written it: its ``best/`` so far, with a warning ``stacklevel``
    frames up, as :func:`warnings.warn` counts), or a shipped model by name (:func:`shipped_model`;
    a folder of the user's of that name comes first); None for anything else (a Hub id, a folder
    that holds no model, a typo)."""
    path = Path(name).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if (path / "best" / CONFIG_NAME).is_file():  # a run still training, or stopped before its end
        warnings.warn(
            f"{path} has no model/ yet (its training has not finished): using its best model so far, {path / 'best'}",
            CDrawWarning,
            stacklevel=stacklevel,
        )
        return path / "best"
    return None if path.exists() else shipped_model(str(name))


def shipped_model_names() -> list[str]:
    """The names :func:`shipped_model` takes, for messages."""
    return sorted(config.parent.name for config in SHIPPED.glob(f"*/{CONFIG_NAME}"))


def model_source(name: str) -> str:
    """How a run's records name the model it started from (``--init-weights``): a model inside the
    cdraw package (a shipped one) as ``cdraw/...``, whichever checkout or install it was read from
    and whether it was named by its path or its name, anything else as given."""
    path = Path(name).expanduser()
    if not path.exists():
        path = shipped_model(name) or path
    try:
        inside = path.resolve().relative_to(PACKAGE) if path.exists() else None
    except ValueError:
        inside = None
    return name if inside is None else Path(PACKAGE.name, inside).as_posix()


def earlier_runs(training: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The runs a model's training continued (``--init-weights``), latest first, from its
    ``training.json``: (the model it started from, as given, and that model's own record)."""
    runs = []
    while isinstance(training.get("started_from"), dict):
        start = training["started_from"]
        training = start.get("training") or {}
        runs.append((str(start.get("init_weights")), training))
    return runs


def all_runs(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a model's run and of every run it continued, latest first."""
    return [training, *(r for _, r in earlier_runs(training))]


def figures_include_training(training: dict[str, Any], figures: dict[str, Any]) -> bool:
    """Whether figures on ``figures``' data set and split (an ``eval.json``, or one about to be measured)
    are on a test split that the model trained on: as ``cdraw eval`` recorded it, or because the model,
    or a run it continued, trained on that data set's test file (``--source t10k``). ``cdraw eval``
    and ``cdraw reconstruct`` warn of it, ``cdraw info`` and model cards say so. (Recorded also for
    MNIST with captions' test splits drawn from digits the model trained on, see cdraw.evaluate.)"""
    if figures.get("test_includes_training"):
        return True
    if figures.get("split") != "test":
        return False
    return any(r.get("source") == "t10k" and r.get("dataset") == figures.get("dataset") for r in all_runs(training))


def measured_on_part(figures: dict[str, Any], key: str) -> int | None:
    """How many images of its split the figure ``key`` of an ``eval.json`` covers when it is not the
    whole split (``--limit``, ``--iw-limit``), else None: "bound" on ``images``, "iwae" on
    ``iwae_images``, of the ``split_images`` the split has (an older record without it: the IWAE
    figure against the bound's images). Fidelity and retrieval figures count their own samples."""
    images = figures.get({"bound": "images", "iwae": "iwae_images"}.get(key, ""))
    whole = figures.get("split_images", figures.get("images") if key == "iwae" else None)
    if isinstance(images, int | float) and isinstance(whole, int | float) and images < whole:
        return int(images)
    return None


class DigitSource(typing.NamedTuple):
    """Which MNIST digits a caption data set's split is composed of: a file (``train``, ``t10k``)
    and, of t10k, a part of its seeded split. :meth:`words` is how the data set's ``metadata.json``
    and a run's ``training.json`` record it (:func:`cdraw.mnist_captions.source_pools`), :meth:`read`
    reads that back."""

    file: str
    part: int | None = None  # 0: the 8,000 training digits, 1: the 2,000 held out; None: the whole file
    digits: int | None = None
    seed: int | None = None

    def words(self) -> str:
        if self.part is None:
            return f"mnist {self.file}"
        return f"mnist t10k: the {self.digits} digits of t10k_split()[{self.part}] (seed {self.seed})"

    @classmethod
    def read(cls, words: object) -> DigitSource | None:
        """The source ``words`` name; None for anything else (a label recipe's ``t10k``, nothing)."""
        if not isinstance(words, str):
            return None
        part = re.fullmatch(r"mnist t10k: the (\d+) digits of t10k_split\(\)\[(\d)\] \(seed (\d+)\)", words)
        if part:
            digits, which, seed = (int(g) for g in part.groups())
            return cls("t10k", which, digits, seed)
        file = words.removeprefix("mnist ")
        return cls(file) if words.startswith("mnist ") and file in ("train", "t10k") else None

    def shares_digits_with(self, other: DigitSource) -> bool:
        """Whether the two have digits in common: the same file, unless they are the two parts of
        one split."""
        apart = self.part is not None and other.part is not None and self.part != other.part
        return self.file == other.file and not (apart and self.seed == other.seed)


def data_source(training: dict[str, Any]) -> str:
    """Which file a run's images came from, in words (``cdraw info``, model cards), from the
    ``source`` its ``training.json`` records: ``t10k`` / ``train`` (the class-label recipe's
    ``--source``), or the caption recipe's digits (:class:`DigitSource`); "" when not recorded."""
    source = training.get("source")
    if not isinstance(source, str):
        return ""
    digits = DigitSource.read(source)
    if digits is not None and digits.part is not None:
        which = "the training part" if digits.part == 0 else "the held-out part"
        return f"{digits.digits:,} digits of MNIST's test file (t10k), {which} of its split with seed {digits.seed}"
    file = digits.file if digits is not None else source  # a whole file: "mnist train", or a label run's "t10k"
    return f"MNIST's {file} file" if file in ("train", "t10k") else source


def run_length(training: dict[str, Any]) -> str:
    """One run's length from its ``training.json``, as ``cdraw info`` and model cards say it:
    steps (images seen, epochs), minutes on processes x device."""
    epochs = training.get("epoch", "?")
    epochs = "less than one epoch" if epochs == 0 else f"{epochs} epoch{'s' if epochs != 1 else ''}"
    seen = f"{training['images_seen']:,} images, " if isinstance(training.get("images_seen"), int) else ""
    minutes = f"{training['training_s'] / 60:.1f} min" if "training_s" in training else "? min"
    return (
        f"{training.get('step', '?')} steps ({seen}{epochs}), {minutes} on "
        f"{training.get('processes', '?')} x {training.get('device', '?')}"
    )


def training_seconds(training: dict[str, Any]) -> float:
    """The training time of a model's run and of every run it continued, from its ``training.json``."""
    return sum(r.get("training_s", 0.0) for r in all_runs(training))


def save_folder(path: Path, model_type: str, config: dict[str, Any], state: dict[str, Tensor]) -> None:
    """A model folder: ``config.json`` (with its ``model_type``) and ``model.safetensors``, each
    written to a temporary name and renamed, so a crash leaves the old file whole."""
    from safetensors.torch import save_file

    config = {"model_type": model_type, **config}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))


def stored_parameters(folder: str | os.PathLike) -> int:
    """How many numbers a model folder's weights file holds (its trained parameters), read from the
    file's header without loading the model."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_NAME
    try:
        with safe_open(str(path), "pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception as e:  # missing, truncated, not safetensors: whatever safetensors says
        raise CDrawError(f"cannot read {path}: {e}") from None


def read_config(path: str | os.PathLike, model_type: str, what: str) -> dict[str, Any]:
    """The fields of a model folder's ``config.json``, checked to be a ``model_type`` config;
    a clear error for each way it can be wrong. ``what`` names the model in messages."""
    path = Path(path)
    if not path.is_dir():
        raise CDrawError(f"{what} folder {path} does not exist (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    file = path / CONFIG_NAME
    if not file.is_file():
        raise CDrawError(f"{path} is not a {what}: {CONFIG_NAME} is missing")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CDrawError(f"{file} is corrupt (not valid JSON: {e})") from None
    if not isinstance(raw, dict) or raw.pop("model_type", None) != model_type:
        raise CDrawError(f"{file} is not a {what} config (model_type must be {model_type!r})")
    return raw


def load_weights(path: str | os.PathLike, model: nn.Module) -> dict[str, Tensor]:
    """Read ``model.safetensors`` and check it matches ``model``'s parameters, name by name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise CDrawError(f"{Path(path)} is not a complete checkpoint: {WEIGHTS_NAME} is missing")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CDrawError(f"{file} is corrupt or not a safetensors file ({e}); re-save or re-download it") from None
    expected = {k: v.shape for k, v in getattr(model, "checkpoint_state", model.state_dict)().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k])
    if missing or extra or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if extra:
            details.append(f"unexpected {extra[:5]}")
        if wrong:
            details.append(
                "wrong shapes " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}" for k in wrong[:5])
            )
        raise CDrawError(f"{file} does not match its {CONFIG_NAME}: " + "; ".join(details))
    return state
