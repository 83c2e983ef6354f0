"""Verbs on one config: validate (config + data, no training) and train (one run)."""
from __future__ import annotations

import json

from rich.table import Table

from sweep.cli.output import add_config_args, console, load_from_args, print_metrics


def cmd_validate(args) -> int:
    from sweep.study.validate import validate

    report = validate(load_from_args(args))
    table = Table(title=f"prefsweep validate {args.config}", show_header=False)
    for key, value in report.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)
    console.print("[green]config and data OK[/green]")
    return 0


def cmd_train(args) -> int:
    from sweep.study.single_run import run_training

    cfg = load_from_args(args)
    outcome = run_training(cfg)
    print_metrics(f"{cfg.name}: final metrics", outcome.metrics)
    console.print(f"checkpoint: {outcome.checkpoint_path}")
    console.print(f"mlflow run: {outcome.mlflow_run_id} ({outcome.tracking_uri})")
    return 0


def add_verbs(verb) -> None:
    add_config_args(verb("validate", cmd_validate, "check a config and its data; no training"))
    add_config_args(verb("train", cmd_train, "one training run with the config's fixed hyperparameters"))
