"""A stand-in `robustlearn fit` and small sweep files, shared by the sweep tests."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from robustlearn.tracking.store import ResultsStore

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Stand-in for `python -m robustlearn fit CONFIG --quiet`: same exit codes and store row, no training.
# STUB_SLEEP: seconds per run; STUB_FAIL_SEED: that seed records status=failed and exits 1;
# STUB_HANG_SEED: that seed sleeps 60 s (to be killed).
STUB = """
import os, sys, time
start = time.time()
from pathlib import Path
import yaml
from robustlearn.config import config_hash
from robustlearn.tracking.store import ResultsStore

path = Path(sys.argv[1])
cfg = yaml.safe_load(path.read_text())
root = Path(cfg["output"]["root"])
print("gpus", os.environ.get("CUDA_VISIBLE_DEVICES", "-"), flush=True)
hang = os.environ.get("STUB_HANG_SEED")
pause = float(os.environ.get("STUB_SLEEP", "0.2"))
time.sleep(60 if hang is not None and cfg["seed"] == int(hang) else pause)
failed = cfg["seed"] == int(os.environ.get("STUB_FAIL_SEED", "-1"))
with open(root / "timeline.txt", "a") as f:
    f.write(f"{start} {time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\\n")
ResultsStore(root / "results.sqlite").record({
    "run_id": path.stem, "config_hash": config_hash(cfg), "method": cfg["method"], "seed": cfg["seed"],
    "status": "failed" if failed else "completed", "error": "stub failure" if failed else None,
    "resumed": cfg["resume"],
})
sys.exit(1 if failed else 0)
"""



def write_stub(tmp_path: Path) -> list[str]:
    """The stand-in fit as a command: [python, <tmp_path>/stub_fit.py]."""
    path = tmp_path / "stub_fit.py"
    path.write_text(STUB)
    return [sys.executable, str(path)]


def sweep_file(
    tmp_path: Path, seeds=(0, 1, 2, 3), rates=(0.2,), extra=(), name: str = "stubbed", cluster: dict | None = None
) -> Path:
    """A sweep of the synthetic smoke experiment (CE, CPU) writing under <tmp_path>/runs."""
    spec = {
        "name": name,
        "base": str(CONFIGS / "experiments" / "synthetic_smoke.yaml"),
        "methods": ["ce"],
        "grid": {"noise.rate": list(rates)},
        "seeds": list(seeds),
        "overrides": ["trainer.accelerator=cpu", f"output.root={tmp_path / 'runs'}", *extra],
    }
    if cluster is not None:
        spec["cluster"] = cluster
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def rows(tmp_path: Path) -> list[dict]:
    return ResultsStore(tmp_path / "runs" / "results.sqlite").rows()


def max_overlap(tmp_path: Path) -> int:
    spans = [
        tuple(map(float, line.split()[:2])) for line in (tmp_path / "runs" / "timeline.txt").read_text().splitlines()
    ]
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
