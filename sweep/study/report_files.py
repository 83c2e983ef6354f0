"""Writing a study's report (sweep.study.report) to a folder: trials.csv, report.json, the
PNG plots and report.md that ties them together; then the same files as artifacts of the
study's MLflow parent run, under `report/`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from sweep import tracking
from sweep.config.redact import mask_url
from sweep.config.schema import PrefsweepConfig
from sweep.storage.record import StudyRecord
from sweep.study import report_plots as plots
from sweep.study.report import Progress, StudyReport, report_csv
from sweep.study.report_insights import fmt
from sweep.study.summary import summary_sentence, top_table

ARTIFACT_DIR = "report"


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def write_report(report: StudyReport, record: StudyRecord, out_dir: str | Path,
                 progress: Progress = lambda _: None) -> dict[str, Any]:
    """-> {files: [paths written], artifact_uri: where MLflow keeps them}."""
    cfg = record.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.data
    labels = {t["trial_id"]: f"#{t['number']}" for t in data["trials"] if t["trial_id"]}
    figures: dict[str, Path] = {}
    for metric in dict.fromkeys([m.name for m in cfg.sweep.objectives] + ["loss"]):
        progress(f"plotting {metric} per step")
        curves = {labels.get(tid, tid): report.curves.get(tid, {}).get(metric, []) for tid in labels}
        figures[f"{metric} per step"] = plots.curves_png(curves, metric, out / f"{_slug(metric)}_per_step.png")
    progress("plotting parallel coordinates")
    parallel = plots.parallel_png(report.optuna_trials, cfg.sweep.metric.name, cfg.sweep.metric.goal,
                                  out / "parallel_coordinates.png")
    if parallel:
        figures["parallel coordinates"] = parallel
    if data["importances"]["values"]:
        progress("plotting importances")
        figures["importances"] = plots.importances_png(data["importances"], out / "importances.png")
    if data["frontier"]:
        progress("plotting the reward-vs-KL frontier")
        figures["frontier"] = plots.frontier_png(report.rows, cfg.sweep, out / plots.FRONTIER_FILE)
    (out / "trials.csv").write_text(report_csv(data))
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str, allow_nan=False))
    (out / "report.md").write_text(markdown(cfg, report, figures))
    files = [out / "report.md", out / "trials.csv", out / "report.json", *figures.values()]
    progress(f"logging {len(files)} files to the MLflow parent run {record.parent_run_id} under {ARTIFACT_DIR}/")
    client = tracking.client_for(record.tracking_uri)
    try:
        for path in files:
            client.log_artifact(record.parent_run_id, str(path), ARTIFACT_DIR)
        artifact_uri = f"{client.get_run(record.parent_run_id).info.artifact_uri}/{ARTIFACT_DIR}"
    except MlflowException as err:  # e.g. the parent run was deleted: the files are written all the same
        progress(f"could not log them on the MLflow parent run: {mask_url(str(err))}")
        artifact_uri = None
    return {"files": [str(p) for p in files], "artifact_uri": artifact_uri}


def _image(title: str, path: Path | None) -> list[str]:
    return [f"![{title}]({path.name})", ""] if path else []


def markdown(cfg: PrefsweepConfig, report: StudyReport, figures: dict[str, Path]) -> str:
    data = report.data
    metric = cfg.sweep.metric.name
    imp = data["importances"]
    by_id = {t["trial_id"]: t for t in data["trials"]}
    lines = [f"# Study `{data['study']}`: report", "",
             f"State **{data['state']}**. {summary_sentence(cfg, [r.as_dict() for r in report.rows])}",
             f"Generated {data['generated_at']}. Every trial: [trials.csv](trials.csv) (one row each); all of "
             "this as data: [report.json](report.json).", ""]
    if data["champion"]:
        best = by_id.get(data["champion"], {})
        lines += [f"Champion: trial `{data['champion']}` (Optuna #{best.get('number')}), "
                  + ", ".join(f"{k} = {fmt(v)}" for k, v in best.get("params", {}).items()) + ".", ""]
    lines += ["## Top trials", "", *top_table(cfg, [r.as_dict() for r in report.rows]), "",
              "## What the trials say", "", *[f"- {s}" for s in data["observations"]], "",
              f"## Parameter importances for {metric}", ""]
    if imp["note"]:
        lines += [imp["note"], ""]
    if imp["values"]:
        lines += [f"Optuna's {imp['evaluator']} over {imp['trials']} trials (ASHA-stopped ones with their last value).", "",
                  "| parameter | importance |", "|---|---|",
                  *[f"| {k} | {v:.3f} |" for k, v in imp["values"].items()], ""]
        lines += _image("importances", figures.get("importances"))
    lines += ["## Curves", ""]
    for title, path in figures.items():
        if title.endswith("per step"):
            lines += _image(title, path)
    lines += ["## Parallel coordinates", ""] + (_image("parallel coordinates", figures.get("parallel coordinates"))
                                                or ["Fewer than two trials reached a value.", ""])
    if data["frontier"]:
        fr = data["frontier"]
        lines += ["## Reward vs KL", "",
                  f"Each trial's {' and '.join(fr['ys'])} against {fr['x']}; the Pareto front (no other trial is "
                  "better on both) joined in red, the champion starred.", "",
                  *[f"- front of {y}: " + (", ".join(f"`{t}`" for t in fr["fronts"][y]) or "none") for y in fr["ys"]],
                  "", *_image("reward vs KL", figures.get("frontier"))]
    lines += ["## Every trial", "", "| # | trial | state | stopped by | " + metric + " | steps | wall time (s) | MLflow run |",
              "|---|---|---|---|---|---|---|---|"]
    for t in sorted(data["trials"], key=lambda t: t["number"]):
        lines.append(f"| {t['number']} | {t['trial_id'] or ''} | {t['state']} | {t['stopped_by'] or ''} | "
                     f"{fmt(t['value']) if t['value'] is not None else ''} | {t['steps'] or ''} | "
                     f"{t['wall_time_s'] if t['wall_time_s'] is not None else ''} | {t['mlflow_run_id'] or ''} |")
    return "\n".join(lines) + "\n"
