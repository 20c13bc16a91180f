"""The leaderboard as one self-contained HTML page: inline CSS and JavaScript, plots as base64 PNG.

Every table sorts by the column whose header is clicked (numbers by value, text alphabetically, missing
values last; a second click reverses). Cells carry their raw value in `data-sort`. Under each table, the note with
the rules of its intervals, marks and ranks (the Markdown's).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

from robustlearn.leaderboard.aggregate import Leaderboard
from robustlearn.leaderboard.plots import Plot
from robustlearn.leaderboard.render import (
    NOTE,
    SUMMARY_NOTE,
    SUMMARY_TITLE,
    cell_note,
    cell_sorts,
    cell_values,
    headers,
    summary_header,
    summary_values,
)

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222;
       margin: 2rem auto; max-width: 72rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
th { cursor: pointer; user-select: none; background: #f4f4f4; white-space: nowrap; }
th:hover { background: #e8e8e8; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
td.best { font-weight: bold; background: #eef7ee; }
.note { color: #555; max-width: 60rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""

JS = """
function sortKey(td) {
  var v = td.getAttribute("data-sort");
  if (v === null) return {kind: 1, text: td.textContent.trim()};
  if (v === "") return {kind: 2};
  return {kind: 0, num: parseFloat(v)};
}
function compare(a, b, dir) {
  if (a.kind === 2 || b.kind === 2) return (a.kind === 2) - (b.kind === 2);
  if (a.kind === 0 && b.kind === 0) return dir * (a.num - b.num);
  return dir * String(a.text).localeCompare(String(b.text));
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) { return compare(sortKey(a.cells[col]), sortKey(b.cells[col]), dir); });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _code(text: str) -> str:
    """Escaped text with `backticks` as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _td(text: str, best: bool, sort: float | int | None | str, is_text: bool = False) -> str:
    classes = " ".join(c for c in ("best" if best else "", "text" if is_text else "") if c)
    attr = f' class="{classes}"' if classes else ""
    if not is_text:
        attr += f' data-sort="{"" if sort is None else repr(sort)}"'  # missing: empty, sorted last
    return f"<td{attr}>{html.escape(text)}</td>"


def _table(table_id: str, header: Sequence[str], rows: list[str], text_cols: set[int]) -> str:
    heads = "".join(
        f'<th{" class=text" if i in text_cols else ""} title="sort by this column">{html.escape(h)}</th>'
        for i, h in enumerate(header)
    )
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')  # fmt: skip


def page(lb: Leaderboard, plots: Sequence[Plot] = (), title: str = "robustlearn leaderboard") -> str:
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{lb.n_runs} completed runs. {_code(NOTE)}</p>',
    ]
    parts.append(f"<h2>{html.escape(SUMMARY_TITLE)}</h2>")
    rows = []
    for label in lb.summary.labels:
        values = summary_values(lb, label)
        sorts = [label, *(lb.summary.value.get((label, i)) for i in range(len(lb.cells))),
                 lb.summary.mean_rank.get(label)]  # fmt: skip
        tds = [_td(t, b, s, is_text=(i == 0)) for i, ((t, b), s) in enumerate(zip(values, sorts))]
        rows.append(f"<tr>{''.join(tds)}</tr>")
    parts.append(_table("summary", summary_header(lb), rows, {0}))
    parts.append(f'<p class="note">{_code(SUMMARY_NOTE)}</p>')
    for k, cell in enumerate(lb.cells):
        parts.append(f"<h2>{html.escape(cell.title)}</h2>")
        rows = []
        columns = headers(cell.baseline)
        for r in cell.rows:
            texts, sorts = cell_values(cell, r), cell_sorts(r)
            tds = [_td(*texts[c], sorts[c], is_text=(c == "label")) for c in columns]
            rows.append(f"<tr>{''.join(tds)}</tr>")
        parts.append(_table(f"cell-{k}", list(columns.values()), rows, {1}))
        parts.append(f'<p class="note">{_code(cell_note(cell, lb.draws))}</p>')
    if plots:
        parts.append("<h2>Plots</h2>")
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(plot.title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(plot.title)}</figcaption></figure>")  # fmt: skip
    body = "\n".join(parts)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style></head>\n<body>\n{body}\n<script>{JS}</script>\n</body></html>\n"
    )
