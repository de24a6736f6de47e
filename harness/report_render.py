"""Report blocks (headings, text, tables, figures) and their Markdown and HTML renderings."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Block:
    """One piece of a report; build them with the class methods."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def title(cls, text: str) -> Block:
        """The report's title."""
        return cls("title", text)

    @classmethod
    def heading(cls, text: str) -> Block:
        """A section heading."""
        return cls("h2", text)

    @classmethod
    def subheading(cls, text: str) -> Block:
        """A subsection heading."""
        return cls("h3", text)

    @classmethod
    def paragraph(cls, text: str) -> Block:
        """A paragraph (Markdown inline code with backticks is kept in both renderings)."""
        return cls("p", text)

    @classmethod
    def table(cls, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Block:
        """A table; cells are shown as `str(cell)`."""
        return cls("table", headers=tuple(headers), rows=tuple(tuple(str(c) for c in r) for r in rows))

    @classmethod
    def figure(cls, folder: Path, name: str, fig: Any, caption: str) -> Block:
        """Save a matplotlib Figure as `folder/name.png` and refer to it."""
        path = Path(folder) / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return cls("figure", caption, path=path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], base: Path) -> str:
    """GitHub-flavoured Markdown; figure paths relative to `base` (the report's folder)."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "title":
            out.append(f"# {b.text}")
        elif b.kind in ("h2", "h3"):
            out.append(f"{'##' if b.kind == 'h2' else '###'} {b.text}")
        elif b.kind == "p" and b.text:
            out.append(b.text)
        elif b.kind == "table":
            out.append("| " + " | ".join(map(_cell, b.headers)) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(map(_cell, row)) + " |" for row in b.rows]
        elif b.kind == "figure" and b.path is not None:
            out.append(f"![{b.text}]({b.path.relative_to(base).as_posix()})\n\n*{b.text}*")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: Sequence[Block], base: Path) -> str:
    """A standalone HTML page with the same content as the Markdown."""
    body: list[str] = []
    for b in blocks:
        if b.kind == "title":
            body.append(f"<h1>{html.escape(b.text)}</h1>")
        elif b.kind in ("h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p" and b.text:
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "figure" and b.path is not None:
            src = html.escape(b.path.relative_to(base).as_posix())
            caption = f"<figcaption>{_inline(b.text)}</figcaption>"
            body.append(f'<figure><img src="{src}" alt="{html.escape(b.text)}">{caption}</figure>')
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "img{max-width:100%}figcaption{font-style:italic}"
    )
    title = html.escape(next((b.text for b in blocks if b.kind == "title"), "report"))
    head = f"<head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"
