"""The `robustlearn` command: fit | sweep | tune | leaderboard | methods | config | export | report.

Exit codes: 0 done, 1 a run failed, 2 bad input (a one-paragraph message naming the key or file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import textwrap
from collections.abc import Sequence

from robustlearn.errors import ConfigError


def _error(message: str) -> int:
    width = 100
    print(textwrap.fill(f"robustlearn: error: {message}", width=width, subsequent_indent="  "), file=sys.stderr)
    return 2


def cmd_config(args: argparse.Namespace) -> int:
    from robustlearn.config import config_hash, load_config, run_id, to_yaml

    cfg = load_config(args.file, args.overrides)
    print(to_yaml(cfg), end="")
    print(f"# run_id: {run_id(cfg)}\n# config_hash: {config_hash(cfg)}")
    print(f"# settings applied: {', '.join(cfg.settings_applied) or 'none (the method YAML defaults)'}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from robustlearn.config import load_config
    from robustlearn.runner import fit

    cfg = load_config(args.file, args.overrides)
    if not args.quiet and cfg.settings_applied:
        print(f"robustlearn: {cfg.method}: per-dataset settings applied: {', '.join(cfg.settings_applied)} "
              "(settings_applied in config.yaml and result.json)")
    result = fit(cfg, quiet=args.quiet)
    status = result["status"]
    if not args.quiet or status != "completed":
        acc = result.get("test_acc_at_best_val")
        last = result.get("test_acc_last")
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
        print(f"{result['run_id']}: {status}; test acc at best val {fmt(acc)}, last {fmt(last)}; "
              f"{result.get('train_time_s', 0):.1f} s")
        if result.get("error"):
            print(f"  error: {result['error']}", file=sys.stderr)
        print(f"  results: {result['run_dir']}/ (result.json, metrics.csv, config.yaml)")
    return 0 if status == "completed" else 1


def _summary(doc: str | None, width: int = 96) -> str:
    """A docstring's first paragraph on one line, cut to `width`."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def cmd_methods(args: argparse.Namespace) -> int:
    from robustlearn import registry

    for title, reg in (("strategies", registry.STRATEGIES), ("datasets", registry.DATASETS),
                       ("models", registry.MODELS), ("noise kinds", registry.NOISES)):
        print(f"{title}:")
        for name in reg.names():
            entry = reg.get(name)
            print(f"  {name:<18} {_summary(entry.__doc__)}")
            params = getattr(entry, "Params", None)
            space = getattr(entry, "search_space", None) or {}
            if params is not None and dataclasses.is_dataclass(params):
                for f in dataclasses.fields(params):
                    default = f.default if f.default is not dataclasses.MISSING else "(required)"
                    if f.default_factory is not dataclasses.MISSING:
                        default = f.default_factory()
                    tuned = f"   (tune: {space[f.name].describe()})" if f.name in space else ""
                    print(f"  {'':<18}   {f.name} = {default!r}{tuned}")
    from robustlearn.tuning.space import SHARED

    print("shared keys tuned for every method:")
    for key, spec in SHARED.items():
        print(f"  {key:<18} {spec.describe()}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from robustlearn.sweep import sweep_main

    return sweep_main(args)


def cmd_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustlearn.tuning.study import TuneSpec, tune

    out = Path(args.out) if args.out else Path("runs") / "tune" / Path(args.file).stem
    spec = TuneSpec(Path(args.file), list(args.methods), args.trials, out, seed=args.seed,
                    sampler_seed=args.sampler_seed, workers=args.workers, overrides=list(args.overrides),
                    quiet=args.quiet)
    for summary in tune(spec):
        best = summary.get("best_value")
        counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items()) or "no trials"
        print(f"{summary['study']}: {counts} of a budget of {summary['budget_trials']} trials; best noisy "
              f"val acc {'n/a' if best is None else f'{best:.4f}'}"
              + (f"; {summary['best_yaml']}" if summary.get("best_yaml") else ""))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from robustlearn.leaderboard import leaderboard_cli

    return leaderboard_cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    import yaml

    from robustlearn.report.bundle import Source, export

    where = {}
    for item in args.where:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where: '{item}' is not KEY=VALUE (e.g. --where sweep=critical_periods_cpu).", "where")
        where[key] = yaml.safe_load(text)
    manifest = export([Source(r, where, tuple(args.files)) for r in args.results], args.out)
    print(f"{args.out}: {manifest['runs']} runs ({', '.join(manifest['files'])})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robustlearn.report.render import PAGES, report

    pages = sorted(PAGES) if args.all else args.pages
    if not pages:
        raise ConfigError("report: name the pages to regenerate, or --all.", "pages")
    for name in pages:
        print(f"{report(name, do_export=args.export)}: regenerated")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustlearn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train one run from a YAML config")
    f.add_argument("file")
    f.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    f.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    f.set_defaults(func=cmd_fit)

    c = sub.add_parser("config", help="print the resolved, validated config")
    c.add_argument("file")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_config)

    m = sub.add_parser("methods", help="list strategies, datasets, models and noise kinds with their parameters")
    m.set_defaults(func=cmd_methods)

    s = sub.add_parser("sweep", help="run a grid of configs × seeds, skipping finished runs")
    s.add_argument("file")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--backend", choices=["local", "submitit"], default="local")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_sweep)

    t = sub.add_parser("tune", help="tune each method's parameters on the noisy validation split (Optuna), at an "
                                     "equal budget per method")
    t.add_argument("file", help="the experiment config (data, noise, model, protocol)")
    t.add_argument("overrides", nargs="*")
    t.add_argument("--methods", nargs="+", required=True, help="method names (configs/methods/<name>.yaml)")
    t.add_argument("--trials", type=int, required=True, help="the budget: trials per method, the same for all")
    t.add_argument("--out", default=None, help="folder of the study storage, trial runs, best YAMLs and summaries "
                                              "(default runs/tune/<config name>)")
    t.add_argument("--seed", type=int, default=100, help="training seed of every trial (default 100; report "
                                                         "comparisons on other seeds)")
    t.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    t.add_argument("--workers", type=int, default=1, help="processes running trials of a study at once")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_tune)

    lb = sub.add_parser("leaderboard", help="tables and plots from a results store")
    lb.add_argument("--results", default="runs/results.sqlite")
    lb.add_argument("--format", choices=["md", "html", "csv"], default="md")
    lb.add_argument("--out", default=None)
    lb.add_argument("--plots", default=None, help="folder for PNG plots")
    lb.add_argument("--where", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="filter on a results column, e.g. --where dataset=fashion_mnist noise_rate=0.4")
    lb.add_argument("--baseline", default=None, metavar="LABEL",
                    help="method label every other method is compared with in each table (default: ce; given, it "
                         "must be in some table)")
    lb.set_defaults(func=cmd_leaderboard)

    ex = sub.add_parser("export", help="write a results bundle (runs.csv, epochs.csv) from results stores")
    ex.add_argument("--results", nargs="+", required=True, help="results.sqlite files")
    ex.add_argument("--where", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="keep runs whose store column KEY equals VALUE, e.g. --where sweep=critical_periods_cpu")
    ex.add_argument("--files", nargs="+", default=[], help="per-run CSV files to add, e.g. fisher_trace.csv")
    ex.add_argument("--out", required=True, help="the bundle folder")
    ex.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="regenerate docs pages from their committed results bundles")
    rp.add_argument("pages", nargs="*", help="generated pages, e.g. docs/reproductions/critical_periods.md")
    rp.add_argument("--all", action="store_true", help="every generated page")
    rp.add_argument("--export", action="store_true", help="rewrite each page's bundle from its results stores first")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    if hasattr(signal, "SIGPIPE"):  # `robustlearn methods | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Overrides may also come after options (`fit x.yaml --quiet a=1`).
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides = [*args.overrides, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except ConfigError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("robustlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
