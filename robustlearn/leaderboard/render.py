"""Leaderboard as Markdown (tables for people and READMEs) and CSV (one flat table for scripts).

Accuracies are shown in percent with two decimals, `mean ± std`, then `mean [95 % t interval]`; a single run shows
its value alone. The difference to the baseline is in points, `+1.01 [+0.42, +1.60] *` (paired 95 % t interval;
`*` where the Holm-adjusted p < 0.05), the rank `3 [2–5]` (bootstrap 2.5 %–97.5 % percentiles). In Markdown the
best value of each column is bold, and a note under each table states the statistical rules. The CSV keeps raw
fractions at full precision, one row per (cell, method), empty fields where there is no value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from robustlearn.leaderboard.aggregate import METRICS, Cell, Leaderboard, MethodRow, Stat
from robustlearn.leaderboard.stats import ALPHA, LEVEL, Interval, Paired

RANK_HEADER = "Rank (by mean test acc @ best val)"
MEAN_RANK_HEADER = "Mean rank (rows sorted by it, lowest first)"
SUMMARY_TITLE = "Summary: test accuracy at best validation (%), rows sorted by mean rank"
NOTE = (
    "Mean ± sample std (ddof = 1) over seeds, in percent; a single run shows no std. Rank by test accuracy "
    "at the epoch of best validation accuracy; equal means share the best rank. Time per epoch relative to "
    "`ce` in the same setting. Best per column in bold. † marks a method that reads oracle information (the true "
    "transition matrix, the true noise rate): a reference point, not a practical method, listed but neither ranked "
    "nor marked best."
)
CSV_COLUMNS = (
    "dataset", "noise_kind", "noise_rate", "method", "label", "n", "rank",
    "test_acc_at_best_val_mean", "test_acc_at_best_val_std", "test_acc_last_mean", "test_acc_last_std",
    "epoch_time_s", "epoch_time_rel_ce",
    "test_acc_at_best_val_ci_low", "test_acc_at_best_val_ci_high", "test_acc_last_ci_low", "test_acc_last_ci_high",
    "baseline", "delta", "delta_low", "delta_high", "n_paired", "p", "p_holm", "marked", "rank_low", "rank_high",
)  # fmt: skip


def headers(baseline: str) -> dict[str, str]:
    """Column key -> header of a cell table."""
    return {
        "rank": RANK_HEADER,
        "label": "Method",
        "n": "n",
        "test_acc_at_best_val": "Test acc @ best val (%)",
        "ci:test_acc_at_best_val": "Test acc @ best val, mean [95 % CI] (%)",
        "delta": f"Δ vs {baseline} @ best val [95 % CI] (points)",
        "test_acc_last": "Test acc, last epoch (%)",
        "ci:test_acc_last": "Test acc, last epoch, mean [95 % CI] (%)",
        "time_rel": "Time / epoch (× ce)",
    }


def cell_note(cell: Cell, draws: int) -> str:
    """The rules behind a cell table's intervals, marks and ranks, in one paragraph."""
    b, m = cell.baseline, cell.compared
    level = f"{100 * LEVEL:g} %"
    tail = f"{100 * (1 - LEVEL) / 2:g} %–{100 * (1 + LEVEL) / 2:g} %"
    if cell.row(b) is None:
        delta = f"Δ: none, `{b}` (the baseline) is not in this table. "
    else:
        delta = (
            f"Δ vs `{b}`: method − `{b}` in points, paired over the seeds both share (runs matched by `seed`), "
            f"with the {level} t interval of the differences; – where fewer than 2 seeds are shared. * marks a "
            f"Holm-adjusted two-sided paired t-test p < {ALPHA:g}: Holm over the m = {m} method{'' if m == 1 else 's'} "
            f"compared with `{b}` in this table (oracle rows included) at α = {ALPHA:g}. "
        )
    return (
        f"Mean [{level} CI]: Student-t interval over the n seeds, mean ± t({(1 + LEVEL) / 2:g}, n − 1) · s / √n "
        "(none for n = 1). "
        f"{delta}Rank [{tail}]: competition rank of the mean test accuracy at best validation, with the "
        f"{tail} percentiles of the rank over B = {draws} bootstrap draws of each method's seeds. Rows sorted by "
        "rank; oracle rows (†) are listed after them, unranked: they do not shift the others' ranks."
    )


SUMMARY_NOTE = (
    "Rows sorted by mean rank: the average of a method's ranks over the tables where it has one, lowest first; "
    "methods never ranked (oracle rows †) last; ties by name. Best per column in bold, oracle rows excepted."
)


def pct(s: Stat | None) -> str:
    if s is None:
        return "–"
    return f"{100 * s.mean:.2f}" if s.std is None else f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def interval(c: Interval | None) -> str:
    """`84.27 [83.90, 84.64]` in percent; the mean alone for n = 1."""
    if c is None:
        return "–"
    if c.low is None or c.high is None:
        return f"{100 * c.mean:.2f}"
    return f"{100 * c.mean:.2f} [{100 * c.low:.2f}, {100 * c.high:.2f}]"


def difference(d: Paired | None, marked: bool, is_baseline: bool) -> str:
    """`+1.01 [+0.42, +1.60] *` in points; `baseline` for the baseline's own row, – without a comparison."""
    if is_baseline:
        return "baseline"
    if d is None:
        return "–"
    return f"{100 * d.delta:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" + (" *" if marked else "")


def rank_text(r: MethodRow) -> str:
    """`3 [2–5]`; – for an unranked row."""
    if r.rank is None:
        return "–"
    return f"{r.rank} [{r.rank_low}–{r.rank_high}]" if r.rank_low is not None else str(r.rank)


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def cell_values(cell: Cell, r: MethodRow) -> dict[str, tuple[str, bool]]:
    """Column -> (text, is best) for one method row, in the order of `headers`."""
    best = lambda m: r.label in cell.best.get(m, set())
    return {
        "rank": (rank_text(r), False),
        "label": (r.label, False),
        "n": (str(r.n), False),
        "test_acc_at_best_val": (pct(r.stats["test_acc_at_best_val"]), best("test_acc_at_best_val")),
        "ci:test_acc_at_best_val": (interval(r.ci.get("test_acc_at_best_val")), False),
        "delta": (difference(r.delta, r.marked, r.label == cell.baseline), False),
        "test_acc_last": (pct(r.stats["test_acc_last"]), best("test_acc_last")),
        "ci:test_acc_last": (interval(r.ci.get("test_acc_last")), False),
        "time_rel": (ratio(r.time_rel), best("time_rel")),
    }


def cell_sorts(r: MethodRow) -> dict[str, float | int | None]:
    """Column -> the raw value a column sorts by (HTML)."""
    return {"rank": r.rank, "label": None, "n": r.n, **{m: r.mean(m) for m in METRICS},
            **{f"ci:{m}": r.mean(m) for m in METRICS}, "delta": r.delta.delta if r.delta else None,
            "time_rel": r.time_rel}  # fmt: skip


def summary_header(lb: Leaderboard) -> list[str]:
    return ["Method", *(c.title for c in lb.cells), MEAN_RANK_HEADER]


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


def cell_markdown(cell: Cell, draws: int) -> str:
    """One cell's table and the note with its rules (the leaderboard's and the generated pages' form)."""
    rows = [list(cell_values(cell, r).values()) for r in cell.rows]
    return "\n".join([*_md_table(list(headers(cell.baseline).values()), rows, text_cols={1}), "",
                      cell_note(cell, draws)])


def markdown(lb: Leaderboard, plots: Sequence[tuple[str, str]] = ()) -> str:
    """The leaderboard in Markdown; `plots` are (title, relative path) images to link at the end."""
    lines = ["# Leaderboard", "", f"{lb.n_runs} completed runs. {NOTE}", ""]
    lines += [f"## {SUMMARY_TITLE}", ""]
    rows = [summary_values(lb, label) for label in lb.summary.labels]
    lines += [*_md_table(summary_header(lb), rows, text_cols={0}), "", SUMMARY_NOTE, ""]
    for cell in lb.cells:
        lines += [f"## {cell.title}", "", cell_markdown(cell, lb.draws), ""]
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
            cis = [(_num(c.low), _num(c.high)) if c else ("", "") for c in (r.ci.get(m) for m in METRICS)]
            d = r.delta
            delta = (_num(d.delta), _num(d.low), _num(d.high), d.n, _num(d.p)) if d else ("",) * 5
            marked = "" if r.p_holm is None else int(r.marked)
            writer.writerow([
                cell.dataset, cell.noise_kind, _num(cell.noise_rate), r.method, r.label, r.n, _num(r.rank),
                *stats[0], *stats[1], _num(r.epoch_time_s), _num(r.time_rel), *cis[0], *cis[1],
                cell.baseline, *delta, _num(r.p_holm), marked, _num(r.rank_low), _num(r.rank_high),
            ])  # fmt: skip
    return buf.getvalue()
