"""Leaderboard as Markdown (tables for people and READMEs) and CSV (one flat table for scripts).

Accuracies are shown in percent with two decimals, `mean ± std`; a single run shows its value alone. In
Markdown the best value of each column is bold. The CSV keeps raw fractions at full precision, one row per
(cell, method), std empty when n = 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from robustlearn.leaderboard.aggregate import METRICS, Cell, Leaderboard, MethodRow, Stat

HEADERS = {
    "rank": "Rank",
    "label": "Method",
    "n": "n",
    "test_acc_at_best_val": "Test acc @ best val (%)",
    "test_acc_last": "Test acc, last epoch (%)",
    "time_rel": "Time / epoch (× ce)",
}
NOTE = (
    "Mean ± sample std (ddof = 1) over seeds, in percent; a single run shows no std. Rank by test accuracy "
    "at the epoch of best validation accuracy; equal means share the best rank. Time per epoch relative to "
    "`ce` in the same setting. Best per column in bold. † marks a method that reads oracle information (the true "
    "transition matrix, the true noise rate): a reference point, not a practical method."
)
CSV_COLUMNS = (
    "dataset", "noise_kind", "noise_rate", "method", "label", "n", "rank",
    "test_acc_at_best_val_mean", "test_acc_at_best_val_std", "test_acc_last_mean", "test_acc_last_std",
    "epoch_time_s", "epoch_time_rel_ce",
)  # fmt: skip


def pct(s: Stat | None) -> str:
    if s is None:
        return "–"
    return f"{100 * s.mean:.2f}" if s.std is None else f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def cell_values(cell: Cell, r: MethodRow) -> dict[str, tuple[str, bool]]:
    """Column -> (text, is best) for one method row."""
    return {
        "rank": ("–" if r.rank is None else str(r.rank), False),
        "label": (r.label, False),
        "n": (str(r.n), False),
        **{m: (pct(r.stats[m]), r.label in cell.best.get(m, set())) for m in METRICS},
        "time_rel": (ratio(r.time_rel), r.label in cell.best.get("time_rel", set())),
    }


def summary_header(lb: Leaderboard) -> list[str]:
    return ["Method", *(c.title for c in lb.cells), "Mean rank"]


def summary_values(lb: Leaderboard, label: str) -> list[tuple[str, bool]]:
    s = lb.summary
    out: list[tuple[str, bool]] = [(label, False)]
    for i in range(len(lb.cells)):
        v = s.value.get((label, i))
        out.append(("–" if v is None else f"{100 * v:.2f}", label in s.best.get(i, set())))
    mr = s.mean_rank.get(label)
    out.append(("–" if mr is None else f"{mr:.2f}", False))
    return out


def _md_row(values: Sequence[tuple[str, bool]]) -> str:
    esc = lambda t: t.replace("|", "\\|")
    return "| " + " | ".join(f"**{esc(t)}**" if bold else esc(t) for t, bold in values) + " |"


def _md_table(header: Sequence[str], rows: list[list[tuple[str, bool]]], text_cols: set[int]) -> list[str]:
    align = ["---" if i in text_cols else "---:" for i in range(len(header))]
    head = _md_row([(h, False) for h in header])
    return [head, "| " + " | ".join(align) + " |", *(_md_row(r) for r in rows)]


def markdown(lb: Leaderboard, plots: Sequence[tuple[str, str]] = ()) -> str:
    """The leaderboard in Markdown; `plots` are (title, relative path) images to link at the end."""
    lines = ["# Leaderboard", "", f"{lb.n_runs} completed runs. {NOTE}", ""]
    lines += ["## Summary: test accuracy at best validation (%)", ""]
    rows = [summary_values(lb, label) for label in lb.summary.labels]
    lines += [*_md_table(summary_header(lb), rows, text_cols={0}), ""]
    for cell in lb.cells:
        lines += [f"## {cell.title}", ""]
        rows = [list(cell_values(cell, r).values()) for r in cell.rows]
        lines += [*_md_table(list(HEADERS.values()), rows, text_cols={1}), ""]
    for title, path in plots:
        lines += [f"![{title}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _num(x: float | int | None) -> str:
    return "" if x is None else repr(x)


def to_csv(lb: Leaderboard) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in lb.cells:
        for r in cell.rows:
            stats = [(_num(s.mean), _num(s.std)) if s else ("", "") for s in (r.stats[m] for m in METRICS)]
            writer.writerow([
                cell.dataset, cell.noise_kind, _num(cell.noise_rate), r.method, r.label, r.n, _num(r.rank),
                *stats[0], *stats[1], _num(r.epoch_time_s), _num(r.time_rel),
            ])  # fmt: skip
    return buf.getvalue()
