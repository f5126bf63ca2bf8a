"""leaderboard/index.html: the leaderboard table, sortable, and its plots, in one static file.

    page(table, intro, notes, sections, models)   # lra.leaderboard.build gives what to draw

This module draws; it decides nothing about runs. It takes the table's text cells, the
notes, and the plots as data (`Section`s of `Figure`s of `Series` of points), and colors
each model's series alike. No server, no network, nothing external: the CSS and the script
are inline and the plots are SVG drawn here. Every string from a result file or
published.csv reaches the page through html.escape; the script only reorders rows and never
writes markup. A Content-Security-Policy lets nothing load and runs no script but ours
(allowed by its SHA-256).
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from html import escape
from typing import NamedTuple

import pandas as pd

PALETTE = ["#2b6cb0", "#c53030", "#2f855a", "#6b46c1", "#dd6b20", "#0987a0", "#975a16", "#b83280",
           "#4a5568", "#718096"]
WIDTH, HEIGHT = 380, 250
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 26, 40

SCRIPT = """"use strict";
(function () {
  const table = document.getElementById("leaderboard");
  const heads = Array.from(table.tHead.rows[0].cells);
  const scale = {K: 1e3, M: 1e6, G: 1e9};
  // A row group's sort key: the number its cell starts with (1.2K counts as 1200), else its text.
  function key(body, col) {
    const text = body.rows[0].cells[col].textContent.trim();
    const number = /^([+\\u2212-]?\\d+(?:\\.\\d+)?)([KMG]?)/.exec(text);
    if (number) {
      return {num: parseFloat(number[1].replace("\\u2212", "-")) * (scale[number[2]] || 1)};
    }
    return text ? {text: text.toLowerCase()} : null;
  }
  function compare(a, b) {
    if ("num" in a && "num" in b) return a.num - b.num;
    if ("num" in a || "num" in b) return "num" in a ? -1 : 1;
    return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  }
  // Each <tbody> is one row with its gap row; empty cells go last either way.
  function sortBy(col, descending) {
    const groups = Array.from(table.tBodies, (body, i) => ({body, i, k: key(body, col)}));
    groups.sort((x, y) => {
      if (!x.k || !y.k) return (!x.k - !y.k) || x.i - y.i;
      return (descending ? compare(y.k, x.k) : compare(x.k, y.k)) || x.i - y.i;
    });
    for (const group of groups) table.appendChild(group.body);
    for (const h of heads) h.removeAttribute("aria-sort");
    heads[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  heads.forEach((h, col) => {
    const toggle = () => sortBy(col, h.getAttribute("aria-sort") !== "descending");
    h.tabIndex = 0;
    h.addEventListener("click", toggle);
    h.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); toggle(); }
    });
  });
  // index.html#sort=ListOps&desc opens sorted by that column.
  const wanted = /^#sort=([^&]*)(&desc)?$/.exec(location.hash);
  if (wanted) {
    const col = heads.findIndex((h) => h.textContent === decodeURIComponent(wanted[1]));
    if (col >= 0) sortBy(col, Boolean(wanted[2]));
  }
  table.setAttribute("data-ready", "1");
})();
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #1a202c; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e2e8f0; text-align: left; }
th, td { white-space: nowrap; }
th { position: sticky; top: 0; background: #edf2f7; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
tr.ours td { background: #f0fff4; }
tr.gap td { color: #4a5568; font-style: italic; font-size: 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
.plot .grid { stroke: #e2e8f0; }
.plot .axis { stroke: #4a5568; }
.plot text { font-size: 11px; fill: #2d3748; }
.plot .title { font-size: 13px; font-weight: 600; }
.legend { list-style: none; padding: 0; margin: 0; font-size: 12px; }
.swatch { margin-right: 4px; }
"""


class Series(NamedTuple):
    """One model's points in a plot, drawn in that model's color."""

    label: str  # its legend line; "" for none
    model: str  # picks the color
    points: list  # (x, y, tooltip)
    line: bool = False  # join the points, in order of x
    hollow: bool = False
    dashed: bool = False


class Figure(NamedTuple):
    title: str
    series: list[Series]
    x_label: str
    y_label: str
    log_x: bool = False  # x on a log10 scale
    x_ticks: list | None = None  # (x, label); None: round values
    wide: bool = False  # twice the width


class Section(NamedTuple):
    """A heading, a sentence on what its plots show, the plots, and what to say if none."""

    heading: str
    text: str
    figures: list[Figure]
    empty: str


def si(x: float) -> str:
    """1234567 -> 1.23M: three significant digits and a K, M or G (the table's format too)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from lo to hi."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks for a log10 axis from 10**lo to 10**hi: powers of ten, and 2 and 5 times them
    if few."""
    steps = (1,) if hi - lo > 3 else (1, 2, 5)
    values = [m * 10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in steps]
    return [(v, si(v)) for v in values if lo <= math.log10(v) <= hi]


def _padded(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo or max(abs(lo) * 0.1, 1.0)
    return lo - 0.08 * span, hi + 0.08 * span


def plot(figure: Figure, color) -> str:
    """One SVG chart with its legend; `color(model)` is a series' color."""
    title, series, log_x = figure.title, figure.series, figure.log_x
    width = 2 * WIDTH if figure.wide else WIDTH
    to_x = math.log10 if log_x else float
    points = [(to_x(x), y) for s in series for x, y, _ in s.points]
    x0, x1 = _padded(min(p[0] for p in points), max(p[0] for p in points))
    y0, y1 = _padded(min(p[1] for p in points), max(p[1] for p in points))

    def px(x):
        return LEFT + (to_x(x) - x0) / (x1 - x0) * (width - LEFT - RIGHT)

    def py(y):
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    x_ticks = figure.x_ticks
    if x_ticks is None:
        x_ticks = _log_ticks(x0, x1) if log_x else [(v, f"{v:g}") for v in _ticks(x0, x1)]
    bottom, right = HEIGHT - BOTTOM, width - RIGHT
    svg = [f'<svg class="plot" viewBox="0 0 {width} {HEIGHT}" width="{width}" height="{HEIGHT}" '
           'role="img">', f"<title>{escape(title)}</title>",
           f'<text class="title" x="{LEFT}" y="16">{escape(title)}</text>']
    for v in _ticks(y0, y1):
        svg.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{py(v):.1f}" '
                   f'y2="{py(v):.1f}"/><text x="{LEFT - 4}" y="{py(v) + 4:.1f}" '
                   f'text-anchor="end">{v:g}</text>')
    for v, text in x_ticks:
        if x0 <= to_x(v) <= x1:
            svg.append(f'<line class="grid" x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{TOP}" '
                       f'y2="{bottom}"/><text x="{px(v):.1f}" y="{bottom + 14}" '
                       f'text-anchor="middle">{escape(text)}</text>')
    svg.append(f'<path class="axis" d="M{LEFT},{TOP}V{bottom}H{right}" fill="none"/>'
               f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
               f'{escape(figure.x_label)}</text><text transform="rotate(-90)" '
               f'x="{-(TOP + bottom) / 2}" y="13" text-anchor="middle">'
               f"{escape(figure.y_label)}</text>")
    for s in series:
        ordered = sorted(s.points, key=lambda p: p[0]) if s.line else s.points
        if s.line and len(ordered) > 1:
            dash = ' stroke-dasharray="4 3"' if s.dashed else ""
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in ordered)
            svg.append(f'<polyline fill="none" stroke="{color(s.model)}" stroke-width="1.5"{dash} '
                       f'points="{path}"/>')
        fill = "white" if s.hollow else color(s.model)
        svg += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" '
                f'stroke="{color(s.model)}"><title>{escape(tip)}</title></circle>'
                for x, y, tip in ordered]
    svg.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="color:{color(s.model)}">'
                     f"{'○' if s.hollow else '●'}{'┄' if s.dashed else ''}</span>"
                     f"{escape(s.label)}</li>" for s in series if s.label)
    return (f'<figure>{"".join(svg)}<figcaption><ul class="legend" style="max-width:{width}px">'
            f"{legend}</ul></figcaption></figure>")


def _table(table: pd.DataFrame) -> str:
    """The table's text cells; each `_group` (a row and its gap row) one <tbody>."""
    columns = [c for c in table.columns if c != "_group"]
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    bodies = []
    for _, group in table.groupby("_group", sort=False):
        rows = []
        for i, row in enumerate(group.to_dict("records")):
            kind = "gap" if i else "ours" if row["Entry"].startswith("ours") else "published"
            cells = "".join(f"<td>{escape(str(row[c]))}</td>" for c in columns)
            rows.append(f'<tr class="{kind}">{cells}</tr>')
        bodies.append("<tbody>" + "".join(rows) + "</tbody>")
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead>{"".join(bodies)}</table>'


def _section(section: Section, color) -> str:
    figures = "".join(plot(f, color) for f in section.figures)
    return "\n".join([f"<h2>{escape(section.heading, quote=False)}</h2>",
                      f"<p>{escape(section.text, quote=False)}</p>",
                      f'<div class="plots">{figures or f"<p>{escape(section.empty)}</p>"}</div>'])


def page(table: pd.DataFrame, intro: str, notes: list[str], sections: list[Section],
         models: list[str]) -> str:
    """The whole HTML document: `table` (text cells, rows grouped by `_group`), the `intro`
    above it, the `notes` under it, then the plots; `models` in the order their colors go."""

    def color(model):
        return PALETTE[models.index(model) % len(PALETTE)]

    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    code = re.sub(r"`([^`]*)`", r"<code>\1</code>", escape(intro))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Long-Range Arena leaderboard</title><style>{STYLE}</style></head><body>",
        "<h1>Long-Range Arena leaderboard</h1>", f"<p>{code}</p>",
        "<p>Click a column heading to sort by it (again to reverse).</p>",
        f'<div class="wrap">{_table(table)}</div>',
        '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>",
        *(_section(s, color) for s in sections),
        f"<script>{SCRIPT}</script>", "</body></html>", ""])
