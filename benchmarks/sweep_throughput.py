"""Sweep throughput: runs per minute with N concurrent workers on one machine (one GPU), against one worker.

Each N runs the same K small runs (seeds 0..K-1 of one experiment) through `robustlearn sweep`'s local runner
into a fresh results store, and times the whole sweep. Several small models share one GPU well: their kernels
are too small to fill it alone. Prints runs/minute and the speed-up over one worker.

    python benchmarks/sweep_throughput.py                                    # Fashion-MNIST subset, cnn
    python benchmarks/sweep_throughput.py --workers 1 2 --runs 4 \\
        --base configs/experiments/synthetic_smoke.yaml                      # a quick CPU check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.sweep import run_sweep  # noqa: E402


def one(base: Path, workers: int, runs: int, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "throughput.yaml"
        spec = {"name": f"throughput_w{workers}", "base": str(base), "seeds": list(range(runs)),
                "overrides": [*overrides, f"output.root={tmp}/runs", "logger.wandb.mode=disabled",
                              "output.save_checkpoint=false"]}
        sweep.write_text(yaml.safe_dump(spec))
        t = time.perf_counter()
        summary = run_sweep(sweep, workers=workers, quiet=True)
        elapsed = time.perf_counter() - t
        if summary.exit_code != 0:
            raise SystemExit(f"the sweep with {workers} workers failed: {summary.failed}")
        return elapsed


def measure(base: Path, workers: list[int], runs: int, overrides: list[str]) -> list[dict]:
    """Seconds, runs per minute and speed-up over the first worker count, for each worker count."""
    rows = []
    for n in workers:
        s = one(Path(base).resolve(), n, runs, overrides)
        rows.append({"workers": n, "seconds": s, "runs_per_min": runs * 60 / s})
    for r in rows:
        r["speedup"] = r["runs_per_min"] / rows[0]["runs_per_min"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=str(ROOT / "configs/experiments/fmnist_ce.yaml"))
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--runs", type=int, default=8, help="runs per sweep (>= the largest N)")
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", default=["data.subset=20000", "trainer.epochs=3"])
    a = p.parse_args()
    rows = measure(Path(a.base), a.workers, a.runs, a.overrides)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{a.runs} runs of {Path(a.base).name} {' '.join(a.overrides)}")
    print(f"{'workers':>7} {'seconds':>9} {'runs/min':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['seconds']:>9.1f} {r['runs_per_min']:>9.2f} {r['speedup']:>9.2f}")
    if a.json:
        base = Path(a.base).resolve()
        Path(a.json).write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "device": device,
            "base": str(base.relative_to(ROOT) if base.is_relative_to(ROOT) else base), "runs": a.runs,
            "overrides": a.overrides, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
