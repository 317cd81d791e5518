"""Every command line the docs show names options that exist, with values they accept.

The README, the docs pages and the shipped models' cards show ``cdraw`` and recipe command lines,
in code blocks and in inline code. Each is parsed here (never run) by the parser of what it calls:
``cdraw ...`` by cdraw's (``cdraw prepare DATASET ...`` by that data set's); a recipe's flags
(``cdraw train NAME ...``, ``recipes/train_NAME.py ...``, ``-m cdraw.recipes.NAME ...``) by that
recipe's, up to the config it builds; ``accelerate launch``'s own flags and ``--launch-args`` by
accelerate's. A line in a code block is a whole command: any
error counts. Inline code may be a fragment (`cdraw generate --caption`), so there a missing value
or argument is fine; an unknown option or a bad value never is. tests/test_readme.py runs the
README's commands; this test reaches the pages no test runs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest
from test_readme import BLOCK, shell_lines

from cdraw import cli
from cdraw.errors import CDrawError
from cdraw.prepare import DATASETS
from cdraw.recipes import NAMES

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted(REPO.glob("cdraw/assets/models/*/README.md")),
]
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # inline code may wrap onto a second line
CDRAW = r"cdraw (?:generate|reconstruct|info|train|eval|prepare)\b"
START = re.compile(rf"^(?:{CDRAW}|accelerate launch\b|python3? (?:-m cdraw\.recipes\.|recipes/train_))")
FRAGMENT = (
    "expected one argument",
    "expected at least one argument",
    "the following arguments are required",
    "which recipe?",
    "which data set?",
)  # fine in inline code only
PLACEHOLDERS = {"NAME", "RECIPE", "DATASET"}  # `cdraw train NAME`, `recipes/train_NAME.py`, `cdraw prepare DATASET`


def commands() -> list[tuple[str, str, bool]]:
    """(where, command, whole): every command line of the docs; ``whole`` for those of code blocks."""
    found = []
    for page in PAGES:
        text = page.read_text()
        where = str(page.relative_to(REPO))
        for _, block in BLOCK.findall(text):
            for line in shell_lines(block):
                line = line.removeprefix("$ ")
                if START.match(line):
                    found.append((where, line, True))
        for code in INLINE.findall(BLOCK.sub("", text)):
            code = " ".join(code.split())
            if START.match(code):
                found.append((where, code, False))
    return found


class _Parsed(Exception):
    """Raised once a recipe's command line has been turned into its config: nothing runs after."""


def recipe_error(name: str, argv: list[str], monkeypatch) -> str | None:
    if name in PLACEHOLDERS:
        return None
    if name not in NAMES:
        return f"no recipe {name!r}"
    module = importlib.import_module(f"cdraw.recipes.{name}")
    real = module.parse_train_args

    def parse_only(*args, **kwargs):
        real(*args, **kwargs)
        raise _Parsed

    monkeypatch.setattr(module, "parse_train_args", parse_only)
    return parse_error(lambda: module.main(argv))


def parse_error(parse) -> str | None:
    """What ``parse()`` said was wrong, or None; argparse's usage errors and ours alike."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse()
    except _Parsed:
        return None
    except SystemExit as e:
        return None if e.code in (0, None) else (err.getvalue().strip().splitlines() or ["exit"])[-1]
    except CDrawError as e:
        return str(e)
    return None


def parsed(parser, argv: list[str]):
    """(namespace, None) or (None, what was wrong)."""
    out = []
    error = parse_error(lambda: out.append(parser.parse_args(argv)))
    return (out[0] if out else None), error


def command_error(line: str, monkeypatch) -> str | None:
    from accelerate.commands.launch import launch_command_parser

    words = [w for w in shlex.split(line, comments=True) if "..." not in w and "…" not in w]  # placeholders
    for stop in ("&&", "||", "|", ";"):
        words = words[: words.index(stop)] if stop in words else words
    if words[0] == "cdraw":
        args, error = parsed(cli.build_parser(), words[1:])
        if error or args is None or args.command not in ("train", "prepare"):
            return error
        if args.command == "prepare":
            if args.dataset in PLACEHOLDERS:
                return None
            if args.dataset not in DATASETS:
                return parse_error(lambda: cli.cmd_prepare(args))
            return parsed(DATASETS[args.dataset][0](), args.flags)[1]
        if args.recipe is None:
            return parse_error(lambda: cli.cmd_train(args))
        launch, overrides = cli._launch_args_after_recipe(args.overrides)
        launch = args.launch_args + launch
        error = parsed(launch_command_parser(), [*launch, "x.py"])[1] if launch else None
        return error or recipe_error(args.recipe, overrides, monkeypatch)
    if words[0] == "accelerate":
        args, error = parsed(launch_command_parser(), words[2:])
        if error:
            return error
        words = ["python", *(["-m"] if args.module else []), args.training_script, *args.training_script_args]
    if words[1] == "-m":
        return recipe_error(words[2].removeprefix("cdraw.recipes."), words[3:], monkeypatch)
    name = re.fullmatch(r"(?:.*/)?recipes/train_(\w+)\.py", words[1])
    return recipe_error(name.group(1), words[2:], monkeypatch) if name else f"not a recipe: {words[1]}"


def test_the_docs_show_commands_of_every_kind():
    lines = [c for _, c, _ in commands()]
    for start in (
        "cdraw generate",
        "cdraw eval",
        "cdraw train",
        "cdraw prepare",
        "accelerate launch",
        "python recipes/train_",
    ):
        assert any(c.startswith(start) for c in lines), start
    assert len(lines) > 100


@pytest.mark.parametrize("where,line,whole", [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(commands())])
def test_every_command_the_docs_show_parses(where, line, whole, monkeypatch):
    error = command_error(line, monkeypatch)
    if error and not whole and any(f in error for f in FRAGMENT):
        error = None
    assert error is None, f"{where}: {line}\n-> {error}"


def test_a_wrong_option_in_the_docs_would_be_found(monkeypatch):
    assert "unrecognized arguments" in command_error("cdraw generate --num 4 --colour red", monkeypatch)
    assert "lr_schedule must be" in command_error("cdraw train mnist --lr-schedule steep", monkeypatch)
    assert "unrecognized arguments: --colour" in command_error(
        "cdraw prepare coco --captions c.json --images i --colour red", monkeypatch
    )
    assert "no data set 'cifar'" in command_error("cdraw prepare cifar", monkeypatch)
    assert "unrecognized arguments" in command_error("python recipes/train_mnist.py --colour red", monkeypatch)
    assert (
        command_error("accelerate launch --num_processes 2 recipes/train_mnist.py --max-steps 2", monkeypatch) is None
    )
    assert command_error("cdraw train mnist --max-steps 2 --launch-args '--num_processes 2'", monkeypatch) is None
    assert "not a setting of a bilstm" in command_error("cdraw train mnist_captions --adapter linear", monkeypatch)
