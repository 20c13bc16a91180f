"""Every GPU figure of the project in one command, within a time budget: writes suite.json and suite.md into --out.

Parts, in order, each given a share of the budget and each measurement a subprocess with its own time limit (so a
part stops cleanly and what was measured is kept; the files are rewritten after every measurement):

1. throughput: robustlearn's epoch time against a raw PyTorch loop on the same net, data and device
   (`benchmarks/throughput.py`), for cnn and resnet_small on Fashion-MNIST: batch 512 eager and compiled, then batch
   128 eager;
2. sweep throughput: runs per minute with N = 1, 4, 2, 8 workers sharing the device (`benchmarks/sweep_throughput.py`);
3. methods: every method of configs/methods/ for a few epochs, one worker, time per epoch relative to CE;
4. leaderboard: with the time left, the Fashion-MNIST noisy-label sweep on the full training set, 4 workers, stopped
   (Ctrl-C, which the sweep handles cleanly) when the budget ends, and its leaderboard.

    python benchmarks/gpu_suite.py --out runs/gpu_suite                  # on a GPU, 8 minutes
    python benchmarks/gpu_suite.py --out /tmp/suite --dry-run            # every part for a few seconds, on CPU

On a bare GPU machine (torch, Lightning, torchmetrics; no omegaconf, no dataset) see docs/performance.md: `make
gpu-bundle` prepares `.gpu/` (wheels and the Fashion-MNIST files) to carry along, and the exact command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
FMNIST = ROOT / "configs/experiments/fmnist_ce.yaml"
SMOKE = ROOT / "configs/experiments/synthetic_smoke.yaml"
NOISY = ROOT / "configs/experiments/fmnist_noise40.yaml"
SHARES = {"throughput": 0.35, "sweep_throughput": 0.20, "methods": 0.30}  # the leaderboard gets what is left


def plan(dry: bool) -> dict:
    """What each part measures: the full plan on a GPU, a few-second version for --dry-run."""
    if dry:
        return {
            "throughput": [(SMOKE, "mlp", 64, False), (SMOKE, "mlp", 64, True)],
            "throughput_epochs": 2,
            "sweep_throughput": {"base": SMOKE, "workers": [1, 2], "runs": 2,
                                 "overrides": ["trainer.epochs=1", "data.n_train=500"]},
            "methods": {"base": SMOKE, "methods": ["ce", "gce"], "overrides": ["trainer.epochs=1", "data.n_train=500"]},
            "leaderboard": {"base": SMOKE, "methods": ["ce", "elr"], "seeds": [0], "workers": 2,
                            "overrides": ["trainer.epochs=1", "data.n_train=500"]},
        }
    # Most informative first: a short budget still measures batch 512 eager and compiled for both models.
    throughput = [(FMNIST, m, 512, c) for m in ("cnn", "resnet_small") for c in (False, True)]
    throughput += [(FMNIST, m, 128, False) for m in ("cnn", "resnet_small")]
    methods = sorted(p.stem for p in (ROOT / "configs/methods").glob("*.yaml") if not p.stem.startswith("byrd_lipton"))
    return {
        "throughput": throughput,
        "throughput_epochs": 3,
        "sweep_throughput": {"base": FMNIST, "workers": [1, 4, 2, 8], "runs": 4,
                             "overrides": ["data.subset=10000", "trainer.epochs=2"]},
        "methods": {"base": NOISY, "methods": methods, "overrides": ["data.subset=10000", "trainer.epochs=2"]},
        "leaderboard": {"base": NOISY, "methods": None, "seeds": [0, 1, 2], "workers": 4,
                        "overrides": ["trainer.epochs=15"]},
    }


class Suite:
    def __init__(self, out: Path, budget_s: float, dry: bool):
        self.out, self.budget_s, self.dry = out, budget_s, dry
        self.start = time.monotonic()
        self.results: dict = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "budget_s": budget_s,
                              "dry_run": dry, "device": device_name(), "command": " ".join(sys.argv), "parts": {}}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.start, 1)
        (self.out / "suite.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "suite.md").write_text(markdown(self.results))

    def run(self, cmd: list[str], limit_s: float, graceful: bool = False) -> tuple[int | None, str]:
        """Run `cmd` for at most `limit_s` seconds: (exit code or None where stopped, output tail)."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": path}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=max(1.0, limit_s))
            return proc.returncode, out[-2000:]
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT if graceful else signal.SIGKILL)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            return None, (out or "")[-2000:]

    def part_limit(self, name: str) -> float:
        return self.budget_s * SHARES[name]


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def throughput(s: Suite, p: dict) -> None:
    rows = s.results["parts"]["throughput"] = []
    part_end = time.monotonic() + s.part_limit("throughput")
    for config, model, batch, compiled in p["throughput"]:
        limit = min(part_end - time.monotonic(), s.left())
        row = {"model": model, "batch_size": batch, "compiled": compiled}
        if limit < 10:
            rows.append({**row, "skipped": "time budget"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "t.json"
            cmd = [PY, "benchmarks/throughput.py", "--config", str(config), "--epochs", str(p["throughput_epochs"]),
                   "--json", str(out), *(["--compile"] if compiled else []), f"model.name={model}",
                   f"data.batch_size={batch}"]
            code, tail = s.run(cmd, limit)
            if code == 0 and out.is_file():
                row.update(json.loads(out.read_text()))
            else:
                row["skipped" if code is None else "failed"] = "time budget" if code is None else tail[-500:]
        rows.append(row)
        s.save()


def sweep_throughput(s: Suite, p: dict) -> None:
    q = p["sweep_throughput"]
    rows = s.results["parts"]["sweep_throughput"] = []
    part_end = time.monotonic() + s.part_limit("sweep_throughput")
    for n in q["workers"]:
        limit = min(part_end - time.monotonic(), s.left())
        if limit < 10:
            rows.append({"workers": n, "skipped": "time budget"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "s.json"
            cmd = [PY, "benchmarks/sweep_throughput.py", "--base", str(q["base"]), "--workers", str(n), "--runs",
                   str(q["runs"]), "--json", str(out), *q["overrides"]]
            code, tail = s.run(cmd, limit)
            if code == 0 and out.is_file():
                rows.append(json.loads(out.read_text())["rows"][0])
            else:
                rows.append({"workers": n, "skipped" if code is None else "failed": tail[-500:] or "time budget"})
        done = [r for r in rows if "runs_per_min" in r]
        for r in done:
            r["speedup"] = r["runs_per_min"] / done[0]["runs_per_min"]
        s.save()


def _sweep(s: Suite, name: str, q: dict, seeds: list[int], workers: int, limit: float) -> dict:
    """A generated sweep file under --out; run until done or `limit`; its leaderboard rows and Markdown."""
    folder = s.out / name
    spec = {"name": f"gpu_suite_{name}", "base": str(q["base"]), "seeds": seeds,
            "methods": q["methods"] or sorted(yaml.safe_load((ROOT / "configs/sweeps/fmnist_noisy_losses.yaml")
                                                             .read_text())["methods"]),
            "grid": {"noise.kind": ["symmetric", "asymmetric"]} if q["base"] == NOISY else {},
            "overrides": [*q["overrides"], f"output.root={folder / 'runs'}", "logger.wandb.mode=disabled"]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    code, tail = s.run([PY, "-m", "robustlearn", "sweep", str(folder / "sweep.yaml"), "--workers", str(workers)],
                       limit, graceful=True)
    store = folder / "runs" / "results.sqlite"
    out = {"stopped_by_budget": code is None, "exit_code": code, "sweep_file": str(folder / "sweep.yaml")}
    if store.is_file():
        from robustlearn.leaderboard.aggregate import aggregate
        from robustlearn.leaderboard.render import markdown as leaderboard_markdown
        from robustlearn.tracking.store import ResultsStore

        text = leaderboard_markdown(aggregate(ResultsStore(store).rows()))
        (folder / "leaderboard.md").write_text(text)
        out["leaderboard_md"] = str(folder / "leaderboard.md")
        out["leaderboard"] = text
    else:
        out["error"] = tail[-500:]
    return out


def methods(s: Suite, p: dict) -> None:
    limit = min(s.part_limit("methods"), s.left())
    part = s.results["parts"]["methods"] = {"methods": p["methods"]["methods"]}
    if limit < 20:
        part["skipped"] = "time budget"
    else:
        part.update(_sweep(s, "methods", p["methods"], [0], 1, limit))
    s.save()


def leaderboard(s: Suite, p: dict) -> None:
    q = p["leaderboard"]
    part = s.results["parts"]["leaderboard"] = {}
    limit = s.left() - 15  # leave time to write the leaderboard
    if limit < 30:
        part["skipped"] = "time budget"
    else:
        part.update(_sweep(s, "leaderboard", q, q["seeds"], q["workers"], limit))
    s.save()


def markdown(r: dict) -> str:
    lines = [f"# GPU suite — {r['device']}", "", f"Started {r['started']}, {r.get('elapsed_s', 0)} s of a "
             f"{r['budget_s']} s budget{' (dry run)' if r['dry_run'] else ''}. Command: `{r['command']}`", ""]
    t = r["parts"].get("throughput")
    if t is not None:
        lines += ["## Throughput: robustlearn against a raw PyTorch loop", "",
                  "| model | batch | compiled | robustlearn s/epoch | raw s/epoch | ratio |",
                  "|---|---:|---|---:|---:|---:|"]
        for row in t:
            if "ratio" in row:
                lines.append(f"| {row['model']} | {row['batch_size']} | {row['compiled']} | "
                             f"{row['ours_s_per_epoch']:.3f} | {row['raw_s_per_epoch']:.3f} | {row['ratio']:.3f} |")
            else:
                why = row.get("skipped") or "failed"
                lines.append(f"| {row['model']} | {row['batch_size']} | {row['compiled']} | — | — | {why[:60]} |")
        lines.append("")
    st = r["parts"].get("sweep_throughput")
    if st is not None:
        lines += ["## Sweep throughput: workers sharing one device", "", "| workers | seconds | runs/min | speed-up |",
                  "|---:|---:|---:|---:|"]
        for row in st:
            if "runs_per_min" in row:
                lines.append(f"| {row['workers']} | {row['seconds']:.1f} | {row['runs_per_min']:.2f} | "
                             f"{row.get('speedup', 1.0):.2f} |")
            else:
                lines.append(f"| {row['workers']} | — | — | {str(row.get('skipped') or row.get('failed'))[:60]} |")
        lines.append("")
    for key, title in (("methods", "Methods: time per epoch relative to CE"),
                       ("leaderboard", "Leaderboard: Fashion-MNIST noisy-label sweep")):
        part = r["parts"].get(key)
        if part is None:
            continue
        lines += [f"## {title}", ""]
        if part.get("skipped"):
            lines += [f"Skipped: {part['skipped']}.", ""]
            continue
        if part.get("stopped_by_budget"):
            lines += ["Stopped by the time budget; the table holds the runs that finished.", ""]
        body = part.get("leaderboard", "").split("\n")
        lines += [ln.replace("# ", "### ", 1) if ln.startswith("#") else ln for ln in body] + [""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for suite.json, suite.md and the sweeps' runs")
    ap.add_argument("--budget-s", type=float, default=480.0, help="overall limit in seconds (default 8 minutes)")
    ap.add_argument("--dry-run", action="store_true", help="every part for a few seconds (CPU is fine)")
    ap.add_argument("--parts", nargs="+", default=["throughput", "sweep_throughput", "methods", "leaderboard"])
    a = ap.parse_args()
    suite = Suite(Path(a.out), a.budget_s, a.dry_run)
    p = plan(a.dry_run)
    for name in a.parts:
        {"throughput": throughput, "sweep_throughput": sweep_throughput, "methods": methods,
         "leaderboard": leaderboard}[name](suite, p)
    suite.save()
    print((suite.out / "suite.md").read_text())


if __name__ == "__main__":
    main()
