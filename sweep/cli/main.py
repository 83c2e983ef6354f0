"""The `prefsweep` command (also `python -m sweep`). Each verb is a thin shell over the
same service functions the REST API calls."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from sweep.config.loading import ConfigError, load_config

console = Console()


def _load(args) -> object:
    return load_config(args.config, args.set or [])


def cmd_validate(args) -> int:
    from sweep.study.validate import validate

    report = validate(_load(args))
    table = Table(title=f"prefsweep validate {args.config}", show_header=False)
    for key, value in report.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)
    console.print("[green]config and data OK[/green]")
    return 0


def cmd_train(args) -> int:
    from sweep.study.single_run import run_training

    cfg = _load(args)
    outcome = run_training(cfg)
    print_metrics(f"{cfg.name}: final metrics", outcome.metrics)
    console.print(f"checkpoint: {outcome.checkpoint_path}")
    console.print(f"mlflow run: {outcome.mlflow_run_id} ({outcome.tracking_uri})")
    return 0


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics, key=lambda k: (not k.startswith("eval/"), k)):
        value = metrics[key]
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/demo.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.learning_rate=1e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefsweep", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    commands: dict[str, Callable] = {}

    def verb(name: str, fn: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(fn=fn)
        commands[name] = fn
        return sub

    add_config_args(verb("validate", cmd_validate, "check a config and its data; no training"))
    add_config_args(verb("train", cmd_train, "one training run with the config's fixed hyperparameters"))
    from sweep.cli import study_verbs as cli_sweep

    cli_sweep.add_verbs(verb, add_config_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sweep.data.loading import DataError

    try:
        return args.fn(args) or 0
    except ConfigError as err:
        console.print(f"[red]{err}[/red]", highlight=False)
        return 2
    except DataError as err:
        console.print(f"[red]data error: {err}[/red]", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
