"""HTML pieces of the report and the one self-contained document they make.

Every text that comes from a file (run names, class names, config values, paths) passes through
:func:`html.escape` here and nowhere else: the builders give plain strings, never markup.
Pictures are embedded as ``data:image/png;base64`` URIs; the page has no script, no external
style sheet, font or link, so it opens the same offline, from an e-mail or an archive.

The ``generator`` meta tag marks a file this module wrote; :mod:`leanseg.report.output` looks
for it before it replaces a file.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from leanseg.version import __version__

GENERATOR = "leanseg report"
# Cells that read as a number (with an optional unit) are right-aligned.
_NUMBER = re.compile(r"-|[-+]?\d[\d.,]*(?: ?[A-Za-z%]+)?")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.num { text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; height: auto; display: block; margin: .4em 0; }
.note { color: #666; font-size: .9em; }
.panel-caption { font-size: .85em; color: #444; margin-bottom: 1em; }
""".strip()


@dataclass
class Section:
    """A heading (``h2``) and its body, with optional sub-sections (``h3``)."""

    heading: str
    parts: list[str] = field(default_factory=list)  # HTML made by the helpers below
    children: list[Section] = field(default_factory=list)

    def render(self, level: int = 2) -> str:
        body = "\n".join(self.parts)
        inner = "\n".join(child.render(level + 1) for child in self.children)
        return f"<h{level}>{html.escape(self.heading)}</h{level}>\n{body}\n{inner}"


def text(content: str, *, note: bool = False) -> str:
    """A paragraph of plain text."""
    css = ' class="note"' if note else ""
    return f"<p{css}>{html.escape(content)}</p>"


def image(png: bytes, alt: str, caption: str | None = None) -> str:
    """A PNG embedded as a data URI, with an optional caption below it."""
    data = base64.b64encode(png).decode("ascii")
    tag = f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
    if caption is not None:
        tag += f'\n<div class="panel-caption">{html.escape(caption)}</div>'
    return tag


def table(header: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    """A table of plain-text cells; without ``header``, a two-column key / value list."""
    lines = ["<table>"]
    if header is not None:
        cells = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        lines.append(f"<tr>{cells}</tr>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(cell)}</td>'
            if _NUMBER.fullmatch(cell)
            else f"<td>{html.escape(cell)}</td>"
            for cell in row
        )
        lines.append(f"<tr>{cells}</tr>")
    return "\n".join([*lines, "</table>"])


def document(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page: ``title`` as ``h1``, the ``intro`` lines, then the sections."""
    lead = "\n".join(text(line, note=True) for line in intro)
    body = "\n".join(section.render() for section in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="generator" content="{GENERATOR} {html.escape(__version__)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{lead}\n{body}\n</body>\n</html>\n"
    )
