"""What the CLI verbs share: the console, reading a config from the command line, and the
tables they print."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from sweep.config.loading import load_config
from sweep.config.schema import PrefsweepConfig

console = Console()


def load_from_args(args) -> PrefsweepConfig:
    return load_config(args.config, args.set or [])


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/demo.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.learning_rate=1e-4 (repeatable)")


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics, key=lambda k: (not k.startswith("eval/"), k)):
        value = metrics[key]
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


HEADLINE = ("eval/gen/win_rate", "eval/gen/kl")  # shown whenever trials report them


def print_trials(status: dict) -> None:
    objectives = [o["name"] for o in status.get("objectives") or [status["metric"]]]
    shown = objectives + [m for m in HEADLINE if m not in objectives
                          and any(m in t["metrics"] for t in status["trials"])]
    front = set(status.get("pareto_front") or [])
    best = (status.get("best") or {}).get("trial_id")
    how = " and ".join(objectives) + (" (Pareto front marked)" if len(objectives) > 1 else "")
    table = Table(title=f"study {status['name']}: {status['state']}, "
                        f"{status['progress']['done']}/{status['progress']['total']} trials, by {how}")
    params = sorted({k for t in status["trials"] for k in t["params"]})
    for column in ["trial", "state", *shown, "evals", *params]:
        table.add_column(column, overflow="fold")  # a narrow terminal folds names, never cuts them
    for t in status["trials"]:
        marks = [m for m, on in (("champion", t["trial_id"] == best), ("front", t["trial_id"] in front)) if on]
        table.add_row(t["trial_id"] + (f" ({', '.join(marks)})" if marks else ""), t["state"],
                      *[_fmt(t["metrics"].get(m, t["value"] if m == objectives[0] else None)) for m in shown],
                      f"{t['evaluations']}/{t['expected_evaluations']}", *[_fmt(t["params"].get(p)) for p in params])
    console.print(table)
    for t in status["trials"]:
        if t["error"]:
            console.print(f"[red]{t['trial_id']} failed:[/red] {t['error']}", highlight=False)


def _fmt(value) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
