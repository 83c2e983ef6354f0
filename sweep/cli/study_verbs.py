"""Sweep verbs: run, resume, status, best, report, compare, serve."""
from __future__ import annotations

import json

from sweep.cli.output import add_config_args, console, load_from_args, print_metrics, print_trials
from sweep.study.report_insights import DEFAULT_EVALUATOR, EVALUATORS


def cmd_run(args) -> int:
    from sweep.study.driver import StudyExistsError, SweepInterrupted, start_study

    cfg = load_from_args(args)
    try:
        record = start_study(cfg, overwrite=args.overwrite)
    except StudyExistsError as err:
        console.print(f"[red]{err}[/red]")
        return 2
    except SweepInterrupted as err:
        return _print_interrupted(cfg.name, cfg.storage.path, err)
    return _print_outcome(record.name, cfg.storage.path)


def cmd_resume(args) -> int:
    from sweep.storage.record import load_record
    from sweep.study.driver import SweepInterrupted, resume_study
    from sweep.study.liveness import alive

    record = load_record(args.name, args.storage)
    if record.state == "finished":
        console.print(f"study {args.name} is finished: nothing to resume (`prefsweep status {args.name} "
                      f"--storage {args.storage}` shows it; `prefsweep run CONFIG --set name=NEW` starts another)",
                      highlight=False, soft_wrap=True)
        return 0
    if record.state == "running" and alive(record):  # two drivers on one study would both run its trials
        driver = record.driver or {}
        console.print(f"[red]study {args.name} is running (driver pid {driver.get('pid')} on {driver.get('host')}"
                      f"{', Ray job ' + record.submission_id if record.submission_id else ''}): stop it first, "
                      "or wait for it to end[/red]", highlight=False, soft_wrap=True)
        return 1
    try:
        record = resume_study(args.name, args.storage)
    except SweepInterrupted as err:
        return _print_interrupted(args.name, args.storage, err)
    return _print_outcome(record.name, args.storage)


def _print_interrupted(name: str, storage: str, err: Exception) -> int:
    from sweep.service.studies import study_status

    print_trials(study_status(name, storage))
    console.print(f"[yellow]study {name} {err}[/yellow]", highlight=False, soft_wrap=True)  # one line to copy
    return 130


def _print_outcome(name: str, storage: str) -> int:
    from sweep.service.studies import study_status

    status = study_status(name, storage)
    print_trials(status)
    failed = [t for t in status["trials"] if t["state"] == "failed"]
    if failed:
        from sweep.config.schema import resolve_storage_path
        from sweep.storage.record import study_dir

        where = study_dir(resolve_storage_path(storage), name)
        console.print(f"[yellow]{len(failed)} of {len(status['trials'])} trials failed[/yellow] (errors above; "
                      f"full tracebacks in each trial's error.txt under {where}/, and on its MLflow "
                      "run's tag prefsweep.error)", highlight=False, soft_wrap=True)
    if status["best"]:
        print_metrics(f"best trial {status['best']['trial_id']}", status["best"]["metrics"])
        print_next_steps(name, storage, status)
        return 0
    console.print(f"[red]study {name} ended without a usable trial: {status['error']}[/red]")
    return 1


def print_next_steps(name: str, storage: str, status: dict) -> None:
    """What a user does next, with this study's own names, paths and URIs filled in."""
    from sweep.config.redact import mask_url
    from sweep.storage.files import join

    where = "" if storage == "runs" else f" --storage {storage}"
    serve_env = "" if storage == "runs" else f"PREFSWEEP_STORAGE_PATH={storage} "
    optuna_url = status["optuna"]["url"]
    lines = [
        f"prefsweep best {name}{where} --export {join(storage, name, 'best')}   # the winner as a Hugging Face model",
        f"{serve_env}prefsweep serve   # REST API + web page over this storage (token: PREFSWEEP_API_TOKEN)",
        f"mlflow ui --backend-store-uri {mask_url(status['mlflow']['tracking_uri'])}   # every trial, "
        f"side by side (experiment {status['mlflow']['experiment_id']})",
        f"optuna-dashboard {mask_url(optuna_url)}   # the search: importances, history (study {name})",
    ]
    console.print("next:\n" + "\n".join(f"  {line}" for line in lines), highlight=False, soft_wrap=True)


def cmd_status(args) -> int:
    from sweep.service.studies import study_status

    status = study_status(args.name, args.storage)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print_trials(status)
        if status["error"]:
            console.print(f"[red]study {status['state']}:[/red] {status['error']}", highlight=False)
    return 0


def cmd_best(args) -> int:
    from sweep.service.reports import check_repo_id, hub_token, push_best, require_token
    from sweep.service.studies import best_trial, export_best

    if (args.private or args.revision) and not args.push_to_hub:
        console.print("[red]--private and --revision go with --push-to-hub REPO_ID[/red]")
        return 2
    if args.push_to_hub:  # refused before anything is read or exported
        token = require_token(hub_token())
        check_repo_id(args.push_to_hub)
    _, best = best_trial(args.name, args.storage)
    console.print(f"best trial {best['trial_id']} ({best['state']}): params {json.dumps(best['params'])}")
    print_metrics("metrics", best["metrics"])
    if args.export:
        path = export_best(args.name, args.export, args.storage)
        console.print(f"exported to {path} (load with AutoModelForCausalLM.from_pretrained)")
    if args.push_to_hub:
        pushed = push_best(args.name, args.push_to_hub, token, args.storage, private=args.private,
                           revision=args.revision, progress=_step)
        console.print(f"pushed trial {pushed['trial_id']} to {pushed['repo_id']} ({pushed['revision']}): "
                      f"{pushed['commit_url']}", highlight=False, soft_wrap=True)
    return 0


def _step(message: str) -> None:
    console.print(f"[dim]...[/dim] {message}", highlight=False, soft_wrap=True)


def cmd_report(args) -> int:
    from sweep.service.reports import write_study_report

    out = args.out or f"{args.name}-report"
    written = write_study_report(args.name, out, args.storage, progress=_step, evaluator=args.importance)
    report = written["report"]
    imp = report["importances"]
    if imp["values"]:
        print_metrics(f"parameter importances for {imp['metric']} ({imp['evaluator']}, {imp['trials']} trials)",
                      imp["values"])
    if imp["note"]:
        console.print(imp["note"], highlight=False, soft_wrap=True)
    console.print("\n".join(f"- {s}" for s in report["observations"]), highlight=False, soft_wrap=True)
    logged = f"on the MLflow parent run: {written['artifact_uri']}" if written["artifact_uri"] else "not in MLflow"
    console.print(f"report of {len(report['trials'])} trials in {out}/ ({len(written['files'])} files: report.md, "
                  f"trials.csv, report.json and the plots); {logged}", highlight=False, soft_wrap=True)
    return 0


def cmd_compare(args) -> int:
    from rich.table import Table

    from sweep.service.generations import study_generations

    found = study_generations(args.name, args.storage, args.trials.split(",") if args.trials else None, args.top)
    shown = [t for t in found["trials"] if t["generations"]]
    if not shown:
        why = "it has no `evaluation` section" if not found["evaluation"] else "no trial has evaluated generations yet"
        console.print(f"study {args.name}: nothing to compare ({why})", highlight=False)
        return 1
    for t in shown:
        gen = ", ".join(f"{k.removeprefix('eval/gen/')} {v:.3g}" for k, v in t["metrics"].items() if v is not None)
        console.print(f"trial {t['trial_id']} ({t['state']}, step {t['step']}): {json.dumps(t['params'])}\n  {gen}",
                      highlight=False, soft_wrap=True)
    table = Table(show_lines=True, title=f"{found['study']}: the same prompts, judge {found['judge'] or 'none'}")
    table.add_column("prompt", ratio=1)
    table.add_column("reference", ratio=2)
    for t in shown:
        table.add_column(f"trial {t['trial_id']}", ratio=2)
    by_index = [{g["index"]: g for g in t["generations"]} for t in shown]
    common = [i for i in by_index[0] if all(i in b for b in by_index)][:args.prompts]

    def cell(text: str, score) -> str:
        return text.strip() + (f"\n[dim]score {score:.3g}[/dim]" if score is not None else "")

    for i in common:
        first = by_index[0][i]
        table.add_row(first["prompt"].strip(), cell(first["reference"], first["reference_score"]),
                      *(cell(b[i]["completion"], b[i]["score"]) for b in by_index))
    console.print(table)
    return 0


def cmd_serve(args) -> int:
    from api.server import serve

    serve(host=args.host, port=args.port)
    return 0


def add_verbs(verb) -> None:
    run = verb("run", cmd_run, "run a sweep (the main job; also the `ray job submit` entrypoint)")
    add_config_args(run)
    run.add_argument("--overwrite", action="store_true", help="replace an existing study of the same name")
    resume = verb("resume", cmd_resume, "continue an interrupted study")
    resume.add_argument("name")
    status = verb("status", cmd_status, "trials, states, params, metric and progress of a study")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    best = verb("best", cmd_best, "the best trial; --export DIR writes it as an HF model")
    best.add_argument("name")
    best.add_argument("--export", metavar="DIR")
    best.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the exported model to this Hugging Face hub "
                      "repo (token: HF_TOKEN or `hf auth login`)")
    best.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    best.add_argument("--revision", metavar="BRANCH", help="with --push-to-hub: the branch to push to (made if new)")
    report = verb("report", cmd_report, "every trial as CSV/JSON, plots, parameter importances and report.md")
    report.add_argument("name")
    report.add_argument("--out", metavar="DIR", help="where to write it (default: NAME-report)")
    report.add_argument("--importance", choices=sorted(EVALUATORS), default=DEFAULT_EVALUATOR,
                        help="Optuna's importance evaluator (default: fanova)")
    compare = verb("compare", cmd_compare, "side-by-side generations of the top trials and the reference")
    compare.add_argument("name")
    compare.add_argument("--top", type=int, default=3, help="trials to show (default: champion, then front or ranking)")
    compare.add_argument("--trials", metavar="ID,ID", help="these trials instead")
    compare.add_argument("--prompts", type=int, default=6, help="prompts to show")
    for sub in (resume, status, best, report, compare):
        sub.add_argument("--storage", default="runs", help="storage.path the study was run with")
    serve = verb("serve", cmd_serve, "the REST service and web page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
