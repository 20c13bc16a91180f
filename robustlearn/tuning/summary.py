"""What a finished study leaves: `summary.json`, `history.png` and the best parameters as a method YAML."""

from __future__ import annotations

import json
import re
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


def trials_word(budgets: list[int]) -> str:
    return "trial" if budgets == [1] else "trials"


PROTOCOL_KEYS = ("data.name", "data.subset", "noise.kind", "noise.rate", "trainer.epochs")  # what a tuned entry is for


def tuned_entry(study, spec, resolved: dict) -> dict:
    """The settings entry of one study: its best values, for runs of the protocol it was tuned on."""
    from robustlearn.method_settings import TUNED_PREFIX, lookup

    best = study.best_trial
    when = {k: v for k in PROTOCOL_KEYS for found, v in [lookup(resolved, k)] if found and v is not None}
    return {
        "name": TUNED_PREFIX + " ".join(f"{k}={v}" for k, v in when.items()),
        "when": when,
        "set": dict(best.params),
        "source": (f"robustlearn tune, study {study.study_name}: {spec.trials} {trials_word([spec.trials])}, "
                   f"TPE seed {spec.sampler_seed}, tuning seed {spec.seed}, best val/acc {best.value:.4f} at trial "
                   f"{best.number} (run {best.user_attrs['run_id']})"),
    }


def write_best(study, spec, method: str, cfg) -> Path:
    """<out>/best/<method>.yaml: the method YAML labelled `<method>-tuned`, its defaults and per-dataset settings
    kept, with one `tuned: ...` settings entry per study (dataset, noise, epochs) holding the best trial's values.
    A second study of the same method into the same folder (another noise kind) adds its entry; a study run again
    replaces its own."""
    from omegaconf import OmegaConf

    from robustlearn.tuning.study import method_file

    best = study.best_trial
    resolved = yaml.safe_load((Path(spec.out) / best.user_attrs["run_id"] / "config.yaml").read_text())
    path = Path(spec.out) / "best" / f"{method}.yaml"
    if path.is_file():
        doc = yaml.safe_load(path.read_text())
    else:
        doc = yaml.safe_load(method_file(spec.config, method).read_text()) or {}
    entry = tuned_entry(study, spec, resolved)
    doc["settings"] = [e for e in doc.get("settings") or [] if e.get("name") != entry["name"]] + [entry]
    budgets = sorted({int(m) for e in doc["settings"] for m in re.findall(r": (\d+) trials?,", str(e.get("source")))})
    doc.update(method=f"{cfg.method}-tuned", tuned=f"{'/'.join(map(str, budgets))} {trials_word(budgets)}, noisy val")
    header = (f"# {cfg.method} tuned on the noisy validation split by `robustlearn tune`.\n"
              "# Each `tuned: ...` entry of settings holds one study's best values and applies to runs of the protocol "
              "it\n# was tuned on; a run of another protocol is refused. Report it over fresh seeds (not the tuning "
              "seed)\n# beside the untuned method.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + OmegaConf.to_yaml(OmegaConf.create(doc)))
    tmp.replace(path)
    return path
