"""Per-step cost of every weighting and sampling method against a plain cross-entropy step, side by side in one process.

Each method (a YAML under configs/methods/) trains the same net on the same data and batch size for `--epochs` epochs
in this process, after one warm-up run of CE; a method's time per step is its training time (`train_s` in metrics.csv:
evaluation left out, the strategy's epoch-end work such as a full pass included) over the batches it trained, from
every epoch but the first. The ratio to CE is what the method costs per step; a method that trains on fewer samples
per epoch (pruning) may still cost more per step and less per epoch, so both are printed.

    python benchmarks/sampling.py                                        # Fashion-MNIST subset, cnn, on this device
    python benchmarks/sampling.py --methods ce class_weights presample_upper_bound --epochs 3
    python benchmarks/sampling.py --json out.json data.subset=20000 model.name=resnet_small

Targets on a GPU: weighting ≤ 1.02×, presample with `upper_bound` ≤ 1.25×, with `exact` ≤ 1.5× (docs/performance.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.config import load_config  # noqa: E402
from robustlearn.runner import fit  # noqa: E402

BASE = ROOT / "configs/experiments/fmnist_ce.yaml"
METHODS = ["ce", "class_weights", "sample_weights_oracle", "presample_loss", "presample_upper_bound",
           "presample_last_layer", "presample_exact", "random_pruning", "infobatch", "online_batch_selection",
           "selective_backprop", "rho_loss"]


def measure(method: str, base: Path, overrides: list[str], epochs: int) -> dict:
    """Seconds per training step and per epoch of one method (first epoch left out), and what it trained on."""
    inc = ROOT / "configs/methods" / f"{method}.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        over = [f"trainer.epochs={epochs}", "output.save_checkpoint=false", "logger.wandb.mode=disabled",
                "trainer.deterministic=false", f"output.root={tmp}", *overrides]
        cfg = load_config(base, over, includes=[inc])
        result = fit(cfg, quiet=True)
        if result["status"] != "completed":
            return {"method": method, "status": result["status"], "error": result.get("error")}
        with open(Path(result["run_dir"]) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    timed = rows[1:] or rows
    batch = cfg.data.batch_size
    steps = [math.ceil(int(r["samples"]) / batch) for r in timed]
    return {"method": method, "status": "completed",
            "s_per_step": sum(float(r["train_s"]) for r in timed) / max(1, sum(steps)),
            "s_per_epoch": statistics.median(float(r["train_s"]) for r in timed),
            "samples_per_epoch": statistics.median(int(r["samples"]) for r in timed),
            "test_acc_last": result.get("test_acc_last")}


def run(methods: list[str], base: Path, overrides: list[str], epochs: int) -> list[dict]:
    measure("ce", base, overrides, 2)  # warm-up: the first fit in a process pays for imports and allocations
    # CE is timed before and after the others (machine drift affects both sides alike) and the two are averaged.
    out = [measure(m, base, overrides, epochs) for m in ["ce", *[m for m in methods if m != "ce"], "ce"]]
    first, last = out[0], out.pop()
    ce = first if first["status"] == "completed" else None
    if ce is not None and last["status"] == "completed":
        for key in ("s_per_step", "s_per_epoch"):
            ce[key] = (first[key] + last[key]) / 2
    for r in out:
        if ce is not None and r["status"] == "completed":
            r["step_rel_ce"] = r["s_per_step"] / ce["s_per_step"]
            r["epoch_rel_ce"] = r["s_per_epoch"] / ce["s_per_epoch"]
    return out


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({torch.get_num_threads()} threads)"


def table(rows: list[dict]) -> str:
    lines = ["| method | s / step | × CE per step | s / epoch | × CE per epoch | samples / epoch |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "completed":
            lines.append(f"| {r['method']} | {r['status']}: {str(r.get('error'))[:60]} | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['s_per_step'] * 1e3:.2f} ms | {r.get('step_rel_ce', math.nan):.2f} | "
                     f"{r['s_per_epoch']:.2f} | {r.get('epoch_rel_ce', math.nan):.2f} | {r['samples_per_epoch']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=str(BASE))
    p.add_argument("--methods", nargs="+", default=None, help="YAML names under configs/methods/ (default: all "
                   "weighting and sampling methods that exist)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per method; the first is left out of the timing")
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", help="key=value for every run (default: data.subset=10000)")
    a = p.parse_args()
    methods = a.methods or [m for m in METHODS if (ROOT / "configs/methods" / f"{m}.yaml").is_file()]
    overrides = a.overrides or ["data.subset=10000"]
    rows = run(methods, Path(a.base), overrides, a.epochs)
    print(f"device {device_name()}; base {Path(a.base).name}; overrides {' '.join(overrides)}; {a.epochs} epochs")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps({"device": device_name(), "overrides": overrides, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
