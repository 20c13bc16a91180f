"""`robustlearn tune`: one Optuna study per method, at the same budget for every method, on the noisy validation split.

For each method (its `configs/methods/<m>.yaml` merged into the experiment config, as a sweep does):

- the space is the method's strategies' `search_space` plus the shared keys (`space.SHARED`: learning rate, weight
  decay), so cross-entropy is tuned over as many trials as every other method;
- a study named `<method>-<dataset>-<noise>`, TPE sampler seeded by `--sampler-seed`, median pruner on the per-epoch
  noisy validation accuracy (`val/acc`, reported after every validation by `ReportToTrial`), stored in an Optuna
  journal file beside the results store (`<out>/optuna.journal`), so a killed study resumes where it stopped: trials
  already complete, pruned or failed count towards the budget, and only the rest are run;
- every trial is an ordinary run of the results store (`<out>/results.sqlite`, `sweep` = the study's name, tags
  `study:<name>` and `trial:<n>`), trained with the tuning seed (`--seed`, default 100), never one of the seeds a
  comparison is reported on (0-4);
- the objective is the run's best noisy validation accuracy (`val_acc_best`): neither the test set nor clean labels;
- the budget is `--trials` per method, the same for all; printed, and recorded in the study and the summary.

Afterwards each study writes `<out>/best/<method>.yaml` (a method YAML with the best parameters, labelled
`<method>-tuned`, which a sweep's `methods:` can name by path) and `<out>/<study>/summary.json` and `history.png`
(the objective per trial and the best so far; parameter importances from Optuna's fANOVA where it can compute them).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from robustlearn.errors import ConfigError
from robustlearn.tuning.space import SHARED, Space, strategy_spaces

OBJECTIVE = "val_acc_best"  # the best noisy validation accuracy of the trial's run


@dataclass
class TuneSpec:
    config: Path
    methods: list[str]
    trials: int
    out: Path
    seed: int = 100  # the training seed of every trial (comparisons report seeds 0-4)
    sampler_seed: int = 0
    workers: int = 1
    overrides: list[str] = field(default_factory=list)
    quiet: bool = False

    def check(self) -> None:
        if not self.config.is_file():
            raise ConfigError(f"tune: config file '{self.config}' not found.", str(self.config))
        if not self.methods:
            raise ConfigError("tune: name at least one method (--methods ce gce ...).", "methods")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"tune: --trials = {self.trials!r} is the budget per method and must be an integer "
                              ">= 1.", "trials")
        if self.workers < 1:
            raise ConfigError(f"tune: --workers = {self.workers} must be >= 1.", "workers")


class ReportToTrial(pl.Callback):
    """Reports `val/acc` to an Optuna trial after every validation and stops the fit when the pruner says so."""

    def __init__(self, trial, metric: str = "val/acc"):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if value is None or trainer.sanity_checking:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def method_file(config: Path, method: str) -> Path:
    from robustlearn.sweep.spec import configs_dir

    root = configs_dir(config.resolve()) or config.parent
    path = root / "methods" / f"{method}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "methods").glob("*.yaml"))
        raise ConfigError(f"tune: method '{method}' has no config file {path}; known: {', '.join(known)}.", "methods")
    return path


def study_space(spec: TuneSpec, method: str) -> tuple[Any, dict[str, Space]]:
    """(the method's config at the tuning seed, its search space of dotted keys)."""
    from robustlearn.config import load_config

    cfg = load_config(spec.config, spec.overrides, includes=[method_file(spec.config, method)])
    entries = [dict(e) for e in cfg.strategies]
    return cfg, {**strategy_spaces(entries), **SHARED}


def study_name(cfg) -> str:
    noise = "clean" if cfg.noise.kind == "none" else f"{cfg.noise.kind}{cfg.noise.rate:g}"
    return f"{cfg.method}-{cfg.data.name}-{noise}"


def _storage(out: Path):
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))


def _study(spec: TuneSpec, name: str, worker: int = 0):
    """The study from its storage. Each parallel worker samples from its own seed (`sampler_seed` + 1000 x worker):
    with one seed, workers would draw the same start-up trials and train the same configs twice."""
    import optuna

    return optuna.create_study(
        study_name=name, storage=_storage(spec.out), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed + 1000 * worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))


def _counted(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=states))


def objective(spec: TuneSpec, method: str, space: dict[str, Space], name: str):
    """The study's objective: one ordinary run at the suggested values; its best noisy validation accuracy."""
    import optuna

    from robustlearn.config import load_config
    from robustlearn.runner import fit

    def run(trial: optuna.Trial) -> float:
        values = {key: s.suggest(trial, key) for key, s in space.items()}
        overrides = [*spec.overrides, *(f"{k}={v!r}" for k, v in values.items()), f"seed={spec.seed}",
                     f"output.root={spec.out}", f"sweep={name}", f"tags=[study:{name}, trial:{trial.number}]",
                     "logger.wandb.mode=disabled"]
        cfg = load_config(spec.config, overrides, includes=[method_file(spec.config, method)])
        report = ReportToTrial(trial)
        result = fit(cfg, quiet=True, callbacks=[report])
        trial.set_user_attr("run_id", result["run_id"])
        if result["status"] != "completed":
            raise RuntimeError(f"trial {trial.number}: the run {result['status']}: {result.get('error')}")
        if report.pruned:
            raise optuna.TrialPruned()
        value = result.get(OBJECTIVE)
        if value is None:
            raise RuntimeError(f"trial {trial.number}: no validation accuracy (data.val_fraction is 0?)")
        return float(value)

    return run


def _worker(spec: TuneSpec, method: str, name: str, n_trials: int, worker: int = 0) -> None:
    """Run `n_trials` trials of the study (a share of what the budget has left) as worker number `worker`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, space = study_space(spec, method)
    study = _study(spec, name, worker)
    if n_trials <= 0:
        return
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    progress = _Progress(spec, name) if not spec.quiet else None
    study.optimize(objective(spec, method, space, name), n_trials=n_trials, catch=(RuntimeError,),
                   callbacks=[optuna.study.MaxTrialsCallback(spec.trials, states=states),
                              *([progress] if progress else [])])


def shares(remaining: int, workers: int) -> list[int]:
    """What each worker runs: the remaining trials split as evenly as possible, so that parallel workers never run
    past the budget (each checks the count only after its own trial)."""
    remaining = max(0, remaining)
    return [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]


class _Progress:
    """One line per finished trial: its state and value, the best so far, and how many were pruned."""

    def __init__(self, spec: TuneSpec, name: str):
        self.spec, self.name = spec, name

    def __call__(self, study, trial) -> None:
        import optuna

        done = _counted(study)
        pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:
            best = "n/a"
        value = "" if trial.value is None else f" {trial.value:.4f}"
        print(f"[{self.name}] trial {trial.number}: {trial.state.name.lower()}{value}; {done}/{self.spec.trials} "
              f"done, best {best}, pruned {pruned}", flush=True)


def tune_method(spec: TuneSpec, method: str) -> dict[str, Any]:
    """Run (or resume) one method's study to its budget, then write its best YAML and summary."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, space = study_space(spec, method)
    name = study_name(cfg)
    study = _study(spec, name)
    study.set_user_attr("budget_trials", spec.trials)
    study.set_user_attr("objective", "best noisy validation accuracy (val/acc), tuning seed "
                                     f"{spec.seed}")
    if not spec.quiet:
        print(f"[{name}] budget {spec.trials} trials ({_counted(study)} done); space: "
              + ", ".join(f"{k} {s.describe()}" for k, s in space.items()), flush=True)
    parts = [n for n in shares(spec.trials - _counted(study), spec.workers) if n > 0]
    if len(parts) <= 1:
        _worker(spec, method, name, sum(parts))
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(spec, method, name, n, i)) for i, n in enumerate(parts)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    from robustlearn.tuning.summary import write_summary

    return write_summary(_study(spec, name), spec, method, space, cfg)


def tune(spec: TuneSpec) -> list[dict[str, Any]]:
    spec.check()
    for method in spec.methods:  # every method's file and space is checked before the first trial runs
        study_space(spec, method)
    return [tune_method(spec, m) for m in spec.methods]

