"""What a finished study leaves: `summary.json`, `history.png` and the best parameters as a method YAML."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import yaml

from robustlearn.tuning.space import Space


def _states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def write_summary(study, spec, method: str, space: dict[str, Space], cfg) -> dict[str, Any]:
    """summary.json (budget, counts, best value and parameters, importances) and history.png in <out>/<study>/, and
    the best parameters as a method YAML (`write_best`) once a trial has completed."""
    import optuna

    folder = Path(spec.out) / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {
        "study": study.study_name, "method": method, "budget_trials": spec.trials, "tuning_seed": spec.seed,
        "objective": "best noisy validation accuracy (val/acc); never the test set or clean labels",
        "sampler": f"TPE (seed {spec.sampler_seed})", "pruner": "median (2 startup trials, 1 warm-up epoch)",
        "space": {k: s.describe() for k, s in space.items()}, "trials": _states(study),
        "best_value": None, "best_params": None, "best_run_id": None, "importances": None,
    }
    if complete:
        best = study.best_trial
        summary.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                       best_run_id=best.user_attrs.get("run_id"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a study of a few trials warns that its importances are equal
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
                summary["importances"] = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        except (RuntimeError, ValueError) as exc:  # too few trials, or one value only
            summary["importances"] = f"not computed: {exc}"
        _plot_history(complete, folder / "history.png", study.study_name)
        summary["best_yaml"] = str(write_best(study, spec, method, cfg))
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _plot_history(trials, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    best = [max(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(numbers, values, "o", label="trial (complete)")
    ax.step(numbers, best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("best noisy validation accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_best(study, spec, method: str, cfg) -> Path:
    """<out>/best/<method>.yaml: the method YAML at the best trial's values, labelled `<method>-tuned`."""
    from omegaconf import OmegaConf

    best = study.best_trial
    run_dir = Path(spec.out) / best.user_attrs["run_id"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    doc = {"method": f"{cfg.method}-tuned", "tuned": f"{spec.trials} trials, noisy val",
           "strategies": resolved.get("strategies") or [],
           "optim": {k: resolved["optim"][k] for k in ("lr", "weight_decay")}}
    header = (f"# {cfg.method} tuned on the noisy validation split by `robustlearn tune`: study {study.study_name}, "
              f"{spec.trials} trials per method,\n# TPE seed {spec.sampler_seed}, tuning seed {spec.seed}; best "
              f"val/acc {best.value:.4f} at trial {best.number} (run {best.user_attrs['run_id']}).\n"
              "# Report it over fresh seeds (not the tuning seed) beside the untuned method.\n")
    path = Path(spec.out) / "best" / f"{method}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(doc)))
    return path
