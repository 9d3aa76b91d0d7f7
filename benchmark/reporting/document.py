"""The report as data: sections of paragraphs, lists, tables and figures, and the numbers behind them.

A leaf module (it imports nothing of ours). ``report.json`` holds one
``Report``; ``leaderboard.md`` is ``render_markdown`` of it and the web page
renders the same blocks to HTML, so neither is ever parsed back. Text may
carry the report's two inline marks, ``**bold**`` and ```code```, which both
renderings understand.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from urllib.parse import quote

from tabulate import tabulate

REPORT_VERSION = 1


def fmt(value, digits: int = 3) -> str:
    """A number as every rendering of the report shows it: ``digits`` decimals, ``n/a`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool | str | numbers.Integral):
        return str(value)
    return f"{float(value):.{digits}f}"


@dataclass
class Block:
    """One piece of a section: ``kind`` is paragraph, bullets, table or figure."""

    kind: str
    text: str = ""
    items: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: str = ""

    def to_json(self) -> dict:
        """Only the fields this kind of block uses."""
        used = {"paragraph": ("text",), "bullets": ("items",), "table": ("headers", "rows"),
                "figure": ("text", "path")}[self.kind]  # fmt: skip
        return {"kind": self.kind, **{name: getattr(self, name) for name in used}}


def paragraph(text: str) -> Block:
    """A paragraph of text."""
    return Block("paragraph", text=text)


def bullets(items: list[str]) -> Block:
    """A bullet list."""
    return Block("bullets", items=list(items))


def table(headers: list[str], rows: list[list]) -> Block:
    """A table of text cells (numbers already formatted)."""
    return Block("table", headers=[str(h) for h in headers], rows=[[str(c) for c in row] for row in rows])


def figure(title: str, path: str) -> Block:
    """A picture under the results folder, with its title."""
    return Block("figure", text=title, path=path)


@dataclass
class Section:
    """A titled part of the report (``level`` 2) or of a section (``level`` 3); ``key`` names it for the page."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2
    key: str = ""

    def to_json(self) -> dict:
        """Plain values."""
        return {"title": self.title, "level": self.level, "key": self.key,
                "blocks": [block.to_json() for block in self.blocks]}  # fmt: skip


@dataclass
class Report:
    """The whole report: title, warning banners, the lines under the title, the sections, and its numbers.

    ``data`` holds what the tables were made from (leaderboard rows, the verdict and every paired comparison,
    the cross-validation, the published references), so ``verify`` can recompute it.
    """

    title: str
    banners: list[str]
    preamble: list[Block]
    sections: list[Section]
    data: dict = field(default_factory=dict)

    def section(self, key: str) -> list[Section]:
        """The sections whose key is ``key`` or starts with ``key/`` (a section and its sub-sections)."""
        return [one for one in self.sections if one.key == key or one.key.startswith(f"{key}/")]

    def to_json(self) -> dict:
        """Plain values, with the format's version."""
        return {"version": REPORT_VERSION, "title": self.title, "banners": self.banners,
                "preamble": [block.to_json() for block in self.preamble],
                "sections": [one.to_json() for one in self.sections], "data": self.data}  # fmt: skip

    @classmethod
    def from_json(cls, values: dict) -> Report:
        """The report ``to_json`` wrote; ``ValueError`` for another format version."""
        if values.get("version") != REPORT_VERSION:
            raise ValueError(f"report.json format {values.get('version')!r}, expected {REPORT_VERSION}")
        blocks = lambda raw: [Block(**block) for block in raw]  # noqa: E731
        sections = [Section(one["title"], blocks(one["blocks"]), one["level"], one["key"])
                    for one in values["sections"]]  # fmt: skip
        return cls(values["title"], values["banners"], blocks(values["preamble"]), sections, values["data"])


def _block_markdown(block: Block) -> list[str]:
    if block.kind == "paragraph":
        return [block.text, ""]
    if block.kind == "bullets":
        return [f"- {item}" for item in block.items] + [""]
    if block.kind == "figure":
        # Percent-encoded: a class folder named "viral pneumonia" puts a space in the plot's name, and Markdown
        # ends a link's target at the first space.
        return [f"![{block.text}]({quote(block.path)})", ""]
    return [tabulate(block.rows, headers=block.headers, tablefmt="pipe", disable_numparse=True), ""]


def render_markdown(report: Report) -> str:
    """``leaderboard.md``: the report as GitHub Markdown."""
    out = [f"# {report.title}", ""]
    for banner in report.banners:
        out += [f"> {banner}", ""]
    for block in report.preamble:
        out += _block_markdown(block)
    for one in report.sections:
        out += [f"{'#' * one.level} {one.title}", ""]
        for block in one.blocks:
            out += _block_markdown(block)
    return "\n".join(out)
