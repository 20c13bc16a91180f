"""Results bundles: the raw results behind a docs page, committed beside it, from which the page is regenerated.

A bundle is a folder (`<page>.data/` next to `<page>.md`) written by `export` from one or more results stores:

- `runs.csv`: one row per completed run (the latest of each config hash): the store's columns (run_id, sweep, status,
  method, dataset, model, noise_kind, noise_rate, noise_rate_actual, seed, config_hash, epochs, epochs_done,
  test_acc_last, test_acc_at_best_val, val_acc_best, best_epoch, train_time_s, samples_per_s) and `tags`, `oracle`,
  `settings_applied`, `strategies`, `tuned` (a tuned run's budget), `hyperparameters` (JSON where they are lists or
  mappings);
- `epochs.csv`: one row per (run_id, epoch): every column of each run's `metrics.csv` (training and evaluation
  metrics, strategy metrics, `train_s`, `train_s_total`, `lr`, ...), numbers to 7 significant digits;
- `<name>.csv` for each per-run file a source names in its `files` (e.g. `fisher_trace.csv`, the per-measurement
  Fisher trace), rows prefixed with `run_id`;
- `manifest.json`: the stores and filters it was exported from, the files, the run count, the export date.

Floats are written with 7 significant digits (the metrics are float32 on the device, so nothing is lost that was
measured); a page's report reads only the bundle, so its numbers are reproducible from what is committed.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlearn.errors import ConfigError
from robustlearn.leaderboard.aggregate import dedupe
from robustlearn.tracking.store import COLUMNS, ResultsStore

RUN_COLUMNS = [c for c in COLUMNS if c not in ("error", "run_dir", "finished_at", "extra")]
EXTRA_COLUMNS = ("oracle", "settings_applied", "strategies", "tuned", "hyperparameters")
LIST_COLUMNS = ("tags", "settings_applied", "strategies", "hyperparameters")  # JSON cells
INT_COLUMNS = ("seed", "epochs", "epochs_done", "best_epoch", "epoch", "step")


@dataclass(frozen=True)
class Source:
    """Runs of one results store, filtered by equal column values (e.g. {"sweep": "critical_periods_cpu"}), and
    the per-run files besides metrics.csv to export for them."""

    results: str
    where: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()


def fmt(value: Any) -> str:
    """A cell: empty for None/NaN, 7 significant digits for floats, JSON for lists, text otherwise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.7g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: fmt(row.get(k)) for k in header})
    tmp.replace(path)


def _read_run_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def collect(sources: Sequence[Source]) -> list[dict]:
    """The completed runs of every source, one per config hash (the latest), in (sweep, method, seed) order; each
    run's `_files` are its source's per-run files."""
    rows: list[dict] = []
    for src in sources:
        path = Path(src.results)
        if not path.is_file():
            raise ConfigError(f"--results: no results store at {path}; run the page's sweep first (its command is "
                              "at the top of the page).", "results")
        try:
            rows += [{**r, "_files": src.files} for r in ResultsStore(path).rows(src.where)]
        except KeyError as exc:
            raise ConfigError(f"where: '{exc.args[0]}' is not a column of the results store.", "where") from exc
    runs = dedupe(rows)
    for run in runs:
        if run.get("hyperparameters") is None:
            run["hyperparameters"] = recorded_hyperparameters(run)
    return sorted(runs, key=lambda r: (str(r.get("sweep")), str(r.get("method")), json.dumps(r.get("tags")),
                                       r.get("seed") or 0, r["run_id"]))


def recorded_hyperparameters(run: dict) -> dict | None:
    """A run's hyperparameters from the resolved config in its folder, for a run recorded before results carried
    them; None without that file."""
    from omegaconf import OmegaConf

    from robustlearn.config import hyperparameters

    path = Path(str(run.get("run_dir"))) / "config.yaml"
    return hyperparameters(OmegaConf.load(path)) if path.is_file() else None


def export(sources: Sequence[Source], out: str | Path) -> dict:
    """Write the bundle of `sources` to the folder `out` (replacing its files); returns the manifest."""
    runs = collect(sources)
    files = list(dict.fromkeys(f for s in sources for f in s.files))
    if not runs:
        raise ConfigError("export: the results stores hold no completed run that matches the filters "
                          f"({', '.join(f'{s.results} {s.where}' for s in sources)}).", "where")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "runs.csv", [*RUN_COLUMNS, *EXTRA_COLUMNS], runs)

    epoch_header: list[str] = ["run_id"]
    epoch_rows: list[dict] = []
    per_file: dict[str, tuple[list[str], list[dict]]] = {name: (["run_id"], []) for name in files}
    for run in runs:
        run_dir = Path(run["run_dir"])
        metrics = run_dir / "metrics.csv"
        if not metrics.is_file():
            raise ConfigError(f"export: run {run['run_id']} has no metrics.csv in {run_dir}; the store and the run "
                              "folders must come from the same machine.", "results")
        header, rows = _read_run_csv(metrics)
        epoch_header += [c for c in header if c not in epoch_header]
        epoch_rows += [{"run_id": run["run_id"], **{k: _number(v) for k, v in r.items() if v != ""}} for r in rows]
        for name in run["_files"]:
            path = run_dir / name
            if path.is_file():
                header, rows = _read_run_csv(path)
                cols, kept = per_file[name]
                cols += [c for c in header if c not in cols]
                kept += [{"run_id": run["run_id"], **{k: _number(v) for k, v in r.items() if v != ""}} for r in rows]
    _write_csv(out / "epochs.csv", epoch_header, epoch_rows)
    for name, (cols, kept) in per_file.items():
        _write_csv(out / name, cols, kept)
    manifest = {
        "sources": [{"results": s.results, "where": s.where, "files": list(s.files)} for s in sources],
        "runs": len(runs),
        "files": ["runs.csv", "epochs.csv", *files],
        "exported": datetime.date.today().isoformat(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---- reading -----------------------------------------------------------------------------------------------------
def _parse(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in LIST_COLUMNS:
        return json.loads(text)
    if column in INT_COLUMNS:
        return int(float(text))
    try:
        return float(text)
    except ValueError:
        return text


def read_table(path: Path) -> list[dict]:
    """A bundle CSV as dicts of parsed values (numbers, lists, None for empty cells)."""
    with path.open() as f:
        return [{k: _parse(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


@dataclass
class Bundle:
    """A page's committed results: `runs` (one dict per run), `epochs` (run_id -> its per-epoch rows), `tables`
    (file name -> rows of the per-run files) and the manifest."""

    path: Path
    runs: list[dict]
    epochs: dict[str, list[dict]]
    tables: dict[str, list[dict]]
    manifest: dict

    def series(self, run_id: str, column: str) -> list[tuple[int, float]]:
        """(epoch, value) of one metrics column of one run, epochs without a value left out."""
        return [(r["epoch"], r[column]) for r in self.epochs.get(run_id, []) if r.get(column) is not None]


def load(path: str | Path) -> Bundle:
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{path}: not a results bundle (no manifest.json); write one with `robustlearn export` "
                          "or `robustlearn report PAGE --export`.", str(path))
    manifest = json.loads(manifest_path.read_text())
    runs = read_table(path / "runs.csv")
    epochs: dict[str, list[dict]] = {}
    for row in read_table(path / "epochs.csv"):
        epochs.setdefault(row["run_id"], []).append(row)
    tables = {name: read_table(path / name) for name in manifest.get("files", [])
              if name not in ("runs.csv", "epochs.csv") and (path / name).is_file()}
    return Bundle(path, runs, epochs, tables, manifest)
