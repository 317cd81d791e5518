"""Griffe extension for the API reference: cdraw's Sphinx-flavoured docstrings, made readable as Markdown.

cdraw's docstrings name other objects the Sphinx way (:class:`~cdraw.conditioning.Context`,
:func:`read_patch`, :meth:`DRAW.sample_trace`). mkdocstrings would print those verbatim; here each
one is looked up the way Sphinx would (the full path, else relative to the class and module the
docstring is in) and becomes an *optional* cross-reference: a link where the target is on the
site, plain code where it is not (a private helper, an undocumented constant). So a docstring
naming something the site does not show never breaks ``mkdocs build --strict``.

A section headed ``Example:`` holding doctest lines is renamed ``Examples:``, the Google-style name
griffe reads as code (it takes a singular ``Example:`` for a note, and ``>>>`` for quotes).

A reST literal-block marker (a line ending in ``::``) becomes a plain colon, as Sphinx prints it.

Prose like ``<read_patch(x), w>`` (an inner product) would be read as an HTML tag and vanish, so a
``<`` that starts a word outside code is escaped first.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")
TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")
DOCTEST = (">>>", "...")
REST_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)
EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*\n(?=(?:[ \t]*\n)*[ \t]*>>>)", re.MULTILINE)


class ReadableDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is None or not any(c in obj.docstring.value for c in ":<"):
            return

        def link(match: re.Match) -> str:
            target = match["target"]
            title = target.rsplit(".", 1)[-1] if match["tilde"] else target
            code = f"<code>{html.escape(title)}</code>"
            found = _lookup(obj, target, loader)
            if found is None:
                return code
            return f'<autoref identifier="{html.escape(found)}" optional>{code}</autoref>'

        text = EXAMPLE_HEADING.sub(r"\g<indent>Examples:\n", obj.docstring.value)
        text = REST_LITERAL.sub(":", text)
        obj.docstring.value = ROLE.sub(link, _escape_tags(text))


def _escape_tags(text: str) -> str:
    """``<`` before a letter becomes ``&lt;`` outside `code` and doctest lines."""
    lines = []
    for line in text.split("\n"):
        if not line.lstrip().startswith(DOCTEST):
            parts = line.split("`")
            parts[::2] = [TAG_LIKE.sub("&lt;", part) for part in parts[::2]]
            line = "`".join(parts)
        lines.append(line)
    return "\n".join(lines)


def _lookup(obj: griffe.Object, target: str, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``target`` as seen from ``obj``'s docstring, or None."""
    scopes = [""]  # an absolute path first, then the enclosing class(es) and module(s), innermost first
    scope = obj
    while scope is not None:
        scopes.append(scope.path + ".")
        scope = scope.parent
    for prefix in scopes:
        try:
            found = loader.modules_collection[prefix + target]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return found.final_target.path if found.is_alias else found.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return None
