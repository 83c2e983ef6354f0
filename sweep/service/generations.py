"""What trials said: each trial's latest generations (its MLflow table), side by side with the
reference's answers to the same prompts. Behind `prefsweep compare` and
`GET /studies/{id}/generations`."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from sweep import tracking
from sweep.service.studies import current_record
from sweep.study.selection import champion, pareto_front
from sweep.study.trials import TrialRow, sort_rows, trial_rows

MAX_TRIALS = 8


class UnknownTrials(LookupError):
    """Trial ids the study does not have."""


def chosen_trials(rows: list[TrialRow], cfg, wanted: list[str] | None, top: int) -> list[TrialRow]:
    """`wanted` in that order; else the champion, then the Pareto front (several metrics) or the
    ranking by the sweep metric, to `top` trials."""
    by_id = {r.trial_id: r for r in rows}
    if wanted:
        missing = [t for t in wanted if t not in by_id]
        if missing:
            raise UnknownTrials(f"no trial {', '.join(missing)} in this study")
        return [by_id[t] for t in dict.fromkeys(wanted)][:MAX_TRIALS]
    ranked = pareto_front(rows, cfg.sweep.objectives) if cfg.sweep.metrics else sort_rows(
        [r for r in rows if r.value is not None], cfg)
    best = champion(rows, cfg.sweep)
    ordered = ([best] if best else []) + [r for r in ranked if r is not best]
    return ordered[:max(1, min(top, MAX_TRIALS))]


def _latest_table(client, run_id: str) -> tuple[int | None, list[dict[str, Any]]]:
    """The rows of the trial's last evaluation (a restarted trial may have logged a step twice:
    the later copy wins)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, tracking.GENERATIONS_TABLE, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for "no such artifact"
            return None, []
        table = json.loads(Path(path).read_text())
    rows = [dict(zip(table["columns"], values)) for values in table["data"]]
    if not rows:
        return None, []
    step = max(r["step"] for r in rows)
    latest = {r["index"]: r for r in rows if r["step"] == step}
    return step, [latest[i] for i in sorted(latest)]


def study_generations(name: str, storage: str = "runs", trials: list[str] | None = None,
                      top: int = 3) -> dict[str, Any]:
    try:
        record = current_record(name, storage)
    except FileNotFoundError:  # launched, its driver has not written the record yet
        return {"study": name, "evaluation": False, "judge": None, "trials": []}
    cfg = record.cfg
    picked = chosen_trials(trial_rows(record), cfg, trials, top)
    client = tracking.client_for(record.tracking_uri)
    out = []
    for row in picked:
        run_id = tracking.find_run(record.tracking_uri, record.experiment_id,
                                   {tracking.PARENT_TAG: record.parent_run_id, tracking.TRIAL_TAG: row.trial_id})
        step, rows = _latest_table(client, run_id) if run_id else (None, [])
        out.append({"trial_id": row.trial_id, "state": row.state, "params": row.params, "step": step,
                    "metrics": {k: v for k, v in row.metrics.items() if k.startswith("eval/gen/")},
                    "generations": [{k: r.get(k) for k in ("index", "prompt", "completion", "score", "reference",
                                                           "reference_score", "log_ratio")} for r in rows]})
    judge = cfg.evaluation.judge_label() if cfg.evaluation else None
    return {"study": name, "evaluation": cfg.evaluation is not None, "judge": judge, "trials": out}
