"""Cost of per-sample gradient norms against a training step: layer by layer against torch.func vmap(grad).

On the repository's `cnn` (width 32, 3×32×32 input, 10 classes), batch 128, on the GPU if there is one, else the CPU:
a training forward+backward, `per_sample_grad_sq_norms` (layer by layer, robustlearn/strategies/sampling/grad_norms.py)
and `per_sample_grad_sq_norms_vmap` (the reference), timed interleaved (one of each per round, so that a change of
load on the machine touches all three alike) after one warm-up round. Reports per kind the best and the median over
the rounds, and per round the ratios layer-by-layer / step and vmap / layer-by-layer (their medians are the figures a
page quotes: a ratio taken within a round cancels the load both calls shared).

    python benchmarks/grad_norm_cost.py                                   # 15 rounds, prints a table
    python benchmarks/grad_norm_cost.py --json docs/performance.data/grad_norm_cost_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.models import build_model  # noqa: E402
from robustlearn.strategies.sampling.grad_norms import (  # noqa: E402
    per_sample_grad_sq_norms,
    per_sample_grad_sq_norms_vmap,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rounds: int, batch: int, seed: int = 0) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    net = build_model("cnn", {}, (3, 32, 32), 10).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()

    calls = {"step": step, "layerwise": lambda: per_sample_grad_sq_norms(net, x, y),
             "vmap": lambda: per_sample_grad_sq_norms_vmap(net, x, y)}
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(rounds + 1):
        for k, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if r:  # round 0 warms up
                seconds[k].append(time.perf_counter() - start)
    ratio = {"layerwise_per_step": [a / b for a, b in zip(seconds["layerwise"], seconds["step"])],
             "vmap_per_layerwise": [a / b for a, b in zip(seconds["vmap"], seconds["layerwise"])]}
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "model": "cnn", "batch": batch,
        "rounds": rounds,
        "seconds": {k: {"best": min(v), "median": statistics.median(v)} for k, v in seconds.items()},
        "ratios": {k: {"median": statistics.median(v), "low": min(v), "high": max(v)} for k, v in ratio.items()},
    }


def table(m: dict) -> str:
    s, r = m["seconds"], m["ratios"]
    return "\n".join([
        f"{m['device']} ({m['threads']} threads), cnn, batch {m['batch']}, {m['rounds']} rounds",
        "| | training step | layer by layer | vmap(grad) |", "|---|---:|---:|---:|",
        "| best (ms) | " + " | ".join(f"{1e3 * s[k]['best']:.1f}" for k in ("step", "layerwise", "vmap")) + " |",
        "| median (ms) | " + " | ".join(f"{1e3 * s[k]['median']:.1f}" for k in ("step", "layerwise", "vmap")) + " |",
        f"layer by layer / step: {r['layerwise_per_step']['median']:.2f} (median of rounds); "
        f"vmap / layer by layer: {r['vmap_per_layerwise']['median']:.2f}"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (one call of each kind per round)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", default=None, help="also write the measurement to this file")
    a = p.parse_args()
    m = measure(a.rounds, a.batch)
    print(table(m))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(m, indent=2) + "\n")


if __name__ == "__main__":
    main()
