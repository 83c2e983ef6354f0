"""The `prefsweep` command (also `python -m sweep`). Each verb is a thin shell over the
same service functions the REST API calls."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sweep.cli import cache_verbs, config_verbs, study_verbs
from sweep.cli.output import console
from sweep.config.loading import ConfigError
from sweep.models.loading import ModelLoadError
from sweep.service.reports import HubPushError
from sweep.service.studies import NoUsableTrial
from sweep.storage.record import StudyNotFound
from sweep.study.ray_cluster import RayUnreachable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefsweep", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name: str, fn: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(fn=fn)
        return sub

    config_verbs.add_verbs(verb)
    study_verbs.add_verbs(verb)
    cache_verbs.add_verbs(verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow draws a progress bar per artifact it downloads (compare reads a table per trial).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from sweep.data.loading import DataError
    from sweep.evaluation.judges import JudgeError
    from sweep.service.generations import UnknownTrials

    try:
        return args.fn(args) or 0
    except ConfigError as err:
        console.print(f"[red]{err}[/red]", highlight=False)
        return 2
    except DataError as err:
        console.print(f"[red]data error: {err}[/red]", highlight=False)
        return 1
    except (StudyNotFound, NoUsableTrial, UnknownTrials, ModelLoadError, RayUnreachable, JudgeError, HubPushError) as err:
        # nothing to show, no cluster, a judge that cannot be loaded, or no way to the hub
        console.print(f"[red]{err}[/red]", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
