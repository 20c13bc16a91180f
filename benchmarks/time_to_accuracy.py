"""Test accuracy against wall-clock time for the runs of a sweep: a table and a plot beside uniform training.

    robustlearn sweep configs/sweeps/fmnist_sampling.yaml --workers 1
    python benchmarks/time_to_accuracy.py --results runs/sampling/results.sqlite --where sweep=fmnist_sampling \
        --out docs/benchmarks/importance_sampling

writes `<out>.md` (the tables) and `<out>_time.png` (the curves). Runs are compared on training time
(`train_s_total`), evaluation left out. The table: per method, n, the seeds reaching the target (by default 99 % of the
baseline's mean final test accuracy, below the plateau), the median crossing time, the geometric mean over seeds of
the crossing time over the baseline's on the same seed with a 95 % percentile bootstrap interval, and the test
accuracy at the baseline's median final training time with the paired difference against the baseline (95 % t
interval); then the accuracy at shares of that budget. Definitions: robustlearn/leaderboard/time_to_target.py and
docs/leaderboard.md ("Time to a target accuracy").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.leaderboard.stats import DRAWS, SEED  # noqa: E402
from robustlearn.leaderboard.time_to_target import SHARES, TARGET_SHARE, time_to_target  # noqa: E402
from robustlearn.leaderboard.time_to_target_tables import markdown  # noqa: E402
from robustlearn.leaderboard.wallclock import curves, plot  # noqa: E402
from robustlearn.tracking.store import ResultsStore  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results.sqlite of the sweep")
    p.add_argument("--where", nargs="*", default=[], help="column=value filters, e.g. sweep=fmnist_sampling")
    p.add_argument("--baseline", default="ce", help="the uniform-training method (default: ce)")
    p.add_argument("--out", required=True, help="path stem of the table (.md) and the plot (_time.png)")
    p.add_argument("--target-share", type=float, default=TARGET_SHARE,
                   help=f"target = this share of the baseline's mean final test accuracy (default {TARGET_SHARE})")
    p.add_argument("--shares", type=float, nargs="+", default=list(SHARES),
                   help="shares of the baseline's median final training time at which accuracy is compared "
                        "(1 is always added)")
    p.add_argument("--draws", type=int, default=DRAWS, help=f"bootstrap draws B (default {DRAWS})")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of the bootstrap's generator (default {SEED})")
    a = p.parse_args()
    if not Path(a.results).is_file():
        sys.exit(f"time_to_accuracy: results file '{a.results}' not found.")
    where = dict(item.split("=", 1) for item in a.where)
    found = curves(ResultsStore(a.results).rows(where))
    if not found:
        sys.exit(f"time_to_accuracy: no completed runs with metrics.csv in '{a.results}' for {where or 'all rows'}.")
    if a.baseline not in found:
        sys.exit(f"time_to_accuracy: no completed runs of the baseline '{a.baseline}' with metrics.csv "
                 f"(methods: {', '.join(sorted(found))}).")
    report = time_to_target({name: curve.as_runs() for name, curve in found.items()}, a.baseline, a.target_share,
                            a.shares, a.draws, a.seed)
    text = markdown(report)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    crossings = {m.method: m.mean_crossing for m in report.methods}
    reached = {m.method: (m.reached, m.n) for m in report.methods}
    Path(f"{out}_time.png").write_bytes(plot(found, "test accuracy against training time", report.target, crossings,
                                             reached))
    print(text)


if __name__ == "__main__":
    main()
