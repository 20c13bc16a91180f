"""docs/performance.md: what the benchmarks measured, from their JSON outputs committed in docs/performance.data/.

Unlike the results pages, this page's data are not runs in a results store but the files the benchmark scripts
write with `--json` (and the GPU suite's `suite.json`), one measurement per file, named by what they hold:

    throughput_<where>.json        benchmarks/throughput.py            robustlearn against a raw PyTorch loop
    sweep_throughput_<where>.json  benchmarks/sweep_throughput.py      runs per minute with N workers
    grad_norm_cost_<where>.json    benchmarks/grad_norm_cost.py        per-sample gradient norms against a step
    gpu_suite.json                 benchmarks/gpu_suite.py (suite.json) every GPU figure of one session

`load` reads every `*.json` of the folder; `context` turns them into the page's tables. A kind with no file gives an
empty table, and the page says it was not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustlearn.errors import ConfigError


def load(path: str | Path) -> dict[str, dict | list]:
    """{file stem: parsed JSON} for every `*.json` in the page's data folder."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: the performance page's data folder is missing; the benchmarks write it with "
                          "--json (docs/performance.md.j2 names the commands).", str(path))
    return {f.stem: json.loads(f.read_text()) for f in sorted(path.glob("*.json"))}


def _of_kind(data: dict, kind: str) -> list[tuple[str, dict]]:
    return [(name, value) for name, value in data.items() if name.startswith(kind + "_")]


def _suite_part(data: dict, part: str) -> list[dict]:
    suite = data.get("gpu_suite")
    if not suite:
        return []
    rows = suite.get("parts", {}).get(part, [])
    return [dict(r, device=r.get("device", suite["device"]), date=r.get("date", suite["started"][:10]))
            for r in rows if "skipped" not in r and "failed" not in r]


def throughput_rows(data: dict) -> list[dict]:
    """Every throughput measurement: the CPU files, then the GPU suite's completed rows."""
    return [m for _, m in _of_kind(data, "throughput")] + _suite_part(data, "throughput")


def throughput_table(rows: list[dict]) -> str:
    if not rows:
        return "(not measured)"
    lines = ["| device | model | training images | batch | precision | compiled | robustlearn s/epoch | "
             "raw PyTorch s/epoch | ratio | date |", "|---|---|---:|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['model']} | {r['train_size']} | {r['batch_size']} | {r['precision']} | "
                     f"{'yes' if r['compiled'] else 'no'} | {r['ours_s_per_epoch']:.3f} | {r['raw_s_per_epoch']:.3f} | "
                     f"**{r['ratio']:.3f}** | {r['date']} |")
    return "\n".join(lines)


def _sweep_block(head: str, rows: list[dict]) -> str:
    first = rows[0]
    lines = [head, "", f"| workers N | seconds | runs / minute | speed-up over N = {first['workers']} |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r['workers']} | {r['seconds']:.1f} | {r['runs_per_min']:.2f} | "
              f"{r['runs_per_min'] / first['runs_per_min']:.2f}× |" for r in rows]
    return "\n".join(lines)


def sweep_tables(data: dict) -> str:
    """One table per sweep-throughput measurement: N, seconds, runs per minute, speed-up over the first N (the GPU
    suite runs one N per call, so its speed-ups are taken here)."""
    blocks = [_sweep_block(f"{m['device']}, {m['runs']} runs of `{m['base']}` "
                           f"({' '.join(m['overrides']) or 'as configured'}), {m['date']}:", m["rows"])
              for _, m in _of_kind(data, "sweep_throughput")]
    suite = _suite_part(data, "sweep_throughput")
    if suite:
        blocks.append(_sweep_block(f"{suite[0]['device']} (GPU suite, {suite[0]['date']}):", suite))
    return "\n\n".join(blocks) or "(not measured)"


def grad_norm_table(data: dict) -> str:
    rows = [m for _, m in _of_kind(data, "grad_norm_cost")]
    if not rows:
        return "(not measured)"
    lines = ["| device | threads | model, batch | rounds | training step (ms) | layer by layer (ms) | "
             "vmap(grad) (ms) | layer by layer / step | vmap / layer by layer | date |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in rows:
        s, r = m["seconds"], m["ratios"]
        ms = " | ".join(f"{1e3 * s[k]['median']:.1f}" for k in ("step", "layerwise", "vmap"))
        ratio = " | ".join(f"**{r[k]['median']:.2f}** [{r[k]['low']:.2f}, {r[k]['high']:.2f}]"
                           for k in ("layerwise_per_step", "vmap_per_layerwise"))
        lines.append(f"| {m['device']} | {m['threads']} | {m['model']}, {m['batch']} | {m['rounds']} | {ms} | "
                     f"{ratio} | {m['date']} |")
    return "\n".join(lines)


def context(data: dict, figures: Path) -> dict:
    suite = data.get("gpu_suite")
    return {
        "throughput": throughput_table(throughput_rows(data)),
        "sweeps": sweep_tables(data),
        "grad_norms": grad_norm_table(data),
        "gpu": None if not suite else {"device": suite["device"], "date": suite["started"][:10],
                                        "budget_s": suite["budget_s"], "elapsed_s": suite.get("elapsed_s")},
        "files": sorted(f"{name}.json" for name in data),
    }
