"""Test accuracy against wall-clock time for the runs of a sweep: a table and a plot beside uniform training.

    robustlearn sweep configs/sweeps/fmnist_sampling.yaml --workers 1
    python benchmarks/time_to_accuracy.py --results runs/sampling/results.sqlite --where sweep=fmnist_sampling \
        --out docs/benchmarks/importance_sampling

writes `<out>.md` (the table) and `<out>_time.png` (the curves); see robustlearn/leaderboard/wallclock.py for what
each column means. Runs are compared on training time (`train_s_total`), evaluation left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.leaderboard.wallclock import compare, curves, markdown, plot  # noqa: E402
from robustlearn.tracking.store import ResultsStore  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results.sqlite of the sweep")
    p.add_argument("--where", nargs="*", default=[], help="column=value filters, e.g. sweep=fmnist_sampling")
    p.add_argument("--baseline", default="ce", help="the uniform-training method (default: ce)")
    p.add_argument("--out", required=True, help="path stem of the table (.md) and the plot (_time.png)")
    a = p.parse_args()
    if not Path(a.results).is_file():
        sys.exit(f"time_to_accuracy: results file '{a.results}' not found.")
    where = dict(item.split("=", 1) for item in a.where)
    found = curves(ResultsStore(a.results).rows(where))
    if not found:
        sys.exit(f"time_to_accuracy: no completed runs with metrics.csv in '{a.results}' for {where or 'all rows'}.")
    text = markdown(compare(found, a.baseline))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    Path(f"{out}_time.png").write_bytes(plot(found, "test accuracy against training time"))
    print(text)


if __name__ == "__main__":
    main()
