"""leaderboard/index.html: the leaderboard table, sortable, and its plots, in one static file.

    page(table, long, runs, intro, notes)   # called by lra.leaderboard.build

No server, no network, nothing external: the CSS and the script are inline and the plots are
SVG drawn here. Every string from a result file or published.csv reaches the page through
html.escape; the script only reorders rows and never writes markup. A Content-Security-Policy
lets nothing load and runs no script but ours (allowed by its SHA-256).

Plots: accuracy against training throughput per task (one point per cell), accuracy against
sequence length (our newest rows, published rows hollow), and the per-epoch validation
accuracy and losses of the best run (highest val_acc, the selection metric) of each cell,
for records that carry `metrics.history`.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from html import escape
from typing import NamedTuple

import pandas as pd

from lra.leaderboard import CELL, LRA, OTHER, si

LENGTHS = {"image": 1024, "pathfinder": 1024, "listops": 2000, "retrieval": 4000, "text": 4096, "pathx": 16384}
LENGTH_TICKS = [(1024, "1K"), (2000, "2K"), (4096, "4K"), (16384, "16K")]
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
    if (number) return {num: parseFloat(number[1].replace("\\u2212", "-")) * (scale[number[2]] || 1)};
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
th, td { padding: 3px 8px; border-bottom: 1px solid #e2e8f0; text-align: left; white-space: nowrap; }
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
    label: str
    color: str
    points: list  # (x, y, tooltip)
    line: bool = False
    hollow: bool = False
    dashed: bool = False


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from lo to hi."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks for a log10 axis spanning 10**lo to 10**hi: powers of ten, and 2 and 5 times them if few."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    steps = (1,) if hi - lo > 3 else (1, 2, 5)
    return [(m * 10.0 ** k, si(m * 10.0 ** k)) for k in decades for m in steps if lo <= math.log10(m * 10.0 ** k) <= hi]


def _padded(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo or max(abs(lo) * 0.1, 1.0)
    return lo - 0.08 * span, hi + 0.08 * span


def plot(title: str, series: list[Series], x_label: str, y_label: str, log_x=False, x_ticks=None,
         width=WIDTH) -> str:
    """One SVG chart with its legend; x on a log10 scale when log_x."""
    to_x = math.log10 if log_x else float
    points = [(to_x(x), y) for s in series for x, y, _ in s.points]
    x0, x1 = _padded(min(p[0] for p in points), max(p[0] for p in points))
    y0, y1 = _padded(min(p[1] for p in points), max(p[1] for p in points))

    def px(x):
        return LEFT + (to_x(x) - x0) / (x1 - x0) * (width - LEFT - RIGHT)

    def py(y):
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    if x_ticks is None:
        x_ticks = _log_ticks(x0, x1) if log_x else [(v, f"{v:g}") for v in _ticks(x0, x1)]
    bottom, right = HEIGHT - BOTTOM, width - RIGHT
    svg = [f'<svg class="plot" viewBox="0 0 {width} {HEIGHT}" width="{width}" height="{HEIGHT}" role="img">',
           f"<title>{escape(title)}</title>", f'<text class="title" x="{LEFT}" y="16">{escape(title)}</text>']
    for v in _ticks(y0, y1):
        svg.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{py(v):.1f}" y2="{py(v):.1f}"/>'
                   f'<text x="{LEFT - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v, text in x_ticks:
        if x0 <= to_x(v) <= x1:
            svg.append(f'<line class="grid" x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{TOP}" y2="{bottom}"/>'
                       f'<text x="{px(v):.1f}" y="{bottom + 14}" text-anchor="middle">{escape(text)}</text>')
    svg.append(f'<path class="axis" d="M{LEFT},{TOP}V{bottom}H{right}" fill="none"/>'
               f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text transform="rotate(-90)" x="{-(TOP + bottom) / 2}" y="13" text-anchor="middle">'
               f"{escape(y_label)}</text>")
    for s in series:
        ordered = sorted(s.points, key=lambda p: p[0]) if s.line else s.points
        if s.line and len(ordered) > 1:
            dash = ' stroke-dasharray="4 3"' if s.dashed else ""
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in ordered)
            svg.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.5"{dash} points="{path}"/>')
        fill = "white" if s.hollow else s.color
        svg += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" stroke="{s.color}">'
                f"<title>{escape(tip)}</title></circle>" for x, y, tip in ordered]
    svg.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="color:{s.color}">{"○" if s.hollow else "●"}'
                     f"{'┄' if s.dashed else ''}</span>{escape(s.label)}</li>" for s in series if s.label)
    return (f'<figure>{"".join(svg)}<figcaption><ul class="legend" style="max-width:{width}px">{legend}</ul>'
            "</figcaption></figure>")


def _table(table: pd.DataFrame) -> str:
    columns = [c for c in table.columns if c != "_group"]
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    bodies = []
    for _, group in table.groupby("_group", sort=False):
        rows = []
        for i, row in enumerate(group.to_dict("records")):
            kind = "gap" if i else "ours" if row["Entry"].startswith("ours") else "published"
            rows.append(f'<tr class="{kind}">' + "".join(f"<td>{escape(str(row[c]))}</td>" for c in columns) + "</tr>")
        bodies.append("<tbody>" + "".join(rows) + "</tbody>")
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead>{"".join(bodies)}</table>'


def _describe(cell: dict) -> str:
    data = f", data {cell['data_fingerprint'][:8]}" if cell.get("data_fingerprint") else ""
    return f"{cell['model']} ({cell['entry']}, {cell['pretraining']}{data})"


def _task_order(tasks) -> list[str]:
    known = [*LRA, *OTHER]
    return [t for t in known if t in tasks] + sorted(set(tasks) - set(known))


def _throughput(ours: pd.DataFrame, color) -> str:
    cells = ours[(ours.task != "avg") & ours.tokens_per_s.notna() & (ours.tokens_per_s > 0)]
    figures = []
    for task in _task_order(set(cells.task)):
        here = cells[cells.task == task]
        series = [Series(model, color(model), [(c["tokens_per_s"], c["mean"], f"{_describe(c)}: {c['mean']:.1f}% "
                                                f"at {si(c['tokens_per_s'])} tokens/s") for c in g.to_dict("records")])
                  for model, g in here.groupby("model")]
        figures.append(plot(LRA.get(task) or OTHER.get(task) or task, series, "training tokens/s (log)",
                            "test accuracy %", log_x=True))
    return "".join(figures) or "<p>No completed run with a measured throughput yet.</p>"


def _by_length(ours: pd.DataFrame, published: pd.DataFrame, color) -> str:
    series = []
    newest = ours[(ours.data_rank == 0) & ours.task.isin(list(LENGTHS))]
    for (model, entry, pretraining), g in newest.groupby(["model", "entry", "pretraining"]):
        points = [(LENGTHS[c["task"]], c["mean"], f"{_describe(c)} on {c['task']}: {c['mean']:.1f}%")
                  for c in g.to_dict("records")]
        series.append(Series(f"{model} — ours: {entry}, {pretraining}", color(model), points, line=True))
    shown = published[published.task.isin(list(LENGTHS)) & published["mean"].notna()]
    for (model, entry), g in shown.groupby(["model", "entry"], sort=False):
        points = [(LENGTHS[c["task"]], c["mean"], f"{model} (published: {entry}) on {c['task']}: {c['mean']}%")
                  for c in g.to_dict("records")]
        series.append(Series(f"{model} — published: {entry}", color(model), points, hollow=True))
    if not series:
        return "<p>No LRA results yet.</p>"
    return plot("Accuracy by sequence length", series, "sequence length (log)", "test accuracy %", log_x=True,
                x_ticks=LENGTH_TICKS, width=2 * WIDTH)


def _history(run: dict, field: str, scale: float = 1.0) -> list[tuple[float, float]]:
    return [(h["epoch"], scale * h[field]) for h in run["history"]
            if all(isinstance(h.get(k), (int, float)) and math.isfinite(h[k]) for k in ("epoch", field))]


def _curves(runs: pd.DataFrame, color) -> str:
    with_history = runs[runs.history.map(len) > 0]
    best = with_history.sort_values("val_acc", na_position="first", kind="stable").groupby(CELL).tail(1)
    figures = []
    for task in _task_order(set(best.task)):
        accuracy, losses = [], []
        for run in best[best.task == task].to_dict("records"):
            who, tip = _describe(run), f"{_describe(run)}, run {run['run_id']}"
            accuracy.append(Series(who, color(run["model"]), [(e, v, f"{tip}: epoch {e:g}, val_acc {v:.1f}%")
                                                              for e, v in _history(run, "val_acc", 100)], line=True))
            for field, dashed in (("train_loss", False), ("val_loss", True)):  # one legend line per run
                points = [(e, v, f"{tip}: epoch {e:g}, {field} {v:.3g}") for e, v in _history(run, field)]
                losses.append(Series("" if dashed else who, color(run["model"]), points, line=True, dashed=dashed))
        name = LRA.get(task) or OTHER.get(task) or task
        figures += [plot(f"{name}: {title}", [s for s in kept if s.points], "epoch", axis)
                    for title, axis, kept in (("validation accuracy", "val_acc %", accuracy), ("losses", "loss", losses))
                    if any(s.points for s in kept)]
    return "".join(figures) or "<p>No completed run with a per-epoch history yet.</p>"


def page(table: pd.DataFrame, long: pd.DataFrame, runs: pd.DataFrame, intro: str, notes: list[str]) -> str:
    """The whole HTML document."""
    models = sorted(set(long.model))

    def color(model):
        return PALETTE[models.index(model) % len(PALETTE)]

    ours, published = long[long.kind == "ours"], long[long.kind == "published"]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    code = re.sub(r"`([^`]*)`", r"<code>\1</code>", escape(intro))
    lengths = ", ".join(f"{LRA[t]} {n}" for t, n in LENGTHS.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Long-Range Arena leaderboard</title><style>{STYLE}</style></head><body>",
        "<h1>Long-Range Arena leaderboard</h1>", f"<p>{code}</p>",
        "<p>Click a column heading to sort by it (again to reverse).</p>",
        f'<div class="wrap">{_table(table)}</div>',
        '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>",
        "<h2>Accuracy against training throughput</h2>",
        "<p>One point per cell: the mean test accuracy of its runs against their mean training tokens/s.</p>",
        f'<div class="plots">{_throughput(ours, color)}</div>',
        "<h2>Accuracy against sequence length</h2>",
        f"<p>Tokens per example: {lengths} (Retrieval: two documents of 4000). Filled: our rows on each "
        "task's newest data (lines join one row's tasks); hollow: published rows.</p>",
        f'<div class="plots">{_by_length(ours, published, color)}</div>',
        "<h2>Training curves</h2>",
        "<p>The best run of each cell (highest val_acc, the metric the checkpoint is chosen on), per epoch; "
        "losses: training solid, validation dashed.</p>",
        f'<div class="plots">{_curves(runs, color)}</div>',
        f"<script>{SCRIPT}</script>", "</body></html>", ""])
