"""The tuned section of the noisy-label page, from a bundle exported from a store: tuned minus default paired over
seeds with Holm's correction, the ranks with and without tuning and Kendall's τ between them, the values tuning
chose, and the tuned table against tuned CE."""

from __future__ import annotations

import pytest

from robustlearn.report.bundle import Source, export, load
from robustlearn.report.pages import noisy, noisy_tuned
from robustlearn.tracking.store import ResultsStore

BASE = [0.80, 0.81, 0.79]
RUNS = {  # method -> (per-seed offset from BASE, hyperparameters)
    "ce": ([0.0, 0.0, 0.0], {"optim.lr": 0.05}),
    "gce": ([0.01, 0.01, 0.01], {"optim.lr": 0.05, "strategies.0.q": 0.7}),
    "mae": ([-0.05, -0.05, -0.05], {"optim.lr": 0.05}),
    "ce-tuned": ([0.005, 0.005, 0.005], {"optim.lr": 0.05}),
    "gce-tuned": ([0.012, 0.008, 0.011], {"optim.lr": 0.05, "strategies.0.q": 0.4}),
    "mae-tuned": ([0.009, 0.011, 0.01], {"optim.lr": 0.2}),
}


def bundle(tmp_path):
    root = tmp_path / "runs"
    for method, (offsets, hp) in RUNS.items():
        for seed, (b, o) in enumerate(zip(BASE, offsets)):
            run_dir = root / f"{method}-{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.csv").write_text(f"epoch,test/acc,train/memorized,val/acc\n0,{b + o},0.3,0.5\n")
            ResultsStore(root / "results.sqlite").record({
                "run_id": run_dir.name, "sweep": "s", "method": method, "seed": seed, "config_hash": run_dir.name,
                "status": "completed", "dataset": "fashion_mnist", "noise_kind": "symmetric", "noise_rate": 0.4,
                "test_acc_last": b + o, "test_acc_at_best_val": b + o, "epochs_done": 1, "train_time_s": 1.0,
                "run_dir": str(run_dir), "tags": [], "finished_at": float(seed), "hyperparameters": hp,
                "tuned": "8 trials, noisy val" if method.endswith("-tuned") else None})
    export([Source(str(root / "results.sqlite"))], tmp_path / "b")
    return load(tmp_path / "b")


def test_tuned_against_default_and_against_tuned_ce(tmp_path):
    default, tuned = noisy_tuned.split(bundle(tmp_path))
    assert len(default.runs) == 9 and len(tuned.runs) == 9
    (tmp_path / "fig").mkdir()
    values = noisy_tuned.section(default, tuned, tmp_path / "fig", noisy.slug)
    assert values["runs"] == 9 and values["methods"] == 3 and values["budget"] == "8 trials, noisy val"
    (cell,) = values["cells"]
    rows = {line.split("|")[1].strip(): line for line in cell["comparison"].splitlines()[2:]}
    # mae: +5.9, +6.1, +6.0 points (sd 0.1: ± 4.303 · 0.1 / √3 = 0.25, marked); ce +0.50 on every seed (marked);
    # gce +0.2, -0.2, +0.1 (not marked)
    assert rows["`mae`"].split("|")[4].strip().startswith("+6.00 [+5.75, +6.25]")
    assert "*" in rows["`mae`"] and "*" in rows["`ce`"] and "*" not in rows["`gce`"].split("|")[4]
    assert cell["furthest"] == ["`mae` (+6.00 points)", "`ce` (+0.50 points)"]
    # ranks: default gce 1, ce 2, mae 3; tuned gce 1 (81.03), mae 2 (81.00), ce 3 (80.50)
    assert rows["`gce`"].split("|")[5].strip() == "1 → 1" and rows["`mae`"].split("|")[5].strip() == "3 → 2"
    assert rows["`ce`"].split("|")[5].strip() == "2 → 3"
    assert cell["tau"] == "0.33"  # two concordant pairs of three: (2 - 1) / 3
    assert rows["`mae`"].split("|")[6].strip() == "optim.lr 0.05 → 0.2"
    assert rows["`gce`"].split("|")[6].strip() == "q 0.7 → 0.4"
    assert rows["`ce`"].split("|")[6].strip() == "the defaults"
    assert cell["ce_gain"].startswith("+0.50")
    # the tuned table compares against tuned CE
    assert "ce-tuned [8 trials, noisy val]" in cell["table"]
    assert (tmp_path / "fig" / f"tuned_{cell['slug']}.png").stat().st_size > 0


def test_a_bundle_without_tuned_runs_has_no_tuned_section(tmp_path):
    b = bundle(tmp_path)
    b.runs = [r for r in b.runs if not r["method"].endswith("-tuned")]
    assert noisy_tuned.split(b)[1] is None
    assert pytest.importorskip("robustlearn.report.pages.noisy_labels").context(b, tmp_path)["tuned"] is None
