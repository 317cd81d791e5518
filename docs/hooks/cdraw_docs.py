"""MkDocs hooks of the cdraw site: pages that are generated from the code at build time, so they cannot go stale.

Markers a page may hold (each on a line of its own):

    <!-- cdraw-cli -->                    the reference of every `cdraw` command, from cdraw.cli.build_parser()
    <!-- cdraw-train-flags -->            the flags every training recipe shares, from cdraw.config.train_arg_parser()
    <!-- cdraw-recipe: mnist -->          a recipe's examples (its module's docstring), its own flags, its config
    <!-- cdraw-figure-caption: NAME -->   the caption docs/make_figures.py wrote for figure NAME (figures.json)
    <!-- cdraw-layers -->                 cdraw's modules in layers with the cdraw modules each imports

and maths written as \\( inline \\) or \\[ display \\] (pymdownx.arithmatex) is turned into MathML here, so
pages need no JavaScript and no CDN to show equations.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import importlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "figures"
MARKER = re.compile(r"^<!-- cdraw-(?P<kind>[a-z-]+)(?::\s*(?P<arg>[\w.-]+))? -->$", re.MULTILINE)
#: Width the usage lines are wrapped to (argparse reads it from $COLUMNS).
USAGE_COLUMNS = "80"
INLINE_MATH = re.compile(r'<span class="arithmatex">\\\((?P<tex>.*?)\\\)</span>', re.DOTALL)
DISPLAY_MATH = re.compile(r'<div class="arithmatex">\\\[(?P<tex>.*?)\\\]</div>', re.DOTALL)


# -- hooks -------------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        kind, arg = match["kind"], match["arg"]
        where = f"{page.file.src_uri}: <!-- cdraw-{kind} -->"
        if kind == "cli":
            return cli_reference()
        if kind == "train-flags":
            return train_flags()
        if kind == "recipe" and arg:
            return recipe_section(arg, where)
        if kind == "figure-caption" and arg:
            return figure_caption(arg, where)
        if kind == "layers":
            return import_layers()
        raise PluginError(f"{where}: unknown marker (see docs/hooks/cdraw_docs.py)")

    return MARKER.sub(replace, markdown)


def on_page_content(html_text: str, page, config, files) -> str:
    from latex2mathml.converter import convert

    def mathml(display: str):
        def inner(match: re.Match) -> str:
            tex = html.unescape(match["tex"]).strip()
            try:
                return convert(tex, display=display)
            except Exception as e:  # latex2mathml raises its own types; a bad formula must name itself
                raise PluginError(f"{page.file.src_uri}: cannot turn \\({tex}\\) into MathML: {e}") from None

        return inner

    html_text = DISPLAY_MATH.sub(mathml("block"), html_text)
    return INLINE_MATH.sub(mathml("inline"), html_text)


# -- argparse parsers as Markdown -----------------------------------------------------------------


@contextlib.contextmanager
def _columns() -> Iterator[None]:
    """Usage lines wrapped at a fixed width, whatever terminal the build runs in."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _text(s: str) -> str:
    """Help text as one line of Markdown: escaped outside `code spans`, which stay code."""
    parts = " ".join(s.split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = re.sub(r"([\\*_|<>\[\]])", r"\\\1", parts[i])
    return "`".join(parts)


def _help(action: argparse.Action, prog: str) -> str:
    """An action's help with argparse's %(default)s-style fields filled in, as argparse prints it."""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    text = (action.help or "") % params
    if "default" not in text and isinstance(action, argparse.BooleanOptionalAction) and action.default is not None:
        text += f" (default: `{action.option_strings[0 if action.default else 1]}`)"
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        listed = "one of" in text or "%(choices)" in (action.help or "")
        text += "" if listed else f" (one of: {', '.join(map(str, action.choices))})"
    return text


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._format_action_invocation(action)


def actions_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    rows = ["| option | what it does |", "| --- | --- |"]
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        invocation = _invocation(parser, action).replace(", ", "`, `")
        rows.append(f"| `{invocation}` | {_text(_help(action, parser.prog))} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _examples(epilog: str | None) -> str:
    """An epilog of the form "examples:\\n  cmd\\n  cmd" as a shell code block."""
    if not epilog:
        return ""
    lines = [line[2:] if line.startswith("  ") else line for line in epilog.splitlines()]
    lines = [line for line in lines if line.strip() and line.strip() != "examples:"]
    return "```bash\n" + "\n".join(lines) + "\n```" if lines else ""


def _subcommands(parser: argparse.ArgumentParser) -> tuple[argparse._SubParsersAction, dict[str, str]]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return sub, helps


def cli_reference() -> str:
    """Every `cdraw` command: what it does, its usage, its options and its examples (for `cdraw
    prepare`, those of each data set, whose parsers are built only when one runs)."""
    from cdraw.cli import build_parser
    from cdraw.prepare import DATASETS

    with _columns():
        parser = build_parser()
        sub, helps = _subcommands(parser)
        out = [
            _text(parser.description or ""),
            "",
            "```text\n" + parser.format_usage().strip() + "\n```",
            "",
            "| command | what it does |",
            "| --- | --- |",
            *(f"| [`cdraw {name}`](#cdraw-{name}) | {_text(helps[name])} |" for name in sub.choices),
            "",
            _examples(parser.epilog),
        ]
        for name, p in sub.choices.items():
            out += _command(f"## cdraw {name}", p, helps[name])
            if name == "prepare":
                for dataset, (make_parser, _) in DATASETS.items():
                    out += _command(f"### cdraw prepare {dataset}", make_parser(), "")
    return "\n".join(out)


def _command(title: str, p: argparse.ArgumentParser, summary: str) -> list[str]:
    """One command's section: title, description, usage, arguments, options, examples."""
    positionals = [a for a in p._actions if not a.option_strings]
    options = [a for a in p._actions if a.option_strings]
    out = [title, "", _text(p.description or summary), ""]
    out += ["```text\n" + p.format_usage().strip() + "\n```", ""]
    if positionals:
        out += ["**Arguments**", "", actions_table(p, positionals), ""]
    table = actions_table(p, options)  # empty where --help is the only option
    out += ["**Options**", "", table, ""] if table else []
    examples = _examples(p.epilog)
    if examples:
        out += ["**Examples**", "", examples, ""]
    return out


def train_flags() -> str:
    """The flags every recipe shares, one table per group (training, model, conditioning)."""
    from cdraw.config import train_arg_parser

    with _columns():
        parser = train_arg_parser("NAME", conditional=True)
        parser.prog = "cdraw train NAME"
        out = []
        for group in parser._action_groups:
            table = actions_table(parser, group._group_actions)
            if table:
                title = "general" if group.title in ("options", "optional arguments") else group.title
                out += [f"**{_text(title)}**", "", table, ""]
    return "\n".join(out)


def _recipe_parser(name: str, where: str) -> tuple[argparse.ArgumentParser, str]:
    """The parser the recipe ``cdraw.recipes.NAME`` builds (``train_NAME`` also names it), caught by
    running its main(["--help"]), and its docstring."""
    import cdraw.config
    from cdraw.recipes import NAMES

    short = name.removeprefix("train_")
    if short not in NAMES:
        raise PluginError(f"{where}: no recipe {short!r} (cdraw.recipes has {', '.join(NAMES)})")
    module = importlib.import_module(f"cdraw.recipes.{short}")
    caught = []
    original = cdraw.config.train_arg_parser

    def catching(*args, **kwargs):
        caught.append(original(*args, **kwargs))
        return caught[-1]

    patched = [(cdraw.config, "train_arg_parser")]
    if hasattr(module, "train_arg_parser"):
        patched.append((module, "train_arg_parser"))
    for owner, attr in patched:
        setattr(owner, attr, catching)
    try:
        with contextlib.redirect_stdout(io.StringIO()), _columns():
            module.main(["--help"])
    except SystemExit:
        pass
    finally:
        for owner, attr in patched:
            setattr(owner, attr, original)
    if not caught:
        raise PluginError(f"{where}: {module.__name__} did not build its parser with cdraw.config.train_arg_parser")
    return caught[-1], module.__doc__ or ""


def recipe_section(name: str, where: str) -> str:
    """A recipe's docstring (what it trains, its examples), its own flags and its config file."""
    from cdraw.config import train_arg_parser

    parser, doc = _recipe_parser(name, where)
    parser.prog = f"cdraw train {name.removeprefix('train_')}"
    shared = {a.dest for a in train_arg_parser(None, conditional=True)._actions}
    own = [a for a in parser._actions if a.dest not in shared]
    config = next(a.default for a in parser._actions if a.dest == "config")
    summary, _, rest = doc.strip().partition("\n\n")
    examples = rest.split("Examples:", 1)
    out = [_text(summary), ""]
    if examples[0].strip():
        out += [_text(examples[0]), ""]
    if len(examples) > 1:
        lines = [line[2:] if line.startswith("  ") else line for line in examples[1].strip("\n").splitlines()]
        out += ["```bash\n" + "\n".join(lines).rstrip() + "\n```", ""]
    if own:
        out += [
            "Flags of its own, besides the [shared ones](#flags-every-recipe-takes):",
            "",
            actions_table(parser, own),
            "",
        ]
    if config:
        config = Path(config)
        text = config.read_text().rstrip()
        out += [
            f"Its settings, `{config.relative_to(REPO)}` (every key is also a flag):",
            "",
            f"```yaml\n{text}\n```",
            "",
        ]
    return "\n".join(out)


# -- the layers of the package ----------------------------------------------------------------------


def import_layers() -> str:
    """cdraw's modules by layer, read from the source with ``ast``: a module's layer is one more than
    the highest layer it imports (layer 0 imports nothing of cdraw), so each layer may import only
    the layers below it. Every import counts, at the top of a module or inside a function."""
    import ast

    package = REPO / "cdraw"
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    imports = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cdraw"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
                found |= {t if t in modules else node.module for t in targets}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("cdraw")}
        package_inits = {m for m in modules if name.startswith(m + ".")}  # a parent's __init__ is no need of its own
        imports[name] = sorted(found & set(modules) - {name} - package_inits)
    layer: dict[str, int] = {}

    def depth(m: str) -> int:
        if m not in layer:
            layer[m] = 0  # guards a cycle (the import-cycle test fails on one)
            layer[m] = 1 + max((depth(d) for d in imports[m]), default=-1)
        return layer[m]

    rows = ["| layer | module | imports from cdraw |", "| --- | --- | --- |"]
    for m in sorted(modules, key=lambda m: (depth(m), m)):
        needs = ", ".join(f"`{d.removeprefix('cdraw.')}`" for d in imports[m]) or "nothing"
        rows.append(f"| {layer[m]} | `{m}` | {needs} |")
    return "\n".join(rows)


# -- figures ----------------------------------------------------------------------------------------


def figure_caption(name: str, where: str) -> str:
    """The caption docs/make_figures.py recorded for a figure (it depends on which model drew it)."""
    manifest = FIGURES / "figures.json"
    try:
        captions = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PluginError(f"{where}: cannot read {manifest} ({e}): run python docs/make_figures.py") from None
    if name not in captions:
        raise PluginError(f"{where}: {manifest} has no figure {name!r}: run python docs/make_figures.py")
    return html.escape(" ".join(captions[name]["caption"].split()))
