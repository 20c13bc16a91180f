"""`robustlearn leaderboard`: read the results store, filter, aggregate, render, write.

`--where KEY=VALUE` keeps rows whose store column KEY equals VALUE (numbers compared as numbers; `tags=x`
keeps rows tagged x); the same key given twice keeps rows matching either value; different keys must all match.
`--baseline LABEL` (default `ce`) is the method every other one is compared with, cell by cell. A baseline given
explicitly that labels no row of any cell is an error, raised before anything is written; the default one may be
absent (e.g. filtered out with `--where method=gce`): the tables then have no comparisons.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustlearn.errors import ConfigError, DataError, did_you_mean
from robustlearn.leaderboard.aggregate import REFERENCE, Leaderboard, aggregate
from robustlearn.leaderboard.html import page
from robustlearn.leaderboard.plots import make_plots, save_plots
from robustlearn.leaderboard.render import markdown, to_csv
from robustlearn.tracking.store import COLUMNS, ResultsStore

FORMATS = {"md": "md", "markdown": "md", "csv": "csv", "html": "html"}
ALLOWED = ", ".join(c for c in COLUMNS if c != "extra")


def parse_where(items: Sequence[str]) -> dict[str, list[Any]]:
    """`KEY=VALUE` filters -> column -> accepted values, typed as the column."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"where: '{item}' is not KEY=VALUE (e.g. --where noise_rate=0.4).", "where")
        if key not in COLUMNS or key == "extra":
            raise ConfigError(
                f"where: '{key}' is not a column of the results store. Allowed: {ALLOWED}.", key
            )
        kind = COLUMNS[key].split()[0]
        try:
            value: Any = float(text) if kind == "REAL" else int(text) if kind == "INTEGER" else text
        except ValueError as exc:
            raise ConfigError(f"where: {key} holds numbers; '{text}' is not one.", key) from exc
        out.setdefault(key, []).append(value)
    return out


def _matches(row: dict, filters: dict[str, list[Any]]) -> bool:
    for key, values in filters.items():
        got = row.get(key)
        if key == "tags":
            ok = any(v in (got or []) for v in values)
        elif COLUMNS[key].startswith(("REAL", "INTEGER")):
            ok = got is not None and any(math.isclose(float(got), v, rel_tol=1e-9, abs_tol=1e-12) for v in values)
        else:
            ok = got is not None and str(got) in values
        if not ok:
            return False
    return True


def load_rows(results: Path, where: Sequence[str] = ()) -> tuple[Path, list[dict]]:
    """Completed rows of the store at `results` (the file or its folder) that pass the filters."""
    path = results / "results.sqlite" if results.is_dir() else results
    filters = parse_where(where)
    if not path.is_file():
        raise DataError(
            f"results: no results store at '{path}'. Give the results.sqlite of an output root "
            "(runs/results.sqlite by default) after `robustlearn fit` or `robustlearn sweep`.",
            "results",
        )
    rows = [r for r in ResultsStore(path).rows(status=["completed"]) if _matches(r, filters)]
    return path, rows


def check_baseline(lb: Leaderboard) -> None:
    """The baseline must label a row of at least one cell."""
    labels = lb.labels()
    if lb.baseline not in labels:
        raise ConfigError(
            f"--baseline '{lb.baseline}' is no method label in any table."
            + did_you_mean(lb.baseline, sorted(labels)),
            "baseline",
        )


def leaderboard_main(
    results: Path,
    fmt: str = "md",
    out: Path | None = None,
    where: Sequence[str] = (),
    plots_dir: Path | None = None,
    baseline: str | None = None,
) -> str:
    """Render the leaderboard of `results` as md, csv or html, every method compared with `baseline` (None: `ce`,
    which may be absent); write it to `out` and PNG plots to `plots_dir` when given. Returns the rendered text (or a
    one-line message when no completed run matches). A `baseline` given that labels no method of any table is a
    ConfigError (key `baseline`), and nothing is written."""
    kind = FORMATS.get(fmt)
    if kind is None:
        raise ConfigError(f"format: unknown format '{fmt}'. Allowed: md, html, csv.", "format")
    path, rows = load_rows(Path(results), where)
    if not rows:
        filters = f" matching {' '.join(where)}" if where else ""
        return (f"No completed runs in {path}{filters}: nothing to rank yet. Run `robustlearn fit` or "
                "`robustlearn sweep` first, or loosen --where.")  # fmt: skip
    lb = aggregate(rows, baseline=baseline or REFERENCE)
    if baseline is not None:
        check_baseline(lb)
    plots = make_plots(lb) if (kind == "html" or plots_dir is not None) else []
    saved = save_plots(plots, Path(plots_dir)) if plots_dir is not None else []
    if kind == "html":
        text = page(lb, plots)
    elif kind == "csv":
        text = to_csv(lb)
    else:
        base = Path(out).parent if out is not None else Path.cwd()
        links = []
        for plot, p in zip(plots, saved):
            try:
                links.append((plot.title, str(p.resolve().relative_to(base.resolve()))))
            except ValueError:
                links.append((plot.title, str(p.resolve())))
        text = markdown(lb, links)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


def leaderboard_cli(args: argparse.Namespace) -> int:
    """`robustlearn leaderboard` with its parsed options (results, format, out, where, plots, baseline)."""
    out = Path(args.out) if args.out else None
    plots = Path(args.plots) if getattr(args, "plots", None) else None
    baseline = getattr(args, "baseline", None)
    text = leaderboard_main(Path(args.results), args.format, out, list(args.where or []), plots, baseline)
    if out is None or text.startswith("No completed runs"):
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        print(f"wrote {out}" + (f" and plots to {plots}/" if plots else ""))
    return 0
