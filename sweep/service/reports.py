"""From a finished sweep to a decision and to the hub: a study's report (what `prefsweep
report` writes and GET /studies/{id}/report answers) and its best trial pushed to the Hugging
Face hub (`prefsweep best --push-to-hub`, POST /studies/{id}/best)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sweep.config.redact import mask_url
from sweep.service.settings import Settings
from sweep.service.studies import best_trial, current_record, export_trial
from sweep.storage.record import StudyRecord
from sweep.study.report import Progress, StudyReport, build_report
from sweep.study.report_insights import DEFAULT_EVALUATOR
from sweep.study.trials import TrialRow, trial_rows


def _quiet(_: str) -> None:
    pass


def study_report(name: str, storage: str = "runs", progress: Progress = _quiet,
                 evaluator: str = DEFAULT_EVALUATOR) -> StudyReport:
    """The report of a study as it stands (running ones too): trials, importances (Optuna's
    `evaluator`), sentences."""
    record = current_record(name, storage)
    progress(f"reading the trials of {name} from Ray Tune's state")
    return build_report(record, trial_rows(record), progress, evaluator)


def write_study_report(name: str, out_dir: str | Path, storage: str = "runs", progress: Progress = _quiet,
                       evaluator: str = DEFAULT_EVALUATOR) -> dict[str, Any]:
    """study_report, written to `out_dir` with its plots and logged on the MLflow parent run.
    -> {files, artifact_uri, report}."""
    from sweep.study.report_files import write_report  # matplotlib: only where files are drawn

    record = current_record(name, storage)
    report = study_report(name, storage, progress, evaluator)
    return {**write_report(report, record, out_dir, progress), "report": report.data}


class HubPushError(RuntimeError):
    """Pushing to the hub cannot start or did not succeed; the message says why."""


class NoHubToken(HubPushError):
    """No Hugging Face token: nothing was exported or uploaded."""


class HubRefused(HubPushError):
    """The hub answered and said no (no write access, a bad name, ...)."""


class NamespaceNotAllowed(HubPushError):
    """The service pushes only to the hub namespaces it lists (PREFSWEEP_HF_NAMESPACES)."""


def hub_token() -> str | None:
    """The user's token as huggingface_hub finds it: HF_TOKEN, else the one `hf auth login` saved."""
    from huggingface_hub import get_token

    return get_token()


def require_token(token: str | None) -> str:
    if not token:
        raise NoHubToken("pushing to the Hugging Face hub needs a token with write access: set HF_TOKEN or run "
                         "`hf auth login` (nothing was exported or uploaded)")
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubPushError(f"repo id {repo_id!r} is not a hub repo id (NAMESPACE/NAME): {err}") from None


def push_for_service(settings: Settings, name: str, repo_id: str, *, private: bool = False,
                     revision: str | None = None) -> dict[str, Any]:
    """POST /studies/{id}/best: push with the service's own token (never one from the request),
    only when it has one, and only to the namespaces it allows."""
    if settings.hf_token is None:
        raise NoHubToken("pushing to the Hugging Face hub is off on this service: it has no token of its own "
                         "(PREFSWEEP_HF_TOKEN); `prefsweep best NAME --push-to-hub REPO_ID` pushes with yours")
    namespace = repo_id.split("/")[0] if "/" in repo_id else None
    if settings.hf_namespaces and namespace not in settings.hf_namespaces:
        raise NamespaceNotAllowed(f"this service pushes only to {', '.join(settings.hf_namespaces)} "
                                  f"(NAMESPACE/NAME), not to {repo_id!r}")
    return push_best(name, repo_id, settings.hf_token.get_secret_value(), settings.storage_path, private=private,
                     revision=revision)


def push_best(name: str, repo_id: str, token: str | None, storage: str = "runs", *, private: bool = False,
              revision: str | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Export the study's champion (model, tokenizer, model card with the sweep) into a
    temporary folder and upload it with huggingface_hub's own API: create_repo (kept as it is
    when it exists), create_branch for a `revision`, upload_folder. Checks the token and the
    repo id before anything is exported."""
    from sweep.models.hub import offline_by_setting

    require_token(token)
    check_repo_id(repo_id)
    if offline_by_setting():
        raise HubPushError("HF_HUB_OFFLINE is set: unset it to push to the hub (nothing was uploaded)")
    record, best = best_trial(name, storage)
    return push_trial(record, best, trial_rows(record), repo_id, token, private=private, revision=revision,
                      progress=progress)


def push_trial(record: StudyRecord, trial: dict[str, Any], rows: list[TrialRow], repo_id: str, token: str, *,
               private: bool = False, revision: str | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """`trial` (a TrialRow dict) exported into a temporary folder and uploaded: create_repo, a
    branch for `revision`, upload_folder."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    with tempfile.TemporaryDirectory(prefix="prefsweep-push-") as tmp:
        progress(f"exporting trial {trial['trial_id']} of {record.name}")
        folder = export_trial(record, trial, tmp, rows)
        api = HfApi(token=token)
        try:
            progress(f"creating {repo_id} on the hub ({'private' if private else 'public'}, if new)")
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            progress(f"uploading {folder} to {repo_id}" + (f" ({revision})" if revision else ""))
            commit = api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision,
                                       commit_message=f"prefsweep: best trial {trial['trial_id']} of study {record.name}")
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            raise HubRefused(f"the hub refused the push to {repo_id} (HTTP {status}): {mask_url(str(err))}") from None
        except (HTTPError, OSError) as err:
            raise HubPushError(f"could not reach the hub to push {repo_id}: {type(err).__name__}: "
                               f"{mask_url(str(err))}") from None
    return {"repo_id": repo_id, "revision": revision or "main", "private": private, "trial_id": trial["trial_id"],
            "commit_url": getattr(commit, "commit_url", None)}
